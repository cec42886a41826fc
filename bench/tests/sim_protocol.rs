//! The simulated agents against an in-process fake coordinator that speaks
//! agent.proto: they register first, heartbeat with GPU metrics at the
//! interval Registered names, answer AssignJob with JobStarted, their output
//! and JobExited carrying the right lengths, never start a re-sent job twice,
//! forget a job on ReleaseJob and leave on Shutdown; with `run_sleeps`, a
//! `sleep <s>` job runs that long, a re-sent assignment of a running job is
//! answered with JobStarted again, and TerminateJob ends one at once (143).

use bai_bench::sim::{Fleet, SimConfig};
use bai_proto::v1 as pb;
use pb::agent_message::Msg as Up;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::coordinator_message::Msg as Down;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

/// Every agent message the fake received, with the node id of its session.
type Log = mpsc::UnboundedSender<(String, Up)>;

/// What the fake coordinator does after the first two heartbeats.
#[derive(Clone, Copy)]
enum Script {
    /// Assign `true` twice, release, shut down.
    Instant,
    /// Assign `sleep 0.3` twice, wait for its exit; assign `sleep 30`,
    /// terminate it; shut down.
    Timed,
}

struct Fake {
    log: Log,
    script: Script,
}

fn down(m: Down) -> Result<pb::CoordinatorMessage, tonic::Status> {
    Ok(pb::CoordinatorMessage { msg: Some(m) })
}

/// Reads agent messages until `want` matches one; logs all of them.
async fn until(
    inbound: &mut tonic::Streaming<pb::AgentMessage>,
    node: &str,
    log: &Log,
    mut want: impl FnMut(&Up) -> bool,
) -> Option<()> {
    while let Ok(Some(m)) = inbound.message().await {
        let msg = m.msg?;
        let hit = want(&msg);
        let _ = log.send((node.to_string(), msg));
        if hit {
            return Some(());
        }
    }
    None
}

#[tonic::async_trait]
impl AgentService for Fake {
    type SessionStream =
        Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, tonic::Status>> + Send>>;

