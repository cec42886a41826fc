//! A job's outputDirectories: made before the job starts (their variables
//! carry the node's paths, not `$AZ_BATCHAI_JOB_MOUNT_ROOT` text), listed
//! and streamed with `bai job file list/stream -d ID [-p SUBPATH]` where the
//! coordinator can read them, and refused by name where it cannot.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, exec_state};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_directories_are_made_listed_and_streamed() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;
    let shared = tempfile::tempdir()?;
    // The job only writes: the directories must exist already.
    let cmd = "set -e; [ -d \"$AZ_BATCHAI_OUTPUT_MODEL\" ]; [ -d \"$AZ_BATCHAI_OUTPUT_NODE\" ]; \
               echo \"node=$AZ_BATCHAI_OUTPUT_NODE\"; \
               for i in $(seq 1 5); do echo \"epoch $i\" > \"$AZ_BATCHAI_OUTPUT_MODEL/e$i.txt\"; done; \
               mkdir \"$AZ_BATCHAI_OUTPUT_MODEL/ckpt\"; printf 'weights' > \"$AZ_BATCHAI_OUTPUT_MODEL/ckpt/final.pt\"";
    let mut job = bai_tests::custom_job("ws", "ex", "out", "c1", cmd);
    job.output_directories = vec![
        pb::OutputDirectory {
            id: "MODEL".into(),
            path_prefix: shared.path().display().to_string(),
            path_suffix: "models".into(),
        },
        pb::OutputDirectory {
            id: "NODE".into(),
            path_prefix: "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs".into(),
            path_suffix: String::new(),
        },
    ];
    c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?;
    let done = c
        .wait_job("ws", "ex", "out", Duration::from_secs(60))
        .await?;
    let stdout = String::from_utf8(c.read_output("ws", "ex", "out", "stdout.txt").await?)?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\n{stdout}"
    );
    let node_dir = stdout.trim().strip_prefix("node=").unwrap_or_default();
    assert!(
        node_dir.starts_with('/') && !node_dir.contains('$'),
        "the node's path, expanded: {stdout}"
    );
    assert!(node_dir.ends_with(&format!("/logs/{}", done.job_output_directory_path_segment)));

    let cli = |args: &[&str]| {
        coord
            .cli()
            .args(["job", "file"])
            .args(args)
            .args(["-w", "ws", "-e", "ex", "-j", "out", "-o", "tsv"])
            .output()
    };
    let out = cli(&["list", "-d", "MODEL"])?;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(
        names,
        ["ckpt", "e1.txt", "e2.txt", "e3.txt", "e4.txt", "e5.txt"],
        "{listing}"
    );
    let out = cli(&["list", "-d", "MODEL", "-p", "ckpt"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("final.pt\t"),
        "{out:?}"
    );
    let out = cli(&["stream", "-d", "MODEL", "-p", "ckpt", "-f", "final.pt"])?;
    assert_eq!(out.stdout, b"weights", "{out:?}");
    let out = cli(&["stream", "-d", "MODEL", "-f", "e3.txt"])?;
    assert_eq!(out.stdout, b"epoch 3\n", "{out:?}");

    // Pages: two files a page, and every file once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .jobs
            .list_output_files(pb::ListOutputFilesRequest {
                job: Some(bai_tests::key("ws", "ex", "out")),
                output_directory_id: "MODEL".into(),
                directory: ".".into(),
                max_results: 2,
                page_token: token,
                attempt: 0,
            })
            .await?
            .into_inner();
        assert!(page.files.len() <= 2);
        seen.extend(page.files.into_iter().map(|f| f.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, names);

    // Out of the directory, or on a node's own mount: refused by name.
    let out = cli(&["stream", "-d", "MODEL", "-f", "../../x"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = cli(&["list", "-d", "NODE"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read"), "{err}");
    Ok(())
}
