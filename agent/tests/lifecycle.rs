//! Robustness of the agent against a scripted in-process coordinator:
//! termination and wall-clock limits, dropped sessions, agent restarts that
//! adopt jobs, refused registrations, shutdown, and configuration errors.

mod common;

use bai_proto::v1 as pb;
use common::*;
use nix::sys::signal::Signal;
use pb::coordinator_message::Msg as CoordMsg;
use std::time::{Duration, Instant};
use tonic::Status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_kills_the_whole_process_tree_after_the_grace_period() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    // SIGTERM is ignored by the whole tree, so only the SIGKILL ends it.
    let mut job = assign("job-t", "trap '' TERM; sleep 1000 & sleep 1000; wait");
    job.environment_variables.push(env("TEST_MARKER", &marker));
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    s.drive(&mut store, |st| !st.started.is_empty()).await;
    assert!(
        eventually(Duration::from_secs(20), || pids_mentioning(&marker).len()
            >= 3)
        .await,
        "bash and two sleeps should be running"
    );
    let t0 = Instant::now();
    s.send(CoordMsg::TerminateJob(pb::TerminateJob {
        job_id: "job-t".into(),
        grace_period: Some(dur(1.0)),
    }));
    s.drive(&mut store, |st| st.exited("job-t").is_some()).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let e = store.exited("job-t").unwrap();
    assert!(e.terminated);
    assert_eq!(e.exit_code, 128 + 9);
    let left = pids_mentioning(&marker);
    assert!(left.is_empty(), "processes left: {left:?}");
    let log = store.text("job-t", EXEC_LOG);
    assert!(
        log.contains("the coordinator asked to terminate the job"),
        "{log}"
    );
    assert!(log.contains("SIGKILL"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_sends_sigterm_first_and_waits_for_a_job_that_handles_it() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    // The job traps TERM, leaves a marker and exits 3: an agent that sent
    // SIGKILL first (or at once) would end it with 137 and no marker.
    s.send(CoordMsg::AssignJob(assign(
        "job-g",
        "trap 'echo term > \"$AZ_BATCHAI_JOB_TEMP/marker\"; echo handled; exit 3' TERM; echo ready; sleep 1000 & wait",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.text("job-g", STDOUT) == "ready\n")
        .await;
    s.send(CoordMsg::TerminateJob(pb::TerminateJob {
        job_id: "job-g".into(),
        grace_period: Some(dur(60.0)),
    }));
    s.drive(&mut store, |st| st.exited("job-g").is_some()).await;
    let e = store.exited("job-g").unwrap();
    assert!(e.terminated);
    assert_eq!(e.exit_code, 3, "the job's own TERM handler ended it");
    assert_eq!(store.text("job-g", STDOUT), "ready\nhandled\n");
    let marker = agent.job_temp("job-g").join("marker");
    assert_eq!(std::fs::read_to_string(marker).unwrap(), "term\n");
    let log = store.text("job-g", EXEC_LOG);
    assert!(log.contains("sending SIGTERM to"), "{log}");
    assert!(!log.contains("grace period is over"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_supervisor_takes_its_job_group_and_session_with_it() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    // One sleep in the job's group, one in a group of its own (job control
    // on) within the supervisor's session.
    let mut job = assign(
        "job-l",
        "set -m; sleep 1000 & set +m; sleep 1000 & echo ready; wait",
    );
    job.environment_variables.push(env("TEST_MARKER", &marker));
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.text("job-l", STDOUT) == "ready\n")
        .await;
    assert!(
        eventually(Duration::from_secs(20), || pids_mentioning(&marker).len()
            >= 3)
        .await,
        "bash and two sleeps should be running"
    );
    let started = std::fs::read(agent.job_dir("job-l").join("started.json")).unwrap();
    let started: serde_json::Value = serde_json::from_slice(&started).unwrap();
    let shim = started["shim_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    s.drive(&mut store, |st| st.exited("job-l").is_some()).await;
    let e = store.exited("job-l").unwrap();
    assert_eq!(e.exit_code, -1);
    assert_eq!(e.error.as_ref().unwrap().code, "ExitStatusUnknown");
    let log = store.text("job-l", EXEC_LOG);
    assert!(log.contains("remaining processes of the job"), "{log}");
    assert!(
        eventually(Duration::from_secs(10), || pids_mentioning(&marker)
            .is_empty())
        .await,
        "left: {:?}",
        pids_mentioning(&marker)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wall_clock_time_ends_the_job() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let mut job = assign("job-w", "echo begin; sleep 100");
    job.max_wall_clock_time = Some(dur(1.0));
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    let t0 = Instant::now();
    s.drive(&mut store, |st| st.exited("job-w").is_some()).await;
    assert!(t0.elapsed() < Duration::from_secs(8));
    let e = store.exited("job-w").unwrap();
    assert!(!e.terminated, "not a coordinator termination");
    assert_eq!(e.exit_code, 128 + 15);
    assert_eq!(e.error.as_ref().unwrap().code, "MaxWallClockTimeExceeded");
    assert!(
        store
            .text("job-w", EXEC_LOG)
            .contains("maximum wall clock time")
    );
    assert_eq!(store.text("job-w", STDOUT), "begin\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_session_resumes_without_loss_or_duplication() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign(
        "job-r",
        "for i in $(seq 1 300); do echo \"line $i\"; echo \"err $i\" >&2; sleep 0.005; done",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.out("job-r", STDOUT).len() > 200)
        .await;
    drop(s); // the coordinator goes away mid-job

    let mut s = coord.session().await;
    let resume = store.resume("job-r");
    let reg = s.register(resume.clone()).await;
    let held = reg
        .jobs
        .iter()
        .find(|j| j.job_id == "job-r")
        .expect("job held");
    assert!(held.start_time.is_some());
    let spooled = held
        .lengths
        .iter()
        .find(|l| l.stream == STDOUT)
        .unwrap()
        .length;
    assert!(spooled >= store.out("job-r", STDOUT).len() as u64);
    store.mark();
    s.drive(&mut store, |st| st.exited("job-r").is_some()).await;

    let want_out: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    let want_err: String = (1..=300).map(|i| format!("err {i}\n")).collect();
    assert_eq!(store.text("job-r", STDOUT), want_out);
    assert_eq!(store.text("job-r", STDERR), want_err);
    assert_eq!(store.duplicate_bytes, 0, "bytes sent twice");
    assert_eq!(store.gaps, 0);
    // The new session started exactly at the resume offsets.
    for a in &resume {
        if let Some(first) = store.first_offsets.get(&(a.job_id.clone(), a.stream)) {
            assert_eq!(*first, a.offset, "stream {} resumed elsewhere", a.stream);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_adopts_a_running_job() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    // The job waits on a fifo the test writes once the agent is back, so
    // the crash lands mid-job by construction, not by timing.
    s.send(CoordMsg::AssignJob(assign(
        "job-a",
        "mkfifo \"$AZ_BATCHAI_JOB_TEMP/go\"; echo before; read x < \"$AZ_BATCHAI_JOB_TEMP/go\"; echo after; exit 7",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| {
        !st.started.is_empty() && st.text("job-a", STDOUT) == "before\n"
    })
    .await;
    let pid = store.started[0].pid;
    agent.kill();
    drop(s);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the job died with the agent"
    );

    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    let reg = s.register(store.resume("job-a")).await;
    let held = reg
        .jobs
        .iter()
        .find(|j| j.job_id == "job-a")
        .expect("job held");
    assert!(held.start_time.is_some());
    assert!(
        held.exited.is_none(),
        "still running when the agent came back"
    );
    release_fifo(agent.job_temp("job-a").join("go")).await;
    s.drive(&mut store, |st| st.exited("job-a").is_some()).await;
    assert_eq!(store.text("job-a", STDOUT), "before\nafter\n");
    assert_eq!(store.exited("job-a").unwrap().exit_code, 7);
    assert_eq!(store.duplicate_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_that_ends_while_the_agent_is_down_is_reported_on_return() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign(
        "job-b",
        "mkfifo \"$AZ_BATCHAI_JOB_TEMP/go\"; echo a; read x < \"$AZ_BATCHAI_JOB_TEMP/go\"; echo b >&2; exit 5",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.text("job-b", STDOUT) == "a\n")
        .await;
    agent.kill();
    drop(s);
    // The job ends only now, while no agent runs.
    release_fifo(agent.job_temp("job-b").join("go")).await;
    let exit_file = agent.job_dir("job-b").join("exit.json");
    assert!(eventually(Duration::from_secs(10), || exit_file.exists()).await);

    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    let reg = s.register(store.resume("job-b")).await;
    let held = reg
        .jobs
        .iter()
        .find(|j| j.job_id == "job-b")
        .expect("job held");
    assert_eq!(held.exited.as_ref().expect("exit known").exit_code, 5);
    s.drive(&mut store, |st| st.exited("job-b").is_some()).await;
    assert_eq!(store.text("job-b", STDOUT), "a\n");
    assert_eq!(store.text("job-b", STDERR), "b\n");
    assert_eq!(store.exited("job-b").unwrap().exit_code, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_but_not_its_jobs() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    let mut job = assign("job-k", "sleep 30");
    job.environment_variables.push(env("TEST_MARKER", &marker));
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    s.drive(&mut store, |st| !st.started.is_empty()).await;
    let status = agent.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "clean stop");
    assert!(
        !pids_mentioning(&marker).is_empty(),
        "the job was killed with the agent"
    );
    // The restarted agent adopts it and can still terminate it.
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(store.resume("job-k")).await;
    s.send(CoordMsg::TerminateJob(pb::TerminateJob {
        job_id: "job-k".into(),
        grace_period: Some(dur(5.0)),
    }));
    s.drive(&mut store, |st| st.exited("job-k").is_some()).await;
    let e = store.exited("job-k").unwrap();
    assert!(e.terminated);
    assert_eq!(e.exit_code, 128 + 15);
    assert!(pids_mentioning(&marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registration_is_logged_and_retried() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    for _ in 0..2 {
        let mut s = coord.session().await;
        let Some(pb::agent_message::Msg::Register(_)) = s.recv().await else {
            panic!("expected Register")
        };
        s.fail(Status::not_found("cluster ws/c1 does not exist"));
    }
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let mut store = Store::default();
    s.drive(&mut store, |st| !st.heartbeats.is_empty()).await;
    let log = agent.log();
    assert!(log.contains("refused registration"), "{log}");
    assert!(log.contains("cluster ws/c1 does not exist"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_shutdown_stops_the_agent_for_good() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::Shutdown(pb::Shutdown {
        reason: "cluster resized down".into(),
    }));
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        coord.session_within(Duration::from_secs(1)).await.is_none(),
        "reconnected"
    );
}

#[test]
fn bad_configuration_exits_with_status_2() {
    let agent = Agent::new();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bai-agent"))
            .args(args)
            .arg("--state-dir")
            .arg(agent.state_dir())
            .env_remove("BAI_COORDINATOR")
            .output()
            .unwrap()
    };
    let out = run(&["--cluster", "c1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workspace"));
    let out = run(&[
        "--workspace",
        "w",
        "--cluster",
        "c1",
        "--config",
        "/nonexistent/agent.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let bad = agent.dir.path().join("bad.toml");
    std::fs::write(&bad, "workspace = 3\n").unwrap();
    let out = run(&["--cluster", "c1", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--workspace", "w", "--cluster", "c1", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("2  bad configuration"), "{text}");
    assert!(!text.contains("shim"), "the internal subcommand is hidden");
}

/// Lets a job blocked reading the fifo at `path` go on (opening a fifo for
/// writing waits for its reader, so this waits until the job reads it).
async fn release_fifo(path: std::path::PathBuf) {
    tokio::task::spawn_blocking(move || std::fs::write(&path, b"go\n"))
        .await
        .expect("the write ran")
        .expect("the fifo takes the write");
}
