//! Simulated agents: many real `AgentService.Session` gRPC sessions from one
//! process, each speaking the agent protocol of agent.proto as a real agent
//! would — Register first, heartbeats (with GPU metrics) at the interval the
//! coordinator's Registered names, and for every AssignJob a JobStarted, an
//! optional OutputChunk and a JobExited(0) at once, with the streams' final
//! lengths. With [`SimConfig::run_sleeps`] a job whose command line is
//! `sleep <seconds>` "runs" that long instead: JobStarted at once, its output
//! and JobExited(0) when the time is up, or JobExited(143, terminated) at once
//! on TerminateJob. A job is held until ReleaseJob; a re-sent AssignJob for a
//! held or running job is answered with its state (JobExited or JobStarted
//! again) and never "runs" twice.
//!
//! Connections: by default each simulated agent has its own HTTP/2 connection
//! (`sessions_per_channel = 1`), as real agents on separate machines do, so the
//! coordinator pays the per-connection cost (a socket, an h2 connection task,
//! buffers) that a real fleet costs it. Sharing connections
//! (`sessions_per_channel > 1`) measures the coordinator with fewer sockets; the
//! coordinator's tonic server sets no per-connection stream limit by default.

use anyhow::{Context, Result, bail};
use bai_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use pb::agent_message::Msg as Up;
use pb::agent_service_client::AgentServiceClient;
use pb::coordinator_message::Msg as Down;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// What the simulated fleet looks like.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub workspace: String,
    pub cluster: String,
    pub nodes: usize,
    pub gpus_per_node: u32,
    /// Agent sessions multiplexed over one HTTP/2 connection.
    pub sessions_per_channel: usize,
    /// How many connections may be connecting and registering at once.
    pub connect_concurrency: usize,
    /// Bytes of stdout each job "writes" (one OutputChunk); 0 sends none.
    pub output_bytes: usize,
    /// A job whose command line is `sleep <seconds>` (see [`sleep_duration`])
    /// runs for that long, and another rank than the master of a multi-node
    /// job (a custom job's other ranks serve MPI launches) runs until it is
    /// terminated, as the real ones do; any other command still ends at
    /// once. Off: every job ends at once, whatever its command.
    pub run_sleeps: bool,
}

impl SimConfig {
    /// `nodes` simulated agents of the bench's cluster, as the options say;
    /// jobs end at once.
    pub fn of(opts: &crate::cli::Opts, nodes: usize) -> Self {
        Self {
            workspace: crate::api::WORKSPACE.into(),
            cluster: crate::api::CLUSTER.into(),
            nodes,
            gpus_per_node: opts.gpus,
            sessions_per_channel: opts.sessions_per_channel,
            connect_concurrency: opts.connect_concurrency,
            output_bytes: opts.sim_output_bytes,
            run_sleeps: false,
        }
    }
}

/// Counters the simulated agents keep.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Sessions that received Registered.
    pub registered: AtomicUsize,
    /// Sessions that ended before the fleet was stopped (the coordinator ended
    /// or broke them, or Register was refused).
    pub lost: AtomicUsize,
    pub heartbeats: AtomicU64,
    /// Jobs the agents started and finished (JobExited sent once per job;
    /// a multi-node job's other ranks, with `run_sleeps`, count in
    /// `ranks_stopped` instead).
    pub jobs_done: AtomicU64,
    /// Other ranks of multi-node jobs that ran until terminated.
    pub ranks_stopped: AtomicU64,
    /// Of those, running jobs ended by TerminateJob.
    pub jobs_terminated: AtomicU64,
    /// Jobs the coordinator released.
    pub jobs_released: AtomicU64,
    /// AssignJob for a job already running or held (answered with its state).
    pub reassigned: AtomicU64,
    /// The first few errors, for the report.
    pub errors: Mutex<Vec<String>>,
}

