//! Elastic clusters with local agents: each node deallocation option with a
//! job running on a node being removed, a low-priority node preempted
//! mid-job (the job requeued, its attempts and their output kept apart), and
//! a stopped agent (kill -STOP) past the lost-node timeout: the job runs
//! again elsewhere, and once the agent runs again (kill -CONT) its old copy
//! is killed.

use anyhow::{Result, bail};
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, CoordinatorOpts, exec_state};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

async fn get_cluster(c: &mut Clients, name: &str) -> Result<pb::Cluster> {
    Ok(c.clusters
        .get_cluster(pb::GetClusterRequest {
            workspace: "ws".into(),
            name: name.into(),
        })
        .await?
        .into_inner())
}

async fn resize(
    c: &mut Clients,
    name: &str,
    target: i32,
    option: pb::DeallocationOption,
) -> Result<()> {
    c.clusters
        .update_cluster(pb::UpdateClusterRequest {
            workspace: "ws".into(),
            name: name.into(),
            scale_settings: Some(pb::ScaleSettings {
                manual: Some(pb::ManualScaleSettings {
                    target_node_count: target,
                    node_deallocation_option: option as i32,
                }),
                auto_scale: None,
            }),
        })
        .await?;
    Ok(())
}

/// A job that prints "first" and its pid and then waits for ever on its
/// first attempt, and prints "second" and ends on the next one (a marker in
/// `dir` tells them apart).
fn twice(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "if [ -e {d}/started ]; then echo second; else touch {d}/started; echo $$ > {d}/pid; \
         echo first; exec sleep 600; fi"
    )
}

