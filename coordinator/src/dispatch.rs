//! The scheduler task: on every kick, one pass of [`crate::scheduler::schedule`]
//! over the queued jobs and the nodes with a live session. Each placement is
//! committed (job running on the node, node running) in its own transaction
//! BEFORE AssignJob is sent; a node that drops in between gets the assignment
//! again when it registers.
//!
//! The same task marks nodes lost: a node whose agent has had no session for
//! `node_lost_timeout` (counted from its last heartbeat, or from this
//! coordinator's start if that is later) becomes unusable and its jobs fail
//! with `JobLost`; registering again makes it usable.

use crate::agent::registry::Outbound;
use crate::core::Core;
use crate::domain::{BatchAiError, NodeState, env, now_millis};
use crate::scheduler::schedule;
use std::sync::Arc;
use std::time::Duration;

/// Runs passes until shutdown; also every 30 s (or half the node-lost
/// timeout, if shorter) in case a kick was missed and to find lost nodes.
pub async fn run(core: Arc<Core>) {
    let mut shutdown = core.shutdown();
    let fallback = (core.settings.node_lost_timeout / 2).min(Duration::from_secs(30));
    let started = now_millis();
    loop {
        if let Err(e) = reap_lost_nodes(&core, started).await {
            tracing::error!(error = %e, "lost-node check failed");
        }
        if let Err(e) = pass(&core).await {
            tracing::error!(error = %e, "scheduler pass failed");
        }
        tokio::select! {
            _ = crate::core::stopped(&mut shutdown) => return,
            _ = core.scheduler_kicked() => {}
            _ = tokio::time::sleep(fallback) => {}
        }
    }
}

/// One pass; returns how many jobs it placed.
pub async fn pass(core: &Core) -> Result<usize, crate::store::StoreError> {
    let queued = core.store.queued_jobs().await?;
    if queued.is_empty() {
        return Ok(0);
    }
    let mut nodes = core.store.list_all_nodes().await?;
    for n in &mut nodes {
        n.connected = core.sessions.is_connected(&n.node_id);
    }
    let mut placed = 0;
    for p in schedule(&queued, &nodes) {
        let Some(job) = core
            .store
            .assign_job(&p.job_id, &p.node_id, now_millis())
            .await?
        else {
            continue;
        };
        // A new attempt starts with empty output (a requeued job had some).
        if let Err(e) = core.outputs.reset(&job).await {
            tracing::warn!(job = %job.id, error = %e, "could not reset job output");
        }
        tracing::info!(job = %job.id, node = %p.node_id, name = %job.key, "job assigned");
        core.events.changed(&job);
        let sent = core.sessions.send(
            &p.node_id,
            Outbound::Assign(Box::new(env::assignment(&job, &p.node_id))),
        );
        if !sent {
            tracing::info!(job = %job.id, node = %p.node_id, "node went away; it gets the job when it registers");
        }
        placed += 1;
    }
    Ok(placed)
}

/// Marks nodes lost whose agent stayed away too long; returns how many.
pub async fn reap_lost_nodes(core: &Core, started: i64) -> Result<usize, crate::store::StoreError> {
    let timeout = i64::try_from(core.settings.node_lost_timeout.as_millis()).unwrap_or(i64::MAX);
    let now = now_millis();
    let mut lost = 0;
    for n in core.store.list_all_nodes().await? {
        if matches!(n.state, NodeState::Unusable | NodeState::Leaving)
            || core.sessions.is_connected(&n.node_id)
        {
            continue;
        }
        let since = n
            .last_heartbeat_time
            .unwrap_or(n.state_transition_time)
            .max(started);
        if now.saturating_sub(since) < timeout {
            continue;
        }
        let secs = core.settings.node_lost_timeout.as_secs();
        tracing::warn!(node = %n.node_id, secs, "node lost: its agent has not reconnected");
        let error = BatchAiError::new(
            "NodeLost",
            format!("the node's agent has not connected for {secs}s"),
        );
        for job in core.store.mark_node_lost(&n.node_id, error, now).await? {
            core.job_attempt_ended(&job);
        }
        lost += 1;
    }
    Ok(lost)
}
