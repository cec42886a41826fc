//! The scheduler task: after kicks (coalesced: one pass for all kicks that
//! came in meanwhile), one pass of [`crate::scheduler::schedule`] over the
//! idle nodes with a live session and, per cluster, only as many queued jobs
//! as it has such nodes. Each placed job's stored output is emptied first (a
//! requeued job's last attempt) and its node made the output's only writer,
//! so no chunk of an earlier attempt can land after; a job whose output
//! cannot be emptied is not assigned and stays queued for a later pass. The
//! pass's placements (job running on the node, node running) are committed
//! together BEFORE any AssignJob is sent; a node that drops in between gets
//! the assignment again when it registers.
//!
//! A separate task on its own timer marks nodes lost: a node whose agent has
//! sent no heartbeat for `node_lost_timeout` (disconnected, or connected and
//! silent: counted from its last heartbeat, or from this coordinator's start
//! if that is later) becomes unusable, its session is ended, and its jobs
//! follow the cluster's node deallocation option (requeue: a new attempt
//! elsewhere; terminate and waitforjobcompletion: they fail with `JobLost`);
//! registering again makes it usable, after its agent was told to kill the
//! jobs that are no longer its own.

use crate::agent::registry::Outbound;
use crate::core::Core;
use crate::domain::{BatchAiError, Job, Millis, NodeState, env, now_millis};
use crate::scheduler::{Placement, schedule};
use std::sync::Arc;
use std::time::Duration;

/// Runs passes until shutdown: one pass for all the kicks that arrived
/// since the last one began, and one every 30 s in case a kick was missed.
/// The lost-node check runs on its own timer (see [`run_lost_nodes`]).
pub async fn run(core: Arc<Core>) {
    let mut shutdown = core.shutdown();
    let fallback = Duration::from_secs(30);
    loop {
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

/// Checks for lost nodes every quarter of the node-lost timeout (at most
/// every 30 s, at least every second), until shutdown.
pub async fn run_lost_nodes(core: Arc<Core>) {
    let mut shutdown = core.shutdown();
    let every = (core.settings.node_lost_timeout / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    let started = now_millis();
    loop {
        tokio::select! {
            _ = crate::core::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = reap_lost_nodes(&core, started, now_millis()).await {
            tracing::error!(error = %e, "lost-node check failed");
        }
    }
}

/// One pass; returns how many jobs it placed. Reads only what can be placed
/// (one snapshot): the idle nodes, and per cluster with some, at most that
/// many queued jobs in scheduling order; only connected nodes take jobs. All
/// placements of the pass are committed in one transaction before any
/// AssignJob is sent.
pub async fn pass(core: &Core) -> Result<usize, crate::store::StoreError> {
    let (mut idle, queued) = core.store.schedulable().await?;
    if queued.is_empty() {
        return Ok(0);
    }
    for n in &mut idle {
        // A node still stopping jobs that went elsewhere takes none yet.
        n.connected = core.sessions.takes_jobs(&n.node_id);
    }
    // `schedule` uses only connected nodes; `queued` holds, per cluster, at
    // least as many jobs as it has room for, and some behind for backfill.
    // A gang's placement names all its nodes, rank 0 first.
    let placements: Vec<Placement> = schedule(&queued, &idle, now_millis());
    if placements.is_empty() {
        return Ok(0);
    }
    // A new attempt starts from empty output (a requeued job has its last
    // attempt's), emptied BEFORE the job is assigned, with each rank's node
    // as its files' only writer (an earlier attempt's node may still have a
    // session sending chunks): a job whose output cannot be emptied stays
    // queued, so the new attempt's bytes can never land after the old ones
    // (and be taken for duplicates of them). A later pass (a kick, or the
    // fallback timer) tries again.
    let by_id: std::collections::HashMap<&str, &Job> =
        queued.iter().map(|j| (j.id.as_str(), j)).collect();
    let chosen: Vec<(&Placement, &Job)> = placements
        .iter()
        .filter_map(|p| Some((p, *by_id.get(p.job_id.as_str())?)))
        .collect();
    let resets = match core
        .outputs
        .reset_each(chosen.iter().map(|(p, j)| (*j, &p.node_ids[..])))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot reset job output; the pass's jobs stay queued");
            return Ok(0);
        }
    };
    let mut pairs = Vec::with_capacity(chosen.len());
    for ((p, job), reset) in chosen.iter().zip(resets) {
        match reset {
            Ok(()) => pairs.push((p.job_id.clone(), p.node_ids.clone())),
            Err(e) => tracing::error!(
                job = %job.id, name = %job.key, error = %e,
                "cannot empty the job's output for a new attempt; it stays queued"
            ),
        }
    }
    if pairs.is_empty() {
        return Ok(0);
    }
    let assigned: Vec<Job> = core
        .store
        .assign_jobs(pairs, now_millis())
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut placed = 0;
    for job in assigned {
        let nodes = job.node_ids();
        tracing::info!(job = %job.id, nodes = ?nodes, name = %job.key, "job assigned");
        core.events.changed(&job);
        // Every rank that runs a process gets its assignment; a rank that
        // runs none (a custom toolkit's other nodes) holds its node only.
        for node_id in job.live_node_ids() {
            let sent = core.sessions.send(
                &node_id,
                Outbound::Assign(Box::new(env::assignment(
                    &job,
                    &node_id,
                    core.auto_storage_account(),
                ))),
            );
            if !sent {
                tracing::info!(job = %job.id, node = %node_id, "node went away; it gets the job when it registers");
            }
        }
        placed += 1;
    }
    Ok(placed)
}

/// Marks nodes lost whose agent stayed away too long, as of `now` (the
/// coordinator started at `started`); returns how many.
pub async fn reap_lost_nodes(
    core: &Core,
    started: Millis,
    now: Millis,
) -> Result<usize, crate::store::StoreError> {
    let timeout = i64::try_from(core.settings.node_lost_timeout.as_millis()).unwrap_or(i64::MAX);
    let mut lost = 0;
    for n in core.store.list_all_nodes().await? {
        if matches!(n.state, NodeState::Unusable | NodeState::Leaving) {
            continue;
        }
        // A connected agent counts from its session's last heartbeat (one
        // that is stopped or hung keeps its connection open but sends none);
        // a disconnected one from the last heartbeat stored.
        let connected = core.sessions.is_connected(&n.node_id);
        let last = if connected {
            // Registering stores its time: a session that has not beaten
            // yet counts from there.
            core.sessions
                .last_heartbeat(&n.node_id)
                .max(n.last_heartbeat_time)
        } else {
            n.last_heartbeat_time
        };
        let since = last.unwrap_or(n.state_transition_time).max(started);
        if now.saturating_sub(since) < timeout {
            continue;
        }
        let secs = core.settings.node_lost_timeout.as_secs();
        let error = if connected {
            tracing::warn!(node = %n.node_id, secs, "node lost: its agent is connected but silent");
            BatchAiError::new(
                "NodeLost",
                format!("the node's agent has sent no heartbeat for {secs}s"),
            )
        } else {
            tracing::warn!(node = %n.node_id, secs, "node lost: its agent has not reconnected");
            BatchAiError::new(
                "NodeLost",
                format!("the node's agent has not connected for {secs}s"),
            )
        };
        // Its session ends: an agent that wakes up must register again, and
        // registering tells it to kill the jobs that went elsewhere before it
        // is given anything (agent.proto's reconcile).
        core.sessions.stop(&n.node_id);
        for job in core.store.mark_node_lost(&n.node_id, error, now).await? {
            core.job_attempt_ended(&job);
        }
        lost += 1;
    }
    Ok(lost)
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
