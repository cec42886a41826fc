//! Durable state behind a narrow trait. Every method that changes state is
//! atomic and committed before it returns (an implementation may commit
//! several callers' changes together); a method that fails changes nothing.
//! A store decides no transition: it reads, asks `domain::transition`, and
//! writes the result. `sqlite` is the implementation today; the trait is
//! async (`async_trait`, so it stays `dyn`-compatible, with no tie to the
//! RPC stack) so a PostgreSQL implementation can follow, and
//! `conformance` is the suite every implementation must pass.

#[cfg(test)]
pub mod conformance;
pub mod sqlite;

use crate::domain::cluster_events::ClusterEvent;
use crate::domain::gpus::GpuEvent;
use crate::domain::node_setup::Preparation;
use crate::domain::paging::{Page, PageRequest};
use crate::domain::{
    BatchAiError, Cluster, DeallocationOption, Experiment, Job, JobExit, JobKey, Millis, Node,
    NodeInfo, ScaleSettings, Workspace,
};
use async_trait::async_trait;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The request contradicts what is stored (e.g. a node id registered in
    /// another cluster).
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Backend(String),
}

/// A transition the state machine refuses is a bug of the caller or the
/// store, not bad input.
impl From<crate::domain::transition::TransitionError> for StoreError {
    fn from(e: crate::domain::transition::TransitionError) -> Self {
        Self::Backend(e.to_string())
    }
}

impl StoreError {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a delete removed or changed, for the caller to act on (terminate
/// processes, delete output, tell watchers, shut nodes down).
#[derive(Debug, Default)]
pub struct Removed {
    /// Jobs deleted, as they were just before.
    pub deleted_jobs: Vec<Job>,
    /// Jobs not deleted that changed (failed because their cluster or node
    /// went away), as they are now.
    pub changed_jobs: Vec<Job>,
    /// Job processes to stop: (job id, node id) of every job that was active.
    pub stop: Vec<(String, String)>,
    /// Nodes removed, as they were just before.
    pub nodes: Vec<Node>,
}

/// Counts by state (see [`Store::state_counts`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateCounts {
    /// (workspace, cluster, execution state, count), by the jobs' cluster.
    pub jobs: Vec<(String, String, String, u64)>,
    /// (workspace, cluster, node state, count).
    pub nodes: Vec<(String, String, String, u64)>,
    /// Running and terminating jobs.
    pub active: Vec<Job>,
}

/// A cluster's queue (see [`Store::cluster_queue`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterQueue {
    /// The cluster's target node count; `None` if there is no such cluster.
    pub target_node_count: Option<u32>,
    /// Its nodes in node id order, with their holdings (`connected` as
    /// stored: live sessions know better).
    pub nodes: Vec<Node>,
    /// Its queued jobs in scheduling order (priority high → low, then creation).
    pub queued: Vec<Job>,
}

/// An agent's Register, as the store needs it.
#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub node_id: String,
    pub workspace: String,
    pub cluster: String,
    pub info: NodeInfo,
    /// Whether the node is ready for its cluster's setup
    /// (`domain::node_setup::ready_on_register`); if not, it is `preparing`.
    pub ready: bool,
    /// The step its agent reports working on, if it is preparing.
    pub step: String,
}

/// The start of a node's removal.
#[derive(Debug)]
pub struct NodeRemoval {
    pub node: Node,
    /// Jobs now terminating because of the removal (send them TerminateJob).
    pub terminating: Vec<Job>,
}

/// What recording a GPU event did.
#[derive(Debug, Clone)]
pub struct GpuEventOutcome {
    /// The node as it is now.
    pub node: Node,
    pub change: crate::domain::gpus::HealthChange,
    /// The job that held the GPU, now terminating (send it TerminateJob).
    pub terminated: Option<Job>,
}

