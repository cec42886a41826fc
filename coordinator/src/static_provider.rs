//! The static provider: the clusters of a coordinator without
//! `--local-agents`, whose nodes are agents started by systemd on existing
//! machines. It cannot create nodes, so a cluster's target is a ceiling: a
//! cluster short of it says how many nodes are missing (`missing_error`).
//! It can take nodes out: when a cluster's target falls (a resize, or the
//! autoscaler) below the nodes it has, the surplus — disconnected nodes
//! first, then unusable, then idle ones, busy ones last (the local
//! provider's order, `local_provider::plan_cluster`) — is marked leaving and
//! its jobs follow the cluster's deallocation option; a leaving node with no
//! job left (or whose agent has been away 30 s) is sent `Shutdown` (its agent
//! exits; `bai-agent.service` restarts it only on failure) and deleted.
//!
//! Only a fall of the target removes nodes: nodes that register beyond the
//! target are kept (until the next resize), so starting one more agent on a
//! machine never makes another go. The targets seen are in memory: after a
//! coordinator restart the first look takes them as they are. An autoScale
//! cluster here still has its target set by its queue: a raise shows as
//! missing nodes, and idle nodes past the grace are shut down (their agents
//! do not come back by themselves).

use crate::agent::registry::Outbound;
use crate::core::{Core, stopped};
use crate::domain::{BatchAiError, Cluster, Node, NodeState, now_millis};
use crate::local_provider::{Member, plan_cluster};
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a leaving node's agent may stay away with jobs before the node
/// is deleted anyway (its jobs requeued or failed as they were to be).
const GONE_AFTER_MS: i64 = 30_000;

pub struct StaticProvider {
    core: Arc<Core>,
}

impl StaticProvider {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Looks at every kick (and every few seconds) until shutdown.
    pub async fn run(self) {
        let core = self.core;
        let mut shutdown = core.shutdown();
        let mut seen: HashMap<(String, String), u32> = HashMap::new();
        let mut first = true;
        loop {
            if let Err(e) = pass(&core, &mut seen, first, now_millis()).await {
                tracing::error!(error = %e, "static provider pass failed");
            }
            first = false;
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = core.provider_kicked() => {}
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
        }
    }
}

/// One look at every cluster: removals for targets that fell since the
/// last look (`seen`; on the `first` look none), then the leaving nodes.
pub async fn pass(
    core: &Core,
    seen: &mut HashMap<(String, String), u32>,
    first: bool,
    now: i64,
) -> Result<(), StoreError> {
    // Cheap reads: the clusters, and only the nodes of one whose target
    // fell; then the leaving nodes of all (a 10,000-node fleet is not read
    // at every kick).
    let clusters = core.store.list_all_clusters().await?;
    let mut still = HashMap::new();
    for c in &clusters {
        let key = (c.workspace.clone(), c.name.clone());
        let before = seen.get(&key).copied();
        still.insert(key, c.target_node_count);
        if !first && before.is_some_and(|b| c.target_node_count < b) {
            let nodes = core.store.list_nodes(&c.workspace, &c.name).await?;
            shrink(core, c, &nodes).await?;
        }
    }
    *seen = still;
    for n in core.store.list_leaving_nodes().await? {
        finish_removal(core, &n, now).await?;
    }
    Ok(())
}

/// Marks the nodes beyond the cluster's target leaving.
async fn shrink(core: &Core, c: &Cluster, nodes: &[Node]) -> Result<(), StoreError> {
    let members: Vec<Member> = nodes
        .iter()
        .filter(|n| n.state != NodeState::Leaving)
        .map(|n| Member {
            node_id: n.node_id.clone(),
            alive: core.sessions.is_connected(&n.node_id),
            state: Some(n.state),
            has_jobs: !n.running_job_ids.is_empty(),
        })
        .collect();
    for id in plan_cluster(c.target_node_count, &members).remove {
        tracing::info!(node = %id, cluster = %format!("{}/{}", c.workspace, c.name), "removing node (resize down)");
        let reason = format!("cluster target {}", c.target_node_count);
        core.begin_node_removal(&id, c.spec.scale.deallocation(), &reason)
            .await?;
    }
    Ok(())
}

/// A leaving node with no job left, or away too long, is told to shut down
/// and deleted.
async fn finish_removal(core: &Core, n: &Node, now: i64) -> Result<(), StoreError> {
    let connected = core.sessions.is_connected(&n.node_id);
    let away = !connected && now.saturating_sub(n.state_transition_time) >= GONE_AFTER_MS;
    if !n.running_job_ids.is_empty() && !away {
        return Ok(());
    }
    core.sessions.send(
        &n.node_id,
        Outbound::Shutdown {
            reason: "the node is removed from its cluster".into(),
        },
    );
    core.remove_node(&n.node_id).await?;
    tracing::info!(node = %n.node_id, "node removed");
    core.kick_scheduler();
    Ok(())
}

/// The static provider cannot create nodes: a cluster whose target exceeds
/// the nodes that joined says how many are missing.
pub fn missing_error(target: u32, joined: u32) -> Option<BatchAiError> {
    (joined < target).then(|| {
        BatchAiError::new(
            "NodesMissing",
            format!(
                "{} of the target {target} nodes have not joined: start bai-agent on more machines for this cluster (this coordinator's nodes are static: it cannot create them)",
                target - joined
            ),
        )
    })
}
