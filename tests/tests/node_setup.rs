//! Node preparation end to end: a real coordinator with local agents prepares
//! its nodes (setup task, mounts) before they take jobs, says why a node is
//! unusable, keeps each node's setup output, and undoes the mounts when the
//! nodes leave.

use anyhow::{Result, bail};
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, custom_job, eventually, exec_state};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn setup_task(command_line: &str, prefix: &str) -> pb::SetupTask {
    pb::SetupTask {
        command_line: command_line.into(),
        environment_variables: vec![pb::EnvironmentVariable {
            name: "GREETING".into(),
            value: "hello".into(),
        }],
        secrets: vec![pb::EnvironmentVariableWithSecretValue {
            name: "SETUP_TOKEN".into(),
            value: "s3cr3t-token".into(),
            ..Default::default()
        }],
        std_out_err_path_prefix: prefix.into(),
        std_out_err_path_suffix: String::new(),
    }
}

async fn nodes(c: &mut Clients, ws: &str, cluster: &str) -> Result<Vec<pb::Node>> {
    c.nodes(ws, cluster).await
}

async fn wait_nodes(
    c: &mut Clients,
    ws: &str,
    cluster: &str,
    n: usize,
    state: pb::NodeState,
) -> Result<Vec<pb::Node>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = nodes(c, ws, cluster).await?;
        if got.len() == n && got.iter().all(|x| x.state == state as i32) {
            return Ok(got);
        }
        if std::time::Instant::now() > deadline {
            bail!("timed out waiting for {n} {state:?} nodes: nodes are {got:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stream_file(
    c: &mut Clients,
    ws: &str,
    cluster: &str,
    node: &str,
    path: &str,
) -> Result<Vec<u8>> {
    let mut s = c
        .clusters
        .stream_cluster_file(pb::StreamClusterFileRequest {
            workspace: ws.into(),
            cluster: cluster.into(),
            node_id: node.into(),
            path: path.into(),
            offset: 0,
            follow: true,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await? {
        assert_eq!(chunk.offset, out.len() as u64, "chunks arrive in order");
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

fn detail<'a>(e: &'a pb::BatchAiError, name: &str) -> Option<&'a str> {
    e.details
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.value.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_task_makes_every_node_unusable_with_the_reason() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let mut cluster = bai_tests::cluster("ws", "broken", 2);
    cluster.node_setup = Some(pb::NodeSetup {
        setup_task: Some(setup_task(
            "echo \"$GREETING from setup\"; for i in $(seq 1 30); do echo \"E: unable to locate package $i\" >&2; done; exit 100",
            "$AZ_BATCHAI_MOUNT_ROOT/logs",
        )),
        ..Default::default()
    });
    c.clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(cluster),
        })
        .await?;
    let got = wait_nodes(&mut c, "ws", "broken", 2, pb::NodeState::Unusable).await?;
    for n in &got {
        assert_eq!(n.preparation_step, "setup-task", "{n:?}");
        let e = n.errors.first().expect("an unusable node says why");
        assert_eq!(e.code, "SetupTaskFailed");
        assert!(e.message.contains("exit"), "{e:?}");
        assert_eq!(detail(e, "exit_code"), Some("100"));
        let tail = detail(e, "output_tail").unwrap_or_default();
        assert!(tail.ends_with("E: unable to locate package 30"), "{tail}");
        assert_eq!(tail.lines().count(), 20, "the last lines, not all");
    }
    // The cluster's errors derive from its nodes, naming each one.
    let view = c
        .clusters
        .get_cluster(pb::GetClusterRequest {
            workspace: "ws".into(),
            name: "broken".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        view.node_state_counts.map(|s| s.unusable_node_count),
        Some(2)
    );
    for n in &got {
        assert!(
            view.errors
                .iter()
                .any(|e| e.message.contains(&n.node_id) && detail(e, "node_id") == Some(&n.node_id)),
            "{:?}",
            view.errors
        );
    }
    // Its output is kept per node, listed as Batch AI named the files.
    let files = c
        .clusters
        .list_cluster_files(pb::ListClusterFilesRequest {
            workspace: "ws".into(),
            cluster: "broken".into(),
            node_id: String::new(),
        })
        .await?
        .into_inner()
        .files;
    for n in &got {
        let name = format!("stdout-{}.txt", n.node_id);
        let f = files.iter().find(|f| f.name == name);
        assert_eq!(f.map(|f| f.content_length), Some(17), "{files:?}");
        let out = stream_file(&mut c, "ws", "broken", &n.node_id, &name).await?;
        assert_eq!(out, b"hello from setup\n");
        let err = stream_file(&mut c, "ws", "broken", &n.node_id, "stderr.txt").await?;
        assert_eq!(err.iter().filter(|b| **b == b'\n').count(), 30);
        let log = stream_file(&mut c, "ws", "broken", &n.node_id, "execution.log").await?;
        assert!(
            String::from_utf8_lossy(&log).contains("exited with code 100"),
            "{}",
            String::from_utf8_lossy(&log)
        );
    }
    // The secret reached the task but no log line.
    assert!(!coord.log().contains("s3cr3t-token"));
    assert!(!coord.agent_logs().contains("s3cr3t-token"));
    // No job is placed on an unusable node.
    let job = c
        .jobs
        .create_job(pb::CreateJobRequest {
            job: Some(custom_job("ws", "ex", "j", "broken", "true")),
        })
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = c
        .jobs
        .get_job(pb::GetJobRequest {
            job: Some(bai_tests::key("ws", "ex", &job.name)),
        })
        .await?
        .into_inner();
    assert_eq!(exec_state(&job), pb::ExecutionState::Queued);
    Ok(())
}

/// A bind mount as the unmanaged file system, per Batch AI's rule (the
/// mount point is appended to mountCommand).
fn bind_mount(src: &Path, rel: &str) -> pb::MountVolumes {
    pb::MountVolumes {
        unmanaged_file_systems: vec![pb::UnmanagedFileSystemReference {
            mount_command: format!("mount --bind {}", src.display()),
            relative_mount_path: rel.into(),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_after_the_mounts_and_jobs_use_them() -> Result<()> {
    if !bai_common::standins::require_root() {
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    std::fs::write(data.path().join("input.txt"), "from before\n")?;
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let mut cluster = bai_tests::cluster("ws", "c", 1);
    cluster.node_setup = Some(pb::NodeSetup {
        setup_task: Some(setup_task(
            "cat \"$AZ_BATCHAI_MOUNT_ROOT/data/input.txt\" && echo \"$SETUP_TOKEN\" > \"$AZ_BATCHAI_MOUNT_ROOT/data/setup-saw-token\"",
            "$AZ_BATCHAI_MOUNT_ROOT/data/logs",
        )),
        mount_volumes: Some(bind_mount(data.path(), "data")),
        ..Default::default()
    });
    c.clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(cluster),
        })
        .await?;
    let got = wait_nodes(&mut c, "ws", "c", 1, pb::NodeState::Idle).await?;
    let node = &got[0].node_id;
    // The task ran after the mount, with its secret, and its output is
    // also on the mount in Batch AI's layout.
    assert_eq!(
        std::fs::read_to_string(data.path().join("setup-saw-token"))?,
        "s3cr3t-token\n"
    );
    let logs: Vec<_> = bai_tests::files_under(&data.path().join("logs"));
    let stdout = logs
        .iter()
        .find(|p| p.ends_with(format!("stdout-{node}.txt")))
        .unwrap_or_else(|| panic!("no stdout-{node}.txt in {logs:?}"));
    assert_eq!(std::fs::read_to_string(stdout)?, "from before\n");
    assert_eq!(
        stream_file(&mut c, "ws", "c", node, "stdout.txt").await?,
        b"from before\n"
    );

    c.submit(
        "ws",
        "ex",
        "rw",
        "c",
        "cat \"$AZ_BATCHAI_MOUNT_ROOT/data/input.txt\"; echo written > \"$AZ_BATCHAI_MOUNT_ROOT/data/out.txt\"",
    )
    .await?;
    let job = c
        .wait_job("ws", "ex", "rw", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&job), pb::ExecutionState::Succeeded, "{job:?}");
    let out = c.read_output("ws", "ex", "rw", "stdout.txt").await?;
    assert_eq!(out, b"from before\n");
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt"))?,
        "written\n"
    );

    // An agent restart adopts the mount: not mounted twice, the setup task
    // not run again, the node idle again.
    let before = bai_tests::mounted_under(coord.state_dir()).len();
    assert_eq!(
        before,
        1,
        "{:?}",
        bai_tests::mounted_under(coord.state_dir())
    );
    std::fs::remove_file(data.path().join("setup-saw-token"))?;
    let pids = bai_tests::agent_pids(coord.state_dir());
    assert_eq!(pids.len(), 1);
    for pid in &pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGTERM,
        )?;
    }
    let state = coord.state_dir().to_path_buf();
    eventually(WAIT, "a new agent", || {
        let now = bai_tests::agent_pids(&state);
        let gone = pids
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists());
        let done = gone && now.len() == 1 && now != pids;
        async move { Ok(done) }
    })
    .await?;
    eventually(WAIT, "the new agent to register and be ready", || {
        let mut c2 = c.clusters.clone();
        async move {
            let n = c2
                .list_cluster_nodes(pb::ListClusterNodesRequest {
                    workspace: "ws".into(),
                    cluster: "c".into(),
                })
                .await?
                .into_inner()
                .nodes;
            Ok(n.len() == 1
                && n[0].connected
                && n[0].state == pb::NodeState::Idle as i32
                && !n[0].agent_version.is_empty())
        }
    })
    .await?;
    // A job runs once the agent is back (so the preparation was seen through).
    c.submit(
        "ws",
        "ex",
        "again",
        "c",
        "cat \"$AZ_BATCHAI_MOUNT_ROOT/data/out.txt\"",
    )
    .await?;
    let job = c
        .wait_job("ws", "ex", "again", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&job), pb::ExecutionState::Succeeded, "{job:?}");
    assert_eq!(bai_tests::mounted_under(coord.state_dir()).len(), 1);
    assert!(
        !data.path().join("setup-saw-token").exists(),
        "setup ran again"
    );

    // The cluster goes: its nodes leave and undo their mounts.
    c.clusters
        .delete_cluster(pb::DeleteClusterRequest {
            workspace: "ws".into(),
            name: "c".into(),
        })
        .await?;
    let state = coord.state_dir().to_path_buf();
    eventually(WAIT, "the mounts to be undone", || {
        let left = bai_tests::mounted_under(&state);
        async move { Ok(left.is_empty()) }
    })
    .await?;
    assert!(data.path().join("input.txt").exists(), "the data survives");
    Ok(())
}
