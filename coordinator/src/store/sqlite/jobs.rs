//! Jobs: create, read, delete, and every execution-state change. Each change
//! reads the job, asks `domain::transition` what it becomes, and saves that.

use super::nodes;
use super::resources::{get_cluster, get_experiment};
use super::rows::{self, query, query_opt, to_json};
use crate::domain::paging::{Page, PageRequest};
use crate::domain::transition;
use crate::domain::{BatchAiError, Job, JobExit, JobKey, Millis};
use crate::store::{Result, StoreError};
use rusqlite::{Transaction, params};

fn select(filter: &str) -> String {
    format!("SELECT {} FROM jobs WHERE {filter}", rows::JOB_COLS)
}

pub fn create(tx: &Transaction, job: Job) -> Result<Job> {
    get_experiment(tx, &job.key.workspace, &job.key.experiment)?;
    get_cluster(tx, &job.spec.cluster.workspace, &job.spec.cluster.name)?;
    let k = &job.key;
    if query_opt(
        tx,
        "SELECT 1 FROM jobs WHERE workspace = ?1 AND experiment = ?2 AND name = ?3",
        [&k.workspace, &k.experiment, &k.name],
        |_| Ok(()),
    )?
    .is_some()
    {
        return Err(StoreError::AlreadyExists {
            kind: "job",
            name: k.to_string(),
        });
    }
    rows::exec(
        tx,
        "INSERT INTO jobs (id, workspace, experiment, name, cluster_workspace, cluster, spec, \
         creation_time, execution_state, execution_state_transition_time, start_time, end_time, \
         exit_code, errors, node_id, attempt_started, requeue_on_exit, priority, gpus_per_node) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![
            job.id,
            k.workspace,
            k.experiment,
            k.name,
            job.spec.cluster.workspace,
            job.spec.cluster.name,
            to_json(&job.spec)?,
            job.creation_time,
            job.execution_state.as_str(),
            job.execution_state_transition_time,
            job.start_time,
            job.end_time,
            job.exit_code,
            to_json(&job.errors)?,
            job.node_id,
            job.attempt_started,
            job.requeue_on_exit,
            job.spec.scheduling_priority.rank(),
            job.spec.gpus_per_node,
        ],
    )?;
    Ok(job)
}

/// Writes every field of `job` that can change after creation.
pub fn save(tx: &Transaction, job: &Job) -> Result<()> {
    rows::exec(
        tx,
        "UPDATE jobs SET execution_state = ?2, execution_state_transition_time = ?3, \
         start_time = ?4, end_time = ?5, exit_code = ?6, errors = ?7, node_id = ?8, \
         attempt_started = ?9, requeue_on_exit = ?10, gpu_uuids = ?11, metrics = ?12, \
         gang = ?13, attempts = ?14 WHERE id = ?1",
        params![
            job.id,
            job.execution_state.as_str(),
            job.execution_state_transition_time,
            job.start_time,
            job.end_time,
            job.exit_code,
            to_json(&job.errors)?,
            job.node_id,
            job.attempt_started,
            job.requeue_on_exit,
            to_json(&job.gpu_uuids)?,
            job.metrics.as_ref().map(to_json).transpose()?,
            job.gang.as_ref().map(to_json).transpose()?,
            to_json(&job.attempts)?,
        ],
    )?;
    if job.spec.node_count > 1 {
        save_ranks(tx, job)?;
    }
    Ok(())
}

/// Rewrites the `job_ranks` rows of a multi-node job from its gang: its
/// ranks after the master while it is active, none once it is not.
fn save_ranks(tx: &Transaction, job: &Job) -> Result<()> {
    rows::exec(tx, "DELETE FROM job_ranks WHERE job_id = ?1", [&job.id])?;
    let Some(gang) = job
        .gang
        .as_ref()
        .filter(|_| job.execution_state.is_active())
    else {
        return Ok(());
    };
    for (rank, r) in gang.ranks.iter().enumerate().skip(1) {
        rows::exec(
            tx,
            "INSERT INTO job_ranks (job_id, rank, node_id, gpu_uuids) VALUES (?1, ?2, ?3, ?4)",
            params![job.id, rank as i64, r.node_id, to_json(&r.gpu_uuids)?],
        )?;
    }
    Ok(())
}