impl SimStats {
    fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock()
            && v.len() < 5
        {
            v.push(e);
        }
    }

    pub fn first_errors(&self) -> Vec<String> {
        self.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A running fleet of simulated agents.
pub struct Fleet {
    pub stats: Arc<SimStats>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    nodes: usize,
}

impl Fleet {
    /// Starts connecting `cfg.nodes` agents to the coordinator at `url`.
    pub fn start(url: &str, cfg: SimConfig) -> Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(20))
            .tcp_nodelay(true);
        let stats = Arc::new(SimStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
        let per = cfg.sessions_per_channel.max(1);
        let mut tasks = JoinSet::new();
        let cfg = Arc::new(cfg);
        let mut first = 0;
        while first < cfg.nodes {
            let ids: Vec<usize> = (first..(first + per).min(cfg.nodes)).collect();
            first += per;
            let (endpoint, stats, stop_rx, gate, cfg) = (
                endpoint.clone(),
                stats.clone(),
                stop_rx.clone(),
                gate.clone(),
                cfg.clone(),
            );
            tasks.spawn(async move {
                let permit = gate.acquire_owned().await;
                let channel = match connect(&endpoint).await {
                    Ok(c) => c,
                    Err(e) => {
                        stats.lost.fetch_add(ids.len(), Ordering::Relaxed);
                        stats.error(format!("connect: {e:#}"));
                        return;
                    }
                };
                let mut sessions = JoinSet::new();
                let (reg_tx, mut reg_rx) = mpsc::channel::<()>(ids.len());
                for idx in ids {
                    let agent = SimAgent {
                        idx,
                        cfg: cfg.clone(),
                        stats: stats.clone(),
                    };
                    let (channel, stop_rx, reg_tx) =
                        (channel.clone(), stop_rx.clone(), reg_tx.clone());
                    sessions.spawn(async move {
                        if let Err(e) = agent.run(channel, stop_rx, reg_tx).await {
                            agent.stats.lost.fetch_add(1, Ordering::Relaxed);
                            agent.stats.error(format!("sim-{idx:05}: {e:#}"));
                        }
                    });
                }
                drop(reg_tx);
                // Hold the connect slot until this connection's sessions have
                // registered (or failed), so registration is paced too.
                while reg_rx.recv().await.is_some() {}
                drop(permit);
                while sessions.join_next().await.is_some() {}
            });
        }
        Ok(Self {
            stats,
            stop,
            tasks,
            nodes: cfg.nodes,
        })
    }

    /// Waits until every agent has registered; returns how long that took.
    pub async fn wait_registered(&self, within: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let reg = self.stats.registered.load(Ordering::Relaxed);
            if reg >= self.nodes {
                return Ok(t0.elapsed());
            }
            let lost = self.stats.lost.load(Ordering::Relaxed);
            if lost > 0 {
                bail!(
                    "{lost} simulated agent session(s) failed ({reg} registered): {:?}",
                    self.stats.first_errors()
                );
            }
            if t0.elapsed() > within {
                bail!(
                    "{reg} of {} simulated agents registered within {within:?}",
                    self.nodes
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends every session (each closes its request stream) and waits for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// Connects, retrying a few times with backoff (a burst of connects can
/// overflow the listen backlog).
async fn connect(endpoint: &Endpoint) -> Result<Channel> {
    let mut delay = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if tries >= 4 => return Err(e.into()),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// One simulated agent.
struct SimAgent {
    idx: usize,
    cfg: Arc<SimConfig>,
    stats: Arc<SimStats>,
}

/// A job the agent holds until released.
enum Held {
    /// Running until its timer fires. `run` tells this run's timer from that
    /// of an earlier run of the same job id (released, then assigned again).
    Running { started: pb::JobStarted, run: u64 },
    /// Exited: its exit message, to re-send (boxed: it is the larger by far).
    Exited(Box<pb::JobExited>),
}

/// The agent's jobs and the timers of the running ones. The session loop owns
/// both, so a timer and a TerminateJob (or a re-sent AssignJob) never both
/// answer for one job, and no timer outlives its session.
#[derive(Default)]
struct Jobs {
    held: HashMap<String, Held>,
    /// Each resolves to (job id, run) when that run's time is up.
    timers: FuturesUnordered<BoxFuture<'static, (String, u64)>>,
    runs: u64,
    /// Running ranks other than a master: they end only when terminated.
    serving: std::collections::HashSet<String>,
}

/// The run time of a job whose command line is `sleep <seconds>` (seconds a
/// non-negative decimal, fractions allowed, no unit suffix); `None` for any
/// other command line.
pub fn sleep_duration(command_line: &str) -> Option<Duration> {
    let mut words = command_line.split_whitespace();
    let (Some("sleep"), Some(secs), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    Duration::try_from_secs_f64(secs.parse::<f64>().ok()?).ok()
}

impl SimAgent {
    fn node_id(&self) -> String {
        format!("sim-{:05}", self.idx)
    }

    async fn run(
        &self,
        channel: Channel,
        mut stop: watch::Receiver<bool>,
        registered: mpsc::Sender<()>,
    ) -> Result<()> {
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
        tx.send(up(Up::Register(self.register()))).await?;
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .context("open Session")?
            .into_inner();
        let first = inbound.message().await.context("await Registered")?;
        let interval = match first.and_then(|m| m.msg) {
            Some(Down::Registered(r)) => r
                .heartbeat_interval
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(10)),
            other => bail!("first coordinator message was not Registered: {other:?}"),
        };
        self.stats.registered.fetch_add(1, Ordering::Relaxed);
        let _ = registered.send(()).await;
        drop(registered);

        // Spread heartbeats over the interval as a real fleet's would be.
        let phase = interval.mul_f64(((self.idx as f64) * 0.618_033_988_75).fract());
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut jobs = Jobs::default();
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = beat.tick() => {
                    tx.send(up(Up::Heartbeat(self.heartbeat()))).await?;
                    self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                Some((job_id, run)) = jobs.timers.next(), if !jobs.timers.is_empty() => {
                    let current = matches!(
                        jobs.held.get(&job_id),
                        Some(Held::Running { run: r, .. }) if *r == run
                    );
                    if current {
                        self.exit(&tx, &mut jobs, job_id, 0, false).await?;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if self.handle(m, &tx, &mut jobs).await? {
                            return Ok(());
                        }
                    }
                    Ok(None) if *stop.borrow() => return Ok(()),
                    Ok(None) => bail!("the coordinator ended the session"),
                    Err(_) if *stop.borrow() => return Ok(()),
                    Err(e) => bail!("session broke: {e}"),
                },
            }
        }
    }

    /// Handles one coordinator message; true when the agent should leave.
    async fn handle(
        &self,
        m: pb::CoordinatorMessage,
        tx: &mpsc::Sender<pb::AgentMessage>,
        jobs: &mut Jobs,
    ) -> Result<bool> {
        match m.msg {
            Some(Down::AssignJob(a)) => {
                // Rule 4: never run a job twice; answer with its state.
                let again = match jobs.held.get(&a.job_id) {
                    Some(Held::Exited(exited)) => Some(Up::JobExited((**exited).clone())),
                    Some(Held::Running { started, .. }) => Some(Up::JobStarted(started.clone())),
                    None => None,
                };
                if let Some(state) = again {
                    self.stats.reassigned.fetch_add(1, Ordering::Relaxed);
                    tx.send(up(state)).await?;
                    return Ok(false);
                }
                let started = pb::JobStarted {
                    job_id: a.job_id.clone(),
                    start_time: Some(SystemTime::now().into()),
                    pid: 1_000_000 + (self.idx as i32),
                };
                tx.send(up(Up::JobStarted(started.clone()))).await?;
                if self.cfg.run_sleeps && a.node_rank > 0 {
                    jobs.serving.insert(a.job_id.clone());
                    jobs.held
                        .insert(a.job_id, Held::Running { started, run: 0 });
                    return Ok(false);
                }
                match self
                    .cfg
                    .run_sleeps
                    .then(|| sleep_duration(&a.command_line))
                    .flatten()
                {
                    Some(d) => {
                        jobs.runs += 1;
                        let run = jobs.runs;
                        let job_id = a.job_id.clone();
                        jobs.timers.push(Box::pin(async move {
                            tokio::time::sleep(d).await;
                            (job_id, run)
                        }));
                        jobs.held.insert(a.job_id, Held::Running { started, run });
                    }
                    None => self.exit(tx, jobs, a.job_id, 0, false).await?,
                }
            }
            Some(Down::TerminateJob(t)) => {
                if matches!(jobs.held.get(&t.job_id), Some(Held::Running { .. })) {
                    let rank = jobs.serving.contains(&t.job_id);
                    // As a job killed by SIGTERM: 128 + 15.
                    self.exit(tx, jobs, t.job_id, 143, true).await?;
                    if !rank {
                        self.stats.jobs_terminated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // A simulated node has nothing to prepare: it is ready at once
            // for whatever setup its cluster has.
            Some(Down::PrepareNode(p)) => {
                tx.send(up(Up::NodeStatus(pb::NodeStatus {
                    generation: p.generation,
                    phase: pb::NodePhase::Ready as i32,
                    ..Default::default()
                })))
                .await?;
            }
            Some(Down::ReleaseJob(r)) => {
                if jobs.held.remove(&r.job_id).is_some() {
                    self.stats.jobs_released.fetch_add(1, Ordering::Relaxed);
                }
            }
            // An output ack needs no action (nothing is spooled).
            Some(Down::OutputAck(_))
            | Some(Down::Registered(_))
            | Some(Down::SetupOutputAck(_))
            | Some(Down::RenewCertificate(_))
            | Some(Down::CertificateIssued(_))
            | None => {}
            Some(Down::Shutdown(_)) => return Ok(true),
        }
        Ok(false)
    }

    /// Ends job `job_id`: its output (rule 3: before the exit), then
    /// JobExited, kept to answer a re-sent assignment.
    async fn exit(
        &self,
        tx: &mpsc::Sender<pb::AgentMessage>,
        jobs: &mut Jobs,
        job_id: String,
        exit_code: i32,
        terminated: bool,
    ) -> Result<()> {
        let out = self.cfg.output_bytes;
        if out > 0 {
            tx.send(up(Up::Output(pb::OutputChunk {
                job_id: job_id.clone(),
                stream: pb::OutputStream::Stdout as i32,
                offset: 0,
                data: vec![b'x'; out],
            })))
            .await?;
        }
        let exited = pb::JobExited {
            job_id: job_id.clone(),
            end_time: Some(SystemTime::now().into()),
            exit_code,
            error: None,
            lengths: lengths(out as u64),
            terminated,
            metrics: None,
        };
        tx.send(up(Up::JobExited(exited.clone()))).await?;
        let counter = if jobs.serving.remove(&job_id) {
            &self.stats.ranks_stopped
        } else {
            &self.stats.jobs_done
        };
        counter.fetch_add(1, Ordering::Relaxed);
        jobs.held.insert(job_id, Held::Exited(Box::new(exited)));
        Ok(())
    }

    fn register(&self) -> pb::Register {
        let id = self.node_id();
        pb::Register {
            node_id: id.clone(),
            workspace: self.cfg.workspace.clone(),
            cluster: self.cfg.cluster.clone(),
            hostname: id,
            ip_address: "127.0.0.1".into(),
            cpu_count: 8,
            memory_bytes: 64 << 30,
            agent_version: format!("bai-bench-sim/{}", env!("CARGO_PKG_VERSION")),
            jobs: Vec::new(),
            ..Default::default()
        }
    }

    fn heartbeat(&self) -> pb::Heartbeat {
        let now = SystemTime::now();
        let wobble = (now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_millis())
            .unwrap_or(0)
            % 100) as f32;
        pb::Heartbeat {
            time: Some(now.into()),
            cpu_percent: 5.0 + wobble / 10.0,
            memory_used_bytes: 4 << 30,
            gpus: (0..self.cfg.gpus_per_node)
                .map(|i| pb::GpuMetrics {
                    index: i,
                    uuid: format!("GPU-sim-{:05}-{i}", self.idx),
                    utilization_percent: wobble,
                    memory_used_bytes: 1 << 30,
                    memory_total_bytes: 80 << 30,
                    temperature_celsius: 40.0 + wobble / 5.0,
                    power_watts: 70.0 + wobble,
                    sm_clock_mhz: 1980,
                    ecc_double_bit_errors: 0,
                    xid_errors: 0,
                    last_xid: 0,
                    job_id: String::new(),
                })
                .collect(),
            jobs: Vec::new(),
            memory_total_bytes: 64 << 30,
            disk_used_bytes: 100 << 30,
            disk_total_bytes: 1 << 40,
            network_rx_bytes: u64::from(wobble as u32) << 20,
            network_tx_bytes: u64::from(wobble as u32) << 19,
            gpu_problems: Vec::new(),
        }
    }
}

fn up(msg: Up) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

/// The final lengths of a job's three streams.
fn lengths(stdout: u64) -> Vec<pb::StreamLength> {
    [
        (pb::OutputStream::Stdout, stdout),
        (pb::OutputStream::Stderr, 0),
        (pb::OutputStream::ExecutionLog, 0),
    ]
    .into_iter()
    .map(|(s, length)| pb::StreamLength {
        stream: s as i32,
        length,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_commands_give_their_run_time() {
        assert_eq!(sleep_duration("sleep 2"), Some(Duration::from_secs(2)));
        assert_eq!(
            sleep_duration("sleep 0.25"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            sleep_duration("  sleep\t0.05 "),
            Some(Duration::from_millis(50))
        );
        assert_eq!(sleep_duration("sleep 0"), Some(Duration::ZERO));
    }

    #[test]
    fn other_command_lines_are_not_sleeps() {
        for c in [
            "true",
            "sleep",
            "sleep -1",
            "sleep abc",
            "sleep 1s",
            "sleep 1 2",
            "sleep inf",
            "sleep NaN",
            "/bin/sleep 1",
            "sleep 1; rm -rf x",
            "",
        ] {
            assert_eq!(sleep_duration(c), None, "{c:?}");
        }
    }
}
