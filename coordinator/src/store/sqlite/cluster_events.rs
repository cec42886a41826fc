//! A cluster's event record (`domain::cluster_events`): written in the
//! transaction of the change it records, read newest last, deleted with the
//! cluster.

use super::rows;
use crate::domain::cluster_events::{ClusterEvent, ClusterEventKind};
use crate::store::{Result, StoreError};
use rusqlite::{Transaction, params};

/// Most events kept per cluster; older ones go first.
const KEEP_PER_CLUSTER: i64 = 1000;

/// The record is trimmed at every this many inserts (of any cluster), not at
/// each: a trim walks `KEEP_PER_CLUSTER` index entries, which 10,000 agents
/// joining one cluster would otherwise pay each (a cluster keeps at most
/// about `KEEP_PER_CLUSTER + TRIM_EVERY` events).
const TRIM_EVERY: i64 = 128;

pub fn record(tx: &Transaction, ev: &ClusterEvent) -> Result<()> {
    let (from, to) = ev.target.unzip();
    rows::exec(
        tx,
        "INSERT INTO cluster_events (workspace, cluster, time, kind, node_id, from_target, \
         to_target, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            ev.workspace,
            ev.cluster,
            ev.time,
            ev.kind.as_str(),
            ev.node_id,
            from,
            to,
            ev.message
        ],
    )?;
    if tx.last_insert_rowid() % TRIM_EVERY != 0 {
        return Ok(());
    }
    rows::exec(
        tx,
        "DELETE FROM cluster_events WHERE workspace = ?1 AND cluster = ?2 AND seq <= \
         (SELECT seq FROM cluster_events WHERE workspace = ?1 AND cluster = ?2 \
          ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
        params![ev.workspace, ev.cluster, KEEP_PER_CLUSTER],
    )?;
    Ok(())
}

/// The cluster's events after `after_seq`, oldest first, at most `limit`;
/// with `newest`, the last `limit` of them (still oldest first).
pub fn list(
    tx: &Transaction,
    ws: &str,
    cluster: &str,
    after_seq: i64,
    limit: u32,
    newest: bool,
) -> Result<Vec<ClusterEvent>> {
    let order = if newest { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT seq, time, kind, node_id, from_target, to_target, message FROM cluster_events \
         WHERE workspace = ?1 AND cluster = ?2 AND seq > ?3 ORDER BY seq {order} LIMIT ?4"
    );
    let mut st = tx.prepare_cached(&sql)?;
    let rows = st.query_map(params![ws, cluster, after_seq, i64::from(limit)], |r| {
        let kind: String = r.get(2)?;
        let from: Option<u32> = r.get(4)?;
        let to: Option<u32> = r.get(5)?;
        Ok((
            ClusterEvent {
                seq: r.get(0)?,
                workspace: ws.to_owned(),
                cluster: cluster.to_owned(),
                time: r.get(1)?,
                kind: ClusterEventKind::Created,
                node_id: r.get(3)?,
                target: from.zip(to),
                message: r.get(6)?,
            },
            kind,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut ev, kind) = row?;
        ev.kind = ClusterEventKind::parse(&kind)
            .ok_or_else(|| StoreError::Backend(format!("bad cluster event kind {kind:?}")))?;
        out.push(ev);
    }
    if newest {
        out.reverse();
    }
    Ok(out)
}

/// Deletes a cluster's record (with the cluster).
pub fn forget(tx: &Transaction, ws: &str, cluster: &str) -> Result<()> {
    rows::exec(
        tx,
        "DELETE FROM cluster_events WHERE workspace = ?1 AND cluster = ?2",
        [ws, cluster],
    )?;
    Ok(())
}
