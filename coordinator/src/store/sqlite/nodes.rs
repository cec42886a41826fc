//! Nodes: registration, connection, state and removal. The jobs a node's
//! removal or loss changes become what `domain::transition` says.

use super::resources::get_cluster;
use super::rows::{self, query, query_opt, to_json};
use super::{cluster_events, jobs};
use crate::domain::cluster_events::{ClusterEvent, ClusterEventKind, count};
use crate::domain::gpus;
use crate::domain::node_setup::Preparation;
use crate::domain::transition;
use crate::domain::{BatchAiError, DeallocationOption, Job, Millis, Node, NodeState, VmPriority};
use crate::store::{NodeRegistration, NodeRemoval, Result, StoreError};
use rusqlite::{Transaction, params};

fn select(filter: &str) -> String {
    format!("SELECT {} FROM nodes WHERE {filter}", rows::NODE_COLS)
}

pub fn get_opt(tx: &Transaction, node_id: &str) -> Result<Option<Node>> {
    query_opt(tx, &select("node_id = ?1"), [node_id], rows::node)?
        .map(|n| rows::with_jobs(tx, n))
        .transpose()
}

pub fn get(tx: &Transaction, node_id: &str) -> Result<Node> {
    get_opt(tx, node_id)?.ok_or_else(|| StoreError::not_found("node", node_id))
}

pub fn list_in(tx: &Transaction, ws: &str, cluster: &str) -> Result<Vec<Node>> {
    let nodes = query(
        tx,
        &select("workspace = ?1 AND cluster = ?2 ORDER BY node_id"),
        [ws, cluster],
        rows::node,
    )?;
    rows::with_all_jobs(tx, nodes)
}

pub fn list_workspace(tx: &Transaction, ws: &str) -> Result<Vec<Node>> {
    let nodes = query(
        tx,
        &select("workspace = ?1 ORDER BY node_id"),
        [ws],
        rows::node,
    )?;
    rows::with_all_jobs(tx, nodes)
}

pub fn list_all(tx: &Transaction) -> Result<Vec<Node>> {
    let nodes = query(tx, &select("1 ORDER BY node_id"), [], rows::node)?;
    rows::with_all_jobs(tx, nodes)
}

pub fn list_leaving(tx: &Transaction) -> Result<Vec<Node>> {
    let nodes = query(
        tx,
        &select("state = 'leaving' ORDER BY node_id"),
        [],
        rows::node,
    )?;
    rows::with_all_jobs(tx, nodes)
}

/// The SQL form of [`transition::is_unoccupied`] over `nodes` (idle, no
/// running or terminating job): the one pre-filter of free nodes; a test
/// checks it selects exactly what the rule accepts.
pub const UNOCCUPIED: &str = concat!(
    "nodes.state = 'idle' AND NOT EXISTS (SELECT 1 FROM jobs \
     WHERE jobs.node_id = nodes.node_id AND jobs.execution_state IN ",
    rows::active_states!(),
    ") AND NOT EXISTS (SELECT 1 FROM job_ranks WHERE job_ranks.node_id = nodes.node_id)"
);

/// Nodes that take jobs now or as their jobs end (whether connected is the
/// caller's to check), in node id order, with their holdings: idle ones
/// without active jobs and running ones ([`transition::takes_jobs`]) — the
/// scheduler places on those with room and reserves among all of them.
pub fn placeable(tx: &Transaction) -> Result<Vec<Node>> {
    let nodes = query(
        tx,
        &select(&format!(
            "({UNOCCUPIED}) OR nodes.state = 'running' ORDER BY node_id"
        )),
        [],
        rows::node,
    )?;
    // Idle ones hold nothing; the running ones' holdings in one query.
    let (idle, running): (Vec<Node>, Vec<Node>) =
        nodes.into_iter().partition(|n| n.state == NodeState::Idle);
    let mut out: Vec<Node> = idle
        .into_iter()
        .chain(rows::with_all_jobs(tx, running)?)
        .filter(transition::takes_jobs)
        .collect();
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
}

/// Moves the node to `state` if the node state machine allows it.
fn set_state(tx: &Transaction, node: &Node, state: NodeState, now: Millis) -> Result<()> {
    let state = transition::node_to(node, state)?;
    if node.state == state {
        return Ok(());
    }
    rows::exec(
        tx,
        "UPDATE nodes SET state = ?2, state_transition_time = ?3 WHERE node_id = ?1",
        params![node.node_id, state.as_str(), now],
    )?;
    Ok(())
}

/// Idle or running according to the node's jobs.
pub fn refresh_state(tx: &Transaction, node_id: &str, now: Millis) -> Result<()> {
    if let Some(node) = get_opt(tx, node_id)? {
        let state = node.state.with_jobs(!node.running_job_ids.is_empty());
        set_state(tx, &node, state, now)?;
    }
    Ok(())
}

