//! In-process tests of the agent session: a real tonic server on 127.0.0.1:0
//! and a fake agent speaking agent.proto.

#![allow(clippy::unwrap_used)]

mod support;

use bai_proto::v1 as pb;
use bai_proto::v1::agent_message::Msg as In;
use bai_proto::v1::coordinator_message::Msg as Out;
use pb::ExecutionState as S;
use pb::OutputStream::{ExecutionLog, Stdout};
use std::time::Duration;
use support::*;

/// Reads acks until one for (job, stream) reaches `offset`; returns all offsets seen.
async fn acks_until(
    a: &mut FakeAgent,
    job: &str,
    stream: pb::OutputStream,
    offset: u64,
) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        if let Out::OutputAck(ack) = a.recv().await
            && ack.job_id == job
            && ack.stream == stream as i32
        {
            seen.push(ack.offset);
            if ack.offset >= offset {
                return seen;
            }
        }
    }
}

async fn release(a: &mut FakeAgent) -> String {
    a.until(|m| match m {
        Out::ReleaseJob(r) => Some(r.job_id),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn register_assign_output_exit() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "echo hello").await;
    assert_eq!(job.execution_state, S::Queued as i32);

    let (mut a, registered) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    assert_eq!(registered.node_id, "n1");
    assert!(registered.resume.is_empty());
    let assign = a.assignment().await;
    assert_eq!(assign.job_id, job.id);
    assert_eq!(assign.command_line, "echo hello");
    assert_eq!(assign.job_name, "j");
    assert_eq!(assign.node_ids, vec!["n1".to_string()]);
    assert_eq!(
        assign.secrets[0].value, "s3cret",
        "the node gets the secret"
    );
    assert_eq!(assign.max_wall_clock_time.unwrap().seconds, 7 * 24 * 3600);
    // The assignment was committed before it was sent.
    let running = c.get_job("j").await;
    assert_eq!(running.execution_state, S::Running as i32);
    assert_eq!(running.node_ids, vec!["n1".to_string()]);
    assert_eq!(running.secrets[0].value, "", "reads never return secrets");
    assert_eq!(c.nodes().await[0].state, pb::NodeState::Running as i32);

    a.started(&job.id).await;
    a.output(&job.id, Stdout, 0, b"hello ").await;
    a.output(&job.id, Stdout, 0, b"hello ").await; // duplicate
    a.output(&job.id, Stdout, 3, b"lo world\n").await; // overlap
    a.output(&job.id, Stdout, 100, b"gap").await; // gap: dropped
    a.output(&job.id, ExecutionLog, 0, b"started\n").await;
    let seen = acks_until(&mut a, &job.id, Stdout, 12).await;
    assert!(
        seen.iter().all(|o| *o <= 12),
        "never acks past the data: {seen:?}"
    );

    a.exited(&job.id, 0, 12, false).await;
    assert_eq!(release(&mut a).await, job.id);
    let done = c.get_job("j").await;
    assert_eq!(done.execution_state, S::Succeeded as i32);
    let info = done.execution_info.unwrap();
    assert_eq!(info.exit_code, Some(0));
    assert!(info.start_time.is_some() && info.end_time.is_some());
    assert_eq!(c.nodes().await[0].state, pb::NodeState::Idle as i32);

    let path = c
        .state
        .join("output")
        .join(&done.job_output_directory_path_segment)
        .join("stdouterr/stdout.txt");
    assert_eq!(std::fs::read(path).unwrap(), b"hello world\n");
    assert_eq!(
        read_output(&c, "j", "stdout.txt", false).await,
        b"hello world\n"
    );
    assert_eq!(
        read_output(&c, "j", "execution.log", true).await,
        b"started\n"
    );
    let files = c
        .jobs()
        .list_output_files(pb::ListOutputFilesRequest {
            job: Some(key("j")),
            output_directory_id: "stdouterr".into(),
            directory: ".".into(),
            max_results: 0,
            page_token: String::new(),
            attempt: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .files;
    let names: Vec<_> = files
        .iter()
        .map(|f| (f.name.as_str(), f.content_length))
        .collect();
    assert_eq!(names, [("stdout.txt", 12), ("execution.log", 8)]);
    c.stop().await;
}

#[tokio::test]
async fn exit_waits_for_missing_output() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "true").await;
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    a.output(&job.id, Stdout, 0, b"abc").await;
    a.output(&job.id, Stdout, 6, b"ghi").await; // gap: 3..6 missing
    // The exit claims 9 bytes; only 3 are held, so it is not recorded yet.
    a.exited(&job.id, 0, 9, false).await;
    let mut saw_release = false;
    while let Some(m) = a.quiet(Duration::from_millis(300)).await {
        saw_release |= matches!(m, Out::ReleaseJob(_));
    }
    assert!(!saw_release, "released before the output was complete");
    assert_eq!(c.get_job("j").await.execution_state, S::Running as i32);
    // The agent re-sends from the acknowledged offset.
    a.output(&job.id, Stdout, 3, b"defghi").await;
    assert_eq!(release(&mut a).await, job.id);
    assert_eq!(c.get_job("j").await.execution_state, S::Succeeded as i32);
    assert_eq!(
        read_output(&c, "j", "stdout.txt", false).await,
        b"abcdefghi"
    );
    c.stop().await;
}

#[tokio::test]
async fn reconnect_resumes_held_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "sleep 1").await;
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    a.output(&job.id, Stdout, 0, b"part1-").await;
    acks_until(&mut a, &job.id, Stdout, 6).await;
    a.hang_up();
    // The node shows disconnected; the job stays running.
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.nodes().await[0].connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.get_job("j").await.execution_state, S::Running as i32);

    // The agent comes back holding the job (exited meanwhile) plus two jobs
    // the coordinator does not know.
    let held = |id: &str, exited: bool| pb::HeldJob {
        job_id: id.into(),
        start_time: Some(ts(1_700_000_000_000)),
        exited: exited.then(|| support::exited(id, 3, 12, false)),
        lengths: vec![pb::StreamLength {
            stream: Stdout as i32,
            length: 12,
        }],
    };
    let (mut a, registered) = FakeAgent::connect(
        &c,
        register(
            "n1",
            "c",
            vec![
                held(&job.id, true),
                held("ghost-running", false),
                held("ghost-done", true),
            ],
        ),
    )
    .await;
    let resume = |id: &str| {
        registered
            .resume
            .iter()
            .find(|r| r.job_id == id && r.stream == Stdout as i32)
            .map(|r| r.offset)
    };
    assert_eq!(resume(&job.id), Some(6), "resume from the durable length");
    assert_eq!(
        resume("ghost-running"),
        Some(12),
        "unwanted output is not re-sent"
    );
    let mut terminated = Vec::new();
    let mut released = Vec::new();
    for _ in 0..2 {
        match a.recv().await {
            Out::TerminateJob(t) => terminated.push(t.job_id),
            Out::ReleaseJob(r) => released.push(r.job_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(terminated, ["ghost-running"]);
    assert_eq!(released, ["ghost-done"]);
    // The held exit waits for the rest of the output.
    assert_eq!(c.get_job("j").await.execution_state, S::Running as i32);
    a.output(&job.id, Stdout, 6, b"part2\n").await;
    assert_eq!(release(&mut a).await, job.id);
    let done = c.get_job("j").await;
    assert_eq!(done.execution_state, S::Failed as i32);
    assert_eq!(done.execution_info.unwrap().exit_code, Some(3));
    assert_eq!(
        read_output(&c, "j", "stdout.txt", false).await,
        b"part1-part2\n"
    );
    // The unknown running job's exit is answered with a release.
    a.exited("ghost-running", 143, 0, true).await;
    assert_eq!(release(&mut a).await, "ghost-running");
    c.stop().await;
}

#[tokio::test]
async fn jobs_the_agent_lost_or_never_got() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(2).await;
    let lost = c.create_job("lost", "x").await;
    let fresh = c.create_job("fresh", "y").await;
    let (mut a1, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    let got = a1.assignment().await;
    assert_eq!(got.job_id, lost.id);
    a1.started(&lost.id).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while c
        .get_job("lost")
        .await
        .execution_info
        .unwrap()
        .start_time
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut a2, _) = FakeAgent::connect(&c, register("n2", "c", vec![])).await;
    assert_eq!(a2.assignment().await.job_id, fresh.id);
    a1.hang_up();
    a2.hang_up();
    // n1 comes back with nothing: its started job is lost.
    let (_a1, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    let j = c.wait_state("lost", S::Failed).await;
    assert_eq!(j.execution_info.unwrap().errors[0].code, "JobLost");
    // n2 comes back with nothing: its never-started job is sent again.
    let (mut a2, _) = FakeAgent::connect(&c, register("n2", "c", vec![])).await;
    assert_eq!(a2.assignment().await.job_id, fresh.id);
    assert_eq!(c.get_job("fresh").await.execution_state, S::Running as i32);
    c.stop().await;
}

#[tokio::test]
async fn terminate_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "sleep 100").await;
    let mut watch = c
        .jobs()
        .watch_job(pb::WatchJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    c.wait_state("j", S::Running).await;
    let t = c
        .jobs()
        .terminate_job(pb::TerminateJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.execution_state, S::Terminating as i32);
    let term = a
        .until(|m| match m {
            Out::TerminateJob(t) => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(term.job_id, job.id);
    assert_eq!(term.grace_period.unwrap().seconds, 10);
    a.exited(&job.id, 143, 0, true).await;
    release(&mut a).await;
    let mut states = Vec::new();
    while let Some(j) = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        states.push(j.execution_state);
    }
    assert_eq!(
        states,
        [
            S::Queued as i32,
            S::Running as i32,
            S::Terminating as i32,
            S::Failed as i32
        ]
    );
    let done = c.get_job("j").await;
    let info = done.execution_info.unwrap();
    assert_eq!(info.exit_code, Some(143));
    assert_eq!(info.errors[0].code, "JobTerminated");
    // Terminating an ended job changes nothing.
    let again = c
        .jobs()
        .terminate_job(pb::TerminateJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.execution_state, S::Failed as i32);
    // A queued job fails at once.
    c.create_job("q", "x").await;
    let q = c
        .jobs()
        .terminate_job(pb::TerminateJobRequest {
            job: Some(key("q")),
        })
        .await;
    // n1 is idle again, so q may have been assigned already; both paths end failed.
    let q = q.unwrap().into_inner();
    assert!(q.execution_state == S::Failed as i32 || q.execution_state == S::Terminating as i32);
    c.stop().await;
}

#[tokio::test]
async fn refused_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let mut a = FakeAgent::open(&c, register("n1", "nope", vec![]))
        .await
        .unwrap();
    let err = a.end().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("w/nope"), "{}", err.message());
    let mut a = FakeAgent::open(&c, register("bad id", "c", vec![]))
        .await
        .unwrap();
    let err = a.end().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("register.node_id:"),
        "{}",
        err.message()
    );
    c.stop().await;
}

