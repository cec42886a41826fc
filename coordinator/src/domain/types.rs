//! The coordinator's resources as plain data: workspace, experiment, cluster,
//! node and job. Times are unix milliseconds.

use super::spec::{BatchAiError, ClusterSpec, JobSpec};
use super::state::{ExecutionState, NodeState};
use std::collections::BTreeMap;

/// Unix time in milliseconds.
pub type Millis = i64;

/// The current time in unix milliseconds.
pub fn now_millis() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub name: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub creation_time: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Experiment {
    pub workspace: String,
    pub name: String,
    pub creation_time: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub workspace: String,
    pub name: String,
    pub spec: ClusterSpec,
    /// How many nodes the cluster should have (from the scale settings).
    pub target_node_count: u32,
    pub creation_time: Millis,
    pub allocation_state_transition_time: Millis,
    pub errors: Vec<BatchAiError>,
}

/// Counts of a cluster's nodes by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStateCounts {
    pub idle: u32,
    pub running: u32,
    pub preparing: u32,
    pub unusable: u32,
    pub leaving: u32,
}

impl NodeStateCounts {
    pub fn of(nodes: &[Node]) -> Self {
        let mut c = Self::default();
        for n in nodes {
            match n.state {
                NodeState::Idle => c.idle += 1,
                NodeState::Running => c.running += 1,
                NodeState::Preparing => c.preparing += 1,
                NodeState::Unusable => c.unusable += 1,
                NodeState::Leaving => c.leaving += 1,
            }
        }
        c
    }
}

/// Batch AI's allocation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationState {
    Steady,
    Resizing,
}

/// A cluster with what is computed from its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster: Cluster,
    pub current_node_count: u32,
    pub counts: NodeStateCounts,
    pub allocation_state: AllocationState,
    /// Why its unusable nodes are unusable, one error per node, naming it.
    pub node_errors: Vec<BatchAiError>,
}

impl ClusterView {
    /// Resizing while the nodes that are not leaving differ from the target,
    /// or while some node is still leaving.
    pub fn new(cluster: Cluster, nodes: &[Node]) -> Self {
        let counts = NodeStateCounts::of(nodes);
        let current = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        let staying = current - counts.leaving;
        let allocation_state = if staying != cluster.target_node_count || counts.leaving > 0 {
            AllocationState::Resizing
        } else {
            AllocationState::Steady
        };
        let node_errors = nodes
            .iter()
            .filter(|n| n.state == NodeState::Unusable)
            .flat_map(|n| {
                n.errors.iter().map(|e| {
                    let mut e = e.clone();
                    e.message = match n.preparation_step.as_str() {
                        "" => format!("node {}: {}", n.node_id, e.message),
                        step => format!("node {} ({step}): {}", n.node_id, e.message),
                    };
                    e.details.insert(0, ("node_id".into(), n.node_id.clone()));
                    e
                })
            })
            .collect();
        Self {
            cluster,
            current_node_count: current,
            counts,
            allocation_state,
            node_errors,
        }
    }
}

/// What an agent says about its machine when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub hostname: String,
    pub ip_address: String,
    pub agent_version: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    /// The port its sshd listens on (0: none).
    pub ssh_port: u32,
    /// How it mounts Azure Files shares and Blob containers (empty: it cannot).
    pub file_share_driver: String,
    pub blob_driver: String,
    /// Its GPUs in index order (none: a CPU node, or no driver).
    pub gpus: Vec<super::gpus::Gpu>,
    /// `nvml`, `fake` or `none`.
    pub gpu_backend: String,
    pub gpu_driver_version: String,
    pub cuda_version: String,
    pub job_cgroups: String,
    pub gpu_isolation: String,
    /// The node's container runtime's version line; empty: none.
    pub container_runtime: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: String,
    pub workspace: String,
    pub cluster: String,
    pub state: NodeState,
    pub state_transition_time: Millis,
    pub info: NodeInfo,
    pub connected: bool,
    pub last_heartbeat_time: Option<Millis>,
    pub errors: Vec<BatchAiError>,
    /// While preparing, the current step; when unusable, the step that failed.
    pub preparation_step: String,
    /// Ids of the jobs running (or terminating) on the node.
    pub running_job_ids: Vec<String>,
    /// What those jobs hold of it (filled with `running_job_ids`).
    pub holdings: Vec<super::gpus::Holding>,
}

