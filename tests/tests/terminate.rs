//! Terminating a running job removes its whole process tree within the grace
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
    // The job and its children ignore SIGTERM, so only SIGKILL after the grace
    // period ends them; a grandchild runs in a nested shell.
    c.submit(
        "ws",
        "ex",
        "tree",
        "c1",
        "trap '' TERM; sleep 31337 & sleep 31338 & bash -c 'sleep 31339 & wait' & wait",
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
    // The default grace period is 10 s; allow scheduling slack on 2 cores.
    assert!(took < Duration::from_secs(20), "terminate took {took:?}");
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
    c.clusters
        .update_cluster(pb::UpdateClusterRequest {
            workspace: "ws".into(),
            name: "c1".into(),
            scale_settings: Some(pb::ScaleSettings {
                manual: Some(pb::ManualScaleSettings {
                    target_node_count: 0,
                    ..Default::default()
                }),
                auto_scale: None,
            }),
        })
        .await?;
    c.submit("ws", "ex", "queued", "c1", "echo never").await?;
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
