//! Metrics: the latest sample each node's agent sent with its heartbeat
//! (host, GPUs, running jobs), kept in memory, and their Prometheus text
//! form ([`render`]) with dcgm-exporter's names for the GPU series, so
//! existing Grafana dashboards work, plus bai's own (jobs by state, nodes by
//! state, queue length). [`http`] serves it on `GET /metrics`.
//!
//! Samples are not state: they are never stored, and a node's goes when its
//! session ends. What the store keeps is counted at render time. Two things
//! come out of them: each running job's summary (the agent's, carried by
//! every sample; stored with the job when its attempt ends), and a broadcast
//! of every sample as it arrives, for `WatchMetrics`.

pub mod http;
mod render;

pub use render::{Counts, render};

use crate::domain::{JobMetricsSummary, Millis};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Samples a slow `WatchMetrics` client may fall behind by before it skips.
const WATCH_BACKLOG: usize = 1024;

/// A sample as watchers get it.
pub type Shared = Arc<(Source, NodeSample)>;

/// One GPU's figures at a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub utilization_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub temperature_celsius: f32,
    pub power_watts: f32,
    pub sm_clock_mhz: u32,
    pub ecc_double_bit_errors: u64,
    pub xid_errors: u64,
    /// The latest XID (0: none).
    pub last_xid: u64,
}

/// One running job's figures at a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSample {
    pub job_id: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub gpu_memory_bytes: u64,
    /// Since the job started, as its agent sums it up.
    pub gpu_memory_peak_bytes: u64,
    pub gpu_utilization_percent: f64,
    pub gpu_utilization_mean: f64,
    pub gpu_utilization_max: f64,
    pub samples: u64,
    pub gpu_uuids: Vec<String>,
}

impl JobSample {
    /// The summary this sample carries, at `time`.
    pub fn summary(&self, time: Millis) -> JobMetricsSummary {
        let centi = |pct: f64| (pct.clamp(0.0, 100.0) * 100.0).round() as u32;
        JobMetricsSummary {
            time,
            samples: self.samples,
            gpu_utilization_mean_centi: centi(self.gpu_utilization_mean),
            gpu_utilization_max_centi: centi(self.gpu_utilization_max),
            gpu_memory_peak_bytes: self.gpu_memory_peak_bytes,
            cpu_millis: (self.cpu_seconds.max(0.0) * 1000.0).round() as u64,
            memory_peak_bytes: self.memory_peak_bytes,
        }
    }
}

/// What a node's heartbeat carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    pub time: Millis,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Each distinct cause of a GPU query that failed on the node so far.
    pub gpu_problems: Vec<String>,
    pub gpus: Vec<GpuSample>,
    pub jobs: Vec<JobSample>,
}

/// Where a sample comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub workspace: String,
    pub cluster: String,
    pub node_id: String,
}

/// The latest sample of every connected node.
#[derive(Debug)]
pub struct Latest {
    samples: Mutex<HashMap<String, (Source, NodeSample)>>,
    /// Each running job's latest summary, by job id.
    jobs: Mutex<HashMap<String, JobMetricsSummary>>,
    watch: broadcast::Sender<Shared>,
}

impl Default for Latest {
    fn default() -> Self {
        Self {
            samples: Mutex::default(),
            jobs: Mutex::default(),
            watch: broadcast::channel(WATCH_BACKLOG).0,
        }
    }
}

impl Latest {
    /// Keeps `sample` as the node's latest (and its jobs' summaries), and
    /// hands it to the watchers.
    pub fn record(&self, source: Source, sample: NodeSample) {
        if let Ok(mut j) = self.jobs.lock() {
            for s in &sample.jobs {
                j.insert(s.job_id.clone(), s.summary(sample.time));
            }
        }
        if self.watch.receiver_count() > 0 {
            let _ = self.watch.send(Arc::new((source.clone(), sample.clone())));
        }
        if let Ok(mut m) = self.samples.lock() {
            m.insert(source.node_id.clone(), (source, sample));
        }
    }

    /// The GPU queries that failed on node `node_id`, by its latest sample.
    pub fn gpu_problems(&self, node_id: &str) -> Vec<String> {
        self.samples
            .lock()
            .ok()
            .and_then(|m| m.get(node_id).map(|(_, s)| s.gpu_problems.clone()))
            .unwrap_or_default()
    }

    /// Forgets a node (its session ended) and its jobs' summaries.
    pub fn forget(&self, node_id: &str) {
        let gone = self.samples.lock().ok().and_then(|mut m| m.remove(node_id));
        if let (Some((_, s)), Ok(mut j)) = (gone, self.jobs.lock()) {
            for job in &s.jobs {
                j.remove(&job.job_id);
            }
        }
    }

    /// The running job's latest summary.
    pub fn job_summary(&self, job_id: &str) -> Option<JobMetricsSummary> {
        self.jobs.lock().ok()?.get(job_id).copied()
    }

    /// Takes the summary of a job whose attempt ended.
    pub fn take_job_summary(&self, job_id: &str) -> Option<JobMetricsSummary> {
        self.jobs.lock().ok()?.remove(job_id)
    }

    /// Every sample from now on (a slow receiver skips what it lagged by).
    pub fn subscribe(&self) -> broadcast::Receiver<Shared> {
        self.watch.subscribe()
    }

    /// Every node's latest sample, by workspace, cluster and node.
    pub fn snapshot(&self) -> Vec<(Source, NodeSample)> {
        let mut v: Vec<_> = self
            .samples
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
