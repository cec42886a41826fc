//! One agent session (AgentService.Session): register, reconcile, then
//! process the agent's messages in order.
//!
//! Messages are taken in batches: everything already received (up to a
//! limit) is drained, output chunks are written, each dirty file is fsynced
//! once, and only then are OutputAcks sent and followers woken. Any other
//! message first flushes the output before it, so a JobExited is handled
//! after the chunks sent before it are durable. The exit is recorded only
//! when the stored lengths reach the lengths the agent reports; until then it
//! waits (the agent re-sends the missing bytes from the acknowledged offset).
//!
//! The session's job cache can be stale (the job was requeued, or reassigned
//! elsewhere, while this node's session lived): a chunk is staged only for a
//! file whose writer is this node (see `output.rs`). The dispatcher makes the
//! new attempt's node the writer before it assigns the job, so a stale cache
//! costs nothing on the hot path and can never write into a newer attempt.

use super::convert::{Exited, Inbound, Register};
use super::reconcile;
use super::registry::{Outbound, Sender};
use crate::core::Core;
use crate::domain::node_setup::{self, NodeSetupPlan, Preparation, PreparationReport};
use crate::domain::{Job, names::check_name, now_millis};
use crate::error::{Error, to_status};
use crate::output::Chunk;
use crate::output::Lease;
use crate::store::{NodeRegistration, StoreError};
use futures::{FutureExt, Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The agent's messages in domain form (converted by `agent/mod.rs`), or the
/// error that broke the stream.
pub type Inbox = Pin<Box<dyn Stream<Item = Result<Inbound, tonic::Status>> + Send>>;

/// Most messages taken in one batch.
const BATCH_MESSAGES: usize = 1024;
/// Most output bytes taken in one batch.
const BATCH_BYTES: usize = 16 << 20;
/// How long a new stream may take to send Register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

struct PendingExit {
    exit: Exited,
    acked: bool,
}

struct Session {
    core: Arc<Core>,
    node_id: String,
    tx: Sender,
    /// The node id, as the writer its chunks name.
    writer: Arc<str>,
    /// Jobs active on this node whose output is being accepted (as last
    /// read: the output files' writer decides).
    jobs: HashMap<String, Job>,
    exits: HashMap<String, PendingExit>,
    generation: u64,
    /// The last heartbeat (also in the registry); stored when the session ends.
    last_heartbeat: Option<crate::domain::Millis>,
    /// The node's cluster, and its node setup (sent after Registered).
    workspace: String,
    cluster: String,
    plan: NodeSetupPlan,
}

/// Runs a session until the agent goes away, a newer session replaces it, or
/// the coordinator shuts down.
pub async fn run(core: Arc<Core>, mut inbound: Inbox, tx: Sender) {
    let first = tokio::time::timeout(REGISTER_TIMEOUT, first_register(&mut inbound)).await;
    let reg = match first.unwrap_or_else(|_| {
        Err(Error::DeadlineExceeded(format!(
            "register: the agent sent nothing within {}s",
            REGISTER_TIMEOUT.as_secs()
        )))
    }) {
        Ok(r) => r,
        Err(e) => {
            let status = to_status(&e);
            tracing::warn!(error = %status.message(), "agent session refused");
            let _ = tx.send(Err(status));
            return;
        }
    };
    let span = tracing::info_span!(
        "session",
        node = %reg.node_id,
        cluster = %format!("{}/{}", reg.workspace, reg.cluster)
    );
    run_registered(core, inbound, tx, reg)
        .instrument(span)
        .await;
}

async fn first_register(inbound: &mut Inbox) -> Result<Register, Error> {
    let first = match inbound.next().await {
        Some(Ok(m)) => m,
        Some(Err(status)) => {
            return Err(Error::Cancelled(format!(
                "register: the agent's stream failed: {}",
                status.message()
            )));
        }
        None => {
            return Err(Error::Cancelled(
                "register: the agent closed the stream before registering".into(),
            ));
        }
    };
    let Inbound::Register(reg) = first else {
        return Err(Error::invalid("register", "must be the first message"));
    };
    for (field, v) in [
        ("register.node_id", &reg.node_id),
        ("register.workspace", &reg.workspace),
        ("register.cluster", &reg.cluster),
    ] {
        check_name(v).map_err(|rule| Error::invalid(field, rule))?;
    }
    Ok(*reg)
}

async fn run_registered(core: Arc<Core>, mut inbound: Inbox, tx: Sender, reg: Register) {
    let registered = async {
        let cluster = core.store.get_cluster(&reg.workspace, &reg.cluster).await?;
        let plan = node_setup::plan(&cluster, core.auto_storage_account());
        let status = reg.status.as_ref();
        let registration = NodeRegistration {
            node_id: reg.node_id.clone(),
            workspace: reg.workspace.clone(),
            cluster: reg.cluster.clone(),
            info: reg.info.clone(),
            ready: node_setup::ready_on_register(&plan, status),
            step: match status.map(|s| &s.preparation) {
                Some(Preparation::Preparing { step }) => step.clone(),
                _ => String::new(),
            },
        };
        let (node, _) = core.store.register_node(registration, now_millis()).await?;
        Ok::<_, StoreError>((node, plan))
    };
    let (node, plan) = match registered.await {
        Ok(r) => r,
        Err(e) => {
            let status = to_status(&Error::from(e));
            tracing::warn!(error = %status.message(), "agent registration refused");
            let _ = tx.send(Err(status));
            return;
        }
    };
    // From here on, messages for the node queue up behind Registered; the
    // jobs are read after attaching, so an assignment committed meanwhile is
    // either in this read or sent (queued) after it.
    let attached = core.sessions.attach(&reg.node_id, tx.clone());
    let mut s = Session {
        core: core.clone(),
        node_id: reg.node_id.clone(),
        tx,
        writer: Arc::from(reg.node_id.as_str()),
        jobs: HashMap::new(),
        exits: HashMap::new(),
        generation: attached.generation,
        last_heartbeat: None,
        workspace: reg.workspace.clone(),
        cluster: reg.cluster.clone(),
        plan,
    };
    let result = match core.store.jobs_on_node(&reg.node_id).await {
        Err(e) => Err(Error::from(e)),
        Ok(active) => {
            tracing::info!(
                state = node.state.as_str(),
                held = reg.held.len(),
                active = active.len(),
                "agent registered"
            );
            match s.reconcile(&active, &reg, attached.generation).await {
                Ok(()) => s.serve(&mut inbound, attached.stop).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = &result {
        // In the session's span: an internal error is logged with the node.
        let status = to_status(e);
        tracing::warn!(error = %status.message(), "agent session ended with an error");
        let _ = s.tx.send(Err(status));
    }
    if core.sessions.detach(&s.node_id, attached.generation) {
        if let Err(e) = core
            .store
            .set_node_connected(&s.node_id, false, s.last_heartbeat)
            .await
        {
            tracing::warn!(error = %e, "could not record the node as disconnected");
        }
        core.metrics.forget(&s.node_id);
        tracing::info!("agent disconnected");
    }
    core.kick_provider();
}

impl Session {
    /// The file a stream of this node's process of `job` goes to (its rank's).
    fn file_id(&self, job: &Job, stream: crate::output::StreamKind) -> crate::output::FileId {
        crate::output::FileId::new(stream, job.rank_of(&self.node_id).unwrap_or(0))
    }

    fn send(&self, msg: Outbound) {
        let _ = self.tx.send(Ok(msg));
    }

    async fn reconcile(
        &mut self,
        active: &[Job],
        reg: &Register,
        generation: u64,
    ) -> Result<(), Error> {
        let plan = reconcile::plan(&self.node_id, active, &reg.held);
        let mut resume = plan.skip_output.clone();
        for id in &plan.wanted {
            if let Some(job) = active.iter().find(|j| &j.id == id) {
                self.jobs.insert(id.clone(), job.clone());
                for stream in crate::output::StreamKind::ALL {
                    if let Some(f) = self
                        .core
                        .outputs
                        .file(job, self.file_id(job, stream))
                        .await?
                    {
                        resume.push((id.clone(), stream, f.durable_len()));
                    }
                }
            }
        }
        self.send(Outbound::Registered {
            node_id: self.node_id.clone(),
            heartbeat_interval: self.core.settings.heartbeat_interval,
            resume,
        });
        if let Some((step, error)) = self.plan.unpreparable() {
            // Nothing the agent could do about it: say why here, send nothing.
            self.prepared(PreparationReport {
                generation: self.plan.generation.clone(),
                preparation: Preparation::Unusable { step, error },
                setup_run: String::new(),
            })
            .await?;
        } else {
            let held = self.setup_files().await?.held();
            self.send(Outbound::Prepare {
                plan: Box::new(self.plan.clone()),
                held,
            });
        }
        for job in &plan.reassign {
            tracing::info!(job = %job.id, "re-sending an assignment the agent does not hold");
            self.send(Outbound::Assign(Box::new(crate::domain::env::assignment(
                job,
                &self.node_id,
                self.core.auto_storage_account(),
            ))));
        }
        for id in &plan.terminate {
            self.send(Outbound::Terminate {
                job_id: id.clone(),
                grace: self.core.settings.terminate_grace,
            });
        }
        for id in &plan.release {
            self.send(Outbound::Release { job_id: id.clone() });
        }
        if !plan.stale.is_empty() {
            tracing::warn!(jobs = ?plan.stale, "the agent holds jobs that are no longer its own; it takes none until they are gone");
        }
        self.core.sessions.fence(
            &self.node_id,
            generation,
            plan.stale.iter().cloned().collect(),
        );
        self.core.sessions.ready(&self.node_id, generation);
        let now = now_millis();
        for (job, error) in plan.lost {
            tracing::warn!(job = %job.id, reason = %error.message, "job lost by its node");
            if let Some(j) = self
                .core
                .store
                .fail_job(&job.id, &self.node_id, error, now)
                .await?
            {
                self.core.job_attempt_ended(&j);
            }
        }
        for (id, start) in plan.started {
            if let Some(j) = self
                .core
                .store
                .record_job_started(&id, &self.node_id, start)
                .await?
            {
                self.core.events.changed(&j);
            }
        }
        for exit in plan.exits {
            let id = exit.job_id.clone();
            self.exits
                .insert(id.clone(), PendingExit { exit, acked: false });
            self.try_exit(&id).await?;
        }
        self.core.kick_scheduler();
        Ok(())
    }

    async fn serve(
        &mut self,
        inbound: &mut Inbox,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut shutdown = self.core.shutdown();
        let idle = (self.core.settings.heartbeat_interval * 3).max(Duration::from_secs(30));
        loop {
            let first = tokio::select! {
                _ = crate::core::stopped(&mut stop) => return Ok(()),
                _ = crate::core::stopped(&mut shutdown) => return Ok(()),
                m = tokio::time::timeout(idle, inbound.next()) => match m {
                    Err(_) => {
                        tracing::warn!(secs = idle.as_secs(), "no message from the agent; dropping the session");
                        return Ok(());
                    }
                    Ok(Some(Err(status))) => {
                        tracing::info!(error = %status.message(), "agent stream ended");
                        return Ok(());
                    }
                    Ok(None) => return Ok(()),
                    Ok(Some(Ok(m))) => m,
                },
            };
            let mut batch = vec![first];
            let mut bytes = batch[0].size();
            let mut ended = false;
            while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
                match inbound.next().now_or_never() {
                    Some(Some(Ok(m))) => {
                        bytes += m.size();
                        batch.push(m);
                    }
                    Some(None) | Some(Some(Err(_))) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            self.process(batch).await?;
            if ended {
                return Ok(());
            }
        }
    }

    async fn process(&mut self, batch: Vec<Inbound>) -> Result<(), Error> {
        let mut chunks = Vec::new();
        // Jobs whose output this batch already found unwanted: one store
        // read per job and batch at most.
        let mut refused = HashSet::new();
        for m in batch {
            match m {
                Inbound::Output {
                    job_id,
                    stream,
                    offset,
                    data,
                } => {
                    if refused.contains(&job_id) {
                        continue;
                    }
                    if !self
                        .stage(&job_id, stream, offset, data, &mut chunks)
                        .await?
                    {
                        refused.insert(job_id);
                    }
                }
                other => {
                    self.flush(&mut chunks).await?;
                    self.handle(other).await?;
                }
            }
        }
        self.flush(&mut chunks).await
    }

    /// The job, if its output is wanted from this node (from the cache, or
    /// read from the store).
    async fn accepting(&mut self, job_id: &str) -> Result<Option<Job>, Error> {
        if let Some(j) = self.jobs.get(job_id) {
            return Ok(Some(j.clone()));
        }
        self.confirm(job_id).await
    }

    /// Reads the job from the store: `Some` (and cached) if it is active on
    /// this node now.
    async fn confirm(&mut self, job_id: &str) -> Result<Option<Job>, Error> {
        match self.core.store.get_job_by_id(job_id).await {
            Ok(j) if j.is_active_on(&self.node_id) => {
                self.jobs.insert(job_id.to_string(), j.clone());
                Ok(Some(j))
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                self.jobs.remove(job_id);
                Ok(None)
            }
            Err(e) => Err(Error::from(e)),
        }
    }

    /// Stages a chunk if this node writes the job's output; false if the
    /// job's output is not wanted from this node.
    async fn stage(
        &mut self,
        job_id: &str,
        stream: Option<crate::output::StreamKind>,
        offset: u64,
        data: Vec<u8>,
        chunks: &mut Vec<Chunk>,
    ) -> Result<bool, Error> {
        let Some(stream) = stream else {
            tracing::warn!(job = %job_id, "output chunk without a stream; dropped");
            return Ok(true);
        };
        let Some(job) = self.accepting(job_id).await? else {
            tracing::debug!(job = %job_id, "output of a job not running here; dropped");
            return Ok(false);
        };
        let Some(file) = self
            .core
            .outputs
            .file(&job, self.file_id(&job, stream))
            .await?
        else {
            return Ok(false);
        };
        let mine = match file.lease(&self.node_id)? {
            Lease::Mine => true,
            Lease::NotMine => false,
            // No writer yet (a file opened since the coordinator started):
            // this read comes after the file was opened, so if the job is
            // active here now, no newer attempt has reset it.
            Lease::Free => self.confirm(job_id).await?.is_some() && file.claim(&self.writer)?,
        };
        if !mine {
            self.jobs.remove(job_id);
            tracing::debug!(job = %job_id, "output of an attempt that is not current; dropped");
            return Ok(false);
        }
        chunks.push(Chunk {
            file,
            writer: self.writer.clone(),
            offset,
            data,
        });
        Ok(true)
    }

    async fn flush(&mut self, chunks: &mut Vec<Chunk>) -> Result<(), Error> {
        if chunks.is_empty() {
            return Ok(());
        }
        let touched = self.core.outputs.write(std::mem::take(chunks)).await?;
        let mut jobs = Vec::new();
        for f in &touched {
            self.send(Outbound::Ack {
                job_id: f.job_id.clone(),
                stream: f.stream,
                offset: f.durable_len(),
            });
            if !jobs.contains(&f.job_id) {
                jobs.push(f.job_id.clone());
            }
        }
        for id in jobs {
            if self.exits.contains_key(&id) {
                self.try_exit(&id).await?;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, m: Inbound) -> Result<(), Error> {
        match m {
            Inbound::Register(_) => Err(Error::FailedPrecondition(
                "register: sent twice in one session".into(),
            )),
            Inbound::Heartbeat(sample) => {
                // Not a state change: kept in memory, stored when the session ends.
                let now = now_millis();
                self.core.metrics.record(
                    crate::metrics::Source {
                        workspace: self.workspace.clone(),
                        cluster: self.cluster.clone(),
                        node_id: self.node_id.clone(),
                    },
                    *sample,
                );
                self.last_heartbeat = Some(now);
                self.core
                    .sessions
                    .heartbeat(&self.node_id, self.generation, now);
                Ok(())
            }
            Inbound::Started { job_id, start_time } => {
                match self
                    .core
                    .store
                    .record_job_started(&job_id, &self.node_id, start_time)
                    .await?
                {
                    Some(j) => {
                        tracing::info!(job = %job_id, "job started");
                        self.core.events.changed(&j);
                    }
                    None => tracing::debug!(job = %job_id, "start of a job not running here"),
                }
                Ok(())
            }
            Inbound::Exited(exit) => {
                let id = exit.job_id.clone();
                self.exits
                    .insert(id.clone(), PendingExit { exit, acked: false });
                self.try_exit(&id).await
            }
            Inbound::NodeStatus(report) => self.prepared(report).await,
            Inbound::GpuEvent(mut ev) => {
                ev.node_id = self.node_id.clone();
                self.gpu_event(*ev).await
            }
            Inbound::SetupOutput {
                run,
                stream,
                offset,
                data,
            } => {
                let Some(stream) = stream else {
                    tracing::warn!("setup output without a stream; dropped");
                    return Ok(());
                };
                let files = self.setup_files().await?;
                let len = self
                    .core
                    .setup_outputs
                    .write(files, run.clone(), stream, offset, data)
                    .await?;
                self.send(Outbound::SetupAck {
                    run,
                    stream,
                    offset: len,
                });
                Ok(())
            }
            Inbound::Output { .. } | Inbound::Unknown => Ok(()),
        }
    }

    /// Records a GPU health event; a fault terminates the job holding the
    /// GPU, a recovery lets the scheduler use it again.
    async fn gpu_event(&mut self, ev: crate::domain::gpus::GpuEvent) -> Result<(), Error> {
        use crate::domain::gpus::HealthChange;
        let (uuid, message) = (ev.uuid.clone(), ev.message.clone());
        let out = self.core.store.record_gpu_event(ev).await?;
        match out.change {
            HealthChange::Faulted => {
                tracing::warn!(gpu = %uuid, %message, "GPU out of scheduling")
            }
            HealthChange::Restored => {
                tracing::info!(gpu = %uuid, %message, "GPU back in service");
                self.core.kick_scheduler();
            }
            HealthChange::Unchanged => tracing::info!(gpu = %uuid, %message, "GPU event"),
        }
        if let Some(job) = out.terminated {
            tracing::warn!(job = %job.id, gpu = %uuid, "terminating the job holding a faulted GPU");
            self.core.events.changed(&job);
            self.core.stop_job(&job);
        }
        Ok(())
    }

    async fn setup_files(&self) -> Result<Arc<crate::setup_output::NodeFiles>, Error> {
        Ok(self
            .core
            .setup_outputs
            .node(&self.workspace, &self.cluster, &self.node_id)
            .await?)
    }

    /// Records the agent's report on its preparation, if it is about the
    /// cluster's current setup.
    async fn prepared(&mut self, report: PreparationReport) -> Result<(), Error> {
        if report.generation != self.plan.generation {
            tracing::debug!(
                generation = %report.generation,
                "preparation report for another setup; ignored"
            );
            return Ok(());
        }
        let node = self
            .core
            .store
            .report_preparation(&self.node_id, report.preparation.clone(), now_millis())
            .await?;
        match &report.preparation {
            Preparation::Preparing { step } => tracing::info!(step = %step, "node preparing"),
            Preparation::Ready => tracing::info!(state = node.state.as_str(), "node prepared"),
            Preparation::Unusable { step, error } => tracing::warn!(
                step = %step,
                code = %error.code,
                reason = %error.message,
                "node unusable"
            ),
        }
        self.core.kick_scheduler();
        self.core.kick_provider();
        Ok(())
    }

    /// Records a pending exit once all of the job's output is durable.
    async fn try_exit(&mut self, job_id: &str) -> Result<(), Error> {
        let job = match self.core.store.get_job_by_id(job_id).await {
            Ok(j) if j.is_active_on(&self.node_id) => Some(j),
            Ok(_) | Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(Error::from(e)),
        };
        let Some(job) = job else {
            // Deleted, ended, or moved: nothing to record; the agent may forget it.
            self.exits.remove(job_id);
            self.jobs.remove(job_id);
            self.send(Outbound::Release {
                job_id: job_id.to_string(),
            });
            self.core.sessions.unfence(&self.node_id, job_id);
            self.core
                .store
                .refresh_node_state(&self.node_id, now_millis())
                .await?;
            self.core.kick_scheduler();
            self.core.kick_provider();
            return Ok(());
        };
        let Some(pending) = self.exits.get(job_id) else {
            return Ok(());
        };
        let mut short = Vec::new();
        for (stream, want) in pending.exit.lengths.clone() {
            let have = match self
                .core
                .outputs
                .file(&job, self.file_id(&job, stream))
                .await?
            {
                Some(f) => f.durable_len(),
                None => want,
            };
            if have < want {
                short.push((stream, have));
            } else if have > want {
                tracing::warn!(
                    job = job_id,
                    stream = stream.file_name(),
                    have,
                    want,
                    "stored output is longer than the agent reports"
                );
            }
        }
        if !short.is_empty() {
            tracing::debug!(job = job_id, "exit waits for output still to arrive");
            if let Some(p) = self.exits.get_mut(job_id)
                && !p.acked
            {
                p.acked = true;
                for (stream, offset) in short {
                    self.send(Outbound::Ack {
                        job_id: job_id.to_string(),
                        stream,
                        offset,
                    });
                }
            }
            return Ok(());
        }
        let Some(pending) = self.exits.remove(job_id) else {
            return Ok(());
        };
        let mut exit = pending.exit.exit;
        // The agent's own end-of-job summary has every sample; the latest
        // heartbeat's is the fallback (an agent that restarted mid-job may
        // know fewer samples than the coordinator saw: the fuller one wins).
        let latest = self.core.metrics.take_job_summary(job_id);
        exit.metrics = match (exit.metrics.take(), latest) {
            (Some(a), Some(l)) if l.samples > a.samples => Some(l),
            (a, l) => a.or(l),
        };
        if let Some(j) = self
            .core
            .store
            .finish_job(job_id, &self.node_id, exit)
            .await?
        {
            tracing::info!(
                job = job_id,
                state = j.execution_state.as_str(),
                exit_code = ?j.exit_code,
                "job attempt ended"
            );
            self.core.job_attempt_ended(&j);
        }
        self.jobs.remove(job_id);
        self.send(Outbound::Release {
            job_id: job_id.to_string(),
        });
        Ok(())
    }
}
