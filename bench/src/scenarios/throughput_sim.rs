//! `throughput-sim`: a coordinator WITHOUT local agents, a cluster of `--nodes`
//! nodes, and that many simulated agents (see `sim`) that finish every job the
//! moment it is assigned. What remains is the coordinator's own cost per job:
//! the create transaction, scheduling, assignment, the agent messages and the
//! job's end, each durable. Figures: `jobs_per_s` (as in `throughput`), and the
//! coordinator's CPU seconds (`cpu_s`) and resident memory (`rss_mb`) over the run.

use super::throughput::run_jobs;
use super::{CpuWindow, start};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::procfs;
use crate::report::Report;
use crate::sim::{Fleet, SimConfig};
use crate::stats::round3;
use anyhow::Result;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let (jobs, nodes) = (opts.jobs(), opts.nodes());
    let mut report = Report::new("throughput-sim");
    report
        .param("jobs", jobs)
        .param("nodes", nodes)
        .param("sessions_per_channel", opts.sessions_per_channel)
        .param("sim_output_bytes", opts.sim_output_bytes)
        .param("submit_concurrency", opts.submit_concurrency)
        .param("watch_window", opts.watch_window)
        .param("connections", opts.connections);
    let (coord, mut api) = start(opts, bins, false, nodes).await?;
    let fleet = Fleet::start(&coord.url(), SimConfig::of(opts, nodes))?;
    let within = Duration::from_secs(60 + nodes as u64 / 20);
    let connect = fleet.wait_registered(within).await?;
    api.wait_idle_nodes(nodes, within).await?;

    let pid = coord.pid()?;
    let cpu = CpuWindow::start(vec![pid]);
    let bench0 = procfs::self_cpu_s();
    let out = run_jobs(&api, jobs, "true", opts).await;
    let (cpu_s, bench_cpu_s) = (cpu.cpu_s(), procfs::self_cpu_s() - bench0);
    let mem = procfs::sample(pid).unwrap_or_default();
    let stats = &fleet.stats;
    let (done, released, lost) = (
        stats.jobs_done.load(Ordering::Relaxed),
        stats.jobs_released.load(Ordering::Relaxed),
        stats.lost.load(Ordering::Relaxed),
    );
    let errors = stats.first_errors();
    fleet.stop().await;
    let out =
        out.map_err(|e| e.context(format!("coordinator log tail:\n{}", coord.log_tail(30))))?;

    out.report(&mut report);
    report
        .figure("cpu_s", round3(cpu_s))
        .figure("cpu_ms_per_job", round3(cpu_s * 1e3 / jobs.max(1) as f64))
        .figure("rss_mb", round3(mem.rss_mb))
        .figure("rss_peak_mb", round3(mem.rss_peak_mb))
        .figure("bench_cpu_s", round3(bench_cpu_s))
        .figure("connect_s", round3(connect.as_secs_f64()))
        .figure("registered", true)
        .figure("sim_jobs_done", done)
        .figure("sim_jobs_released", released)
        .figure("sim_sessions_lost", lost);
    if !errors.is_empty() {
        report.figure("sim_errors", errors);
    }
    Ok(report)
}
