//! A queued job's place in its cluster's queue and why it waits, on every
//! read that returns a job (GetJob, ListJobs, WatchJob), from the store and
//! the live sessions; none once the job left the queue.

#![allow(clippy::unwrap_used)]

mod support;

use bai_proto::v1 as pb;
use pb::ExecutionState as S;
use std::time::Duration;
use support::*;

fn queue(j: &pb::Job) -> Option<(u32, String)> {
    j.queue_info
        .as_ref()
        .map(|q| (q.position, q.reason.clone()))
}

async fn list(c: &Coordinator) -> Vec<pb::Job> {
    c.jobs()
        .list_jobs(pb::ListJobsRequest {
            workspace: "w".into(),
            experiment: "e".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
}

/// Waits until GetJob of `name` shows `want` as its reason.
async fn wait_reason(c: &Coordinator, name: &str, want: &str) -> pb::Job {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let j = c.get_job(name).await;
        if queue(&j).is_some_and(|(_, r)| r == want) {
            return j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {name} never said {want:?}: {:?}",
            j.queue_info
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn queued_jobs_say_their_place_and_why_they_wait() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let first = c.create_job("first", "sleep 100").await;
    assert_eq!(
        queue(&c.get_job("first").await),
        Some((1, "cluster c has no nodes yet: its target is 1".into()))
    );

    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&first.id).await;
    c.wait_state("first", S::Running).await;
    c.create_job("second", "true").await;
    c.create_job("third", "true").await;
    let busy = "needs 1 idle node in cluster c: 0 idle, 1 running";
    let jobs = list(&c).await;
    let by_name = |n: &str| jobs.iter().find(|j| j.name == n).unwrap();
    assert_eq!(
        queue(by_name("first")),
        None,
        "a running job is in no queue"
    );
    assert_eq!(queue(by_name("second")), Some((1, busy.into())));
    assert_eq!(queue(by_name("third")), Some((2, busy.into())));

    let mut watch = c
        .jobs()
        .watch_job(pb::WatchJobRequest {
            job: Some(key("third")),
        })
        .await
        .unwrap()
        .into_inner();
    let seen = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(queue(&seen), Some((2, busy.into())));

    // The node's agent goes away: the live session, not the stored flag, says so.
    a.hang_up();
    wait_reason(
        &c,
        "second",
        "needs 1 idle node in cluster c: 0 idle, 1 disconnected",
    )
    .await;

    // Terminated, the second job leaves the queue and the third moves up.
    c.jobs()
        .terminate_job(pb::TerminateJobRequest {
            job: Some(key("second")),
        })
        .await
        .unwrap();
    let second = c.get_job("second").await;
    assert_eq!(second.execution_state, S::Failed as i32);
    assert_eq!(queue(&second), None);
    let third = c.get_job("third").await;
    assert_eq!(queue(&third).map(|(p, _)| p), Some(1));
    c.stop().await;
}
