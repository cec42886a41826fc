//! Workspaces, experiments and clusters, and the cascades of their deletes.

use super::rows::{self, query, query_opt, to_json};
use super::{cluster_events, jobs};
use crate::domain::cluster_events::{ClusterEvent, ClusterEventKind};
use crate::domain::paging::{Page, PageRequest};
use crate::domain::state::CLUSTER_DELETED;
use crate::domain::{BatchAiError, Cluster, Experiment, Millis, ScaleSettings, Workspace};
use crate::store::{Removed, Result, StoreError};
use rusqlite::{Transaction, params};

fn after(page: &PageRequest) -> &str {
    page.after.as_deref().unwrap_or("")
}

fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit.min(100_000)) + 1
}

// ------------------------------------------------------------------ workspaces

pub fn create_workspace(tx: &Transaction, ws: Workspace) -> Result<Workspace> {
    if query_opt(
        tx,
        "SELECT 1 FROM workspaces WHERE name = ?1",
        [&ws.name],
        |_| Ok(()),
    )?
    .is_some()
    {
        return Err(StoreError::AlreadyExists {
            kind: "workspace",
            name: ws.name,
        });
    }
    tx.execute(
        "INSERT INTO workspaces (name, location, tags, creation_time) VALUES (?1, ?2, ?3, ?4)",
        params![ws.name, ws.location, to_json(&ws.tags)?, ws.creation_time],
    )?;
    Ok(ws)
}

pub fn get_workspace(tx: &Transaction, name: &str) -> Result<Workspace> {
    let sql = format!(
        "SELECT {} FROM workspaces WHERE name = ?1",
        rows::WORKSPACE_COLS
    );
    query_opt(tx, &sql, [name], rows::workspace)?
        .ok_or_else(|| StoreError::not_found("workspace", name))
}

pub fn list_workspaces(tx: &Transaction, page: &PageRequest) -> Result<Page<Workspace>> {
    let sql = format!(
        "SELECT {} FROM workspaces WHERE name > ?1 ORDER BY name LIMIT ?2",
        rows::WORKSPACE_COLS
    );
    let items = query(
        tx,
        &sql,
        params![after(page), overfetch(page)],
        rows::workspace,
    )?;
    Ok(Page::from_overfetch(items, page.limit, |w| w.name.clone()))
}

pub fn delete_workspace(tx: &Transaction, name: &str, now: Millis) -> Result<Removed> {
    get_workspace(tx, name)?;
    // Jobs of the workspace as they are before anything changes.
    let mut removed = Removed {
        deleted_jobs: jobs::in_workspace(tx, name)?,
        ..Removed::default()
    };
    for c in query(
        tx,
        "SELECT name FROM clusters WHERE workspace = ?1",
        [name],
        |r| Ok(r.get::<_, String>(0)?),
    )? {
        delete_cluster_in(tx, name, &c, now, &mut removed)?;
    }
    for j in &removed.deleted_jobs {
        if !removed.stop.iter().any(|(id, _)| id == &j.id) {
            for node in j.live_node_ids() {
                removed.stop.push((j.id.clone(), node));
            }
        }
    }
    // Changed jobs of this workspace are deleted now; keep only the others.
    removed.changed_jobs.retain(|j| j.key.workspace != name);
    tx.execute("DELETE FROM jobs WHERE workspace = ?1", [name])?;
    tx.execute("DELETE FROM experiments WHERE workspace = ?1", [name])?;
    tx.execute("DELETE FROM workspaces WHERE name = ?1", [name])?;
    Ok(removed)
}

// ----------------------------------------------------------------- experiments

pub fn create_experiment(tx: &Transaction, e: Experiment) -> Result<Experiment> {
    get_workspace(tx, &e.workspace)?;
    if query_opt(
        tx,
        "SELECT 1 FROM experiments WHERE workspace = ?1 AND name = ?2",
        [&e.workspace, &e.name],
        |_| Ok(()),
    )?
    .is_some()
    {
        return Err(StoreError::AlreadyExists {
            kind: "experiment",
            name: format!("{}/{}", e.workspace, e.name),
        });
    }
    tx.execute(
        "INSERT INTO experiments (workspace, name, creation_time) VALUES (?1, ?2, ?3)",
        params![e.workspace, e.name, e.creation_time],
    )?;
    Ok(e)
}