/// A job's name: workspace / experiment / job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub workspace: String,
    pub experiment: String,
    pub name: String,
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.workspace, self.experiment, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub key: JobKey,
    /// A uuid; a new job of an old name gets a new one.
    pub id: String,
    pub spec: JobSpec,
    pub creation_time: Millis,
    pub execution_state: ExecutionState,
    pub execution_state_transition_time: Millis,
    /// Latest start of the job's process.
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub exit_code: Option<i32>,
    pub errors: Vec<BatchAiError>,
    /// The node of the latest attempt (kept after the job ends).
    pub node_id: Option<String>,
    /// Whether the current attempt's process was started.
    pub attempt_started: bool,
    /// Put the job back in the queue (instead of failing it) when its process
    /// exits: set when its node is removed with deallocation option requeue.
    pub requeue_on_exit: bool,
    /// The GPUs of its node the current (or last) attempt holds.
    pub gpu_uuids: Vec<String>,
    /// What the last attempt used, as its agent summed it up (stored when
    /// the attempt ends; a running job's comes from its heartbeats).
    pub metrics: Option<JobMetricsSummary>,
    /// A multi-node job's ranks in its current (or last) attempt; `None`
    /// for a single-node job. `node_id` and `gpu_uuids` are rank 0's.
    pub gang: Option<Gang>,
    /// Every attempt so far, the current (or last) one last; empty until the
    /// job is first assigned.
    pub attempts: Vec<Attempt>,
}

/// One attempt of a job: where and when it ran and how it ended. An attempt
/// opens when the job is assigned and closes when the job ends or goes back
/// to the queue; its output is kept apart from the others'
/// (`<job>/<uuid>/attempts/<n>/stdouterr` once a later attempt starts).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// Its nodes, by rank.
    pub node_ids: Vec<String>,
    pub assigned_time: Millis,
    /// Its process's start (the first rank's).
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub exit_code: Option<i32>,
    /// How it ended; `None` while it runs.
    pub outcome: Option<AttemptOutcome>,
    /// Why it is to be (or was) requeued: its node removed or preempted.
    pub requeue_reason: String,
    /// The errors it ended with.
    pub errors: Vec<BatchAiError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// Back to the queue for another attempt.
    Requeued,
}

/// The ranks of a multi-node job's attempt (rank 0, the master, first) and,
/// once decided, how the job ends: it ends when its master ends (or a rank
/// fails, or a node is lost), but only once every rank's process is gone
/// and its output stored, so the job is terminating meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Gang {
    pub ranks: Vec<JobRank>,
    pub end: Option<GangEnd>,
    /// The attempt's own secret: its ranks prove with it that an MPI
    /// launch comes from the job (`domain::mpi`).
    #[serde(default)]
    pub token: super::Secret,
}

/// One rank of a multi-node job.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JobRank {
    pub node_id: String,
    /// The node's address when the job was assigned: where its peers reach it.
    pub address: String,
    /// The GPUs of its node this rank holds.
    pub gpu_uuids: Vec<String>,
    /// Whether this rank runs a process (a custom toolkit's run on the
    /// master only; the others hold their nodes for it).
    pub launched: bool,
    pub started: bool,
    /// Its process is gone (exited, never started, or lost with its node).
    pub ended: bool,
}

/// How a multi-node job ends once all its ranks have.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GangEnd {
    /// Back to the queue as a whole (its node was removed with requeue).
    pub requeue: bool,
    pub succeeded: bool,
    pub exit_code: Option<i32>,
    pub errors: Vec<BatchAiError>,
    pub end_time: Millis,
    pub metrics: Option<JobMetricsSummary>,
}

/// A job attempt's use of its node, from its agent's samples. Fractions are
/// kept as integers (hundredths of a percent, milliseconds) so jobs compare
/// exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JobMetricsSummary {
    /// The latest sample's time.
    pub time: Millis,
    pub samples: u64,
    /// Mean and peak utilization of its GPUs, in hundredths of a percent.
    pub gpu_utilization_mean_centi: u32,
    pub gpu_utilization_max_centi: u32,
    pub gpu_memory_peak_bytes: u64,
    pub cpu_millis: u64,
    pub memory_peak_bytes: u64,
}

impl Job {
    /// `workspaces/<ws>/experiments/<exp>/jobs/<job>/<uuid>`.
    pub fn output_path_segment(&self) -> String {
        format!(
            "workspaces/{}/experiments/{}/jobs/{}/{}",
            self.key.workspace, self.key.experiment, self.key.name, self.id
        )
    }

