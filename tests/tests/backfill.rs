//! EASY backfill end to end, on a node with two simulated GPUs: a whole-node
//! job waiting for a GPU job to end is not starved by GPU jobs taking the
//! other GPU; only a job whose wall-clock limit ends before the whole-node
//! job is due may use it meanwhile, and the queue says why the others wait.
//! The same for a 3-node job behind a 1-node one: a stream of 1-node jobs
//! does not starve it, and only those sure to end in time run first.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, CoordinatorOpts, custom_job, exec_state};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn submit(c: &mut Clients, name: &str, gpus: u32, wall: Duration, cmd: &str) -> Result<()> {
    submit_on(c, name, 1, gpus, wall, cmd).await
}

async fn submit_on(
    c: &mut Clients,
    name: &str,
    nodes: i32,
    gpus: u32,
    wall: Duration,
    cmd: &str,
) -> Result<()> {
    let mut job = custom_job("ws", "ex", name, "c", cmd);
    job.node_count = nodes;
    job.gpus_per_node = gpus;
    job.constraints = Some(pb::JobBasePropertiesConstraints {
        max_wall_clock_time: Some(wall.try_into()?),
    });
    c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?;
    Ok(())
}

/// When the job started, in ms since the epoch.
fn start(j: &pb::Job) -> Option<i64> {
    let t = j.execution_info.as_ref()?.start_time?;
    Some(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_node_job_is_not_starved_and_only_a_job_that_ends_in_time_backfills() -> Result<()>
{
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: vec!["--local-agent-fake-gpus".into(), "2".into()],
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c", 1).await?;
    let gate = tempfile::tempdir()?;
    let go = gate.path().join("go");

    // `first` holds one GPU until the gate opens; its limit says it ends
    // within 2 minutes, so the whole-node job is due by then.
    submit(
        &mut c,
        "first",
        1,
        Duration::from_secs(120),
        &format!("until [ -e {} ]; do sleep 0.05; done", go.display()),
    )
    .await?;
    bai_tests::eventually(WAIT, "first runs", || {
        let mut c = c.clone();
        async move { Ok(start(&c.job("ws", "ex", "first").await?).is_some()) }
    })
    .await?;
    submit(&mut c, "whole", 0, Duration::from_secs(60), "echo whole").await?;
    // Would hold the free GPU for up to an hour: past the whole-node job's start.
    submit(&mut c, "long", 1, Duration::from_secs(3600), "echo long").await?;
    // Ends within 30 s, well before `first` must: it may use the free GPU.
    submit(&mut c, "short", 1, Duration::from_secs(30), "echo short").await?;

    let short = c.wait_job("ws", "ex", "short", WAIT).await?;
    assert_eq!(
        exec_state(&short),
        pb::ExecutionState::Succeeded,
        "{short:?}"
    );
    let long = c.job("ws", "ex", "long").await?;
    assert_eq!(
        exec_state(&long),
        pb::ExecutionState::Queued,
        "the long job took the GPU the whole-node job waits for: {long:?}"
    );
    let why = long.queue_info.map(|q| q.reason).unwrap_or_default();
    assert!(why.contains("held for whole"), "{why}");
    let whole = c.job("ws", "ex", "whole").await?;
    assert_eq!(exec_state(&whole), pb::ExecutionState::Queued, "{whole:?}");

    std::fs::write(&go, b"")?;
    let whole = c.wait_job("ws", "ex", "whole", WAIT).await?;
    let long = c.wait_job("ws", "ex", "long", WAIT).await?;
    assert_eq!(
        exec_state(&whole),
        pb::ExecutionState::Succeeded,
        "{whole:?}"
    );
    assert_eq!(exec_state(&long), pb::ExecutionState::Succeeded, "{long:?}");
    assert!(
        start(&whole).is_some() && start(&whole) <= start(&long),
        "the whole-node job starts first: {whole:?} {long:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_job_is_not_starved_by_one_node_jobs() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c", 3).await?;
    let gate = tempfile::tempdir()?;
    let go = gate.path().join("go");
    let hold = format!("until [ -e {} ]; do sleep 0.05; done", go.display());
    submit(&mut c, "first", 0, Duration::from_secs(120), &hold).await?;
    bai_tests::eventually(WAIT, "first runs", || {
        let mut c = c.clone();
        async move { Ok(start(&c.job("ws", "ex", "first").await?).is_some()) }
    })
    .await?;
    // The gang needs all three nodes: it is due when `first` must end.
    submit_on(&mut c, "gang", 3, 0, Duration::from_secs(60), "echo gang").await?;
    // A stream of one-node jobs that could each take a free node now.
    for i in 0..3 {
        let name = format!("long{i}");
        submit(&mut c, &name, 0, Duration::from_secs(3600), "echo long").await?;
    }
    submit(&mut c, "short", 0, Duration::from_secs(30), "echo short").await?;

    let short = c.wait_job("ws", "ex", "short", WAIT).await?;
    assert_eq!(
        exec_state(&short),
        pb::ExecutionState::Succeeded,
        "{short:?}"
    );
    let gang = c.job("ws", "ex", "gang").await?;
    assert_eq!(exec_state(&gang), pb::ExecutionState::Queued, "{gang:?}");
    let why = gang.queue_info.map(|q| q.reason).unwrap_or_default();
    assert!(why.contains("needs 3"), "{why}");
    for i in 0..3 {
        let long = c.job("ws", "ex", &format!("long{i}")).await?;
        assert_eq!(
            exec_state(&long),
            pb::ExecutionState::Queued,
            "a long job took a node the gang waits for: {long:?}"
        );
        let why = long.queue_info.map(|q| q.reason).unwrap_or_default();
        assert!(why.contains("held for"), "{why}");
    }

    std::fs::write(&go, b"")?;
    let gang = c.wait_job("ws", "ex", "gang", WAIT).await?;
    assert_eq!(exec_state(&gang), pb::ExecutionState::Succeeded, "{gang:?}");
    assert_eq!(gang.node_ids.len(), 3, "{gang:?}");
    for i in 0..3 {
        let long = c.wait_job("ws", "ex", &format!("long{i}"), WAIT).await?;
        assert_eq!(exec_state(&long), pb::ExecutionState::Succeeded, "{long:?}");
        assert!(
            start(&gang) <= start(&long),
            "the gang starts first: {gang:?} {long:?}"
        );
    }
    Ok(())
}
