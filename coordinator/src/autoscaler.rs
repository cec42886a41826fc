//! The autoscaler: every `autoscale_interval` (and 200 ms after a job is
//! queued, so a burst waits for no tick), each autoScale cluster's
//! target is set from its nodes and queue (`domain::autoscale::decide`), and
//! the provider follows the target (removing the idle nodes first). Each
//! change is logged and kept in the cluster's event record with its reason
//! (in the transaction that sets the target).

use crate::core::Core;
use crate::domain::autoscale::{self, AutoScale, NodeView};
use crate::domain::{ExecutionState, NodeState, ScaleSettings, VmPriority, now_millis};
use crate::store::StoreError;
use std::sync::Arc;

/// How long a kick waits for more of a burst of new jobs before the look, so
/// one burst is one decision (and one event), not one per job.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

pub async fn run(core: Arc<Core>) {
    let mut shutdown = core.shutdown();
    let mut tick = tokio::time::interval(core.settings.autoscale_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        // Every interval, and soon after a job is queued.
        tokio::select! {
            _ = crate::core::stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
            _ = core.autoscaler_kicked() => {
                tokio::select! {
                    _ = crate::core::stopped(&mut shutdown) => return,
                    _ = tokio::time::sleep(SETTLE) => {}
                }
            }
        }
        if let Err(e) = pass(&core, now_millis()).await {
            tracing::error!(error = %e, "autoscaler pass failed");
        }
        if let Some(after) = core.settings.preempt_lowpriority_after
            && let Err(e) = preempt_long_runs(&core, after, now_millis()).await
        {
            tracing::error!(error = %e, "low-priority run-time check failed");
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
        let s = AutoScale {
            min,
            max,
            target: c.target_node_count,
        };
        let d = autoscale::decide(s, &nodes, &queued, now, grace);
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
                target_nodes = d.target,
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

/// The run-time policy for low-priority nodes (off unless configured): a
/// lowpriority cluster's node whose job has run `after` is preempted, and
/// the job requeued. Returns how many nodes were.
pub async fn preempt_long_runs(
    core: &Core,
    after: std::time::Duration,
    now: i64,
) -> Result<usize, crate::error::Error> {
    let limit = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    let low: std::collections::HashSet<(String, String)> = core
        .store
        .list_all_clusters()
        .await?
        .into_iter()
        .filter(|c| c.spec.vm_priority == VmPriority::LowPriority)
        .map(|c| (c.workspace, c.name))
        .collect();
    if low.is_empty() {
        return Ok(0);
    }
    // Every running job in one read, not a query per node.
    let mut overdue: Vec<String> = core
        .store
        .state_counts()
        .await?
        .active
        .into_iter()
        .filter(|j| {
            j.execution_state == ExecutionState::Running
                && low.contains(&(
                    j.spec.cluster.workspace.clone(),
                    j.spec.cluster.name.clone(),
                ))
                && j.attempt_started
                && j.start_time.is_some_and(|s| now.saturating_sub(s) >= limit)
        })
        .filter_map(|j| j.node_id)
        .collect();
    overdue.sort();
    overdue.dedup();
    let mut preempted = 0;
    for node in overdue {
        let running = core.store.get_node(&node).await?.state == NodeState::Running;
        if running {
            let reason = format!("a job ran {} s on a low-priority node", after.as_secs());
            core.preempt_node(&node, &reason).await?;
            preempted += 1;
        }
    }
    Ok(preempted)
}
