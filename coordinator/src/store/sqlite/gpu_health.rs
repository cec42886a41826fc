//! GPU health: recording an event (the history row, the GPU's health in its
//! node's details, the job holding a newly faulted GPU terminated) in one
//! transaction; an operator's clear; the history.

use super::rows::{self, to_json};
use super::{jobs, nodes};
use crate::domain::gpus::{self, GPU_FAULT, GpuEvent, GpuEventKind, HealthChange};
use crate::domain::{BatchAiError, Millis, Node, transition};
use crate::store::{GpuEventOutcome, Result, StoreError};
use rusqlite::{Transaction, params};

/// Most events kept per node; older ones go first.
const KEEP_PER_NODE: i64 = 1000;

pub fn record(tx: &Transaction, mut ev: GpuEvent) -> Result<GpuEventOutcome> {
    let mut node = nodes::get(tx, &ev.node_id)?;
    ev.job_id = gpus::holder(&node, &ev.uuid).map(str::to_owned);
    let change = gpus::apply(&mut node, &ev);
    insert(tx, &ev)?;
    let mut terminated = None;
    if change != HealthChange::Unchanged {
        save_gpus(tx, &node)?;
    }
    if change == HealthChange::Faulted
        && let Some(job_id) = &ev.job_id
    {
        let job = jobs::get_by_id(tx, job_id)?;
        let error = BatchAiError::new(GPU_FAULT, ev.message.clone());
        if let Some(job) = transition::gpu_fault(job, error, ev.time)? {
            jobs::save(tx, &job)?;
            terminated = Some(job);
        }
    }
    Ok(GpuEventOutcome {
        node: nodes::get(tx, &ev.node_id)?,
        change,
        terminated,
    })
}

/// Returns GPU `gpu` (UUID or index) of the node to service, recorded as
/// `cleared`; a healthy GPU is unchanged and nothing is recorded.
pub fn clear(tx: &Transaction, node_id: &str, gpu: &str, who: &str, now: Millis) -> Result<Node> {
    let mut node = nodes::get(tx, node_id)?;
    let g = gpus::find(&node, gpu)
        .ok_or_else(|| StoreError::not_found("GPU", format!("{gpu} of node {node_id}")))?
        .clone();
    if g.fault.is_none() {
        return Ok(node);
    }
    let ev = GpuEvent {
        node_id: node_id.to_owned(),
        uuid: g.uuid.clone(),
        index: g.index,
        time: now,
        kind: GpuEventKind::Cleared,
        code: 0,
        fault: false,
        message: format!("GPU {} ({}) returned to service by {who}", g.index, g.uuid),
        job_id: None,
    };
    gpus::apply(&mut node, &ev);
    insert(tx, &ev)?;
    save_gpus(tx, &node)?;
    nodes::get(tx, node_id)
}

/// The history of the cluster's nodes (or one node's), oldest first.
pub fn list(
    tx: &Transaction,
    ws: &str,
    cluster: &str,
    node_id: Option<&str>,
) -> Result<Vec<GpuEvent>> {
    let mut st = tx.prepare_cached(
        "SELECT e.node_id, e.uuid, e.gpu_index, e.time, e.kind, e.code, e.fault, e.message, \
         e.job_id FROM gpu_events e JOIN nodes n ON n.node_id = e.node_id \
         WHERE n.workspace = ?1 AND n.cluster = ?2 AND (?3 IS NULL OR e.node_id = ?3) \
         ORDER BY e.seq",
    )?;
    let rows = st.query_map(params![ws, cluster, node_id], |r| {
        let kind: String = r.get(4)?;
        let Some(kind) = GpuEventKind::parse(&kind) else {
            return Ok(Err(kind));
        };
        Ok(Ok(GpuEvent {
            node_id: r.get(0)?,
            uuid: r.get(1)?,
            index: r.get(2)?,
            time: r.get(3)?,
            kind,
            code: r.get::<_, i64>(5)? as u64,
            fault: r.get(6)?,
            message: r.get(7)?,
            job_id: r.get(8)?,
        }))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let ev =
            row?.map_err(|kind| StoreError::Backend(format!("bad GPU event kind {kind:?}")))?;
        out.push(ev);
    }
    Ok(out)
}

/// Deletes a node's history (with the node).
pub fn forget(tx: &Transaction, node_id: &str) -> Result<()> {
    rows::exec(tx, "DELETE FROM gpu_events WHERE node_id = ?1", [node_id])?;
    Ok(())
}

fn insert(tx: &Transaction, ev: &GpuEvent) -> Result<()> {
    rows::exec(
        tx,
        "INSERT INTO gpu_events (node_id, uuid, gpu_index, time, kind, code, fault, message, \
         job_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            ev.node_id,
            ev.uuid,
            ev.index,
            ev.time,
            ev.kind.as_str(),
            i64::try_from(ev.code).unwrap_or(i64::MAX),
            ev.fault,
            ev.message,
            ev.job_id,
        ],
    )?;
    rows::exec(
        tx,
        "DELETE FROM gpu_events WHERE node_id = ?1 AND seq <= \
         (SELECT seq FROM gpu_events WHERE node_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        params![ev.node_id, KEEP_PER_NODE],
    )?;
    Ok(())
}

fn save_gpus(tx: &Transaction, node: &Node) -> Result<()> {
    let details = rows::NodeDetails::of(node);
    rows::exec(
        tx,
        "UPDATE nodes SET details = ?2 WHERE node_id = ?1",
        params![node.node_id, to_json(&details)?],
    )?;
    Ok(())
}
