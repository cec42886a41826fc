//! The autoscaler: every `autoscale_interval`, each autoScale cluster's
//! target is set from its nodes and queue (`domain::autoscale::decide`), and
//! the provider follows the target (removing the idle nodes first). Each
//! change is logged and kept in the cluster's event record with its reason
//! (in the transaction that sets the target).

use crate::core::Core;
use crate::domain::autoscale::{self, AutoScale, NodeView};
use crate::domain::{NodeState, ScaleSettings, now_millis};
use crate::store::StoreError;
use std::sync::Arc;

pub async fn run(core: Arc<Core>) {
    let mut shutdown = core.shutdown();
    loop {
        tokio::select! {
            _ = crate::core::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(core.settings.autoscale_interval) => {}
        }
        if let Err(e) = pass(&core, now_millis()).await {
            tracing::error!(error = %e, "autoscaler pass failed");
        }
    }
}

/// One look at every autoScale cluster; returns how many were retargeted.
pub async fn pass(core: &Core, now: i64) -> Result<usize, StoreError> {
    let grace = i64::try_from(core.settings.autoscale_idle_grace.as_millis()).unwrap_or(i64::MAX);
    let mut changed = 0;
    for c in core.store.list_all_clusters().await? {
        let ScaleSettings::AutoScale {
            minimum_node_count: min,
            maximum_node_count: max,
            ..
        } = c.spec.scale
        else {
            continue;
        };
        let q = core.store.cluster_queue(&c.workspace, &c.name).await?;
        let nodes: Vec<NodeView> = q
            .nodes
            .iter()
            .map(|n| NodeView {
                id: n.node_id.clone(),
                state: n.state,
                idle_since_ms: (n.state == NodeState::Idle).then_some(n.state_transition_time),
            })
            .collect();
        let queued: Vec<u32> = q.queued.iter().map(|j| j.spec.node_count.max(1)).collect();
        let d = autoscale::decide(AutoScale { min, max }, &nodes, &queued, now, grace);
        if d.target == c.target_node_count {
            continue;
        }
        if core
            .store
            .set_autoscale_target(&c.workspace, &c.name, d.target, &d.reason, now)
            .await?
            .is_some()
        {
            tracing::info!(
                cluster = %format!("{}/{}", c.workspace, c.name),
                from = c.target_node_count,
                target = d.target,
                reason = %d.reason,
                "autoscale"
            );
            changed += 1;
        }
    }
    if changed > 0 {
        core.kick_provider();
    }
    Ok(changed)
}
