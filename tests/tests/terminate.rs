//! Terminating a running job sends SIGTERM first (the job's trap runs and its
//! output is kept), then removes its whole process tree after the grace
//! period, even processes that ignore SIGTERM, and the job ends failed.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, exec_state, procs};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_kills_the_process_tree_within_the_grace_period() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;
    // The job's shell traps SIGTERM: the trap prints a marker, so an agent that
    // SIGKILLs at once leaves none. The shell then waits again for its children
    // (after every SIGTERM, should one come twice), which ignore SIGTERM, so
    // only SIGKILL after the grace period ends the job; a grandchild runs in a
    // nested shell.
    c.submit(
        "ws",
        "ex",
        "tree",
        "c1",
        "trap 'echo got-sigterm-in-trap' TERM; \
         bash -c \"trap '' TERM; sleep 31337 & sleep 31338 & bash -c 'sleep 31339 & wait' & wait\" & \
         until wait; do echo after-the-trap; done",
    )
    .await?;
    bai_tests::eventually(Duration::from_secs(30), "the job's processes", || async {
        Ok(["sleep 31337", "sleep 31338", "sleep 31339"]
            .iter()
            .all(|p| procs::with_cmdline(p).iter().any(|&pid| procs::alive(pid))))
    })
    .await?;

    let started = Instant::now();
    let job = c
        .jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "tree")),
        })
        .await?
        .into_inner();
    assert!(
        matches!(
            exec_state(&job),
            pb::ExecutionState::Terminating | pb::ExecutionState::Failed
        ),
        "{job:?}"
    );
    let done = c
        .wait_job("ws", "ex", "tree", Duration::from_secs(40))
        .await?;
    let took = started.elapsed();
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let stdout = c.read_output("ws", "ex", "tree", "stdout.txt").await?;
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(
        stdout.contains("got-sigterm-in-trap\nafter-the-trap\n"),
        "the job's SIGTERM trap did not run (killed without SIGTERM first?): {stdout}"
    );
    // The default grace period is 10 s: nothing may end the job before it (the
    // children ignore SIGTERM); allow scheduling slack on 2 cores above it.
    assert!(
        took >= Duration::from_secs(9),
        "the job ended {took:?} after terminate, before the 10 s grace period"
    );
    assert!(took < Duration::from_secs(25), "terminate took {took:?}");
    let left: Vec<_> = ["sleep 31337", "sleep 31338", "sleep 31339"]
        .iter()
        .flat_map(|p| procs::with_cmdline(p))
        .filter(|&pid| procs::alive(pid))
        .collect();
    assert!(left.is_empty(), "processes of the job survived: {left:?}");
    let log = c.read_output("ws", "ex", "tree", "execution.log").await?;
    assert!(
        String::from_utf8_lossy(&log)
            .to_lowercase()
            .contains("terminat"),
        "execution.log does not say the job was terminated: {}",
        String::from_utf8_lossy(&log)
    );

    // Terminating a queued job fails it at once; terminating again changes nothing.
    // The job waits on a cluster with no nodes, so it cannot start first.
    c.clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(bai_tests::cluster("ws", "empty", 0)),
        })
        .await?;
    let queued = c
        .submit("ws", "ex", "queued", "empty", "echo never")
        .await?;
    assert_eq!(
        exec_state(&queued),
        pb::ExecutionState::Queued,
        "{queued:?}"
    );
    c.jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "queued")),
        })
        .await?;
    let q = c
        .wait_job("ws", "ex", "queued", Duration::from_secs(10))
        .await?;
    assert_eq!(exec_state(&q), pb::ExecutionState::Failed, "{q:?}");
    let again = c
        .jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "tree")),
        })
        .await?
        .into_inner();
    assert_eq!(exec_state(&again), pb::ExecutionState::Failed);
    assert_eq!(
        again.execution_info, done.execution_info,
        "terminating an ended job changed it"
    );
    Ok(())
}