/// Refreshes the state of the job's nodes other than `except` (a change of
/// a multi-node job on one node can end its hold on all of them).
pub fn refresh_other_nodes(tx: &Transaction, job: &Job, except: &str, now: Millis) -> Result<()> {
    if job.gang.is_none() {
        return Ok(());
    }
    for n in job.node_ids().iter().filter(|n| n.as_str() != except) {
        nodes::refresh_state(tx, n, now)?;
    }
    Ok(())
}

/// Ends a queued or active job as failed with `error` and no exit code (or
/// requeues it if it was to be requeued), and saves it.
pub fn end_without_exit(
    tx: &Transaction,
    job: Job,
    error: BatchAiError,
    now: Millis,
) -> Result<Job> {
    let job = transition::end_without_exit(job, error, now)?;
    save(tx, &job)?;
    Ok(job)
}

pub fn get(tx: &Transaction, key: &JobKey) -> Result<Job> {
    get_experiment(tx, &key.workspace, &key.experiment)?;
    query_opt(
        tx,
        &select("workspace = ?1 AND experiment = ?2 AND name = ?3"),
        [&key.workspace, &key.experiment, &key.name],
        rows::job,
    )?
    .ok_or_else(|| StoreError::not_found("job", key.to_string()))
}

pub fn get_by_id(tx: &Transaction, id: &str) -> Result<Job> {
    query_opt(tx, &select("id = ?1"), [id], rows::job)?
        .ok_or_else(|| StoreError::not_found("job", id))
}

pub fn list(tx: &Transaction, ws: &str, exp: &str, page: &PageRequest) -> Result<Page<Job>> {
    get_experiment(tx, ws, exp)?;
    let sql = select("workspace = ?1 AND experiment = ?2 AND name > ?3 ORDER BY name LIMIT ?4");
    let after = page.after.as_deref().unwrap_or("");
    let limit = i64::from(page.limit.min(100_000)) + 1;
    let items = query(tx, &sql, params![ws, exp, after, limit], rows::job)?;
    Ok(Page::from_overfetch(items, page.limit, |j| {
        j.key.name.clone()
    }))
}

pub fn in_workspace(tx: &Transaction, ws: &str) -> Result<Vec<Job>> {
    query(tx, &select("workspace = ?1 ORDER BY seq"), [ws], rows::job)
}

pub fn in_experiment(tx: &Transaction, ws: &str, exp: &str) -> Result<Vec<Job>> {
    query(
        tx,
        &select("workspace = ?1 AND experiment = ?2 ORDER BY seq"),
        [ws, exp],
        rows::job,
    )
}

pub fn queued_for_cluster(tx: &Transaction, ws: &str, cluster: &str) -> Result<Vec<Job>> {
    query(
        tx,
        &select(
            "cluster_workspace = ?1 AND cluster = ?2 AND execution_state = 'queued' ORDER BY seq",
        ),
        [ws, cluster],
        rows::job,
    )
}

/// The jobs active (running or terminating) with a rank on the node, in
/// creation order (a multi-node job's rank there may have ended already).
pub fn active_on_node(tx: &Transaction, node_id: &str) -> Result<Vec<Job>> {
    query(
        tx,
        &select(concat!(
            "id IN (SELECT id FROM jobs WHERE node_id = ?1 AND execution_state IN ",
            rows::active_states!(),
            " UNION ALL SELECT job_id FROM job_ranks WHERE node_id = ?1) ORDER BY seq"
        )),
        [node_id],
        rows::job,
    )
}

/// Every running or terminating job, in creation order.
pub fn active(tx: &Transaction) -> Result<Vec<Job>> {
    query(
        tx,
        &select(concat!(
            "execution_state IN ",
            rows::active_states!(),
            " ORDER BY seq"
        )),
        [],
        rows::job,
    )
}

