//! The local provider (`--local-agents`) with a stand-in agent: a shell script
//! that records its arguments and runs until SIGTERM. Where a test needs the
//! node registered, a fake agent opens the session with the same node id.

#![allow(clippy::unwrap_used)]

mod support;

use bai_proto::v1 as pb;
use bai_proto::v1::coordinator_message::Msg as Out;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// Writes the stand-in agent as `<dir>/bin/bai-agent`.
fn fake_agent(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("bai-agent");
    std::fs::write(
        &path,
        r#"#!/bin/sh
state=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--state-dir" ]; then state="$a"; fi
  prev="$a"
done
echo "$@" > "$state/args"
trap 'echo terminated >> "$state/signals"; exit 0' TERM
while :; do sleep 0.05; done
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn node_dirs(state: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(state.join("local-nodes"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn pid_of(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Live and not a zombie.
fn alive(pid: i32) -> bool {
    bai_common::procfs::alive(pid)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` node dirs whose agents are running and wrote their arguments.
async fn running_agents(state: &Path, n: usize) -> Vec<PathBuf> {
    eventually(&format!("{n} running agents"), || {
        let dirs = node_dirs(state);
        dirs.len() == n
            && dirs.iter().all(|d| {
                d.join("args").exists() && d.join("agent.pid").exists() && alive(pid_of(d))
            })
    })
    .await;
    node_dirs(state)
}

async fn resize(c: &Coordinator, target: i32) -> pb::Cluster {
    c.clusters()
        .update_cluster(pb::UpdateClusterRequest {
            workspace: "w".into(),
            name: "c".into(),
            scale_settings: Some(pb::ScaleSettings {
                manual: Some(pb::ManualScaleSettings {
                    target_node_count: target,
                    node_deallocation_option: 0,
                }),
                auto_scale: None,
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

fn config(state: &Path, bin: &Path) -> bai_coordinator::Config {
    let mut cfg = bai_coordinator::Config::for_state_dir(state);
    cfg.local_agents = true;
    cfg.agent_bin = Some(bin.to_path_buf());
    cfg
}

#[tokio::test]
async fn agents_follow_the_target_and_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bin = fake_agent(dir.path());
    let c = Coordinator::start_with(config(&state, &bin)).await;
    c.seed(2).await;
    let dirs = running_agents(&state, 2).await;
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (d, id) in dirs.iter().zip(&ids) {
        assert!(id.starts_with("c-"), "{id}");
        // The stand-in agent writes its arguments once it runs: wait for them.
        let read = || std::fs::read_to_string(d.join("args")).unwrap_or_default();
        eventually("the agent's arguments", || !read().trim().is_empty()).await;
        let args = read();
        // Local agents share this machine, so they share the jobs' shared temp.
        let want = format!(
            "--coordinator http://{} --workspace w --cluster c --node-id {id} --state-dir {} --shared-job-temp-root {}",
            c.addr,
            d.display(),
            state.join("shared-job-temp").display()
        );
        assert_eq!(args.trim(), want);
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("local-node.json")).unwrap())
                .unwrap();
        assert_eq!(rec["cluster"], "c");
    }
    // A dead agent is started again with the same id.
    let first = pid_of(&dirs[0]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("respawn", || {
        let p = pid_of(&dirs[0]);
        p != first && alive(p)
    })
    .await;
    assert_eq!(node_dirs(&state), dirs);

    // A graceful stop sends SIGTERM to the agents ...
    let pids: Vec<i32> = dirs.iter().map(|d| pid_of(d)).collect();
    c.stop().await;
    for (d, p) in dirs.iter().zip(&pids) {
        assert!(!alive(*p));
        assert_eq!(
            std::fs::read_to_string(d.join("signals")).unwrap().trim(),
            "terminated"
        );
    }
    // ... and the next start brings them back with the same ids.
    let c = Coordinator::start_with(config(&state, &bin)).await;
    let again = running_agents(&state, 2).await;
    assert_eq!(again, dirs);

    // Resize down: the surplus agent is stopped and its directory removed.
    let cl = resize(&c, 1).await;
    assert_eq!(
        cl.scale_settings.unwrap().manual.unwrap().target_node_count,
        1
    );
    let left = running_agents(&state, 1).await;
    assert!(dirs.contains(&left[0]));
    // Deleting the cluster stops the rest.
    let last = pid_of(&left[0]);
    c.clusters()
        .delete_cluster(pb::DeleteClusterRequest {
            workspace: "w".into(),
            name: "c".into(),
        })
        .await
        .unwrap();
    eventually("cluster agents gone", || {
        node_dirs(&state).is_empty() && !alive(last)
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn resize_down_requeues_the_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bin = fake_agent(dir.path());
    let c = Coordinator::start_with(config(&state, &bin)).await;
    c.seed(1).await;
    let node_dir = running_agents(&state, 1).await.remove(0);
    let node_id = node_dir.file_name().unwrap().to_string_lossy().into_owned();
    let pid = pid_of(&node_dir);
    // Play the agent of that node.
    let (mut a, _) = FakeAgent::connect(&c, register(&node_id, "c", vec![])).await;
    let job = c.create_job("j", "sleep 100").await;
    assert_eq!(a.assignment().await.job_id, job.id);
    a.started(&job.id).await;
    a.output(&job.id, pb::OutputStream::Stdout, 0, b"attempt 1\n")
        .await;

    resize(&c, 0).await;
    let t = a
        .until(|m| match m {
            Out::TerminateJob(t) => Some(t.job_id),
            _ => None,
        })
        .await;
    assert_eq!(t, job.id);
    let nodes = c.nodes().await;
    assert_eq!(nodes[0].state, pb::NodeState::Leaving as i32);
    assert_eq!(
        c.get_job("j").await.execution_state,
        pb::ExecutionState::Terminating as i32
    );
    a.exited(&job.id, 143, 10, true).await;
    // Back in the queue, then the node is shut down and removed.
    let mut got_shutdown = false;
    let mut got_release = false;
    while !(got_shutdown && got_release) {
        match a.recv().await {
            Out::Shutdown(_) => got_shutdown = true,
            Out::ReleaseJob(r) => {
                assert_eq!(r.job_id, job.id);
                got_release = true;
            }
            _ => {}
        }
    }
    let j = c.get_job("j").await;
    assert_eq!(j.execution_state, pb::ExecutionState::Queued as i32);
    assert_eq!(j.execution_info.unwrap().exit_code, None);
    eventually("node removed", || {
        !alive(pid) && node_dirs(&state).is_empty()
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !c.nodes().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never left the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cl = c
        .clusters()
        .get_cluster(pb::GetClusterRequest {
            workspace: "w".into(),
            name: "c".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cl.allocation_state, pb::AllocationState::Steady as i32);
    assert_eq!(cl.current_node_count, 0);
    c.stop().await;
}
