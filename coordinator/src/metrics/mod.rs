//! Metrics: the latest sample each node's agent sent with its heartbeat
//! (host, GPUs, running jobs), kept in memory, and their Prometheus text
//! form ([`render`]) with dcgm-exporter's names for the GPU series, so
//! existing Grafana dashboards work, plus bai's own (jobs by state, nodes by
//! state, queue length). [`http`] serves it on `GET /metrics`.
//!
//! Samples are not state: they are never stored, and a node's goes when its
//! session ends. What the store keeps is counted at render time.

pub mod http;
mod render;

pub use render::{Counts, render};

use crate::domain::Millis;
use std::collections::HashMap;
use std::sync::Mutex;

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
}

/// What a node's heartbeat carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    pub time: Millis,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
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
#[derive(Debug, Default)]
pub struct Latest {
    samples: Mutex<HashMap<String, (Source, NodeSample)>>,
}

impl Latest {
    /// Keeps `sample` as the node's latest.
    pub fn record(&self, source: Source, sample: NodeSample) {
        if let Ok(mut m) = self.samples.lock() {
            m.insert(source.node_id.clone(), (source, sample));
        }
    }

    /// Forgets a node (its session ended).
    pub fn forget(&self, node_id: &str) {
        if let Ok(mut m) = self.samples.lock() {
            m.remove(node_id);
        }
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