    async fn join(
        &self,
        _req: tonic::Request<pb::JoinRequest>,
    ) -> Result<tonic::Response<pb::JoinResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the fake coordinator does not join agents",
        ))
    }

    async fn session(
        &self,
        req: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.and_then(|m| m.msg);
        let Some(Up::Register(reg)) = first else {
            return Err(tonic::Status::invalid_argument(
                "first message must be Register",
            ));
        };
        let node = reg.node_id.clone();
        let (log, script) = (self.log.clone(), self.script);
        let _ = log.send((node.clone(), Up::Register(reg)));
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let send = |m| tx.send(down(m));
            let _ = send(Down::Registered(pb::Registered {
                node_id: node.clone(),
                heartbeat_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 100_000_000,
                }),
                resume: vec![],
            }))
            .await;
            // Two heartbeats first, then a job, the same job again, release, shutdown.
            let mut beats = 0;
            until(&mut inbound, &node, &log, |m| {
                beats += matches!(m, Up::Heartbeat(_)) as u32;
                beats == 2
            })
            .await;
            let assign = |id: &str, cmd: &str| {
                Down::AssignJob(pb::AssignJob {
                    job_id: id.into(),
                    command_line: cmd.into(),
                    ..Default::default()
                })
            };
            match script {
                Script::Instant => {
                    for _ in 0..2 {
                        let _ = send(assign("j1", "true")).await;
                        until(&mut inbound, &node, &log, |m| matches!(m, Up::JobExited(_))).await;
                    }
                    let _ = send(Down::ReleaseJob(pb::ReleaseJob {
                        job_id: "j1".into(),
                    }))
                    .await;
                }
                Script::Timed => {
                    for _ in 0..2 {
                        let _ = send(assign("j1", "sleep 0.3")).await;
                        until(&mut inbound, &node, &log, |m| {
                            matches!(m, Up::JobStarted(_))
                        })
                        .await;
                    }
                    until(&mut inbound, &node, &log, |m| matches!(m, Up::JobExited(_))).await;
                    let _ = send(assign("j2", "sleep 30")).await;
                    until(&mut inbound, &node, &log, |m| {
                        matches!(m, Up::JobStarted(_))
                    })
                    .await;
                    let _ = send(Down::TerminateJob(pb::TerminateJob {
                        job_id: "j2".into(),
                        grace_period: None,
                    }))
                    .await;
                    until(&mut inbound, &node, &log, |m| matches!(m, Up::JobExited(_))).await;
                }
            }
            let _ = send(Down::Shutdown(pb::Shutdown {
                reason: "test".into(),
            }))
            .await;
            // Keep logging until the agent closes its stream.
            until(&mut inbound, &node, &log, |_| false).await;
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A fake coordinator running `script` and a fleet of `nodes` simulated agents
/// (two sessions per connection) connected to it, all registered.
async fn fake_and_fleet(
    script: Script,
    nodes: usize,
    run_sleeps: bool,
) -> (
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    mpsc::UnboundedReceiver<(String, Up)>,
    Fleet,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (log_tx, log_rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(Fake {
                log: log_tx,
                script,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let fleet = Fleet::start(
        &format!("http://{addr}"),
        SimConfig {
            workspace: "ws".into(),
            cluster: "c".into(),
            nodes,
            gpus_per_node: 8,
            sessions_per_channel: 2,
            connect_concurrency: 2,
            output_bytes: 5,
            run_sleeps,
        },
    )
    .expect("start fleet");
    (server, log_rx, fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_follow_the_agent_protocol() {
    let (server, mut log_rx, fleet) = fake_and_fleet(Script::Instant, 3, false).await;
    fleet
        .wait_registered(Duration::from_secs(10))
        .await
        .expect("all register");

    // Each session ends after Shutdown; wait until all three have released j1.
    let stats = fleet.stats.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.jobs_released.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every agent got its job released");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stats.jobs_done.load(Ordering::Relaxed),
        3,
        "one run per job and node"
    );
    assert_eq!(
        stats.reassigned.load(Ordering::Relaxed),
        3,
        "the re-sent assignment was answered, not run"
    );
    assert_eq!(
        stats.lost.load(Ordering::Relaxed),
        0,
        "{:?}",
        stats.first_errors()
    );
    fleet.stop().await;
    server.abort();

    let mut by_node: std::collections::BTreeMap<String, Vec<Up>> = Default::default();
    while let Ok((node, m)) = log_rx.try_recv() {
        by_node.entry(node).or_default().push(m);
    }
    assert_eq!(
        by_node.keys().cloned().collect::<Vec<_>>(),
        ["sim-00000", "sim-00001", "sim-00002"]
    );
    for (node, msgs) in &by_node {
        let Some(Up::Register(r)) = msgs.first() else {
            panic!("{node}: first message {:?}", msgs.first())
        };
        assert_eq!((r.workspace.as_str(), r.cluster.as_str()), ("ws", "c"));
        let beats: Vec<&pb::Heartbeat> = msgs
            .iter()
            .filter_map(|m| match m {
                Up::Heartbeat(h) => Some(h),
                _ => None,
            })
            .collect();
        assert!(beats.len() >= 2, "{node}: {beats:?}");
        assert!(
            beats.iter().all(|h| h.gpus.len() == 8 && h.time.is_some()),
            "{node}: {beats:?}"
        );
        // After the heartbeats: started, its output, exited; then exited again.
        let job: Vec<&Up> = msgs
            .iter()
            .filter(|m| !matches!(m, Up::Heartbeat(_) | Up::Register(_)))
            .collect();
        assert_eq!(job.len(), 4, "{node}: {job:?}");
        assert!(
            matches!(job[0], Up::JobStarted(s) if s.job_id == "j1" && s.start_time.is_some()),
            "{node}: {job:?}"
        );
        assert!(
            matches!(job[1], Up::Output(o) if o.job_id == "j1" && o.offset == 0 && o.data.len() == 5
                && o.stream == pb::OutputStream::Stdout as i32),
            "{node}: {job:?}"
        );
        for e in [job[2], job[3]] {
            let Up::JobExited(e) = e else {
                panic!("{node}: {job:?}")
            };
            assert_eq!(
                (e.job_id.as_str(), e.exit_code, e.terminated),
                ("j1", 0, false)
            );
            let stdout = e
                .lengths
                .iter()
                .find(|l| l.stream == pb::OutputStream::Stdout as i32);
            assert_eq!(stdout.map(|l| l.length), Some(5), "{node}: {e:?}");
        }
    }
}

/// Seconds from `a` to `b`.
fn secs_between(a: &prost_types::Timestamp, b: &prost_types::Timestamp) -> f64 {
    (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_run_sleep_jobs_for_their_time_and_terminate_them() {
    let (server, mut log_rx, fleet) = fake_and_fleet(Script::Timed, 2, true).await;
    fleet
        .wait_registered(Duration::from_secs(10))
        .await
        .expect("all register");
    let stats = fleet.stats.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.jobs_terminated.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every agent had its second job terminated");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stats.jobs_done.load(Ordering::Relaxed),
        4,
        "two runs per node"
    );
    assert_eq!(
        stats.reassigned.load(Ordering::Relaxed),
        2,
        "one re-sent each"
    );
    assert_eq!(
        stats.lost.load(Ordering::Relaxed),
        0,
        "{:?}",
        stats.first_errors()
    );
    fleet.stop().await;
    server.abort();

    let mut by_node: std::collections::BTreeMap<String, Vec<Up>> = Default::default();
    while let Ok((node, m)) = log_rx.try_recv() {
        if !matches!(m, Up::Heartbeat(_) | Up::Register(_)) {
            by_node.entry(node).or_default().push(m);
        }
    }
    assert_eq!(by_node.len(), 2, "{by_node:?}");
    for (node, job) in &by_node {
        // j1: started, started again (the re-sent assignment), its output,
        // exited 0 after its 0.3 s; j2: started, its output, exited 143.
        assert_eq!(job.len(), 7, "{node}: {job:?}");
        let (Up::JobStarted(s1), Up::JobStarted(s1b), Up::Output(o1), Up::JobExited(e1)) =
            (&job[0], &job[1], &job[2], &job[3])
        else {
            panic!("{node}: {job:?}")
        };
        assert_eq!(s1, s1b, "{node}: the same run, not a second one");
        assert_eq!((o1.job_id.as_str(), o1.data.len()), ("j1", 5));
        assert_eq!(
            (e1.job_id.as_str(), e1.exit_code, e1.terminated),
            ("j1", 0, false)
        );
        let ran = secs_between(
            s1.start_time.as_ref().expect("start"),
            e1.end_time.as_ref().expect("end"),
        );
        assert!((0.3..5.0).contains(&ran), "{node}: ran {ran} s");
        let (Up::JobStarted(s2), Up::Output(_), Up::JobExited(e2)) = (&job[4], &job[5], &job[6])
        else {
            panic!("{node}: {job:?}")
        };
        assert_eq!(s2.job_id, "j2");
        assert_eq!(
            (e2.job_id.as_str(), e2.exit_code, e2.terminated),
            ("j2", 143, true)
        );
    }
}
