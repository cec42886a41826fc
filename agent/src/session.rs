//! The session with the coordinator: dial, open `AgentService.Session`, send
//! `Register` with every held job, await `Registered`, then heartbeats and
//! the coordinator's instructions until the stream ends; then reconnect with
//! exponential backoff and jitter. A `Shutdown` from the coordinator or the
//! local shutdown signal ends the loop without touching running jobs.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::convert;
use crate::gpu::health::Watch;
use crate::inventory::{HostInfo, primary_ip};
use crate::jobs::JobManager;
use crate::jobs::worker::Link;
use crate::model::{Inbound, Outbound, Registration, Sample};
use crate::node::prepare::NodeHandle;
use bai_proto::v1::agent_service_client::AgentServiceClient;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;
use tracing::{Instrument, debug, error, info, warn};

/// How long the coordinator has to answer `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat interval when `Registered` gives none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(2);
/// Largest gRPC message either way (output chunks are ~1 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// Why the session loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The local shutdown signal (SIGTERM/SIGINT).
    Signal,
    /// The coordinator sent `Shutdown` (the node leaves the cluster).
    Coordinator(String),
}

/// How one session ended.
#[derive(Debug)]
enum End {
    Stop(Stopped),
    /// The coordinator closed the stream.
    Closed,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("no Registered within {0:?}")]
    RegisterTimeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What a session needs besides the job manager.
pub struct SessionCtx {
    pub config: Config,
    pub node_id: String,
    pub host: Arc<dyn HostInfo>,
    /// The node's GPUs.
    pub gpus: Arc<Watch>,
    /// The running jobs' figures and summaries.
    pub meter: Arc<crate::metrics::Meter>,
    pub shutdown: watch::Receiver<bool>,
    /// The node's preparation.
    pub node: NodeHandle,
    /// What Register says about the node besides its inventory.
    pub facts: NodeFacts,
}

/// Facts found once at startup.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    pub boot_id: String,
    pub ssh_port: u32,
    pub file_share_driver: String,
    pub blob_driver: String,
    /// `v1`, `v2` or `none`: what the node's job cgroups are.
    pub job_cgroups: String,
    /// How a job is kept to its GPUs (`Cgroups::gpu_isolation`).
    pub gpu_isolation: String,
    /// The container runtime's version line; empty: none.
    pub container_runtime: String,
}

