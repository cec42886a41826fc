//! The Prometheus text exposition (format 0.0.4) of the latest samples and
//! the store's counts. GPU series use dcgm-exporter's names and units
//! (`DCGM_FI_DEV_FB_USED` in MiB, power in W) with its `gpu`, `UUID` and
//! `modelName` labels, plus bai's `cluster`, `node` and, where a job holds
//! the GPU, `bai_job` (`workspace/experiment/name`; not `job`, which
//! Prometheus gives the scrape job) and `job_id`.

use super::{NodeSample, Source};
use crate::domain::Job;
use std::collections::HashMap;
use std::fmt::Write;

/// What the store counts at render time (and the active jobs, for the
/// labels of what they hold).
pub use crate::store::StateCounts as Counts;

/// One metric family: its help, type and lines.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    lines: Vec<String>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            lines: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut line = String::from(self.name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", escape(v));
            }
            line.push('}');
        }
        let _ = write!(line, " {}", number(value));
        self.lines.push(line);
    }

    fn write(&self, out: &mut String) {
        if self.lines.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The exposition of `samples` (each node's latest) and `counts`.
pub fn render(samples: &[(Source, NodeSample)], counts: &Counts) -> String {
    let holder: HashMap<&str, &Job> = counts
        .active
        .iter()
        .flat_map(|j| j.gpu_uuids.iter().map(move |u| (u.as_str(), j)))
        .collect();
    let by_id: HashMap<&str, &Job> = counts.active.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut gpu = [
        Family::new("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
        Family::new(
            "DCGM_FI_DEV_FB_USED",
            "gauge",
            "Framebuffer memory used (in MiB).",
        ),
        Family::new(
            "DCGM_FI_DEV_FB_FREE",
            "gauge",
            "Framebuffer memory free (in MiB).",
        ),
        Family::new("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
        Family::new("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
        Family::new(
            "DCGM_FI_DEV_SM_CLOCK",
            "gauge",
            "SM clock frequency (in MHz).",
        ),
        Family::new(
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "counter",
            "Double-bit ECC errors since the agent started.",
        ),
        Family::new(
            "DCGM_FI_DEV_XID_ERRORS",
            "gauge",
            "Value of the last XID error encountered.",
        ),
        Family::new(
            "bai_gpu_xid_errors_total",
            "counter",
            "XID events since the agent started.",
        ),
    ];
    let mut node = [
        Family::new(
            "bai_node_cpu_percent",
            "gauge",
            "Node CPU use (100 per core).",
        ),
        Family::new("bai_node_memory_used_bytes", "gauge", "Node memory in use."),
        Family::new("bai_node_memory_total_bytes", "gauge", "Node memory."),
        Family::new(
            "bai_node_disk_used_bytes",
            "gauge",
            "Used bytes of the file system of the agent's state directory.",
        ),
        Family::new(
            "bai_node_disk_total_bytes",
            "gauge",
            "Size of the file system of the agent's state directory.",
        ),
        Family::new(
            "bai_node_network_receive_bytes_total",
            "counter",
            "Bytes received since boot (loopback excluded).",
        ),
        Family::new(
            "bai_node_network_transmit_bytes_total",
            "counter",
            "Bytes sent since boot (loopback excluded).",
        ),
    ];
    let mut job = [
        Family::new(
            "bai_job_cpu_seconds_total",
            "counter",
            "CPU time of the job's processes.",
        ),
        Family::new(
            "bai_job_memory_bytes",
            "gauge",
            "Memory of the job's processes.",
        ),
        Family::new(
            "bai_job_memory_peak_bytes",
            "gauge",
            "Peak memory of the job's processes.",
        ),
        Family::new(
            "bai_job_gpu_memory_bytes",
            "gauge",
            "GPU memory the job's processes hold.",
        ),
    ];
    const MIB: f64 = 1024.0 * 1024.0;
    for (src, s) in samples {
        let base = [
            ("workspace", src.workspace.as_str()),
            ("cluster", src.cluster.as_str()),
            ("node", src.node_id.as_str()),
        ];
        for (f, v) in node.iter_mut().zip([
            f64::from(s.cpu_percent),
            s.memory_used_bytes as f64,
            s.memory_total_bytes as f64,
            s.disk_used_bytes as f64,
            s.disk_total_bytes as f64,
            s.network_rx_bytes as f64,
            s.network_tx_bytes as f64,
        ]) {
            f.add(&base, v);
        }
        for g in &s.gpus {
            let index = g.index.to_string();
            let mut labels = base.to_vec();
            labels.extend([("gpu", index.as_str()), ("UUID", g.uuid.as_str())]);
            let key;
            if let Some(j) = holder.get(g.uuid.as_str()) {
                key = j.key.to_string();
                labels.extend([("bai_job", key.as_str()), ("job_id", j.id.as_str())]);
            }
            let free = g.memory_total_bytes.saturating_sub(g.memory_used_bytes);
            let values = [
                f64::from(g.utilization_percent),
                (g.memory_used_bytes as f64 / MIB).round(),
                (free as f64 / MIB).round(),
                f64::from(g.temperature_celsius),
                f64::from(g.power_watts),
                f64::from(g.sm_clock_mhz),
                g.ecc_double_bit_errors as f64,
                g.last_xid as f64,
                g.xid_errors as f64,
            ];
            for (f, v) in gpu.iter_mut().zip(values) {
                f.add(&labels, v);
            }
        }
        for j in &s.jobs {
            let mut labels = base.to_vec();
            let key;
            if let Some(job) = by_id.get(j.job_id.as_str()) {
                key = job.key.to_string();
                labels.push(("bai_job", key.as_str()));
            }
            labels.push(("job_id", j.job_id.as_str()));
            for (f, v) in job.iter_mut().zip([
                j.cpu_seconds,
                j.memory_bytes as f64,
                j.memory_peak_bytes as f64,
                j.gpu_memory_bytes as f64,
            ]) {
                f.add(&labels, v);
            }
        }
    }
    let mut jobs = Family::new("bai_jobs", "gauge", "Jobs by cluster and execution state.");
    let mut queue = Family::new("bai_queue_length", "gauge", "Queued jobs by cluster.");
    // Every cluster with a job or a node has a queue length, 0 included, so
    // that a dashboard's series do not vanish when the queue empties.
    let mut queued: std::collections::BTreeMap<(&str, &str), u64> = counts
        .nodes
        .iter()
        .map(|(ws, c, _, _)| ((ws.as_str(), c.as_str()), 0))
        .collect();
    for (ws, c, state, n) in &counts.jobs {
        let mut with_state = vec![("workspace", ws.as_str()), ("cluster", c.as_str())];
        with_state.push(("state", state.as_str()));
        jobs.add(&with_state, *n as f64);
        let q = queued.entry((ws.as_str(), c.as_str())).or_default();
        if state == "queued" {
            *q += *n;
        }
    }
    for ((ws, c), n) in queued {
        queue.add(&[("workspace", ws), ("cluster", c)], n as f64);
    }
    let mut nodes = Family::new("bai_nodes", "gauge", "Nodes by cluster and state.");
    for (ws, c, state, n) in &counts.nodes {
        nodes.add(
            &[
                ("workspace", ws.as_str()),
                ("cluster", c.as_str()),
                ("state", state.as_str()),
            ],
            *n as f64,
        );
    }
    let mut out = String::new();
    for f in gpu.iter().chain(&node).chain(&job) {
        f.write(&mut out);
    }
    for f in [&jobs, &queue, &nodes] {
        f.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{GpuSample, JobSample};
    use super::*;
    use crate::domain::fixtures;

    #[test]
    fn gpu_series_carry_dcgm_names_and_the_holding_job() {
        let mut j = fixtures::job("ws", "ex", "train", "c");
        j.gpu_uuids = vec!["GPU-1".into()];
        let sample = NodeSample {
            time: 1,
            cpu_percent: 150.0,
            memory_used_bytes: 4 << 30,
            memory_total_bytes: 16 << 30,
            disk_used_bytes: 300,
            disk_total_bytes: 1000,
            network_rx_bytes: 7,
            network_tx_bytes: 5,
            gpu_problems: Vec::new(),
            gpus: vec![
                GpuSample {
                    index: 0,
                    uuid: "GPU-0".into(),
                    utilization_percent: 0.0,
                    memory_total_bytes: 80 << 30,
                    ..Default::default()
                },
                GpuSample {
                    index: 1,
                    uuid: "GPU-1".into(),
                    utilization_percent: 87.0,
                    memory_used_bytes: 2 << 30,
                    memory_total_bytes: 80 << 30,
                    temperature_celsius: 61.0,
                    power_watts: 312.5,
                    sm_clock_mhz: 1980,
                    ecc_double_bit_errors: 0,
                    xid_errors: 1,
                    last_xid: 79,
                },
            ],
            jobs: vec![JobSample {
                job_id: j.id.clone(),
                cpu_seconds: 12.5,
                memory_bytes: 1 << 20,
                memory_peak_bytes: 2 << 20,
                gpu_memory_bytes: 2 << 30,
                ..Default::default()
            }],
        };
        let src = Source {
            workspace: "ws".into(),
            cluster: "c".into(),
            node_id: "n\"1".into(),
        };
        let counts = Counts {
            jobs: vec![
                ("ws".into(), "c".into(), "queued".into(), 3),
                ("ws".into(), "c".into(), "running".into(), 1),
            ],
            nodes: vec![("ws".into(), "c".into(), "running".into(), 1)],
            active: vec![j.clone()],
        };
        let text = render(&[(src, sample)], &counts);
        let id = &j.id;
        for line in [
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge".to_string(),
            r#"DCGM_FI_DEV_GPU_UTIL{workspace="ws",cluster="c",node="n\"1",gpu="0",UUID="GPU-0"} 0"#
                .to_string(),
            format!(
                r#"DCGM_FI_DEV_GPU_UTIL{{workspace="ws",cluster="c",node="n\"1",gpu="1",UUID="GPU-1",bai_job="ws/ex/train",job_id="{id}"}} 87"#
            ),
            format!(
                r#"DCGM_FI_DEV_FB_USED{{workspace="ws",cluster="c",node="n\"1",gpu="1",UUID="GPU-1",bai_job="ws/ex/train",job_id="{id}"}} 2048"#
            ),
            format!(
                r#"DCGM_FI_DEV_POWER_USAGE{{workspace="ws",cluster="c",node="n\"1",gpu="1",UUID="GPU-1",bai_job="ws/ex/train",job_id="{id}"}} 312.5"#
            ),
            format!(
                r#"DCGM_FI_DEV_XID_ERRORS{{workspace="ws",cluster="c",node="n\"1",gpu="1",UUID="GPU-1",bai_job="ws/ex/train",job_id="{id}"}} 79"#
            ),
            format!(
                r#"bai_job_cpu_seconds_total{{workspace="ws",cluster="c",node="n\"1",bai_job="ws/ex/train",job_id="{id}"}} 12.5"#
            ),
            r#"bai_node_cpu_percent{workspace="ws",cluster="c",node="n\"1"} 150"#.to_string(),
            r#"bai_node_disk_used_bytes{workspace="ws",cluster="c",node="n\"1"} 300"#.to_string(),
            r#"bai_node_disk_total_bytes{workspace="ws",cluster="c",node="n\"1"} 1000"#.to_string(),
            r#"bai_node_network_receive_bytes_total{workspace="ws",cluster="c",node="n\"1"} 7"#
                .to_string(),
            r#"bai_node_network_transmit_bytes_total{workspace="ws",cluster="c",node="n\"1"} 5"#
                .to_string(),
            r#"bai_jobs{workspace="ws",cluster="c",state="queued"} 3"#.to_string(),
            r#"bai_queue_length{workspace="ws",cluster="c"} 3"#.to_string(),
            r#"bai_nodes{workspace="ws",cluster="c",state="running"} 1"#.to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE DCGM_FI_DEV_GPU_UTIL").count(),
            1,
            "one header per family"
        );
    }

    #[test]
    fn nothing_sampled_renders_only_the_counts() {
        let text = render(&[], &Counts::default());
        assert!(text.is_empty(), "{text}");
    }
}
