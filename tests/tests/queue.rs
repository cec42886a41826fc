//! A queue that says why: on a one-node cluster busy with a long job, the
//! jobs behind it show (through the real `bai job show -o json`) their place
//! in the queue and that no node of the cluster is idle; when the long job is
//! terminated the queue moves on.

use anyhow::{Context, Result, bail};
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, exec_state};
use serde_json::Value;
use std::time::Duration;

/// `bai job show -o json` of job `name`.
fn show(coord: &Coordinator, name: &str) -> Result<Value> {
    let out = coord
        .cli()
        .args([
            "job", "show", "-w", "ws", "-e", "ex", "-n", name, "-o", "json",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "bai job show {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("bai job show printed no JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_show_their_place_and_why_they_wait() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;
    c.submit("ws", "ex", "long", "c1", "sleep 30").await?;
    bai_tests::eventually(Duration::from_secs(30), "the long job running", || {
        let mut c = c.clone();
        async move { Ok(exec_state(&c.job("ws", "ex", "long").await?) == pb::ExecutionState::Running) }
    })
    .await?;
    c.submit("ws", "ex", "second", "c1", "sleep 30").await?;
    c.submit("ws", "ex", "third", "c1", "true").await?;

    let long = show(&coord, "long")?;
    assert_eq!(long["executionState"], "running");
    assert!(
        long.get("queueInfo").is_none(),
        "a running job is in no queue: {long}"
    );
    let busy = "needs 1 idle node in cluster c1: 0 idle, 1 running";
    for (name, position) in [("second", 1), ("third", 2)] {
        let j = show(&coord, name)?;
        assert_eq!(j["executionState"], "queued", "{j}");
        assert_eq!(j["queueInfo"]["position"], position, "{name}: {j}");
        assert_eq!(j["queueInfo"]["reason"], busy, "{name}: {j}");
    }
    // The table of `bai job list` says it too.
    let out = coord
        .cli()
        .args(["job", "list", "-w", "ws", "-e", "ex", "-o", "tsv"])
        .output()?;
    let tsv = String::from_utf8_lossy(&out.stdout);
    assert!(
        tsv.lines()
            .any(|l| l.starts_with("third\t") && l.ends_with(&format!("\t2\t{busy}"))),
        "{tsv}"
    );

    c.jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "long")),
        })
        .await?;
    // The second job takes the node; the third moves up and still waits.
    bai_tests::eventually(Duration::from_secs(30), "the queue moving on", || {
        let coord = &coord;
        async move {
            let second = show(coord, "second")?;
            let third = show(coord, "third")?;
            Ok(second["executionState"] == "running"
                && second.get("queueInfo").is_none()
                && third["queueInfo"]["position"] == 1
                && third["queueInfo"]["reason"] == busy)
        }
    })
    .await?;
    Ok(())
}