    /// Whether the job's process on `node` is wanted: the job is running or
    /// terminating there (for a multi-node job: its rank there has not ended).
    pub fn is_active_on(&self, node: &str) -> bool {
        if !self.execution_state.is_active() {
            return false;
        }
        match &self.gang {
            None => self.node_id.as_deref() == Some(node),
            // A rank that runs nothing is ended from the start.
            Some(g) => g.ranks.iter().any(|r| r.node_id == node && !r.ended),
        }
    }

    /// The rank of `node` in the job's current attempt (0 for a single-node
    /// job on it).
    pub fn rank_of(&self, node: &str) -> Option<u32> {
        match &self.gang {
            None => (self.node_id.as_deref() == Some(node)).then_some(0),
            Some(g) => g
                .ranks
                .iter()
                .position(|r| r.node_id == node)
                .map(|i| i as u32),
        }
    }

    /// The nodes of the current (or last) attempt, by rank.
    pub fn node_ids(&self) -> Vec<String> {
        match &self.gang {
            None => self.node_id.iter().cloned().collect(),
            Some(g) => g.ranks.iter().map(|r| r.node_id.clone()).collect(),
        }
    }

    /// The nodes whose process of the job is wanted (see [`Job::is_active_on`]).
    pub fn live_node_ids(&self) -> Vec<String> {
        match &self.gang {
            _ if !self.execution_state.is_active() => Vec::new(),
            None => self.node_id.iter().cloned().collect(),
            Some(g) => g
                .ranks
                .iter()
                .filter(|r| !r.ended)
                .map(|r| r.node_id.clone())
                .collect(),
        }
    }

    /// Where rank `rank`'s peers reach it: its node's address when the job
    /// was assigned; a single-node job's peers are itself (loopback).
    pub fn rank_address(&self, rank: u32) -> String {
        match &self.gang {
            Some(g) => g
                .ranks
                .get(rank as usize)
                .map(|r| r.address.clone())
                .unwrap_or_default(),
            None => "127.0.0.1".to_string(),
        }
    }

    /// Whether the process on `node` started (the current attempt's).
    pub fn started_on(&self, node: &str) -> bool {
        match &self.gang {
            None => self.attempt_started,
            Some(g) => g.ranks.iter().any(|r| r.node_id == node && r.started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{DeallocationOption, ScaleSettings, VmPriority};

    fn cluster(target: u32) -> Cluster {
        Cluster {
            workspace: "w".into(),
            name: "c".into(),
            spec: ClusterSpec {
                vm_size: String::new(),
                vm_priority: VmPriority::Dedicated,
                scale: ScaleSettings::Manual {
                    target_node_count: target,
                    deallocation: DeallocationOption::Requeue,
                },
                image: None,
                node_setup: None,
                user_account: None,
                subnet_id: String::new(),
            },
            target_node_count: target,
            creation_time: 0,
            allocation_state_transition_time: 0,
            errors: vec![],
        }
    }

    fn node(state: NodeState) -> Node {
        Node {
            node_id: "n".into(),
            workspace: "w".into(),
            cluster: "c".into(),
            state,
            state_transition_time: 0,
            info: NodeInfo::default(),
            connected: true,
            last_heartbeat_time: None,
            errors: vec![],
            preparation_step: String::new(),
            holdings: vec![],
            running_job_ids: vec![],
        }
    }

    #[test]
    fn allocation_state_follows_nodes() {
        let v = ClusterView::new(cluster(2), &[node(NodeState::Idle)]);
        assert_eq!(v.allocation_state, AllocationState::Resizing);
        assert_eq!(v.current_node_count, 1);
        let v = ClusterView::new(
            cluster(2),
            &[node(NodeState::Idle), node(NodeState::Running)],
        );
        assert_eq!(v.allocation_state, AllocationState::Steady);
        assert_eq!(v.counts.idle, 1);
        assert_eq!(v.counts.running, 1);
        let v = ClusterView::new(
            cluster(1),
            &[node(NodeState::Idle), node(NodeState::Leaving)],
        );
        assert_eq!(v.allocation_state, AllocationState::Resizing);
        assert_eq!(v.counts.leaving, 1);
        let v = ClusterView::new(cluster(0), &[]);
        assert_eq!(v.allocation_state, AllocationState::Steady);
    }
}
