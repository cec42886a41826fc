//! Reading rows into domain types and the column lists that go with them.

use crate::domain::gpus::{Gpu, Holding};
use crate::domain::{
    Cluster, ExecutionState, Experiment, Job, JobKey, Node, NodeInfo, NodeState, Workspace,
};
use crate::store::{Result, StoreError};
use rusqlite::{Row, Transaction, params};

/// The SQL list of the execution states that occupy a node, the states
/// [`ExecutionState::is_active`] accepts (a test checks they agree). A macro,
/// so queries can `concat!` it.
macro_rules! active_states {
    () => {
        "('running', 'terminating')"
    };
}
pub(super) use active_states;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(format!("bad json in store: {e}"))
    }
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    Ok(serde_json::from_str(s)?)
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

pub const WORKSPACE_COLS: &str = "name, location, tags, creation_time";

pub fn workspace(r: &Row) -> Result<Workspace> {
    Ok(Workspace {
        name: r.get(0)?,
        location: r.get(1)?,
        tags: json(&r.get::<_, String>(2)?)?,
        creation_time: r.get(3)?,
    })
}

pub const EXPERIMENT_COLS: &str = "workspace, name, creation_time";

pub fn experiment(r: &Row) -> Result<Experiment> {
    Ok(Experiment {
        workspace: r.get(0)?,
        name: r.get(1)?,
        creation_time: r.get(2)?,
    })
}

pub const CLUSTER_COLS: &str = "workspace, name, spec, target_node_count, creation_time, \
     allocation_state_transition_time, errors";

pub fn cluster(r: &Row) -> Result<Cluster> {
    Ok(Cluster {
        workspace: r.get(0)?,
        name: r.get(1)?,
        spec: json(&r.get::<_, String>(2)?)?,
        target_node_count: r.get(3)?,
        creation_time: r.get(4)?,
        allocation_state_transition_time: r.get(5)?,
        errors: json(&r.get::<_, String>(6)?)?,
    })
}

pub const NODE_COLS: &str = "node_id, workspace, cluster, state, state_transition_time, hostname, \
     ip_address, agent_version, cpu_count, memory_bytes, connected, last_heartbeat_time, errors, \
     details";

/// The `details` column of a node: what node preparation added.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NodeDetails {
    pub preparation_step: String,
    pub ssh_port: u32,
    pub file_share_driver: String,
    pub blob_driver: String,
    pub gpus: Vec<Gpu>,
    pub gpu_backend: String,
    pub gpu_driver_version: String,
    pub cuda_version: String,
    pub job_cgroups: String,
    pub gpu_isolation: String,
    pub container_runtime: String,
}

impl NodeDetails {
    /// What a node with `info` keeps in `details`.
    pub fn new(preparation_step: String, info: &NodeInfo) -> Self {
        Self {
            preparation_step,
            ssh_port: info.ssh_port,
            file_share_driver: info.file_share_driver.clone(),
            blob_driver: info.blob_driver.clone(),
            gpus: info.gpus.clone(),
            gpu_backend: info.gpu_backend.clone(),
            gpu_driver_version: info.gpu_driver_version.clone(),
            cuda_version: info.cuda_version.clone(),
            job_cgroups: info.job_cgroups.clone(),
            gpu_isolation: info.gpu_isolation.clone(),
            container_runtime: info.container_runtime.clone(),
        }
    }

    pub fn of(n: &Node) -> Self {
        Self::new(n.preparation_step.clone(), &n.info)
    }
}

/// A node row; `running_job_ids` is filled by [`node_jobs`].
pub fn node(r: &Row) -> Result<Node> {
    let state: String = r.get(3)?;
    let details: NodeDetails = json(&r.get::<_, String>(13)?)?;
    Ok(Node {
        node_id: r.get(0)?,
        workspace: r.get(1)?,
        cluster: r.get(2)?,
        state: NodeState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("bad node state {state:?}")))?,
        state_transition_time: r.get(4)?,
        info: NodeInfo {
            hostname: r.get(5)?,
            ip_address: r.get(6)?,
            agent_version: r.get(7)?,
            cpu_count: r.get(8)?,
            memory_bytes: r.get::<_, i64>(9)? as u64,
            ssh_port: details.ssh_port,
            file_share_driver: details.file_share_driver,
            blob_driver: details.blob_driver,
            gpus: details.gpus,
            gpu_backend: details.gpu_backend,
            gpu_driver_version: details.gpu_driver_version,
            cuda_version: details.cuda_version,
            job_cgroups: details.job_cgroups,
            gpu_isolation: details.gpu_isolation,
            container_runtime: details.container_runtime,
        },
        connected: r.get(10)?,
        last_heartbeat_time: r.get(11)?,
        errors: json(&r.get::<_, String>(12)?)?,
        preparation_step: details.preparation_step,
        running_job_ids: Vec::new(),
        holdings: Vec::new(),
    })
}

pub const JOB_COLS: &str = "id, workspace, experiment, name, spec, creation_time, execution_state, \
     execution_state_transition_time, start_time, end_time, exit_code, errors, node_id, \
     attempt_started, requeue_on_exit, gpu_uuids, metrics, gang, attempts";