pub fn register(tx: &Transaction, reg: NodeRegistration, now: Millis) -> Result<(Node, Vec<Job>)> {
    get_cluster(tx, &reg.workspace, &reg.cluster)?;
    let existing = get_opt(tx, &reg.node_id)?;
    if let Some(n) = &existing
        && (n.workspace != reg.workspace || n.cluster != reg.cluster)
    {
        return Err(StoreError::Conflict(format!(
            "node {} belongs to cluster {}/{}, not {}/{}",
            n.node_id, n.workspace, n.cluster, reg.workspace, reg.cluster
        )));
    }
    let jobs = jobs::active_on_node(tx, &reg.node_id)?;
    let state = NodeState::on_register(
        existing.as_ref().map(|n| n.state),
        !jobs.is_empty(),
        reg.ready,
    );
    let mut info = reg.info.clone();
    if let Some(n) = &existing {
        gpus::keep_faults(&n.info.gpus, &mut info.gpus);
    }
    let i = &info;
    let step = if state == NodeState::Preparing {
        reg.step.clone()
    } else {
        String::new()
    };
    let details = rows::NodeDetails::new(step, i);
    match &existing {
        None => {
            rows::exec(
                tx,
                "INSERT INTO nodes (node_id, workspace, cluster, state, state_transition_time, \
                 hostname, ip_address, agent_version, cpu_count, memory_bytes, connected, \
                 last_heartbeat_time, errors, details) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?5, ?11, ?12)",
                params![
                    reg.node_id,
                    reg.workspace,
                    reg.cluster,
                    state.as_str(),
                    now,
                    i.hostname,
                    i.ip_address,
                    i.agent_version,
                    i.cpu_count,
                    i.memory_bytes as i64,
                    to_json(&Vec::<BatchAiError>::new())?,
                    to_json(&details)?,
                ],
            )?;
            let gpus = match i.gpus.len() {
                0 => String::new(),
                n => format!(", {}", count(n, "GPU")),
            };
            cluster_events::record(
                tx,
                &ClusterEvent::new(
                    &reg.workspace,
                    &reg.cluster,
                    now,
                    ClusterEventKind::NodeJoined,
                    format!("node {} joined (host {}{gpus})", reg.node_id, i.hostname),
                )
                .node(&reg.node_id),
            )?;
        }
        Some(n) => {
            rows::exec(
                tx,
                "UPDATE nodes SET hostname = ?2, ip_address = ?3, agent_version = ?4, \
                 cpu_count = ?5, memory_bytes = ?6, connected = 1, last_heartbeat_time = ?7, \
                 errors = '[]', details = ?8 WHERE node_id = ?1",
                params![
                    reg.node_id,
                    i.hostname,
                    i.ip_address,
                    i.agent_version,
                    i.cpu_count,
                    i.memory_bytes as i64,
                    now,
                    to_json(&details)?,
                ],
            )?;
            set_state(tx, n, state, now)?;
        }
    }
    Ok((get(tx, &reg.node_id)?, jobs))
}

/// Applies an agent's preparation report (see `Store::report_preparation`).
pub fn report_preparation(
    tx: &Transaction,
    node_id: &str,
    preparation: Preparation,
    now: Millis,
) -> Result<Node> {
    let node = get(tx, node_id)?;
    if node.state == NodeState::Leaving {
        return Ok(node);
    }
    let has_jobs = !node.running_job_ids.is_empty();
    let (state, step, errors) = match preparation {
        Preparation::Preparing { step } => {
            let state = if has_jobs {
                node.state
            } else {
                NodeState::Preparing
            };
            (state, step, Vec::new())
        }
        Preparation::Ready => {
            let state = if has_jobs {
                NodeState::Running
            } else {
                NodeState::Idle
            };
            (state, String::new(), Vec::new())
        }
        Preparation::Unusable { step, error } => (NodeState::Unusable, step, vec![error]),
    };
    let mut details = rows::NodeDetails::of(&node);
    details.preparation_step = step;
    rows::exec(
        tx,
        "UPDATE nodes SET errors = ?2, details = ?3 WHERE node_id = ?1",
        params![node_id, to_json(&errors)?, to_json(&details)?],
    )?;
    set_state(tx, &node, state, now)?;
    get(tx, node_id)
}

pub fn set_connected(
    tx: &Transaction,
    node_id: &str,
    connected: bool,
    last_heartbeat: Option<Millis>,
) -> Result<()> {
    rows::exec(
        tx,
        "UPDATE nodes SET connected = ?2, last_heartbeat_time = \
         MAX(COALESCE(last_heartbeat_time, ?3), COALESCE(?3, last_heartbeat_time)) \
         WHERE node_id = ?1",
        params![node_id, connected, last_heartbeat],
    )?;
    Ok(())
}

