//! `Core`: what the API services, agent sessions, scheduler and local provider
//! share (store, sessions, output, job events, kicks), and the actions that
//! touch several of them. Every action commits to the store first, then tells
//! nodes and watchers.

use crate::agent::registry::{Outbound, Sessions};
use crate::domain::auto_storage::AutoStorageAccount;
use crate::domain::{ClusterKey, ExecutionState, Job, JobKey, Node, now_millis};
use crate::error::Result;
use crate::events::JobEvents;
use crate::output::OutputStore;
use crate::scheduler::queue::{self, QueueInfo};
use crate::setup_output::SetupOutputs;
use crate::storage::AutoStorage;
use crate::store::{Removed, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Tunables of the running coordinator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// SIGTERM → SIGKILL grace period of a terminated job.
    pub terminate_grace: Duration,
    /// A node whose agent stays away this long becomes unusable and its jobs
    /// fail with `JobLost`.
    pub node_lost_timeout: Duration,
    /// How often the autoscaler looks at the autoScale clusters.
    pub autoscale_interval: Duration,
    /// How long an autoScale cluster's node stays idle before it goes.
    pub autoscale_idle_grace: Duration,
    /// A lowpriority node whose job ran this long is preempted (`None`: never).
    pub preempt_lowpriority_after: Option<Duration>,
    /// The nodes are agents that join by themselves (no `--local-agents`):
    /// the static provider, which cannot create nodes.
    pub static_nodes: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            terminate_grace: Duration::from_secs(10),
            node_lost_timeout: Duration::from_secs(600),
            autoscale_interval: Duration::from_secs(5),
            autoscale_idle_grace: Duration::from_secs(300),
            preempt_lowpriority_after: None,
            static_nodes: false,
        }
    }
}

