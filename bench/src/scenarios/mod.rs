//! The scenarios, one module each, and what they share: starting a coordinator
//! with a ready cluster, and measuring processes' CPU over a window.

mod agent_idle;
mod elasticity;
mod gang;
mod latency;
mod scale;
mod stream;
mod throughput;
mod throughput_sim;

use crate::api::Api;
use crate::cli::{Opts, Scenario};
use crate::harness::{Binaries, Coordinator, CoordinatorOpts};
use crate::procfs;
use crate::report::Report;
use crate::stats::round3;
use anyhow::Result;
use std::time::Duration;

/// Runs the scenario `opts` names.
pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    match opts.scenario {
        Scenario::Latency => latency::run(opts, bins).await,
        Scenario::Throughput => throughput::run(opts, bins).await,
        Scenario::ThroughputSim => throughput_sim::run(opts, bins).await,
        Scenario::Stream => stream::run(opts, bins).await,
        Scenario::Scale => scale::run(opts, bins).await,
        Scenario::AgentIdle => agent_idle::run(opts, bins).await,
        Scenario::Gang => gang::run(opts, bins).await,
        Scenario::Elasticity => elasticity::run(opts, bins).await,
    }
}

/// A coordinator with the bench workspace, experiment and cluster. With
/// `local_agents` the cluster's target is `nodes`, the coordinator starts that
/// many real agents and this waits until they are idle. Without, the cluster's
/// target is 0 (nothing to start; a cluster's target is at most 100 anyway)
/// and it takes the agents that register themselves (simulated ones): a
/// coordinator not in local mode accepts any agent that registers.
async fn start(
    opts: &Opts,
    bins: &Binaries,
    local_agents: bool,
    nodes: usize,
) -> Result<(Coordinator, Api)> {
    start_with(opts, bins, local_agents, nodes, Vec::new()).await
}

/// [`start`] with more coordinator flags.
async fn start_with(
    opts: &Opts,
    bins: &Binaries,
    local_agents: bool,
    nodes: usize,
    extra_args: Vec<String>,
) -> Result<(Coordinator, Api)> {
    let coord = Coordinator::start(
        bins,
        &CoordinatorOpts {
            local_agents,
            keep_dir: opts.keep_dir,
            extra_args,
        },
    )
    .await?;
    let mut api = connect(opts, &coord).await?;
    let ready = async {
        api.setup(if local_agents { nodes } else { 0 }).await?;
        if local_agents {
            api.wait_idle_nodes(nodes, Duration::from_secs(60 + nodes as u64))
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    if let Err(e) = ready.await {
        return Err(e.context(format!(
            "setting up the cluster; coordinator log tail:\n{}",
            coord.log_tail(30)
        )));
    }
    Ok((coord, api))
}

/// Clients of `coord` over `--connections` new HTTP/2 connections.
async fn connect(opts: &Opts, coord: &Coordinator) -> Result<Api> {
    let mut channels = Vec::new();
    for _ in 0..opts.connections.max(1) {
        channels.push(coord.channel().await?);
    }
    Api::new(channels)
}

/// CPU of a set of processes (with their reaped children) between two points.
pub(crate) struct CpuWindow {
    pids: Vec<i32>,
    start: f64,
    t0: std::time::Instant,
}

impl CpuWindow {
    pub(crate) fn start(pids: Vec<i32>) -> Self {
        let start = cpu_of(&pids);
        Self {
            pids,
            start,
            t0: std::time::Instant::now(),
        }
    }

    /// CPU seconds used since the start.
    pub(crate) fn cpu_s(&self) -> f64 {
        cpu_of(&self.pids) - self.start
    }

    /// CPU used since the start as a percentage of one core.
    pub(crate) fn pct(&self) -> f64 {
        let wall = self.t0.elapsed().as_secs_f64();
        if wall > 0.0 {
            self.cpu_s() / wall * 100.0
        } else {
            0.0
        }
    }
}

/// Summed CPU seconds (own and reaped children) of the processes still alive.
fn cpu_of(pids: &[i32]) -> f64 {
    pids.iter()
        .filter_map(|&p| procfs::sample(p).ok())
        .map(|s| s.total_cpu_s())
        .sum()
}

/// Adds the coordinator's memory figures (`<prefix>rss_mb`, `<prefix>rss_peak_mb`).
fn memory_figures(report: &mut Report, prefix: &str, pid: i32) {
    if let Ok(s) = procfs::sample(pid) {
        report.figure(&format!("{prefix}rss_mb"), round3(s.rss_mb));
        report.figure(&format!("{prefix}rss_peak_mb"), round3(s.rss_peak_mb));
    }
}

/// Where the CPU of a run went: coordinator, agents (with the job processes
/// they reaped), bench.
struct CpuSplit {
    coordinator: CpuWindow,
    agents: CpuWindow,
    agents_children: f64,
    bench: f64,
}

impl CpuSplit {
    fn start(coordinator: i32, agents: Vec<i32>) -> Self {
        Self {
            coordinator: CpuWindow::start(vec![coordinator]),
            agents_children: children_cpu_of(&agents),
            agents: CpuWindow::start(agents),
            bench: procfs::self_cpu_s(),
        }
    }

    fn report(&self, report: &mut Report) {
        let children = children_cpu_of(&self.agents.pids) - self.agents_children;
        report.figure("coordinator_cpu_s", round3(self.coordinator.cpu_s()));
        report.figure("agents_cpu_s", round3(self.agents.cpu_s()));
        report.figure("agents_children_cpu_s", round3(children));
        report.figure("bench_cpu_s", round3(procfs::self_cpu_s() - self.bench));
    }
}

/// Summed CPU seconds of the reaped children of the processes still alive.
fn children_cpu_of(pids: &[i32]) -> f64 {
    pids.iter()
        .filter_map(|&p| procfs::sample(p).ok())
        .map(|s| s.children_cpu_s)
        .sum()
}