/// A low-priority node is preempted: it leaves at once and its jobs are
/// terminated and requeued (Batch AI's behaviour), whatever the cluster's
/// deallocation option. Refused for a dedicated cluster's node and for a
/// node already leaving.
pub fn preempt(tx: &Transaction, node_id: &str, reason: &str, now: Millis) -> Result<NodeRemoval> {
    let node = get(tx, node_id)?;
    let cluster = get_cluster(tx, &node.workspace, &node.cluster)?;
    if cluster.spec.vm_priority != VmPriority::LowPriority {
        return Err(StoreError::Conflict(format!(
            "cluster.vm_priority: node {node_id} is of cluster {}/{}, which is dedicated;              only lowpriority nodes are preempted",
            node.workspace, node.cluster
        )));
    }
    if node.state == NodeState::Leaving {
        return Err(StoreError::Conflict(format!(
            "node {node_id} is already leaving its cluster"
        )));
    }
    leave(
        tx,
        node,
        DeallocationOption::Requeue,
        ClusterEventKind::NodePreempted,
        &format!("preempted: {reason}"),
        now,
    )
}

pub fn begin_removal(
    tx: &Transaction,
    node_id: &str,
    option: DeallocationOption,
    reason: &str,
    now: Millis,
) -> Result<NodeRemoval> {
    let node = get(tx, node_id)?;
    leave(tx, node, option, ClusterEventKind::NodeLeaving, reason, now)
}

/// The node leaves (its removal begins) for `reason`, recorded as `kind`.
fn leave(
    tx: &Transaction,
    node: Node,
    option: DeallocationOption,
    kind: ClusterEventKind,
    reason: &str,
    now: Millis,
) -> Result<NodeRemoval> {
    let node_id = node.node_id.as_str();
    set_state(tx, &node, NodeState::Leaving, now)?;
    let mut terminating = Vec::new();
    for job in jobs::active_on_node(tx, node_id)? {
        if let Some(job) = transition::on_node_removal(job, option, reason, now)? {
            jobs::save(tx, &job)?;
            terminating.push(job);
        }
    }
    let left = node.running_job_ids.len();
    let jobs = match (option, left) {
        (_, 0) => "no jobs".to_owned(),
        (DeallocationOption::Requeue, _) => {
            format!("{} terminated, to run again", count(left, "job"))
        }
        (DeallocationOption::Terminate, _) => {
            format!("{} terminated, to end failed", count(left, "job"))
        }
        (DeallocationOption::WaitForJobCompletion, _) => {
            format!("{} left to finish; no new ones", count(left, "job"))
        }
    };
    cluster_events::record(
        tx,
        &ClusterEvent::of_node(
            &node,
            now,
            kind,
            format!(
                "node {node_id} leaving ({reason}; node deallocation {}): {jobs}",
                option.as_str()
            ),
        ),
    )?;
    Ok(NodeRemoval {
        node: get(tx, node_id)?,
        terminating,
    })
}

pub fn remove(tx: &Transaction, node_id: &str, now: Millis) -> Result<Vec<Job>> {
    let node = get(tx, node_id)?;
    let mut changed = Vec::new();
    for job in jobs::active_on_node(tx, node_id)? {
        let job = transition::on_node_removed(job, node_id, now)?;
        jobs::save(tx, &job)?;
        jobs::refresh_other_nodes(tx, &job, node_id, now)?;
        changed.push(job);
    }
    rows::exec(tx, "DELETE FROM nodes WHERE node_id = ?1", [node_id])?;
    super::gpu_health::forget(tx, node_id)?;
    cluster_events::record(
        tx,
        &ClusterEvent::of_node(
            &node,
            now,
            ClusterEventKind::NodeRemoved,
            format!("node {node_id} removed{}", jobs_words(&changed)),
        ),
    )?;
    Ok(changed)
}

/// "; job a requeued, job b failed" for the jobs a node's end changed.
fn jobs_words(jobs: &[Job]) -> String {
    let words: Vec<String> = jobs
        .iter()
        .map(|j| {
            let what = match j.execution_state {
                crate::domain::ExecutionState::Queued => "requeued",
                crate::domain::ExecutionState::Failed => "failed",
                crate::domain::ExecutionState::Succeeded => "succeeded",
                _ => "ending",
            };
            format!("job {} {what}", j.key)
        })
        .collect();
    if words.is_empty() {
        String::new()
    } else {
        format!("; {}", words.join(", "))
    }
}

pub fn mark_lost(
    tx: &Transaction,
    node_id: &str,
    error: BatchAiError,
    now: Millis,
) -> Result<Vec<Job>> {
    let node = get(tx, node_id)?;
    let option = get_cluster(tx, &node.workspace, &node.cluster)?
        .spec
        .scale
        .deallocation();
    let mut changed = Vec::new();
    for job in jobs::active_on_node(tx, node_id)? {
        let job = transition::on_node_lost(job, node_id, &error, option, now)?;
        jobs::save(tx, &job)?;
        jobs::refresh_other_nodes(tx, &job, node_id, now)?;
        changed.push(job);
    }
    set_state(tx, &node, transition::node_lost(node.state), now)?;
    cluster_events::record(
        tx,
        &ClusterEvent::of_node(
            &node,
            now,
            ClusterEventKind::NodeLost,
            format!(
                "node {node_id} lost: {}{}",
                error.message,
                jobs_words(&changed)
            ),
        ),
    )?;
    rows::exec(
        tx,
        "UPDATE nodes SET errors = ?2 WHERE node_id = ?1",
        params![node_id, to_json(&vec![error])?],
    )?;
    Ok(changed)
}