#[tokio::test]
async fn a_second_session_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let (mut first, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    let (mut second, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    first.end().await.unwrap();
    assert!(c.nodes().await[0].connected);
    let job = c.create_job("j", "x").await;
    assert_eq!(second.assignment().await.job_id, job.id);
    c.stop().await;
}

#[tokio::test]
async fn follow_streams_output_until_the_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "x").await;
    let reader = {
        let jobs = c.jobs();
        tokio::spawn(async move {
            let mut s = jobs
                .clone()
                .stream_output_file(follow_stdout("j"))
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = s.message().await.unwrap() {
                out.extend_from_slice(&chunk.data);
            }
            out
        })
    };
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    // 3 MiB in 64 KiB pieces.
    let piece = vec![b'x'; 64 << 10];
    let mut off = 0u64;
    for _ in 0..48 {
        a.output(&job.id, Stdout, off, &piece).await;
        off += piece.len() as u64;
    }
    acks_until(&mut a, &job.id, Stdout, off).await;
    a.exited(&job.id, 0, off, false).await;
    release(&mut a).await;
    let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(got.len() as u64, off);
    c.stop().await;
}

#[tokio::test]
async fn restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "x").await;
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    a.output(&job.id, Stdout, 0, b"before\n").await;
    acks_until(&mut a, &job.id, Stdout, 7).await;
    c.stop().await;

    let c = Coordinator::start(dir.path()).await;
    let j = c.get_job("j").await;
    assert_eq!(j.execution_state, S::Running as i32);
    assert!(
        !c.nodes().await[0].connected,
        "no session survives a restart"
    );
    let held = pb::HeldJob {
        job_id: job.id.clone(),
        start_time: Some(ts(1_700_000_000_000)),
        exited: Some(support::exited(&job.id, 0, 14, false)),
        lengths: vec![pb::StreamLength {
            stream: Stdout as i32,
            length: 14,
        }],
    };
    let (mut a, registered) = FakeAgent::connect(&c, register("n1", "c", vec![held])).await;
    let resume = registered
        .resume
        .iter()
        .find(|r| r.stream == Stdout as i32)
        .unwrap();
    assert_eq!(resume.offset, 7);
    a.output(&job.id, Stdout, 7, b"after!\n").await;
    assert_eq!(release(&mut a).await, job.id);
    assert_eq!(c.get_job("j").await.execution_state, S::Succeeded as i32);
    assert_eq!(
        read_output(&c, "j", "stdout.txt", false).await,
        b"before\nafter!\n"
    );
    c.stop().await;
}