/// Runs sessions until shutdown. Never returns an error: every failure is
/// logged and retried.
pub async fn run(ctx: &mut SessionCtx, jobs: &mut JobManager) -> Stopped {
    let mut backoff = Backoff::new(ctx.config.reconnect_initial, ctx.config.reconnect_max);
    let mut notified = false;
    let span = tracing::info_span!("session", node = %ctx.node_id, cluster = %ctx.config.cluster);
    loop {
        if *ctx.shutdown.borrow() {
            return Stopped::Signal;
        }
        let began = Instant::now();
        let mut registered = false;
        let result = one(ctx, jobs, &mut registered, &mut notified)
            .instrument(span.clone())
            .await;
        jobs.detach();
        ctx.node.detach();
        if registered && began.elapsed() >= STABLE_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        match result {
            Ok(End::Stop(s)) => return s,
            Ok(End::Closed) => {
                warn!(parent: &span, retry_in = ?delay, "the coordinator closed the session")
            }
            Err(SessionError::Status(s)) if s.code() == tonic::Code::NotFound => error!(
                parent: &span,
                reason = %s.message(),
                retry_in = ?delay,
                "the coordinator refused registration (unknown workspace or cluster?)"
            ),
            Err(e) => warn!(parent: &span, error = %chain(&e), retry_in = ?delay, "session failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.shutdown.wait_for(|s| *s) => return Stopped::Signal,
        }
    }
}

async fn registration(ctx: &SessionCtx, jobs: &mut JobManager) -> Registration {
    // sysinfo reads /proc: off the runtime.
    let host = ctx.host.clone();
    let inv = tokio::task::spawn_blocking(move || host.inventory())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let ip = primary_ip(&ctx.config.coordinator)
        .await
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    Registration {
        node_id: ctx.node_id.clone(),
        workspace: ctx.config.workspace.clone(),
        cluster: ctx.config.cluster.clone(),
        hostname: inv.hostname,
        ip_address: ip,
        cpu_count: inv.cpu_count,
        memory_bytes: inv.memory_bytes,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        jobs: jobs.held().await,
        boot_id: ctx.facts.boot_id.clone(),
        ssh_port: ctx.facts.ssh_port,
        file_share_driver: ctx.facts.file_share_driver.clone(),
        blob_driver: ctx.facts.blob_driver.clone(),
        job_cgroups: ctx.facts.job_cgroups.clone(),
        gpu_isolation: ctx.facts.gpu_isolation.clone(),
        container_runtime: ctx.facts.container_runtime.clone(),
        status: ctx.node.status(),
        gpus: ctx.gpus.backend().inventory(),
    }
}

async fn one(
    ctx: &mut SessionCtx,
    jobs: &mut JobManager,
    registered: &mut bool,
    notified: &mut bool,
) -> Result<End, SessionError> {
    let endpoint = Endpoint::from_shared(ctx.config.coordinator.clone())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20);
    let channel = tokio::select! {
        c = endpoint.connect() => c?,
        _ = ctx.shutdown.wait_for(|s| *s) => return Ok(End::Stop(Stopped::Signal)),
    };
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);

    let (tx, rx) = mpsc::unbounded_channel::<Outbound>();
    let reg = registration(ctx, jobs).await;
    info!(jobs = reg.jobs.len(), ip = %reg.ip_address, "registering");
    let _ = tx.send(Outbound::Register(Box::new(reg)));
    let meter = ctx.meter.clone();
    let outbound = UnboundedReceiverStream::new(rx).map(move |mut m| {
        if let Outbound::JobExited {
            job_id, metrics, ..
        } = &mut m
        {
            *metrics = meter.last(job_id);
        }
        convert::to_pb(m)
    });

    let first = async {
        let mut inbound = client.session(outbound).await?.into_inner();
        let first = inbound.message().await?;
        Ok::<_, SessionError>((inbound, first))
    };
    let (mut inbound, first) = tokio::select! {
        r = tokio::time::timeout(REGISTER_TIMEOUT, first) => {
            r.map_err(|_| SessionError::RegisterTimeout(REGISTER_TIMEOUT))??
        }
        _ = ctx.shutdown.wait_for(|s| *s) => return Ok(End::Stop(Stopped::Signal)),
    };
    let Some(first) = first else {
        return Ok(End::Closed);
    };
    let heartbeat = match convert::from_pb(first) {
        Inbound::Registered {
            node_id,
            heartbeat_interval,
            resume,
        } => {
            if node_id != ctx.node_id && !node_id.is_empty() {
                warn!(coordinator_node_id = %node_id, "the coordinator registered this node under another id");
            }
            jobs.attach(Link { out: tx.clone() }, &resume);
            ctx.node.attach(tx.clone());
            heartbeat_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_HEARTBEAT)
                .max(Duration::from_millis(100))
        }
        Inbound::Shutdown { reason } => {
            info!(%reason, "the coordinator asked this node to shut down");
            return Ok(End::Stop(Stopped::Coordinator(reason)));
        }
        other => {
            return Err(SessionError::Protocol(format!(
                "expected Registered, got {other:?}"
            )));
        }
    };
    *registered = true;
    info!(?heartbeat, "registered");
    if !*notified {
        *notified = true;
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            debug!(error = %e, "sd_notify failed");
        }
    }

    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sampling adapts to the node: while jobs run, they and the GPUs are
    // sampled every `job_sample_interval` (their summaries and GPU faults
    // follow at that pace) and heartbeats carry the latest figures; an idle
    // node samples only at its heartbeats (nothing wakes it in between).
    let mut sample_tick = tokio::time::interval(ctx.config.job_sample_interval.min(heartbeat));
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sources = Sources {
        host: ctx.host.clone(),
        gpus: ctx.gpus.clone(),
        meter: ctx.meter.clone(),
    };
    loop {
        let busy = jobs.any_running();
        tokio::select! {
            _ = ctx.shutdown.wait_for(|s| *s) => return Ok(End::Stop(Stopped::Signal)),
            _ = tick.tick() => {
                let sample = sample(&sources, jobs, &tx).await;
                sample_tick.reset();
                let _ = tx.send(Outbound::Heartbeat { time: SystemTime::now(), sample: Box::new(sample) });
            }
            _ = sample_tick.tick(), if busy => {
                sample(&sources, jobs, &tx).await;
            }
            msg = inbound.message() => match msg? {
                None => return Ok(End::Closed),
                Some(m) => {
                    if let Some(stop) = handle(convert::from_pb(m), jobs, &ctx.node, &tx) {
                        return Ok(End::Stop(stop));
                    }
                }
            },
        }
    }
}

