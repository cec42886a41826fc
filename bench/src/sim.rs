//! Simulated agents: many real `AgentService.Session` gRPC sessions from one
//! process, each speaking the agent protocol of agent.proto as a real agent
//! would — Register first, heartbeats (with GPU metrics) at the interval the
//! coordinator's Registered names, and for every AssignJob a JobStarted, an
//! optional OutputChunk and a JobExited(0) at once, with the streams' final
//! lengths. A job is held until ReleaseJob; a re-sent AssignJob for a held job
//! is answered with its exit again and never "runs" twice.
//!
//! Connections: by default each simulated agent has its own HTTP/2 connection
//! (`sessions_per_channel = 1`), as real agents on separate machines do, so the
//! coordinator pays the per-connection cost (a socket, an h2 connection task,
//! buffers) that a real fleet costs it. Sharing connections
//! (`sessions_per_channel > 1`) measures the coordinator with fewer sockets; the
//! coordinator's tonic server sets no per-connection stream limit by default.

use anyhow::{Context, Result, bail};
use bai_proto::v1 as pb;
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
    /// Jobs the agents started and finished (JobExited sent once per job).
    pub jobs_done: AtomicU64,
    /// Jobs the coordinator released.
    pub jobs_released: AtomicU64,
    /// AssignJob for a job already held (answered with its exit again).
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

/// A job the agent holds until released: its exit message, to re-send.
type Held = HashMap<String, pb::JobExited>;

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
        let mut held = Held::new();
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = beat.tick() => {
                    tx.send(up(Up::Heartbeat(self.heartbeat()))).await?;
                    self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if self.handle(m, &tx, &mut held).await? {
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
        held: &mut Held,
    ) -> Result<bool> {
        match m.msg {
            Some(Down::AssignJob(a)) => {
                if let Some(exited) = held.get(&a.job_id) {
                    // Rule 4: never run a job twice; answer with its state.
                    self.stats.reassigned.fetch_add(1, Ordering::Relaxed);
                    tx.send(up(Up::JobExited(exited.clone()))).await?;
                    return Ok(false);
                }
                let now = SystemTime::now();
                tx.send(up(Up::JobStarted(pb::JobStarted {
                    job_id: a.job_id.clone(),
                    start_time: Some(now.into()),
                    pid: 1_000_000 + (self.idx as i32),
                })))
                .await?;
                let out = self.cfg.output_bytes;
                if out > 0 {
                    tx.send(up(Up::Output(pb::OutputChunk {
                        job_id: a.job_id.clone(),
                        stream: pb::OutputStream::Stdout as i32,
                        offset: 0,
                        data: vec![b'x'; out],
                    })))
                    .await?;
                }
                let exited = pb::JobExited {
                    job_id: a.job_id.clone(),
                    end_time: Some(SystemTime::now().into()),
                    exit_code: 0,
                    error: None,
                    lengths: lengths(out as u64),
                    terminated: false,
                    metrics: None,
                };
                tx.send(up(Up::JobExited(exited.clone()))).await?;
                held.insert(a.job_id, exited);
                self.stats.jobs_done.fetch_add(1, Ordering::Relaxed);
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
                if held.remove(&r.job_id).is_some() {
                    self.stats.jobs_released.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Every job ends at once, so there is never one to terminate, and
            // an output ack needs no action (nothing is spooled).
            Some(Down::TerminateJob(_))
            | Some(Down::OutputAck(_))
            | Some(Down::Registered(_))
            | Some(Down::SetupOutputAck(_))
            | None => {}
            Some(Down::Shutdown(_)) => return Ok(true),
        }
        Ok(false)
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
