//! Twenty jobs on a coordinator with two local agents: every job reaches the
//! right final state and its stored output is exactly what it wrote.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, exec_state, exit_code};
use std::collections::BTreeSet;
use std::time::Duration;

/// Deterministic pseudo-random bytes (xorshift64*), so no two runs need a file
/// from elsewhere and every byte value occurs.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn lines(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix} {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_jobs_on_two_agents_end_right_with_exact_output() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 2).await?;

    let data = tempfile::tempdir()?;
    let blob = noise(50 * 1024 * 1024, 0x9e37_79b9_7f4a_7c15);
    let blob_path = data.path().join("blob.bin");
    std::fs::write(&blob_path, &blob)?;

    // (name, command, want state, want exit code, want stdout, want stderr)
    let mut want = Vec::new();
    want.push((
        "binary".to_string(),
        format!("cat '{}'; echo done >&2", blob_path.display()),
        pb::ExecutionState::Succeeded,
        0,
        blob.clone(),
        b"done\n".to_vec(),
    ));
    want.push((
        "exit3".to_string(),
        "echo out; echo err >&2; exit 3".to_string(),
        pb::ExecutionState::Failed,
        3,
        b"out\n".to_vec(),
        b"err\n".to_vec(),
    ));
    for i in 2..20 {
        let n = [1, 10, 100, 1000, 5000][i % 5];
        let name = format!("lines{i:02}");
        want.push((
            name.clone(),
            format!(
                "for i in $(seq 1 {n}); do echo \"{name} out $i\"; echo \"{name} err $i\" >&2; done"
            ),
            pb::ExecutionState::Succeeded,
            0,
            lines(&format!("{name} out"), n).into_bytes(),
            lines(&format!("{name} err"), n).into_bytes(),
        ));
    }

    for (name, cmd, ..) in &want {
        let job = c.submit("ws", "ex", name, "c1", cmd).await?;
        assert_eq!(
            exec_state(&job),
            pb::ExecutionState::Queued,
            "{name} starts queued"
        );
        assert!(!job.id.is_empty(), "{name} has an id");
    }

    let mut nodes = BTreeSet::new();
    for (name, _, state, code, stdout, stderr) in &want {
        let job = c
            .wait_job("ws", "ex", name, Duration::from_secs(120))
            .await?;
        assert_eq!(exec_state(&job), *state, "{name}: {job:?}");
        assert_eq!(exit_code(&job), Some(*code), "{name}: {job:?}");
        let info = job.execution_info.as_ref().expect("execution info");
        assert!(
            info.start_time.is_some() && info.end_time.is_some(),
            "{name}: {info:?}"
        );
        nodes.extend(job.node_ids.iter().cloned());

        let got = c.read_output("ws", "ex", name, "stdout.txt").await?;
        assert!(
            got == *stdout,
            "{name}: stdout differs ({} bytes, want {})",
            got.len(),
            stdout.len()
        );
        let got = c.read_output("ws", "ex", name, "stderr.txt").await?;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(stderr),
            "{name}: stderr"
        );
        let log = c.read_output("ws", "ex", name, "execution.log").await?;
        assert!(!log.is_empty(), "{name}: execution.log is empty");
    }
    assert_eq!(nodes.len(), 2, "both nodes ran jobs: {nodes:?}");

    // The files listed for stdouterr are the Batch AI ones, with their sizes.
    let files = c.list_output("ws", "ex", "binary").await?;
    let by_name = &files;
    assert_eq!(
        by_name.get("stdout.txt"),
        Some(&(blob.len() as u64)),
        "{files:?}"
    );
    assert_eq!(by_name.get("stderr.txt"), Some(&5), "{files:?}");
    assert!(by_name.contains_key("execution.log"), "{files:?}");
    Ok(())
}
