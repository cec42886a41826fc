//! The agent against a scripted in-process coordinator: registration, running
//! jobs, shipping their output exactly, duplicates, start failures and
//! backpressure. Uses the real `bai-agent` binary and real processes.

mod common;

use bai_proto::v1 as pb;
use common::*;
use pb::agent_message::Msg as AgentMsg;
use pb::coordinator_message::Msg as CoordMsg;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_runs_a_job_and_ships_output_before_exit() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    let reg = s.register(vec![]).await;
    assert_eq!(reg.node_id, "node-1");
    assert_eq!((reg.workspace.as_str(), reg.cluster.as_str()), ("ws", "c1"));
    assert!(!reg.hostname.is_empty());
    assert_eq!(reg.ip_address, "127.0.0.1");
    assert!(reg.cpu_count >= 1 && reg.memory_bytes > 0);
    assert_eq!(reg.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(reg.jobs.is_empty());

    let mut job = assign(
        "job-1",
        "printf 'out-1\\n'; printf 'err-1\\n' >&2; echo \"$GREETING gpus=$AZ_BATCHAI_NUM_GPUS\"; pwd; echo \"$AZ_BATCHAI_STDOUTERR_DIR\"; exit 3",
    );
    job.environment_variables.push(env("GREETING", "hello"));
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.exited("job-1").is_some()).await;

    let temp = agent.job_temp("job-1");
    let spool = agent.job_dir("job-1").join("stdouterr");
    assert_eq!(
        store.text("job-1", STDOUT),
        format!(
            "out-1\nhello gpus=0\n{}\n{}\n",
            temp.display(),
            spool.display()
        )
    );
    assert_eq!(store.text("job-1", STDERR), "err-1\n");
    let exited = store.exited("job-1").unwrap();
    assert_eq!(exited.exit_code, 3);
    assert!(!exited.terminated && exited.error.is_none());
    let log = store.text("job-1", EXEC_LOG);
    assert!(log.contains("started the job: process"), "{log}");
    assert!(log.contains("exited with code 3"), "{log}");
    // JobStarted came before any of the job's output.
    assert_eq!(store.output_before_start, 0);
    assert_eq!(store.started.len(), 1);
    let started = &store.started[0];
    assert_eq!(started.job_id, "job-1");
    assert!(started.pid > 1 && started.start_time.is_some());
    // The spool on the node matches what was shipped.
    assert_eq!(
        std::fs::read(spool.join("stdout.txt")).unwrap(),
        store.out("job-1", STDOUT)
    );

    // Heartbeats flow at the coordinator's interval.
    s.drive(&mut store, |st| !st.heartbeats.is_empty()).await;
    assert!(store.heartbeats[0].memory_used_bytes > 0);

    // Release deletes everything kept for the job.
    s.send(CoordMsg::ReleaseJob(pb::ReleaseJob {
        job_id: "job-1".into(),
    }));
    let dir = agent.job_dir("job-1");
    assert!(
        eventually(Duration::from_secs(10), || !dir.exists() && !temp.exists()).await,
        "job directories still exist after release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_job_environment_only() {
    const SECRET: &str = "s3cr3t-Value-4a7f9c";
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let mut job = assign(
        "job-s",
        "printf '%s' \"$TOKEN\" > \"$AZ_BATCHAI_JOB_TEMP/token\"; sleep 1.5; echo done",
    );
    job.secrets.push(env("TOKEN", SECRET));
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    s.drive(&mut store, |st| !st.started.is_empty()).await;
    // While the job runs, no process has the secret on its command line.
    let with_secret: Vec<i32> = common::pids_mentioning(SECRET)
        .into_iter()
        .filter(|&pid| {
            bai_common::procfs::args(pid).is_some_and(|args| {
                args.iter()
                    .any(|a| contains(a.as_encoded_bytes(), SECRET.as_bytes()))
            })
        })
        .collect();
    assert!(with_secret.is_empty(), "secret on argv of {with_secret:?}");
    s.drive(&mut store, |st| st.exited("job-s").is_some()).await;
    assert_eq!(store.text("job-s", STDOUT), "done\n");
    assert_eq!(
        std::fs::read_to_string(agent.job_temp("job-s").join("token")).unwrap(),
        SECRET
    );
    let launch = agent.job_dir("job-s").join("launch.json");
    assert_eq!(file_mode(&launch), 0o600, "the job record holds secrets");
    assert!(!store.text("job-s", EXEC_LOG).contains(SECRET));
    assert!(!agent.log().contains(SECRET), "secret in the agent's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_output_arrives_byte_exact() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign(
        "job-bin",
        "head -c 20000000 /dev/urandom | tee \"$AZ_BATCHAI_JOB_TEMP/out.bin\"; head -c 3000001 /dev/urandom | tee \"$AZ_BATCHAI_JOB_TEMP/err.bin\" >&2",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.exited("job-bin").is_some())
        .await;
    let temp = agent.job_temp("job-bin");
    let want_out = std::fs::read(temp.join("out.bin")).unwrap();
    let want_err = std::fs::read(temp.join("err.bin")).unwrap();
    assert_eq!(want_out.len(), 20_000_000);
    assert!(
        store.out("job-bin", STDOUT) == want_out.as_slice(),
        "stdout differs"
    );
    assert!(
        store.out("job-bin", STDERR) == want_err.as_slice(),
        "stderr differs"
    );
    assert_eq!(store.duplicate_bytes, 0);
    assert_eq!(store.gaps, 0);
    assert!(
        store.max_chunk <= 1 << 20,
        "chunk of {} bytes",
        store.max_chunk
    );
    assert_eq!(store.exited("job-bin").unwrap().exit_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_coordinator_bounds_unacknowledged_bytes() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign(
        "job-bp",
        "head -c 40000000 /dev/zero",
    )));
    let mut store = Store {
        no_ack: true,
        ..Default::default()
    };
    // Without acks the agent stops at its window (16 MiB) ...
    let deadline = std::time::Instant::now() + WAIT;
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        assert!(std::time::Instant::now() < deadline, "output never stopped");
        if let Some(m) = s.recv_within(Duration::from_millis(100)).await {
            if matches!(m, AgentMsg::Output(_)) {
                quiet_since = std::time::Instant::now();
            }
            store.apply(m);
        }
    }
    let held = store.out("job-bp", STDOUT).len();
    assert!(
        held >= 8 << 20,
        "only {held} bytes before the window closed"
    );
    assert!(held <= 17 << 20, "{held} bytes in flight without acks");
    assert!(store.exited("job-bp").is_none());
    // ... and goes on once the coordinator acknowledges.
    store.no_ack = false;
    s.send(CoordMsg::OutputAck(pb::OutputAck {
        job_id: "job-bp".into(),
        stream: STDOUT,
        offset: held as u64,
    }));
    s.drive(&mut store, |st| st.exited("job-bp").is_some())
        .await;
    assert_eq!(store.out("job-bp", STDOUT).len(), 40_000_000);
    assert!(store.out("job-bp", STDOUT).iter().all(|b| *b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_assignment_never_starts_a_second_process() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let job = assign(
        "job-d",
        "echo run >> \"$AZ_BATCHAI_JOB_TEMP/runs\"; sleep 1; echo finished",
    );
    s.send(CoordMsg::AssignJob(job.clone()));
    let mut store = Store::default();
    s.drive(&mut store, |st| !st.started.is_empty()).await;
    // Re-sent while running: the agent answers with JobStarted again.
    s.send(CoordMsg::AssignJob(job.clone()));
    s.drive(&mut store, |st| st.started.len() >= 2).await;
    assert_eq!(store.started[0].pid, store.started[1].pid);
    s.drive(&mut store, |st| st.exited("job-d").is_some()).await;
    // Re-sent after the exit: JobExited again, still one run.
    s.send(CoordMsg::AssignJob(job));
    s.drive(&mut store, |st| st.exited.len() >= 2).await;
    assert_eq!(store.exited[1].exit_code, 0);
    assert_eq!(store.text("job-d", STDOUT), "finished\n");
    let runs = std::fs::read_to_string(agent.job_temp("job-d").join("runs")).unwrap();
    assert_eq!(runs, "run\n", "the job ran more than once");
    assert_eq!(store.started.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_that_cannot_start_exits_minus_one_with_the_cause() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    let cfg = agent.dir.path().join("agent.toml");
    std::fs::write(&cfg, "job_shell = \"/nonexistent/bash\"\n").unwrap();
    agent.start(&coord.url(), &["--config", cfg.to_str().unwrap()]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign("job-f", "echo never")));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.exited("job-f").is_some()).await;
    let e = store.exited("job-f").unwrap();
    assert_eq!(e.exit_code, -1);
    let err = e.error.as_ref().expect("an error");
    assert_eq!(err.code, "JobStartFailed");
    assert!(err.message.contains("/nonexistent/bash"), "{}", err.message);
    assert!(
        store
            .text("job-f", EXEC_LOG)
            .contains("could not be started")
    );
    assert!(store.started.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_mount_fails_exits_minus_one_with_the_reason() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let mut job = assign("job-m", "echo never");
    job.mount_volumes = Some(pb::MountVolumes {
        unmanaged_file_systems: vec![pb::UnmanagedFileSystemReference {
            mount_command: "echo export gone >&2; false".into(),
            relative_mount_path: "data".into(),
        }],
        ..Default::default()
    });
    s.send(CoordMsg::AssignJob(job));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.exited("job-m").is_some()).await;
    let e = store.exited("job-m").unwrap();
    assert_eq!(e.exit_code, -1);
    let err = e.error.as_ref().expect("an error");
    assert_eq!(err.code, "JobMountFailed");
    assert!(
        err.message.contains("$AZ_BATCHAI_JOB_MOUNT_ROOT/data")
            && err.message.contains("export gone"),
        "{}",
        err.message
    );
    // Every byte of execution.log, the failure included, comes before JobExited.
    assert!(
        store
            .text("job-m", EXEC_LOG)
            .contains("could not be started: cannot mount")
    );
    assert!(store.started.is_empty());
    assert_eq!(store.text("job-m", STDOUT), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_job_id_is_refused() {
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign(
        "../../escape",
        "touch /tmp/should-not-run",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.exited("../../escape").is_some())
        .await;
    let e = store.exited("../../escape").unwrap();
    assert_eq!(e.exit_code, -1);
    assert_eq!(e.error.as_ref().unwrap().code, "InvalidAssignment");
    assert!(!agent.state_dir().join("escape").exists());
    assert!(matches!(
        s.recv_within(Duration::from_millis(300)).await,
        None | Some(AgentMsg::Heartbeat(_))
    ));
}
