//! `bai-bench`: benchmark scenarios for bai. Each run starts what it measures
//! (a real coordinator on a temporary state directory and a loopback port, and
//! real or simulated agents), runs one scenario, returns a [`report::Report`]
//! that `main` prints as one JSON line, and stops everything it started.
//!
//! Modules: `cli` (options), `harness` (starting/stopping the coordinator),
//! `api` (the public gRPC API as a client), `sim` (simulated agents speaking the
//! agent protocol), `procfs` (CPU/RSS from /proc, cleanup, fd limit), `stats`
//! (percentiles, stream pattern, checksum), `report` (the JSON line) and
//! `scenarios` (one module per scenario).

pub mod api;
pub mod cli;
pub mod harness;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod sim;
pub mod stats;

use anyhow::{Context, Result};

/// Runs the scenario `opts` names and returns its report.
pub async fn run(opts: cli::Opts) -> Result<report::Report> {
    // Thousands of sessions need thousands of descriptors, here and in the
    // coordinator (which inherits the raised limit).
    let nofile = procfs::raise_nofile_limit().context("raise the open-file limit")?;
    let bins = harness::Binaries::locate(opts.coordinator_bin.clone(), opts.agent_bin.clone())?;
    let timeout = std::time::Duration::from_secs(opts.timeout_s);
    let mut report = tokio::time::timeout(timeout, scenarios::run(&opts, &bins))
        .await
        .map_err(|_| {
            anyhow::anyhow!("{} did not finish within {timeout:?}", opts.scenario.name())
        })??;
    report.figure(
        "host_cpus",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    report.figure("nofile_limit", nofile);
    Ok(report)
}