#[tokio::test]
async fn deleting_a_running_job_stops_it_and_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "x").await;
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.output(&job.id, Stdout, 0, b"data").await;
    acks_until(&mut a, &job.id, Stdout, 4).await;
    let out_dir = c
        .state
        .join("output")
        .join(&job.job_output_directory_path_segment);
    assert!(out_dir.exists());
    c.jobs()
        .delete_job(pb::DeleteJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap();
    let t = a
        .until(|m| match m {
            Out::TerminateJob(t) => Some(t.job_id),
            _ => None,
        })
        .await;
    assert_eq!(t, job.id);
    assert!(!out_dir.exists());
    let err = c
        .jobs()
        .get_job(pb::GetJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // The node is busy until the process is gone, then takes the next job.
    let next = c.create_job("next", "y").await;
    a.exited(&job.id, 143, 4, true).await;
    assert_eq!(release(&mut a).await, job.id);
    assert_eq!(a.assignment().await.job_id, next.id);
    // The agent's heartbeat is recorded.
    a.send(In::Heartbeat(pb::Heartbeat::default())).await;
    c.stop().await;
}

#[tokio::test]
async fn a_node_that_stays_away_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = bai_coordinator::Config::for_state_dir(dir.path());
    cfg.node_lost_timeout = Duration::from_millis(500);
    let c = Coordinator::start_with(cfg).await;
    c.seed(1).await;
    let job = c.create_job("j", "x").await;
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    a.hang_up();
    // The cluster's node deallocation option is requeue: a new attempt.
    let j = c.wait_state("j", S::Queued).await;
    assert_eq!(j.attempts.len(), 1);
    assert_eq!(j.attempts[0].outcome, "requeued");
    assert_eq!(j.attempts[0].errors[0].code, "JobLost");
    assert!(j.attempts[0].requeue_reason.contains("lost"), "{j:?}");
    let n = &c.nodes().await[0];
    assert_eq!(n.state, pb::NodeState::Unusable as i32);
    assert_eq!(n.errors[0].code, "NodeLost");
    // Coming back makes it usable again; the job it still holds is stopped,
    // and the node is given nothing (not the job again) until it is gone.
    let held = pb::HeldJob {
        job_id: job.id.clone(),
        start_time: Some(ts(1_700_000_000_000)),
        exited: None,
        lengths: vec![],
    };
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![held])).await;
    let t = a
        .until(|m| match m {
            Out::TerminateJob(t) => Some(t.job_id),
            _ => None,
        })
        .await;
    assert_eq!(t, job.id);
    let n = &c.nodes().await[0];
    assert_eq!(n.state, pb::NodeState::Idle as i32);
    assert!(n.errors.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get_job("j").await.execution_state,
        S::Queued as i32,
        "fenced"
    );
    a.exited(&job.id, 143, 0, true).await;
    let assigned = a.assignment().await;
    assert_eq!(
        assigned.job_id, job.id,
        "the new attempt, once the old copy is gone"
    );
    c.stop().await;
}