pub struct Core {
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub outputs: OutputStore,
    /// Each node's setup task output.
    pub setup_outputs: SetupOutputs,
    pub events: JobEvents,
    pub settings: Settings,
    /// The `[storage]` auto-storage account and its Blob client, if configured.
    pub auto_storage: Option<Arc<AutoStorage>>,
    /// Each connected node's latest heartbeat sample.
    pub metrics: crate::metrics::Latest,
    scheduler: Notify,
    provider: Notify,
    autoscaler: Notify,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        outputs: OutputStore,
        settings: Settings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            sessions: Sessions::default(),
            setup_outputs: SetupOutputs::new(outputs.root().to_path_buf()),
            outputs,
            events: JobEvents::new(),
            settings,
            auto_storage: None,
            metrics: crate::metrics::Latest::default(),
            scheduler: Notify::new(),
            provider: Notify::new(),
            autoscaler: Notify::new(),
            shutdown,
        }
    }

    /// The same core with `[storage]`'s auto-storage account.
    pub fn with_auto_storage(mut self, auto_storage: Option<AutoStorage>) -> Self {
        self.auto_storage = auto_storage.map(Arc::new);
        self
    }

    /// The auto-storage account expansion adds to volumes, if configured.
    pub fn auto_storage_account(&self) -> Option<&AutoStorageAccount> {
        self.auto_storage.as_deref().map(AutoStorage::account)
    }

    /// The node with the heartbeat time its live session saw (heartbeats are
    /// kept in memory while a session lives).
    /// `job` with its running attempt's latest summary (the store has an
    /// attempt's summary only once it ended).
    pub fn with_live_metrics(&self, mut job: Job) -> Job {
        if job.execution_state.is_active()
            && let Some(m) = self.metrics.job_summary(&job.id)
        {
            job.metrics = Some(m);
        }
        job
    }

    /// Where each queued job among `jobs` stands in its cluster's queue and
    /// why it waits, by job id: one store read per cluster of a queued job,
    /// the nodes connected as live sessions say (as the dispatcher has them).
    /// A job placed since it was read has none.
    pub async fn queue_info(&self, jobs: &[Job]) -> Result<HashMap<String, QueueInfo>> {
        let mut clusters: Vec<&ClusterKey> = Vec::new();
        for j in jobs {
            if j.execution_state == ExecutionState::Queued && !clusters.contains(&&j.spec.cluster) {
                clusters.push(&j.spec.cluster);
            }
        }
        let mut out = HashMap::new();
        for c in clusters {
            let mut q = self.store.cluster_queue(&c.workspace, &c.name).await?;
            for n in &mut q.nodes {
                n.connected = self.sessions.is_connected(&n.node_id);
            }
            out.extend(queue::explain(
                c,
                q.target_node_count,
                &q.queued,
                &q.nodes,
                crate::domain::now_millis(),
            ));
        }
        Ok(out)
    }

    pub fn with_live_heartbeat(&self, mut node: Node) -> Node {
        if let Some(t) = self.sessions.last_heartbeat(&node.node_id) {
            node.last_heartbeat_time = Some(node.last_heartbeat_time.map_or(t, |s| s.max(t)));
        }
        node
    }

    /// Asks the scheduler for a pass (coalesced).
    pub fn kick_scheduler(&self) {
        self.scheduler.notify_one();
    }

    pub async fn scheduler_kicked(&self) {
        self.scheduler.notified().await;
    }

    /// Asks the local provider to reconcile nodes (coalesced).
    pub fn kick_provider(&self) {
        self.provider.notify_one();
    }

    pub async fn provider_kicked(&self) {
        self.provider.notified().await;
    }

    /// Asks the autoscaler for a look before its next tick (a job was
    /// queued; coalesced).
    pub fn kick_autoscaler(&self) {
        self.autoscaler.notify_one();
    }

    pub async fn autoscaler_kicked(&self) {
        self.autoscaler.notified().await;
    }

    /// A receiver that turns true when the coordinator shuts down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The Prometheus text of the nodes' latest samples and the store's counts.
    pub async fn metrics_text(&self) -> Result<String> {
        let counts = self.store.state_counts().await?;
        Ok(crate::metrics::render(&self.metrics.snapshot(), &counts))
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn send_terminate(&self, job_id: &str, node_id: &str) {
        let sent = self.sessions.send(
            node_id,
            Outbound::Terminate {
                job_id: job_id.to_string(),
                grace: self.settings.terminate_grace,
            },
        );
        if !sent {
            tracing::info!(
                job = job_id,
                node = node_id,
                "node not connected; it gets the terminate when it registers"
            );
        }
    }

    /// Tells every node still running a process of the job to stop it.
    pub fn stop_job(&self, job: &Job) {
        for node in job.live_node_ids() {
            self.send_terminate(&job.id, &node);
        }
    }

    /// After a job's attempt ended (or went back to the queue), or one rank
    /// of a multi-node job did: tell watchers, close its files, let the
    /// scheduler and provider look again; a multi-node job whose end is
    /// decided (it is terminating) has its other ranks stopped.
    pub fn job_attempt_ended(&self, job: &Job) {
        if job.gang.is_some() && job.execution_state == crate::domain::ExecutionState::Terminating {
            self.stop_job(job);
        }
        self.events.changed(job);
        self.outputs.close(job);
        self.kick_scheduler();
        self.kick_provider();
    }

    /// Preempts a low-priority node (a provider's notice, the operator's
    /// `bai cluster node preempt`, or the run-time policy): the node leaves,
    /// its jobs are stopped and go back to the queue, and the provider
    /// replaces it. `FailedPrecondition` for a dedicated cluster's node.
    pub async fn preempt_node(&self, node_id: &str, reason: &str) -> Result<crate::domain::Node> {
        let removal = self
            .store
            .preempt_node(node_id, reason, now_millis())
            .await?;
        tracing::warn!(node = %node_id, %reason, jobs = removal.terminating.len(), "node preempted");
        self.stop_removed_jobs(&removal);
        self.kick_provider();
        Ok(removal.node)
    }

    /// A provider begins a node's removal: the node leaves, and its jobs
    /// follow `option` (those now terminating are stopped).
    pub async fn begin_node_removal(
        &self,
        node_id: &str,
        option: crate::domain::DeallocationOption,
        reason: &str,
    ) -> std::result::Result<(), crate::store::StoreError> {
        let removal = self
            .store
            .begin_node_removal(node_id, option, reason, now_millis())
            .await?;
        self.stop_removed_jobs(&removal);
        Ok(())
    }

    /// A provider deletes a node (its removal done, or its agent gone):
    /// the jobs still on it end or go back to the queue.
    pub async fn remove_node(
        &self,
        node_id: &str,
    ) -> std::result::Result<(), crate::store::StoreError> {
        for job in self.store.remove_node(node_id, now_millis()).await? {
            self.job_attempt_ended(&job);
        }
        Ok(())
    }

    fn stop_removed_jobs(&self, removal: &crate::store::NodeRemoval) {
        for job in &removal.terminating {
            self.events.changed(job);
            self.stop_job(job);
        }
    }

    /// TerminateJob: queued → failed at once; running → terminating and the
    /// node is told to stop it; ended → unchanged.
    pub async fn terminate_job(&self, key: &JobKey) -> Result<Job> {
        let before = self.store.get_job(key).await?;
        let job = self.store.terminate_job(key, now_millis()).await?;
        if job.execution_state != before.execution_state {
            tracing::info!(job = %job.id, state = job.execution_state.as_str(), "job terminate requested");
            self.events.changed(&job);
            // A queued job fails at once: retire its files, so a session that
            // still caches an earlier attempt cannot append to an ended job.
            self.outputs.close(&job);
        }
        if job.execution_state.is_active() {
            self.stop_job(&job);
        }
        Ok(job)
    }

    /// DeleteJob: deletes it (stopping its process if it runs) and its output.
    pub async fn delete_job(&self, key: &JobKey) -> Result<()> {
        let job = self.store.delete_job(key).await?;
        tracing::info!(job = %job.id, "job deleted");
        if job.execution_state.is_active() {
            self.stop_job(&job);
        }
        self.forget_job(&job).await;
        Ok(())
    }

    async fn forget_job(&self, job: &Job) {
        if let Err(e) = self.outputs.delete(job).await {
            tracing::warn!(job = %job.id, error = %e, "could not delete job output");
        }
        self.events.deleted(job);
    }

    /// Acts on what a delete removed: stops processes, deletes output, tells
    /// watchers, shuts removed nodes down.
    pub async fn apply_removed(&self, removed: Removed) {
        for (job_id, node_id) in &removed.stop {
            self.send_terminate(job_id, node_id);
        }
        for job in &removed.deleted_jobs {
            self.forget_job(job).await;
        }
        for job in &removed.changed_jobs {
            self.events.changed(job);
            self.outputs.close(job);
        }
        for node in &removed.nodes {
            self.sessions.send(
                &node.node_id,
                Outbound::Shutdown {
                    reason: format!("cluster {}/{} was deleted", node.workspace, node.cluster),
                },
            );
        }
        self.kick_scheduler();
        self.kick_provider();
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
