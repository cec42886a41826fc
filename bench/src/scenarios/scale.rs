//! `scale`: a coordinator WITHOUT local agents and `--nodes` simulated agents
//! (see `sim`), each on its own connection by default, registered and sending
//! heartbeats with metrics for `--gpus` GPUs at the interval the coordinator
//! asks for. Once all have registered, the coordinator is measured for
//! `--duration-s` seconds: CPU as a percentage of one core and resident memory.
//! `registered` is true when every simulated session got Registered, none was
//! lost, and ListClusterNodes shows every node connected at the end.

use super::{CpuWindow, start};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::procfs;
use crate::report::Report;
use crate::sim::{Fleet, SimConfig};
use crate::stats::round3;
use anyhow::Result;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let nodes = opts.nodes();
    let mut report = Report::new("scale");
    report
        .param("nodes", nodes)
        .param("gpus_per_node", opts.gpus)
        .param("duration_s", opts.duration_s)
        .param("sessions_per_channel", opts.sessions_per_channel)
        .param("connect_concurrency", opts.connect_concurrency);
    let (coord, mut api) = start(opts, bins, false, nodes).await?;
    let pid = coord.pid()?;
    let connect_cpu = CpuWindow::start(vec![pid]);
    let fleet = Fleet::start(
        &coord.url(),
        SimConfig {
            output_bytes: 0,
            ..SimConfig::of(opts, nodes)
        },
    )?;
    let within = Duration::from_secs(60 + nodes as u64 / 20);
    let connect = match fleet.wait_registered(within).await {
        Ok(d) => d,
        Err(e) => {
            fleet.stop().await;
            return Err(e.context(format!("coordinator log tail:\n{}", coord.log_tail(30))));
        }
    };
    let connect_cpu_s = connect_cpu.cpu_s();

    let stats = fleet.stats.clone();
    let window_start = SystemTime::now();
    let hb0 = stats.heartbeats.load(Ordering::Relaxed);
    let cpu = CpuWindow::start(vec![pid]);
    tokio::time::sleep(Duration::from_secs_f64(opts.duration_s.max(0.0))).await;
    let cpu_pct = cpu.pct();
    let heartbeats = stats.heartbeats.load(Ordering::Relaxed) - hb0;
    let mem = procfs::sample(pid)?;
    let listed = api.nodes().await;
    let lost = stats.lost.load(Ordering::Relaxed);
    let reg = stats.registered.load(Ordering::Relaxed);
    fleet.stop().await;

    let listed = listed?;
    let connected = listed.iter().filter(|n| n.connected).count();
    let beat_in_window = listed
        .iter()
        .filter(|n| {
            n.last_heartbeat_time
                .and_then(|t| SystemTime::try_from(t).ok())
                .is_some_and(|t| t >= window_start)
        })
        .count();
    report
        .figure("cpu_pct", round3(cpu_pct))
        .figure("rss_mb", round3(mem.rss_mb))
        .figure("rss_peak_mb", round3(mem.rss_peak_mb))
        .figure(
            "registered",
            reg == nodes && lost == 0 && connected == nodes,
        )
        .figure("sessions_registered", reg)
        .figure("sessions_lost", lost)
        .figure("nodes_listed", listed.len())
        .figure("nodes_connected", connected)
        .figure("nodes_with_heartbeat_in_window", beat_in_window)
        .figure("heartbeats_sent_in_window", heartbeats)
        .figure(
            "heartbeats_per_s",
            round3(heartbeats as f64 / opts.duration_s.max(1e-9)),
        )
        .figure("connect_s", round3(connect.as_secs_f64()))
        .figure("connect_cpu_s", round3(connect_cpu_s));
    let errors = stats.first_errors();
    if !errors.is_empty() {
        report.figure("sim_errors", errors);
    }
    Ok(report)
}