/// How many queued jobs past a cluster's room [`Store::schedulable`] reads,
/// so jobs behind one that must wait can be backfilled.
pub const BACKFILL_LOOKAHEAD: usize = 32;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ------------------------------------------------------------ workspaces
    async fn create_workspace(&self, ws: Workspace) -> Result<Workspace>;
    async fn get_workspace(&self, name: &str) -> Result<Workspace>;
    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>>;
    /// Deletes the workspace, its experiments, jobs, clusters and nodes.
    async fn delete_workspace(&self, name: &str, now: Millis) -> Result<Removed>;

    // ----------------------------------------------------------- experiments
    async fn create_experiment(&self, e: Experiment) -> Result<Experiment>;
    async fn get_experiment(&self, ws: &str, name: &str) -> Result<Experiment>;
    async fn list_experiments(&self, ws: &str, page: &PageRequest) -> Result<Page<Experiment>>;
    /// Deletes the experiment and its jobs.
    async fn delete_experiment(&self, ws: &str, name: &str) -> Result<Removed>;

    // -------------------------------------------------------------- clusters
    async fn create_cluster(&self, c: Cluster) -> Result<Cluster>;
    async fn get_cluster(&self, ws: &str, name: &str) -> Result<Cluster>;
    async fn list_clusters(&self, ws: &str, page: &PageRequest) -> Result<Page<Cluster>>;
    async fn list_all_clusters(&self) -> Result<Vec<Cluster>>;
    /// Replaces the scale settings and recomputes the target node count.
    async fn update_cluster_scale(
        &self,
        ws: &str,
        name: &str,
        scale: ScaleSettings,
        now: Millis,
    ) -> Result<Cluster>;
    /// Sets an autoScale cluster's target node count (the autoscaler's
    /// decision; its settings stay), `None` where the cluster is gone or not
    /// autoScale any more.
    async fn set_autoscale_target(
        &self,
        ws: &str,
        name: &str,
        target: u32,
        reason: &str,
        now: Millis,
    ) -> Result<Option<Cluster>>;
    /// The cluster's event record after `after_seq`, oldest first, at most
    /// `limit` (with `newest`: the last `limit`). `NotFound` for an unknown
    /// cluster.
    async fn list_cluster_events(
        &self,
        ws: &str,
        cluster: &str,
        after_seq: i64,
        limit: u32,
        newest: bool,
    ) -> Result<Vec<ClusterEvent>>;
    /// Deletes the cluster and its nodes; jobs running there and queued jobs
    /// for it fail with `ClusterDeleted`.
    async fn delete_cluster(&self, ws: &str, name: &str, now: Millis) -> Result<Removed>;

    // ----------------------------------------------------------------- nodes
    /// Creates or updates the node (connected, idle or running), and returns
    /// it with the jobs the store has running or terminating on it.
    async fn register_node(&self, reg: NodeRegistration, now: Millis) -> Result<(Node, Vec<Job>)>;
    /// Records whether the node's agent has a session; `last_heartbeat` (the
    /// last one the session saw; heartbeats are kept in memory while a
    /// session lives) is stored if later than the stored one.
    async fn set_node_connected(
        &self,
        node_id: &str,
        connected: bool,
        last_heartbeat: Option<Millis>,
    ) -> Result<()>;
    /// Marks every node disconnected (at startup: no session survives a restart).
    async fn disconnect_all_nodes(&self) -> Result<()>;
    async fn get_node(&self, node_id: &str) -> Result<Node>;
    async fn list_nodes(&self, ws: &str, cluster: &str) -> Result<Vec<Node>>;
    /// Every node of every cluster of workspace `ws`, in node id order.
    async fn list_workspace_nodes(&self, ws: &str) -> Result<Vec<Node>>;
    async fn list_all_nodes(&self) -> Result<Vec<Node>>;
    /// Every leaving node (of every cluster), in node id order, with its jobs.
    async fn list_leaving_nodes(&self) -> Result<Vec<Node>>;
    /// Marks the node leaving; per `option` its running jobs become
    /// terminating (requeue: and go back to the queue when they exit).
    async fn begin_node_removal(
        &self,
        node_id: &str,
        option: DeallocationOption,
        reason: &str,
        now: Millis,
    ) -> Result<NodeRemoval>;
    /// A low-priority node is preempted: it is leaving and its jobs are
    /// terminating, to be requeued, whatever the cluster's deallocation
    /// option; recorded in its cluster's events. `Conflict` for a node of a
    /// dedicated cluster or one already leaving; nothing changes then.
    async fn preempt_node(&self, node_id: &str, reason: &str, now: Millis) -> Result<NodeRemoval>;
    /// Deletes the node. Jobs still on it go back to the queue if they were to
    /// be requeued, else fail with `NodeRemoved`; returns them as they are now.
    async fn remove_node(&self, node_id: &str, now: Millis) -> Result<Vec<Job>>;
    /// Records what the node's agent reports about its preparation (for the
    /// cluster's current setup): preparing moves an idle or unusable node to
    /// preparing, ready to idle (running with jobs), unusable to unusable with
    /// the error. A leaving node stays leaving. Returns the node as it is now.
    async fn report_preparation(
        &self,
        node_id: &str,
        preparation: Preparation,
        now: Millis,
    ) -> Result<Node>;
    /// Idle again if the node no longer has jobs (after an unknown job's exit).
    async fn refresh_node_state(&self, node_id: &str, now: Millis) -> Result<()>;
    /// The node's agent stayed away too long: the node becomes unusable with
    /// `error`, and its jobs fail with `JobLost` (or are requeued if they were
    /// to be). Returns the changed jobs. Registering again makes it usable.
    async fn mark_node_lost(
        &self,
        node_id: &str,
        error: BatchAiError,
        now: Millis,
    ) -> Result<Vec<Job>>;
    /// Records a GPU health event of the node (its `job_id` filled with the
    /// GPU's holder) in one transaction: the history entry; a fault takes
    /// the GPU out of scheduling and terminates the running job holding it
    /// (`GpuFault`); a recovery returns it (`domain::gpus::apply`).
    async fn record_gpu_event(&self, event: GpuEvent) -> Result<GpuEventOutcome>;
    /// Returns the node's GPU `gpu` (UUID or index) to service, recorded in
    /// its history with `who`; a healthy GPU is unchanged. `NotFound` for an
    /// unknown node or GPU.
    async fn clear_gpu_fault(
        &self,
        node_id: &str,
        gpu: &str,
        who: &str,
        now: Millis,
    ) -> Result<Node>;
    /// The GPU health history of the cluster's nodes (or one node's), oldest
    /// first. `NotFound` for an unknown cluster.
    async fn list_gpu_events(
        &self,
        ws: &str,
        cluster: &str,
        node_id: Option<&str>,
    ) -> Result<Vec<GpuEvent>>;

    // ------------------------------------------------------------------ jobs
    /// Creates a queued job; its experiment and cluster must exist.
    async fn create_job(&self, job: Job) -> Result<Job>;
    async fn get_job(&self, key: &JobKey) -> Result<Job>;
    async fn get_job_by_id(&self, id: &str) -> Result<Job>;
    async fn list_jobs(&self, ws: &str, exp: &str, page: &PageRequest) -> Result<Page<Job>>;
    /// Deletes the job and returns it as it was.
    async fn delete_job(&self, key: &JobKey) -> Result<Job>;
    /// Queued → failed (`JobTerminated`); running → terminating; otherwise unchanged.
    async fn terminate_job(&self, key: &JobKey, now: Millis) -> Result<Job>;
    /// Jobs running or terminating on the node.
    async fn jobs_on_node(&self, node_id: &str) -> Result<Vec<Job>>;
    /// How many jobs (by their cluster) and nodes are in each state, and the
    /// active jobs, read in one snapshot (for `/metrics`).
    async fn state_counts(&self) -> Result<StateCounts>;
    /// What a scheduler pass needs, read in one snapshot: the nodes that
    /// take jobs now or as their jobs end (idle with no active job, or
    /// running; connected or not, in node id order, with their holdings) and,
    /// for each cluster whose nodes have room (`gpus::room`), its first queued
    /// jobs in scheduling order (priority high → low, then creation): as many
    /// as the room, plus [`BACKFILL_LOOKAHEAD`] more. Nothing if no job is
    /// queued.
    async fn schedulable(&self) -> Result<(Vec<Node>, Vec<Job>)>;
    /// What says where a cluster's queued jobs stand (`scheduler::queue`),
    /// read in one snapshot: its target node count, all its nodes and all its
    /// queued jobs in scheduling order. An unknown cluster has no target, no
    /// nodes and no jobs (its queued jobs failed with it).
    async fn cluster_queue(&self, ws: &str, cluster: &str) -> Result<ClusterQueue>;
    /// For each (job id, its node ids by rank), all in one transaction: job
    /// queued → running on the nodes, nodes idle → running; `None` in its
    /// place (and no change for it) if the job is no longer queued or any
    /// node cannot take it (`domain::transition::assign_gang`).
    async fn assign_jobs(
        &self,
        placements: Vec<(String, Vec<String>)>,
        now: Millis,
    ) -> Result<Vec<Option<Job>>>;
    /// Records that the job's process started; `None` if the job is not active on the node.
    async fn record_job_started(
        &self,
        job_id: &str,
        node_id: &str,
        start_time: Millis,
    ) -> Result<Option<Job>>;
    /// Ends the job's attempt on the node (final state from its exit, or back
    /// to the queue); the node becomes idle. `None` if the job is not active on the node.
    async fn finish_job(&self, job_id: &str, node_id: &str, exit: JobExit) -> Result<Option<Job>>;
    /// The node lost the job: requeued if it was to be, else failed with `error`.
    async fn fail_job(
        &self,
        job_id: &str,
        node_id: &str,
        error: BatchAiError,
        now: Millis,
    ) -> Result<Option<Job>>;
}