async fn wait_state(c: &mut Clients, name: &str, want: pb::ExecutionState) -> Result<pb::Job> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let j = c.job("ws", "ex", name).await?;
        if exec_state(&j) == want {
            return Ok(j);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("job {name} is not {want:?}: {j:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_file(path: &Path) -> Result<String> {
    bai_tests::wait_until(WAIT, &format!("{}", path.display()), || path.exists())?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_deallocation_option_decides_what_a_removed_nodes_job_becomes() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "req", 1).await?;
    for name in ["term", "wait"] {
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(bai_tests::cluster("ws", name, 1)),
            })
            .await?;
        c.wait_idle_nodes("ws", name, 1, WAIT).await?;
    }
    let dirs: Vec<_> = ["req", "term", "wait"]
        .iter()
        .map(|n| coord.state_dir().join(format!("marks-{n}")))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d)?;
    }
    c.submit("ws", "ex", "req", "req", &twice(&dirs[0])).await?;
    c.submit("ws", "ex", "term", "term", &twice(&dirs[1]))
        .await?;
    let gate = dirs[2].join("go");
    let wait_cmd = format!(
        "echo waiting; until [ -e {} ]; do sleep 0.1; done; echo finished",
        gate.display()
    );
    c.submit("ws", "ex", "wait", "wait", &wait_cmd).await?;
    for name in ["req", "term", "wait"] {
        wait_state(&mut c, name, pb::ExecutionState::Running).await?;
    }
    wait_file(&dirs[0].join("pid")).await?;
    wait_file(&dirs[1].join("pid")).await?;

    use pb::DeallocationOption as D;
    resize(&mut c, "req", 0, D::Requeue).await?;
    resize(&mut c, "term", 0, D::Terminate).await?;
    resize(&mut c, "wait", 0, D::Waitforjobcompletion).await?;

    // requeue: back in the queue, its first attempt ended "requeued".
    let j = wait_state(&mut c, "req", pb::ExecutionState::Queued).await?;
    assert_eq!(j.attempts.len(), 1, "{j:?}");
    assert_eq!(j.attempts[0].outcome, "requeued");
    assert!(
        j.attempts[0].requeue_reason.contains("cluster target 0"),
        "{j:?}"
    );
    // terminate: ended failed, and it stays so.
    let t = wait_state(&mut c, "term", pb::ExecutionState::Failed).await?;
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].outcome, "failed");
    // waitforjobcompletion: the node leaves only once its job ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = c.job("ws", "ex", "wait").await?;
    assert_eq!(exec_state(&w), pb::ExecutionState::Running);
    let wc = get_cluster(&mut c, "wait").await?;
    assert_eq!(wc.current_node_count, 1);
    assert_eq!(
        wc.node_state_counts.unwrap_or_default().leaving_node_count,
        1
    );
    assert_eq!(wc.allocation_state, pb::AllocationState::Resizing as i32);
    std::fs::write(&gate, b"")?;
    let w = c.wait_job("ws", "ex", "wait", WAIT).await?;
    assert_eq!(exec_state(&w), pb::ExecutionState::Succeeded);
    assert_eq!(
        c.read_output("ws", "ex", "wait", "stdout.txt").await?,
        b"waiting\nfinished\n"
    );
    for name in ["req", "term", "wait"] {
        bai_tests::eventually(WAIT, &format!("{name} at zero nodes, steady"), || {
            let mut c = c.clone();
            async move {
                let cl = get_cluster(&mut c, name).await?;
                Ok(cl.current_node_count == 0
                    && cl.allocation_state == pb::AllocationState::Steady as i32)
            }
        })
        .await?;
    }

    // Growing again: the requeued job runs to success in a second attempt,
    // each attempt's output kept apart; the terminated one does not run.
    resize(&mut c, "req", 1, D::Requeue).await?;
    resize(&mut c, "term", 1, D::Terminate).await?;
    let j = c.wait_job("ws", "ex", "req", WAIT).await?;
    assert_eq!(exec_state(&j), pb::ExecutionState::Succeeded, "{j:?}");
    let outcomes: Vec<_> = j.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["requeued", "succeeded"]);
    assert_ne!(j.attempts[0].node_ids, j.attempts[1].node_ids);
    assert_eq!(
        c.read_output("ws", "ex", "req", "stdout.txt").await?,
        b"second\n"
    );
    assert_eq!(
        c.read_attempt_output("ws", "ex", "req", "stdout.txt", 1)
            .await?,
        b"first\n"
    );
    c.wait_idle_nodes("ws", "term", 1, WAIT).await?;
    assert_eq!(
        exec_state(&c.job("ws", "ex", "term").await?),
        pb::ExecutionState::Failed
    );

    // The record tells it: each node leaving with its option, and removed.
    let ev = c.cluster_events("ws", "req").await?;
    let kinds: Vec<_> = ev.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "created",
        "node-joined",
        "resize",
        "node-leaving",
        "node-removed",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let leaving = ev.iter().find(|e| e.kind == "node-leaving").unwrap();
    assert!(leaving.message.contains("requeue"), "{leaving:?}");
    assert!(
        leaving.message.contains("1 job terminated, to run again"),
        "{leaving:?}"
    );
    // An attempt number the job does not have is refused by name.
    let err = c
        .read_attempt_output("ws", "ex", "req", "stdout.txt", 3)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("attempt"), "{err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_low_priority_node_requeues_its_job_which_reruns_to_success() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "dedicated", 1).await?;
    let low = pb::Cluster {
        vm_priority: pb::VmPriority::Lowpriority as i32,
        ..bai_tests::cluster("ws", "spot", 1)
    };
    c.clusters
        .create_cluster(pb::CreateClusterRequest { cluster: Some(low) })
        .await?;
    c.wait_idle_nodes("ws", "spot", 1, WAIT).await?;

    // A dedicated node cannot be preempted: refused by name, nothing changes.
    let ded = c.nodes("ws", "dedicated").await?;
    let err = c
        .clusters
        .preempt_node(pb::PreemptNodeRequest {
            workspace: "ws".into(),
            cluster: "dedicated".into(),
            node_id: ded[0].node_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("cluster.vm_priority"),
        "{}",
        err.message()
    );
    assert_eq!(c.nodes("ws", "dedicated").await?, ded);

    let dir = coord.state_dir().join("marks");
    std::fs::create_dir_all(&dir)?;
    c.submit("ws", "ex", "j", "spot", &twice(&dir)).await?;
    wait_state(&mut c, "j", pb::ExecutionState::Running).await?;
    wait_file(&dir.join("pid")).await?;
    let first_node = c.job("ws", "ex", "j").await?.node_ids[0].clone();
    // The documented way to preempt a node on purpose: the CLI.
    let out = coord
        .cli()
        .args([
            "cluster",
            "node",
            "preempt",
            "-w",
            "ws",
            "-c",
            "spot",
            "-n",
            &first_node,
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let j = c.wait_job("ws", "ex", "j", WAIT).await?;
    assert_eq!(exec_state(&j), pb::ExecutionState::Succeeded, "{j:?}");
    assert_eq!(j.attempts.len(), 2, "{j:?}");
    let (a1, a2) = (&j.attempts[0], &j.attempts[1]);
    assert_eq!((a1.number, a1.outcome.as_str()), (1, "requeued"));
    assert_eq!(a1.requeue_reason, "preempted: by an operator");
    assert_eq!(a1.node_ids, std::slice::from_ref(&first_node));
    assert_eq!(
        (a2.number, a2.outcome.as_str(), a2.exit_code),
        (2, "succeeded", Some(0))
    );
    assert_ne!(
        a2.node_ids,
        std::slice::from_ref(&first_node),
        "a new node replaced it"
    );
    assert!(a1.start_time.is_some() && a1.end_time.is_some());
    assert_eq!(
        c.read_attempt_output("ws", "ex", "j", "stdout.txt", 1)
            .await?,
        b"first\n"
    );
    assert_eq!(
        c.read_output("ws", "ex", "j", "stdout.txt").await?,
        b"second\n"
    );
    let cl = get_cluster(&mut c, "spot").await?;
    let recent: Vec<_> = cl.recent_events.iter().map(|e| e.kind.as_str()).collect();
    assert!(recent.contains(&"node-preempted"), "{recent:?}");
    // `bai job show` shows both attempts.
    let out = coord
        .cli()
        .args(["job", "show", "-w", "ws", "-e", "ex", "-n", "j"])
        .output()?;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let attempts = shown.pointer("/attempts").and_then(|a| a.as_array());
    assert_eq!(attempts.map(Vec::len), Some(2), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_past_the_grace_loses_its_job_and_kills_the_old_copy_when_it_wakes()
-> Result<()> {
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: [
            "--heartbeat-interval-secs",
            "1",
            "--node-lost-timeout-secs",
            "4",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 2).await?;
    let dir = coord.state_dir().join("marks");
    std::fs::create_dir_all(&dir)?;
    c.submit("ws", "ex", "j", "c1", &twice(&dir)).await?;
    wait_state(&mut c, "j", pb::ExecutionState::Running).await?;
    let old_pid: i32 = wait_file(&dir.join("pid")).await?.parse()?;
    let node = c.job("ws", "ex", "j").await?.node_ids[0].clone();
    let agent: i32 = std::fs::read_to_string(
        coord
            .state_dir()
            .join("local-nodes")
            .join(&node)
            .join("agent.pid"),
    )?
    .trim()
    .parse()?;
    kill(Pid::from_raw(agent), Signal::SIGSTOP)?;
    let resumed = scopeguard(agent);

    // Past the grace: the node is lost and the job runs again elsewhere.
    let j = c.wait_job("ws", "ex", "j", WAIT).await?;
    assert_eq!(exec_state(&j), pb::ExecutionState::Succeeded, "{j:?}");
    assert_eq!(j.attempts.len(), 2, "{j:?}");
    assert!(j.attempts[0].requeue_reason.contains("lost"), "{j:?}");
    assert_ne!(j.attempts[1].node_ids, std::slice::from_ref(&node));
    assert_eq!(
        c.read_output("ws", "ex", "j", "stdout.txt").await?,
        b"second\n"
    );
    assert!(
        alive(old_pid),
        "the old copy runs on while its agent is stopped"
    );
    let lost = c
        .nodes("ws", "c1")
        .await?
        .into_iter()
        .find(|n| n.node_id == node)
        .unwrap();
    assert_eq!(lost.state, pb::NodeState::Unusable as i32);

    // The agent wakes: told to kill the job that went elsewhere, it does.
    drop(resumed);
    bai_tests::wait_until(WAIT, "the old copy killed", || !alive(old_pid))?;
    c.wait_idle_nodes("ws", "c1", 2, WAIT).await?;
    assert_eq!(
        c.read_output("ws", "ex", "j", "stdout.txt").await?,
        b"second\n"
    );
    assert_eq!(
        c.read_attempt_output("ws", "ex", "j", "stdout.txt", 1)
            .await?,
        b"first\n"
    );
    let ev = c.cluster_events("ws", "c1").await?;
    assert!(
        ev.iter()
            .any(|e| e.kind == "node-lost" && e.node_id == node),
        "{ev:?}"
    );
    Ok(())
}

/// Sends SIGCONT to `pid` when dropped (so a failing test leaves no agent
/// stopped).
fn scopeguard(pid: i32) -> impl Drop {
    struct Cont(i32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
        }
    }
    Cont(pid)
}
