//! `agent-idle`: one real agent (started by the coordinator in local mode),
//! registered and idle, measured over `--duration-s` seconds: its CPU as a
//! percentage of one core and its resident memory. CPU comes from the
//! threads' schedstat (nanoseconds; an idle agent uses less than one 10 ms
//! tick of /proc/<pid>/stat in 30 s, which `cpu_pct_ticks` shows for
//! comparison). The coordinator's CPU over the same window is reported alongside.

use super::{CpuWindow, start_with};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::procfs;
use crate::report::Report;
use crate::stats::round3;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let mut report = Report::new("agent-idle");
    report.param("duration_s", opts.duration_s);
    report.param("gpus", opts.gpus);
    // The agent samples simulated GPUs with every heartbeat, as a GPU node
    // does (metrics on).
    let extra = if opts.gpus > 0 {
        vec!["--local-agent-fake-gpus".to_string(), opts.gpus.to_string()]
    } else {
        Vec::new()
    };
    let (coord, mut api) = start_with(opts, bins, true, 1, extra).await?;
    let pids = coord.local_agent_pids();
    let [agent] = pids[..] else {
        bail!("expected one local agent process, found {pids:?}");
    };
    let agent_cpu = CpuWindow::start(vec![agent]);
    let coord_cpu = CpuWindow::start(vec![coord.pid()?]);
    let threads0 = procfs::thread_cpu_ns(agent)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(opts.duration_s.max(0.0))).await;
    let threads1 = procfs::thread_cpu_ns(agent)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu_s = procfs::thread_cpu_delta_s(&threads0, &threads1);
    let (ticks_pct, coord_pct) = (agent_cpu.pct(), coord_cpu.pct());
    let mem = procfs::sample(agent)?;
    // The agent must still be alive and registered for the figures to mean anything.
    let idle = api.idle_nodes().await?;
    report
        .figure("rss_mb", round3(mem.rss_mb))
        .figure("rss_peak_mb", round3(mem.rss_peak_mb))
        .figure("cpu_pct", round3(cpu_s / wall.max(1e-9) * 100.0))
        .figure("cpu_s", (cpu_s * 1e6).round() / 1e6)
        .figure("cpu_pct_ticks", round3(ticks_pct))
        .figure("agent_threads", threads1.len())
        .figure("coordinator_cpu_pct", round3(coord_pct))
        .figure("agent_pid_alive", procfs::alive(agent))
        .figure("idle_nodes", idle);
    Ok(report)
}