/// What a sample reads.
struct Sources {
    host: Arc<dyn HostInfo>,
    gpus: Arc<Watch>,
    meter: Arc<crate::metrics::Meter>,
}

/// Samples the host, the GPUs (their health reports go out at once) and the
/// running jobs (their summaries move on), off the runtime.
async fn sample(
    src: &Sources,
    jobs: &mut JobManager,
    tx: &mpsc::UnboundedSender<Outbound>,
) -> Sample {
    let (host, watch, meter) = (src.host.clone(), src.gpus.clone(), src.meter.clone());
    let running = jobs.running();
    let (sample, reports) = tokio::task::spawn_blocking(move || {
        let (gpus, reports) = watch.sample();
        let jobs = meter.sample(&running, &gpus, &**watch.backend());
        (
            Sample {
                host: host.metrics(),
                gpus,
                jobs,
                gpu_problems: watch.backend().problems().into_iter().take(32).collect(),
            },
            reports,
        )
    })
    .await
    .unwrap_or_default();
    for r in reports {
        if r.is_fault() {
            warn!(gpu = %r.uuid, "{}", r.message);
        } else {
            info!(gpu = %r.uuid, "{}", r.message);
        }
        jobs.log_gpu_event(&r.uuid, &r.message);
        let _ = tx.send(Outbound::GpuHealth(r));
    }
    sample
}

/// An error with its causes, `a: b: c` (tonic's transport errors say little
/// at the top level).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn handle(
    msg: Inbound,
    jobs: &mut JobManager,
    node: &NodeHandle,
    tx: &mpsc::UnboundedSender<Outbound>,
) -> Option<Stopped> {
    match msg {
        Inbound::PrepareNode(setup) => node.prepare(*setup),
        Inbound::SetupAck {
            run,
            stream,
            offset,
        } => node.ack(run, stream, offset),
        Inbound::AssignJob(spec) => jobs.assign(*spec),
        Inbound::BadAssignment { raw_job_id, reason } => {
            warn!(job = %raw_job_id, %reason, "refusing an assignment");
            // Not a domain message: the id itself is invalid, so the refusal
            // is built at the edge.
            let _ = tx.send(Outbound::Refused { raw_job_id, reason });
        }
        Inbound::TerminateJob {
            job_id,
            grace_period,
        } => jobs.terminate(&job_id, grace_period),
        Inbound::OutputAck(a) => jobs.ack(a),
        Inbound::ReleaseJob(id) => jobs.release(&id),
        Inbound::Shutdown { reason } => {
            info!(%reason, "the coordinator asked this node to shut down");
            return Some(Stopped::Coordinator(reason));
        }
        Inbound::Registered { .. } => warn!("unexpected second Registered: ignored"),
        Inbound::Ignored(why) => warn!(%why, "ignoring a coordinator message"),
    }
    None
}