pub fn get_experiment(tx: &Transaction, ws: &str, name: &str) -> Result<Experiment> {
    get_workspace(tx, ws)?;
    let sql = format!(
        "SELECT {} FROM experiments WHERE workspace = ?1 AND name = ?2",
        rows::EXPERIMENT_COLS
    );
    query_opt(tx, &sql, [ws, name], rows::experiment)?
        .ok_or_else(|| StoreError::not_found("experiment", format!("{ws}/{name}")))
}

pub fn list_experiments(
    tx: &Transaction,
    ws: &str,
    page: &PageRequest,
) -> Result<Page<Experiment>> {
    get_workspace(tx, ws)?;
    let sql = format!(
        "SELECT {} FROM experiments WHERE workspace = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
        rows::EXPERIMENT_COLS
    );
    let items = query(
        tx,
        &sql,
        params![ws, after(page), overfetch(page)],
        rows::experiment,
    )?;
    Ok(Page::from_overfetch(items, page.limit, |e| e.name.clone()))
}

pub fn delete_experiment(tx: &Transaction, ws: &str, name: &str) -> Result<Removed> {
    get_experiment(tx, ws, name)?;
    let mut removed = Removed {
        deleted_jobs: jobs::in_experiment(tx, ws, name)?,
        ..Removed::default()
    };
    for j in &removed.deleted_jobs {
        for node in j.live_node_ids() {
            removed.stop.push((j.id.clone(), node));
        }
    }
    tx.execute(
        "DELETE FROM jobs WHERE workspace = ?1 AND experiment = ?2",
        [ws, name],
    )?;
    tx.execute(
        "DELETE FROM experiments WHERE workspace = ?1 AND name = ?2",
        [ws, name],
    )?;
    Ok(removed)
}

// -------------------------------------------------------------------- clusters

pub fn create_cluster(tx: &Transaction, c: Cluster) -> Result<Cluster> {
    get_workspace(tx, &c.workspace)?;
    if query_opt(
        tx,
        "SELECT 1 FROM clusters WHERE workspace = ?1 AND name = ?2",
        [&c.workspace, &c.name],
        |_| Ok(()),
    )?
    .is_some()
    {
        return Err(StoreError::AlreadyExists {
            kind: "cluster",
            name: format!("{}/{}", c.workspace, c.name),
        });
    }
    tx.execute(
        "INSERT INTO clusters (workspace, name, spec, target_node_count, creation_time, \
         allocation_state_transition_time, errors) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            c.workspace,
            c.name,
            to_json(&c.spec)?,
            c.target_node_count,
            c.creation_time,
            c.allocation_state_transition_time,
            to_json(&c.errors)?
        ],
    )?;
    cluster_events::record(
        tx,
        &ClusterEvent::new(
            &c.workspace,
            &c.name,
            c.creation_time,
            ClusterEventKind::Created,
            format!(
                "created: {}",
                scale_words(&c.spec.scale, c.target_node_count)
            ),
        )
        .target(0, c.target_node_count),
    )?;
    Ok(c)
}

pub fn get_cluster(tx: &Transaction, ws: &str, name: &str) -> Result<Cluster> {
    let sql = format!(
        "SELECT {} FROM clusters WHERE workspace = ?1 AND name = ?2",
        rows::CLUSTER_COLS
    );
    query_opt(tx, &sql, [ws, name], rows::cluster)?
        .ok_or_else(|| StoreError::not_found("cluster", format!("{ws}/{name}")))
}

pub fn list_clusters(tx: &Transaction, ws: &str, page: &PageRequest) -> Result<Page<Cluster>> {
    get_workspace(tx, ws)?;
    let sql = format!(
        "SELECT {} FROM clusters WHERE workspace = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
        rows::CLUSTER_COLS
    );
    let items = query(
        tx,
        &sql,
        params![ws, after(page), overfetch(page)],
        rows::cluster,
    )?;
    Ok(Page::from_overfetch(items, page.limit, |c| c.name.clone()))
}

pub fn list_all_clusters(tx: &Transaction) -> Result<Vec<Cluster>> {
    let sql = format!(
        "SELECT {} FROM clusters ORDER BY workspace, name",
        rows::CLUSTER_COLS
    );
    query(tx, &sql, [], rows::cluster)
}

