//! The SQLite store in WAL mode with `synchronous=FULL`. Every trait method
//! that may change state runs in the writer's group commit (see `engine`):
//! inside its own savepoint of a shared IMMEDIATE transaction, answered only
//! after that transaction committed (and so is durable). Reads run on reader
//! connections.

mod cluster_events;
mod engine;
mod gpu_health;
mod jobs;
mod nodes;
mod resources;
mod rows;
pub mod schema;
#[cfg(test)]
mod tests;

use super::{NodeRegistration, NodeRemoval, Removed, Result, Store, StoreError};
use crate::domain::node_setup::Preparation;
use crate::domain::paging::{Page, PageRequest};
use crate::domain::{
    BatchAiError, Cluster, DeallocationOption, Experiment, Job, JobExit, JobKey, Millis, Node,
    ScaleSettings, Workspace,
};
use async_trait::async_trait;
use engine::Engine;
use rusqlite::Transaction;
use std::path::Path;
use std::sync::Arc;

/// The SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = engine::connect(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot use WAL journal mode (got {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            engine: Arc::new(Engine::start(path, conn)?),
        })
    }

    /// Runs `f` in the writer's next group commit; answers once it is durable.
    async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T> + Send + 'static,
    {
        self.engine.write(f).await
    }

    /// Runs `f` on a reader connection (one snapshot).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T> + Send + 'static,
    {
        self.engine.read(f).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_workspace(&self, ws: Workspace) -> Result<Workspace> {
        self.tx(move |tx| resources::create_workspace(tx, ws)).await
    }
    async fn get_workspace(&self, name: &str) -> Result<Workspace> {
        let name = name.to_string();
        self.read(move |tx| resources::get_workspace(tx, &name))
            .await
    }
    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>> {
        let page = page.clone();
        self.read(move |tx| resources::list_workspaces(tx, &page))
            .await
    }
    async fn delete_workspace(&self, name: &str, now: Millis) -> Result<Removed> {
        let name = name.to_string();
        self.tx(move |tx| resources::delete_workspace(tx, &name, now))
            .await
    }

    async fn create_experiment(&self, e: Experiment) -> Result<Experiment> {
        self.tx(move |tx| resources::create_experiment(tx, e)).await
    }
    async fn get_experiment(&self, ws: &str, name: &str) -> Result<Experiment> {
        let (ws, name) = (ws.to_string(), name.to_string());
        self.read(move |tx| resources::get_experiment(tx, &ws, &name))
            .await
    }
    async fn list_experiments(&self, ws: &str, page: &PageRequest) -> Result<Page<Experiment>> {
        let (ws, page) = (ws.to_string(), page.clone());
        self.read(move |tx| resources::list_experiments(tx, &ws, &page))
            .await
    }
    async fn delete_experiment(&self, ws: &str, name: &str) -> Result<Removed> {
        let (ws, name) = (ws.to_string(), name.to_string());
        self.tx(move |tx| resources::delete_experiment(tx, &ws, &name))
            .await
    }

    async fn create_cluster(&self, c: Cluster) -> Result<Cluster> {
        self.tx(move |tx| resources::create_cluster(tx, c)).await
    }
    async fn get_cluster(&self, ws: &str, name: &str) -> Result<Cluster> {
        let (ws, name) = (ws.to_string(), name.to_string());
        self.read(move |tx| resources::get_cluster(tx, &ws, &name))
            .await
    }
    async fn list_clusters(&self, ws: &str, page: &PageRequest) -> Result<Page<Cluster>> {
        let (ws, page) = (ws.to_string(), page.clone());
        self.read(move |tx| resources::list_clusters(tx, &ws, &page))
            .await
    }
    async fn list_all_clusters(&self) -> Result<Vec<Cluster>> {
        self.read(resources::list_all_clusters).await
    }
    async fn update_cluster_scale(
        &self,
        ws: &str,
        name: &str,
        scale: ScaleSettings,
        now: Millis,
    ) -> Result<Cluster> {
        let (ws, name) = (ws.to_string(), name.to_string());
        self.tx(move |tx| resources::update_cluster_scale(tx, &ws, &name, scale, now))
            .await
    }
    async fn set_autoscale_target(
        &self,
        ws: &str,
        name: &str,
        target: u32,
        reason: &str,
        now: Millis,
    ) -> Result<Option<Cluster>> {
        let (ws, name, reason) = (ws.to_string(), name.to_string(), reason.to_string());
        self.tx(move |tx| resources::set_autoscale_target(tx, &ws, &name, target, &reason, now))
            .await
    }
    async fn list_cluster_events(
        &self,
        ws: &str,
        cluster: &str,
        after_seq: i64,
        limit: u32,
        newest: bool,
    ) -> Result<Vec<crate::domain::cluster_events::ClusterEvent>> {
        let (ws, cluster) = (ws.to_string(), cluster.to_string());
        self.read(move |tx| {
            resources::get_cluster(tx, &ws, &cluster)?;
            cluster_events::list(tx, &ws, &cluster, after_seq, limit, newest)
        })
        .await
    }
    async fn delete_cluster(&self, ws: &str, name: &str, now: Millis) -> Result<Removed> {
        let (ws, name) = (ws.to_string(), name.to_string());
        self.tx(move |tx| {
            resources::get_cluster(tx, &ws, &name)?;
            let mut removed = Removed::default();
            resources::delete_cluster_in(tx, &ws, &name, now, &mut removed)?;
            Ok(removed)
        })
        .await
    }

    async fn register_node(&self, reg: NodeRegistration, now: Millis) -> Result<(Node, Vec<Job>)> {
        self.tx(move |tx| nodes::register(tx, reg, now)).await
    }
    async fn set_node_connected(
        &self,
        node_id: &str,
        connected: bool,
        last_heartbeat: Option<Millis>,
    ) -> Result<()> {
        let node_id = node_id.to_string();
        self.tx(move |tx| nodes::set_connected(tx, &node_id, connected, last_heartbeat))
            .await
    }
    async fn disconnect_all_nodes(&self) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE nodes SET connected = 0", [])?;
            Ok(())
        })
        .await
    }
    async fn get_node(&self, node_id: &str) -> Result<Node> {
        let node_id = node_id.to_string();
        self.read(move |tx| nodes::get(tx, &node_id)).await
    }
    async fn list_nodes(&self, ws: &str, cluster: &str) -> Result<Vec<Node>> {
        let (ws, cluster) = (ws.to_string(), cluster.to_string());
        self.read(move |tx| {
            resources::get_cluster(tx, &ws, &cluster)?;
            nodes::list_in(tx, &ws, &cluster)
        })
        .await
    }
    async fn list_workspace_nodes(&self, ws: &str) -> Result<Vec<Node>> {
        let ws = ws.to_string();
        self.read(move |tx| nodes::list_workspace(tx, &ws)).await
    }
    async fn list_all_nodes(&self) -> Result<Vec<Node>> {
        self.read(nodes::list_all).await
    }
    async fn list_leaving_nodes(&self) -> Result<Vec<Node>> {
        self.read(nodes::list_leaving).await
    }
    async fn begin_node_removal(
        &self,
        node_id: &str,
        option: DeallocationOption,
        reason: &str,
        now: Millis,
    ) -> Result<NodeRemoval> {
        let (node_id, reason) = (node_id.to_string(), reason.to_string());
        self.tx(move |tx| nodes::begin_removal(tx, &node_id, option, &reason, now))
            .await
    }
    async fn preempt_node(&self, node_id: &str, reason: &str, now: Millis) -> Result<NodeRemoval> {
        let (node_id, reason) = (node_id.to_string(), reason.to_string());
        self.tx(move |tx| nodes::preempt(tx, &node_id, &reason, now))
            .await
    }
    async fn remove_node(&self, node_id: &str, now: Millis) -> Result<Vec<Job>> {
        let node_id = node_id.to_string();
        self.tx(move |tx| nodes::remove(tx, &node_id, now)).await
    }
    async fn report_preparation(
        &self,
        node_id: &str,
        preparation: Preparation,
        now: Millis,
    ) -> Result<Node> {
        let node_id = node_id.to_string();
        self.tx(move |tx| nodes::report_preparation(tx, &node_id, preparation, now))
            .await
    }

    async fn refresh_node_state(&self, node_id: &str, now: Millis) -> Result<()> {
        let node_id = node_id.to_string();
        self.tx(move |tx| nodes::refresh_state(tx, &node_id, now))
            .await
    }

    async fn mark_node_lost(
        &self,
        node_id: &str,
        error: BatchAiError,
        now: Millis,
    ) -> Result<Vec<Job>> {
        let node_id = node_id.to_string();
        self.tx(move |tx| nodes::mark_lost(tx, &node_id, error, now))
            .await
    }
    async fn record_gpu_event(
        &self,
        event: crate::domain::gpus::GpuEvent,
    ) -> Result<super::GpuEventOutcome> {
        self.tx(move |tx| gpu_health::record(tx, event)).await
    }
    async fn clear_gpu_fault(
        &self,
        node_id: &str,
        gpu: &str,
        who: &str,
        now: Millis,
    ) -> Result<Node> {
        let (node_id, gpu, who) = (node_id.to_string(), gpu.to_string(), who.to_string());
        self.tx(move |tx| gpu_health::clear(tx, &node_id, &gpu, &who, now))
            .await
    }
    async fn list_gpu_events(
        &self,
        ws: &str,
        cluster: &str,
        node_id: Option<&str>,
    ) -> Result<Vec<crate::domain::gpus::GpuEvent>> {
        let (ws, cluster, node_id) = (
            ws.to_string(),
            cluster.to_string(),
            node_id.map(str::to_string),
        );
        self.read(move |tx| {
            resources::get_cluster(tx, &ws, &cluster)?;
            gpu_health::list(tx, &ws, &cluster, node_id.as_deref())
        })
        .await
    }

    async fn create_job(&self, job: Job) -> Result<Job> {
        self.tx(move |tx| jobs::create(tx, job)).await
    }
    async fn get_job(&self, key: &JobKey) -> Result<Job> {
        let key = key.clone();
        self.read(move |tx| jobs::get(tx, &key)).await
    }
    async fn get_job_by_id(&self, id: &str) -> Result<Job> {
        let id = id.to_string();
        self.read(move |tx| jobs::get_by_id(tx, &id)).await
    }
    async fn list_jobs(&self, ws: &str, exp: &str, page: &PageRequest) -> Result<Page<Job>> {
        let (ws, exp, page) = (ws.to_string(), exp.to_string(), page.clone());
        self.read(move |tx| jobs::list(tx, &ws, &exp, &page)).await
    }
    async fn delete_job(&self, key: &JobKey) -> Result<Job> {
        let key = key.clone();
        self.tx(move |tx| jobs::delete(tx, &key)).await
    }
    async fn terminate_job(&self, key: &JobKey, now: Millis) -> Result<Job> {
        let key = key.clone();
        self.tx(move |tx| jobs::terminate(tx, &key, now)).await
    }
    async fn jobs_on_node(&self, node_id: &str) -> Result<Vec<Job>> {
        let node_id = node_id.to_string();
        self.read(move |tx| jobs::active_on_node(tx, &node_id))
            .await
    }
    async fn state_counts(&self) -> Result<crate::store::StateCounts> {
        self.read(|tx| {
            let count = |sql: &str| {
                rows::query(tx, sql, [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
                })
            };
            Ok(crate::store::StateCounts {
                jobs: count(
                    "SELECT cluster_workspace, cluster, execution_state, count(*) FROM jobs \
                     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                )?,
                nodes: count(
                    "SELECT workspace, cluster, state, count(*) FROM nodes \
                     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                )?,
                active: jobs::active(tx)?,
            })
        })
        .await
    }
    async fn schedulable(&self) -> Result<(Vec<Node>, Vec<Job>)> {
        self.read(|tx| {
            if !jobs::any_queued(tx)? {
                return Ok((Vec::new(), Vec::new()));
            }
            let idle = nodes::placeable(tx)?;
            let mut per_cluster: std::collections::BTreeMap<(&str, &str), usize> =
                std::collections::BTreeMap::new();
            for n in &idle {
                *per_cluster
                    .entry((n.workspace.as_str(), n.cluster.as_str()))
                    .or_default() += crate::domain::gpus::room(n);
            }
            let mut queued = Vec::new();
            for ((ws, cluster), n) in per_cluster {
                // As many as there is room for, and a few behind a job that
                // must wait, which may backfill.
                if n > 0 {
                    queued.extend(jobs::queued_head(
                        tx,
                        ws,
                        cluster,
                        n + crate::store::BACKFILL_LOOKAHEAD,
                    )?);
                }
            }
            Ok((idle, queued))
        })
        .await
    }
    async fn cluster_queue(&self, ws: &str, cluster: &str) -> Result<crate::store::ClusterQueue> {
        let (ws, cluster) = (ws.to_string(), cluster.to_string());
        self.read(move |tx| {
            let target = match resources::get_cluster(tx, &ws, &cluster) {
                Ok(c) => c.target_node_count,
                Err(StoreError::NotFound { .. }) => return Ok(Default::default()),
                Err(e) => return Err(e),
            };
            Ok(crate::store::ClusterQueue {
                target_node_count: Some(target),
                nodes: nodes::list_in(tx, &ws, &cluster)?,
                queued: jobs::queued_head(tx, &ws, &cluster, usize::MAX)?,
            })
        })
        .await
    }
    async fn assign_jobs(
        &self,
        placements: Vec<(String, Vec<String>)>,
        now: Millis,
    ) -> Result<Vec<Option<Job>>> {
        self.tx(move |tx| {
            placements
                .iter()
                .map(|(job, nodes)| jobs::assign(tx, job, nodes, now))
                .collect()
        })
        .await
    }
    async fn record_job_started(
        &self,
        job_id: &str,
        node_id: &str,
        start_time: Millis,
    ) -> Result<Option<Job>> {
        let (job_id, node_id) = (job_id.to_string(), node_id.to_string());
        self.tx(move |tx| jobs::started(tx, &job_id, &node_id, start_time))
            .await
    }
    async fn finish_job(&self, job_id: &str, node_id: &str, exit: JobExit) -> Result<Option<Job>> {
        let (job_id, node_id) = (job_id.to_string(), node_id.to_string());
        self.tx(move |tx| jobs::finish(tx, &job_id, &node_id, &exit))
            .await
    }
    async fn fail_job(
        &self,
        job_id: &str,
        node_id: &str,
        error: BatchAiError,
        now: Millis,
    ) -> Result<Option<Job>> {
        let (job_id, node_id) = (job_id.to_string(), node_id.to_string());
        self.tx(move |tx| jobs::fail(tx, &job_id, &node_id, error, now))
            .await
    }
}