#[tokio::test]
async fn out_of_order_registers_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    // A first message that is not Register.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        msg: Some(In::Heartbeat(pb::Heartbeat::default())),
    })
    .await
    .unwrap();
    let mut s = pb::agent_service_client::AgentServiceClient::new(c.channel.clone())
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            tonic::Code::InvalidArgument,
            "register: must be the first message"
        )
    );
    // Register twice in one session.
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.send(In::Register(register("n1", "c", vec![]))).await;
    let err = a.end().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            tonic::Code::FailedPrecondition,
            "register: sent twice in one session"
        )
    );
    c.stop().await;
}

#[tokio::test]
async fn following_a_deleted_job_ends_with_not_found_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(1).await;
    let job = c.create_job("j", "x").await;
    let (mut a, _) = FakeAgent::connect(&c, register("n1", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    a.output(&job.id, Stdout, 0, b"hi\n").await;
    acks_until(&mut a, &job.id, Stdout, 3).await;
    let mut s = c
        .jobs()
        .stream_output_file(follow_stdout("j"))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.data, b"hi\n");
    c.jobs()
        .delete_job(pb::DeleteJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::NotFound, "job \"w/e/j\" was deleted")
    );
    c.stop().await;
}

/// A job requeued while its first node's session lives on (the node is
/// removed with requeue, as a provider does, through a second store on the
/// same database) and reassigned to another node: the first node's late
/// chunks and exit never reach the new attempt.
#[tokio::test]
async fn a_requeued_jobs_old_session_never_writes_into_the_new_attempt() {
    use bai_coordinator::domain::DeallocationOption;
    use bai_coordinator::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(2).await;
    let job = c.create_job("j", "x").await;
    let (mut a, _) = FakeAgent::connect(&c, register("na", "c", vec![])).await;
    assert_eq!(a.assignment().await.job_id, job.id);
    a.started(&job.id).await;
    a.output(&job.id, Stdout, 0, b"first attempt\n").await;
    acks_until(&mut a, &job.id, Stdout, 14).await;

    let side = bai_coordinator::store::sqlite::SqliteStore::open(&c.state.join("bai.db")).unwrap();
    side.begin_node_removal("na", DeallocationOption::Requeue, "resize down", 1)
        .await
        .unwrap();
    let requeued = side.remove_node("na", 2).await.unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(c.get_job("j").await.execution_state, S::Queued as i32);

    // A second node registers; the scheduler gives it the job.
    let (mut b, _) = FakeAgent::connect(&c, register("nb", "c", vec![])).await;
    assert_eq!(b.assignment().await.job_id, job.id);
    assert_eq!(c.get_job("j").await.node_ids, vec!["nb".to_string()]);

    // The old session, still alive, sends more of its attempt (from 0, and
    // from where it was) and its exit, all after the new attempt began.
    a.output(&job.id, Stdout, 0, b"STALE FROM NA\n").await;
    a.output(&job.id, Stdout, 14, b"more of na\n").await;
    a.exited(&job.id, 7, 25, false).await;
    // Messages are handled in order: once the exit is answered, the chunks
    // before it were handled too, and none was acknowledged.
    let answered = a
        .until(|m| match m {
            Out::OutputAck(ack) if ack.job_id == job.id => Some(Err(ack.offset)),
            Out::ReleaseJob(r) if r.job_id == job.id => Some(Ok(())),
            _ => None,
        })
        .await;
    assert_eq!(answered, Ok(()), "the old attempt's chunk was acknowledged");
    let j = c.get_job("j").await;
    assert_eq!(
        j.execution_state,
        S::Running as i32,
        "the old exit changed it"
    );
    assert_eq!(j.node_ids, vec!["nb".to_string()]);

    // The new attempt's bytes are its own, from offset 0.
    b.started(&job.id).await;
    b.output(&job.id, Stdout, 0, b"second\n").await;
    assert_eq!(
        acks_until(&mut b, &job.id, Stdout, 7).await.last(),
        Some(&7)
    );
    b.exited(&job.id, 0, 7, false).await;
    assert_eq!(release(&mut b).await, job.id);
    let done = c.get_job("j").await;
    assert_eq!(done.execution_state, S::Succeeded as i32);
    assert_eq!(done.execution_info.unwrap().exit_code, Some(0));
    assert_eq!(read_output(&c, "j", "stdout.txt", false).await, b"second\n");
    let path = c
        .state
        .join("output")
        .join(&done.job_output_directory_path_segment)
        .join("stdouterr/stdout.txt");
    assert_eq!(std::fs::read(path).unwrap(), b"second\n");
    c.stop().await;
}