pub fn update_cluster_scale(
    tx: &Transaction,
    ws: &str,
    name: &str,
    scale: ScaleSettings,
    now: Millis,
) -> Result<Cluster> {
    let mut c = get_cluster(tx, ws, name)?;
    let target = scale.retarget(c.target_node_count);
    let from = c.target_node_count;
    if target != c.target_node_count {
        c.allocation_state_transition_time = now;
    }
    c.target_node_count = target;
    c.spec.scale = scale;
    cluster_events::record(
        tx,
        &ClusterEvent::new(
            ws,
            name,
            now,
            ClusterEventKind::Resize,
            format!("resize: {}", scale_words(&scale, target)),
        )
        .target(from, target),
    )?;
    tx.execute(
        "UPDATE clusters SET spec = ?3, target_node_count = ?4, \
         allocation_state_transition_time = ?5 WHERE workspace = ?1 AND name = ?2",
        params![
            ws,
            name,
            to_json(&c.spec)?,
            c.target_node_count,
            c.allocation_state_transition_time
        ],
    )?;
    Ok(c)
}

/// The autoscaler's target for an autoScale cluster, within its bounds;
/// `None` for a cluster that is gone or manual now (a resize won the race).
pub fn set_autoscale_target(
    tx: &Transaction,
    ws: &str,
    name: &str,
    target: u32,
    reason: &str,
    now: Millis,
) -> Result<Option<Cluster>> {
    let mut c = match get_cluster(tx, ws, name) {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let ScaleSettings::AutoScale {
        minimum_node_count,
        maximum_node_count,
        ..
    } = c.spec.scale
    else {
        return Ok(None);
    };
    let target = target.clamp(minimum_node_count, maximum_node_count);
    if target != c.target_node_count {
        cluster_events::record(
            tx,
            &ClusterEvent::new(
                ws,
                name,
                now,
                ClusterEventKind::Autoscale,
                reason.to_owned(),
            )
            .target(c.target_node_count, target),
        )?;
        c.target_node_count = target;
        c.allocation_state_transition_time = now;
        tx.execute(
            "UPDATE clusters SET target_node_count = ?3, allocation_state_transition_time = ?4 \
             WHERE workspace = ?1 AND name = ?2",
            params![ws, name, target, now],
        )?;
    }
    Ok(Some(c))
}

/// Deletes a cluster that exists, recording what changed in `removed`.
pub fn delete_cluster_in(
    tx: &Transaction,
    ws: &str,
    name: &str,
    now: Millis,
    removed: &mut Removed,
) -> Result<()> {
    let error = || BatchAiError::new(CLUSTER_DELETED, format!("cluster {ws}/{name} was deleted"));
    for node in super::nodes::list_in(tx, ws, name)? {
        for job_id in &node.running_job_ids {
            removed.stop.push((job_id.clone(), node.node_id.clone()));
            let job = jobs::get_by_id(tx, job_id)?;
            let job = jobs::end_without_exit(tx, job, error(), now)?;
            removed.changed_jobs.push(job);
        }
        tx.execute("DELETE FROM nodes WHERE node_id = ?1", [&node.node_id])?;
        super::gpu_health::forget(tx, &node.node_id)?;
        removed.nodes.push(node);
    }
    for job in jobs::queued_for_cluster(tx, ws, name)? {
        let job = jobs::end_without_exit(tx, job, error(), now)?;
        removed.changed_jobs.push(job);
    }
    tx.execute(
        "DELETE FROM clusters WHERE workspace = ?1 AND name = ?2",
        [ws, name],
    )?;
    cluster_events::forget(tx, ws, name)
}

/// A cluster's scale settings and target in words, for its record.
fn scale_words(scale: &ScaleSettings, target: u32) -> String {
    match *scale {
        ScaleSettings::Manual { deallocation, .. } => {
            format!(
                "manual, target {target}, node deallocation {}",
                deallocation.as_str()
            )
        }
        ScaleSettings::AutoScale {
            minimum_node_count,
            maximum_node_count,
            ..
        } => format!("auto-scale {minimum_node_count}-{maximum_node_count}, target {target}"),
    }
}
