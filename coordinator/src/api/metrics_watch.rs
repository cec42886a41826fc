//! `WatchMetrics`: the nodes' samples as their heartbeats bring them, for a
//! cluster (every node, or one) or for a job (its node, its GPUs, its own
//! figures, until it has ended).

use crate::core::Core;
use crate::domain::Job;
use crate::error::{Error, to_status};
use crate::metrics::{NodeSample, Source};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

/// What a watcher wants.
#[derive(Debug, Clone)]
pub struct Filter {
    pub workspace: String,
    pub cluster: String,
    pub node_id: Option<String>,
    /// The job watched, as it was when the watch began.
    pub job: Option<Job>,
}

impl Filter {
    /// The part of `sample` the watcher sees, or `None` for nothing.
    pub fn pick(&self, src: &Source, sample: &NodeSample) -> Option<NodeSample> {
        if src.workspace != self.workspace
            || src.cluster != self.cluster
            || self.node_id.as_ref().is_some_and(|n| n != &src.node_id)
        {
            return None;
        }
        let Some(job) = &self.job else {
            return Some(sample.clone());
        };
        let mine = sample.jobs.iter().find(|j| j.job_id == job.id)?;
        let mut s = sample.clone();
        s.gpus.retain(|g| mine.gpu_uuids.contains(&g.uuid));
        s.jobs = vec![mine.clone()];
        Some(s)
    }
}

/// Runs the watch: the latest matching samples, then each new one, until the
/// client goes, the coordinator stops, or (for a job) the job has ended.
pub async fn run(
    core: Arc<Core>,
    filter: Filter,
    tx: mpsc::Sender<Result<(Source, NodeSample), Status>>,
) {
    // Subscribed before the snapshot, so no sample falls between.
    let mut rx = core.metrics.subscribe();
    let mut shutdown = core.shutdown();
    let mut checked: Option<std::time::Instant> = None;
    for (src, s) in core.metrics.snapshot() {
        if let Some(s) = filter.pick(&src, &s)
            && tx.send(Ok((src, s))).await.is_err()
        {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            _ = crate::core::stopped(&mut shutdown) => {
                let e = Error::Unavailable("the coordinator is shutting down".into());
                let _ = tx.send(Err(to_status(&e))).await;
                return;
            }
            s = rx.recv() => s,
        };
        let shared = match next {
            Ok(s) => s,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "a metrics watcher fell behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (src, sample) = &*shared;
        match filter.pick(src, sample) {
            Some(s) => {
                if tx.send(Ok((src.clone(), s))).await.is_err() {
                    return;
                }
            }
            None => {
                // A job not in its node's samples may have ended (looked
                // up at most once a second).
                if let Some(job) = &filter.job
                    && job.node_id.as_deref().is_none_or(|n| n == src.node_id)
                    && checked.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
                {
                    checked = Some(std::time::Instant::now());
                    if ended(&core, job).await {
                        return;
                    }
                }
            }
        }
    }
}

async fn ended(core: &Core, job: &Job) -> bool {
    match core.store.get_job_by_id(&job.id).await {
        Ok(j) => j.execution_state.is_ended(),
        Err(_) => true,
    }
}

/// The filter of a job watch: `None` if the job has ended already.
pub fn for_job(job: Job) -> Option<Filter> {
    if job.execution_state.is_ended() {
        return None;
    }
    Some(Filter {
        workspace: job.spec.cluster.workspace.clone(),
        cluster: job.spec.cluster.name.clone(),
        node_id: None,
        job: Some(job),
    })
}