/// A request that follows job `name`'s stdout from the start.
fn follow_stdout(name: &str) -> pb::StreamOutputFileRequest {
    pb::StreamOutputFileRequest {
        job: Some(key(name)),
        output_directory_id: "stdouterr".into(),
        path: "stdout.txt".into(),
        offset: 0,
        follow: true,
        attempt: 0,
    }
}

#[tokio::test]
async fn a_resize_down_of_static_nodes_removes_the_idle_one_and_shuts_its_agent_down() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(2).await;
    let job = c.create_job("j", "sleep 600").await;
    let (mut a, _) = FakeAgent::connect(&c, register("na", "c", vec![])).await;
    a.assignment().await;
    a.started(&job.id).await;
    let (mut b, _) = FakeAgent::connect(&c, register("nb", "c", vec![])).await;
    let get = || async {
        c.clusters()
            .get_cluster(pb::GetClusterRequest {
                workspace: "w".into(),
                name: "c".into(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    assert!(
        get().await.errors.is_empty(),
        "nothing missing at the target"
    );
    let resize = |target: i32| pb::UpdateClusterRequest {
        workspace: "w".into(),
        name: "c".into(),
        scale_settings: Some(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: target,
                node_deallocation_option: pb::DeallocationOption::Requeue as i32,
            }),
            auto_scale: None,
        }),
    };
    c.clusters().update_cluster(resize(1)).await.unwrap();
    // The idle node goes: its agent is told to shut down, the node deleted;
    // the busy one and its job stay.
    let reason = b
        .until(|m| match m {
            Out::Shutdown(s) => Some(s.reason),
            _ => None,
        })
        .await;
    assert!(reason.contains("removed"), "{reason}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ids: Vec<String> = c.nodes().await.into_iter().map(|n| n.node_id).collect();
        if ids == ["na"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nodes {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.get_job("j").await.execution_state, S::Running as i32);
    // The provider cannot create nodes: a target above what joined says so.
    c.clusters().update_cluster(resize(3)).await.unwrap();
    let errors = get().await.errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, "NodesMissing");
    assert!(
        errors[0].message.starts_with("2 of the target 3 nodes"),
        "{errors:?}"
    );
    drop(a);
    c.stop().await;
}