pub fn job(r: &Row) -> Result<Job> {
    let state: String = r.get(6)?;
    Ok(Job {
        id: r.get(0)?,
        key: JobKey {
            workspace: r.get(1)?,
            experiment: r.get(2)?,
            name: r.get(3)?,
        },
        spec: json(&r.get::<_, String>(4)?)?,
        creation_time: r.get(5)?,
        execution_state: ExecutionState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("bad execution state {state:?}")))?,
        execution_state_transition_time: r.get(7)?,
        start_time: r.get(8)?,
        end_time: r.get(9)?,
        exit_code: r.get(10)?,
        errors: json(&r.get::<_, String>(11)?)?,
        node_id: r.get(12)?,
        attempt_started: r.get(13)?,
        requeue_on_exit: r.get(14)?,
        gpu_uuids: json(&r.get::<_, String>(15)?)?,
        metrics: r
            .get::<_, Option<String>>(16)?
            .map(|m| json(&m))
            .transpose()?,
        gang: r
            .get::<_, Option<String>>(17)?
            .map(|g| json(&g))
            .transpose()?,
        attempts: json(&r.get::<_, String>(18)?)?,
    })
}

/// Executes a statement, prepared once per connection and cached.
pub fn exec(tx: &Transaction, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
    Ok(tx.prepare_cached(sql)?.execute(params)?)
}

/// Runs a query and reads every row with `f`.
pub fn query<T>(
    tx: &Transaction,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl Fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// The first row, if any.
pub fn query_opt<T>(
    tx: &Transaction,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl Fn(&Row) -> Result<T>,
) -> Result<Option<T>> {
    Ok(query(tx, sql, params, f)?.into_iter().next())
}

/// The columns [`holding`] reads: the job's latest end is its start (its
/// assignment before it starts) plus its wall-clock limit; then its `seq`.
macro_rules! holding_cols {
    () => {
        "node_id, id, gpu_uuids, gpus_per_node, \
         COALESCE(start_time, execution_state_transition_time) \
         + json_extract(spec, '$.max_wall_clock_time_ms'), seq"
    };
}

/// [`holding_cols`] of a multi-node job's other ranks, from `job_ranks`
/// joined with `jobs` (which only active jobs have rows in).
macro_rules! rank_holding_cols {
    () => {
        "job_ranks.node_id, jobs.id, job_ranks.gpu_uuids, jobs.gpus_per_node, \
         COALESCE(jobs.start_time, jobs.execution_state_transition_time) \
         + json_extract(jobs.spec, '$.max_wall_clock_time_ms'), jobs.seq \
         FROM job_ranks JOIN jobs ON jobs.id = job_ranks.job_id"
    };
}

/// What an active job holds of its node, from [`holding_cols`].
fn holding(r: &Row) -> Result<(String, Holding)> {
    Ok((
        r.get(0)?,
        Holding {
            job_id: r.get(1)?,
            gpu_uuids: json(&r.get::<_, String>(2)?)?,
            whole_node: r.get::<_, i64>(3)? == 0,
            ends_by: r.get::<_, Option<i64>>(4)?.unwrap_or(i64::MAX),
        },
    ))
}

/// What the jobs active (running or terminating) on a node hold, in order
/// (rank 0 from the job's row, other ranks from `job_ranks`).
pub fn node_jobs(tx: &Transaction, node_id: &str) -> Result<Vec<Holding>> {
    let sql = concat!(
        "SELECT ",
        holding_cols!(),
        " FROM jobs WHERE node_id = ?1 AND execution_state IN ",
        active_states!(),
        " UNION ALL SELECT ",
        rank_holding_cols!(),
        " WHERE job_ranks.node_id = ?1 ORDER BY 6"
    );
    Ok(query(tx, sql, params![node_id], holding)?
        .into_iter()
        .map(|(_, h)| h)
        .collect())
}

fn set_holdings(n: &mut Node, holdings: Vec<Holding>) {
    n.running_job_ids = holdings.iter().map(|h| h.job_id.clone()).collect();
    n.holdings = holdings;
}

/// Fills in `running_job_ids` and `holdings` of many nodes with one query.
pub fn with_all_jobs(tx: &Transaction, mut nodes: Vec<Node>) -> Result<Vec<Node>> {
    if nodes.is_empty() {
        return Ok(nodes);
    }
    let sql = concat!(
        "SELECT ",
        holding_cols!(),
        " FROM jobs WHERE node_id IS NOT NULL AND execution_state IN ",
        active_states!(),
        " UNION ALL SELECT ",
        rank_holding_cols!(),
        " ORDER BY 6"
    );
    let active = query(tx, sql, [], holding)?;
    let mut by_node: std::collections::HashMap<String, Vec<Holding>> =
        std::collections::HashMap::new();
    for (node, h) in active {
        by_node.entry(node).or_default().push(h);
    }
    for n in &mut nodes {
        if let Some(hs) = by_node.remove(&n.node_id) {
            set_holdings(n, hs);
        }
    }
    Ok(nodes)
}

/// Fills in `running_job_ids` and `holdings`.
pub fn with_jobs(tx: &Transaction, mut n: Node) -> Result<Node> {
    let hs = node_jobs(tx, &n.node_id)?;
    set_holdings(&mut n, hs);
    Ok(n)
}
