//! Command-line options of `bai-bench`: the scenario and its sizes. Sizes left
//! out take each scenario's documented default (see [`Opts::jobs`] and co.).

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Benchmarks bai: starts a coordinator (and real or simulated agents) on a
/// temporary directory and a loopback port, runs one scenario, prints one JSON
/// line of figures to stdout and stops everything it started.
#[derive(Debug, Clone, Parser)]
#[command(name = "bai-bench", version)]
pub struct Opts {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Jobs to run (latency 200, throughput 2000, throughput-sim 50000, gang 300;
    /// elasticity always submits one job per node).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Agents (throughput 4 real, throughput-sim 1000 simulated, scale 10000
    /// simulated, gang 64 simulated; elasticity: the autoScale cluster's
    /// maximum, 8, at most 100).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Bytes the stream job writes to stdout (default 1 GiB).
    #[arg(long)]
    pub bytes: Option<u64>,
    /// Measuring window of scale and agent-idle, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration_s: f64,
    /// GPUs each simulated agent reports metrics for (scale), and the idle
    /// real agent simulates and samples (agent-idle; 0: none).
    #[arg(long, default_value_t = 8)]
    pub gpus: u32,
    /// Simulated agent sessions per HTTP/2 connection (1: one connection each, like real agents).
    #[arg(long, default_value_t = 1)]
    pub sessions_per_channel: usize,
    /// Simulated agents connecting and registering at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Stdout bytes each simulated job sends in one OutputChunk (0: none).
    #[arg(long, default_value_t = 0)]
    pub sim_output_bytes: usize,
    /// CreateJob calls in flight at once (throughput scenarios).
    #[arg(long, default_value_t = 64)]
    pub submit_concurrency: usize,
    /// WatchJob streams open at once (throughput scenarios, gang).
    #[arg(long, default_value_t = 256)]
    pub watch_window: usize,
    /// Client HTTP/2 connections the bench spreads its job calls over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Give up (and fail) after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    /// Keep the temporary state directory (store, output, logs) for inspection.
    #[arg(long)]
    pub keep_dir: bool,
    /// latency: run each job in this container image (on the node already, or pullable),
    /// and time plain `podman run --rm <image> true` beside it
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Runtime flags for --image, before `run` (e.g. --runtime runc); repeat for each word
    #[arg(long = "runtime-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub runtime_args: Vec<String>,
    /// Flags for every `run` with --image (e.g. --ulimit nofile=1024:1024); repeat for each word
    #[arg(long = "run-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub run_args: Vec<String>,
    /// elasticity: what each job of the burst runs, `sleep <secs>`.
    #[arg(long, default_value_t = 3.0)]
    pub job_secs: f64,
    /// elasticity: the coordinator's `--autoscale-interval-secs`.
    #[arg(long, default_value_t = 1)]
    pub autoscale_interval_secs: u64,
    /// elasticity: the coordinator's `--autoscale-idle-grace-secs`.
    #[arg(long, default_value_t = 2)]
    pub autoscale_idle_grace_secs: u64,
    /// elasticity: milliseconds between looks at the cluster, its nodes and
    /// jobs (the resolution of the figures the bench observes itself).
    #[arg(long, default_value_t = 50)]
    pub poll_ms: u64,
    /// The coordinator binary (default: bai-coordinator next to bai-bench).
    #[arg(long)]
    pub coordinator_bin: Option<PathBuf>,
    /// The agent binary (default: bai-agent next to bai-bench).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Submit-to-start and submit-to-done of sequential `true` jobs on one real agent.
    Latency,
    /// Jobs per second of `true` jobs on real agents.
    Throughput,
    /// Jobs per second with simulated agents that finish each job at once.
    ThroughputSim,
    /// Output streaming rate of one job writing `--bytes` to stdout.
    Stream,
    /// Coordinator CPU and memory with many simulated agents heartbeating.
    Scale,
    /// CPU and memory of one idle real agent.
    AgentIdle,
    /// Multi-node jobs of mixed sizes and run times on simulated agents:
    /// makespan, utilization, and how long big and small jobs wait.
    Gang,
    /// A burst of one-node jobs on an empty autoScale cluster of real agents:
    /// time until every node is busy, and from the last job's end to zero nodes.
    Elasticity,
}

impl Scenario {
    /// The scenario's name as typed on the command line and printed in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::Throughput => "throughput",
            Scenario::ThroughputSim => "throughput-sim",
            Scenario::Stream => "stream",
            Scenario::Scale => "scale",
            Scenario::AgentIdle => "agent-idle",
            Scenario::Gang => "gang",
            Scenario::Elasticity => "elasticity",
        }
    }
}

impl Opts {
    /// `--jobs`, or the scenario's default.
    pub fn jobs(&self) -> usize {
        self.jobs.unwrap_or(match self.scenario {
            Scenario::Latency => 200,
            Scenario::ThroughputSim => 50_000,
            Scenario::Gang => 300,
            _ => 2000,
        })
    }

    /// `--nodes`, or the scenario's default.
    pub fn nodes(&self) -> usize {
        self.nodes.unwrap_or(match self.scenario {
            Scenario::ThroughputSim => 1000,
            Scenario::Scale => 10_000,
            Scenario::Throughput => 4,
            Scenario::Gang => 64,
            Scenario::Elasticity => 8,
            _ => 1,
        })
    }

    /// `--bytes`, or 1 GiB.
    pub fn bytes(&self) -> u64 {
        self.bytes.unwrap_or(1 << 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_parse_and_print_alike() {
        for s in Scenario::value_variants() {
            let o = Opts::try_parse_from(["bai-bench", s.name()]).expect("parse");
            assert_eq!(o.scenario, *s);
        }
        assert!(Opts::try_parse_from(["bai-bench", "nonsense"]).is_err());
    }

    #[test]
    fn defaults_follow_the_scenario() {
        let o = Opts::try_parse_from(["bai-bench", "throughput-sim"]).expect("parse");
        assert_eq!((o.jobs(), o.nodes()), (50_000, 1000));
        let o = Opts::try_parse_from(["bai-bench", "scale", "--nodes", "10"]).expect("parse");
        assert_eq!(o.nodes(), 10);
        assert_eq!(o.duration_s, 30.0);
        let o = Opts::try_parse_from(["bai-bench", "gang"]).expect("parse");
        assert_eq!((o.jobs(), o.nodes()), (300, 64));
        let o = Opts::try_parse_from(["bai-bench", "elasticity"]).expect("parse");
        assert_eq!(o.nodes(), 8);
        assert_eq!((o.job_secs, o.autoscale_interval_secs), (3.0, 1));
        assert_eq!((o.autoscale_idle_grace_secs, o.poll_ms), (2, 50));
        let o = Opts::try_parse_from(["bai-bench", "stream"]).expect("parse");
        assert_eq!(o.bytes(), 1 << 30);
    }
}