pub fn delete(tx: &Transaction, key: &JobKey) -> Result<Job> {
    let job = get(tx, key)?;
    rows::exec(tx, "DELETE FROM jobs WHERE id = ?1", [&job.id])?;
    rows::exec(tx, "DELETE FROM job_ranks WHERE job_id = ?1", [&job.id])?;
    Ok(job)
}

pub fn terminate(tx: &Transaction, key: &JobKey, now: Millis) -> Result<Job> {
    let before = get(tx, key)?;
    let job = transition::terminate(before.clone(), now)?;
    if job != before {
        save(tx, &job)?;
    }
    Ok(job)
}

/// Whether any job is queued.
pub fn any_queued(tx: &Transaction) -> Result<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM jobs WHERE execution_state = 'queued' LIMIT 1",
        [],
        |_| Ok(()),
    )?
    .is_some())
}

/// The first `limit` queued jobs of a cluster in scheduling order (priority,
/// then creation).
pub fn queued_head(tx: &Transaction, ws: &str, cluster: &str, limit: usize) -> Result<Vec<Job>> {
    query(
        tx,
        &select(
            "cluster_workspace = ?1 AND cluster = ?2 AND execution_state = 'queued' \
             ORDER BY priority, seq LIMIT ?3",
        ),
        params![ws, cluster, i64::try_from(limit).unwrap_or(i64::MAX)],
        rows::job,
    )
}

/// Job queued → running on the nodes (rank order), the nodes idle →
/// running; `None` (and no change) if the job or a node is gone or
/// [`transition::assign_gang`] refuses: all of a gang's nodes or none.
pub fn assign(
    tx: &Transaction,
    job_id: &str,
    node_ids: &[String],
    now: Millis,
) -> Result<Option<Job>> {
    let Some(job) = query_opt(tx, &select("id = ?1"), [job_id], rows::job)? else {
        return Ok(None);
    };
    let mut nodes = Vec::with_capacity(node_ids.len());
    for id in node_ids {
        let Some(node) = nodes::get_opt(tx, id)? else {
            return Ok(None);
        };
        nodes.push(node);
    }
    let refs: Vec<&crate::domain::Node> = nodes.iter().collect();
    let Ok(job) = transition::assign_gang(job, &refs, now) else {
        return Ok(None);
    };
    save(tx, &job)?;
    for id in node_ids {
        nodes::refresh_state(tx, id, now)?;
    }
    Ok(Some(job))
}

fn active_on(tx: &Transaction, job_id: &str, node_id: &str) -> Result<Option<Job>> {
    Ok(query_opt(tx, &select("id = ?1"), [job_id], rows::job)?.filter(|j| j.is_active_on(node_id)))
}

pub fn started(
    tx: &Transaction,
    job_id: &str,
    node_id: &str,
    start: Millis,
) -> Result<Option<Job>> {
    let Some(job) = active_on(tx, job_id, node_id)? else {
        return Ok(None);
    };
    let job = transition::started_on(job, node_id, start)?;
    save(tx, &job)?;
    Ok(Some(job))
}

pub fn finish(
    tx: &Transaction,
    job_id: &str,
    node_id: &str,
    exit: &JobExit,
) -> Result<Option<Job>> {
    let Some(job) = active_on(tx, job_id, node_id)? else {
        return Ok(None);
    };
    let job = transition::finish_on(job, node_id, exit)?;
    save(tx, &job)?;
    nodes::refresh_state(tx, node_id, exit.end_time)?;
    refresh_other_nodes(tx, &job, node_id, exit.end_time)?;
    Ok(Some(job))
}

pub fn fail(
    tx: &Transaction,
    job_id: &str,
    node_id: &str,
    error: BatchAiError,
    now: Millis,
) -> Result<Option<Job>> {
    let Some(job) = active_on(tx, job_id, node_id)? else {
        return Ok(None);
    };
    let job = transition::lost_on(job, node_id, error, now)?;
    save(tx, &job)?;
    nodes::refresh_state(tx, node_id, now)?;
    refresh_other_nodes(tx, &job, node_id, now)?;
    Ok(Some(job))
}
