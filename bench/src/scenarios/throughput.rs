//! `throughput`: a coordinator and `--nodes` real agents (local mode); `--jobs`
//! jobs running `true` submitted as fast as the client can (CreateJob calls
//! `--submit-concurrency` at a time over `--connections` connections), while a
//! watcher follows them in submission order with up to `--watch-window`
//! WatchJob streams open. `jobs_per_s` counts from the first submit until the
//! client has seen every job succeed; `submit_per_s` until every create returned.
//!
//! [`run_jobs`] is shared with `throughput-sim`.

use super::{CpuSplit, memory_figures, start};
use crate::api::{self, Api};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::report::Report;
use crate::stats::round3;
use anyhow::{Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use std::time::Instant;
use tokio::sync::mpsc;

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let (jobs, nodes) = (opts.jobs(), opts.nodes());
    let mut report = Report::new("throughput");
    report
        .param("jobs", jobs)
        .param("nodes", nodes)
        .param("command", "true")
        .param("submit_concurrency", opts.submit_concurrency)
        .param("watch_window", opts.watch_window)
        .param("connections", opts.connections);
    let (coord, api) = start(opts, bins, true, nodes).await?;
    let split = CpuSplit::start(coord.pid()?, coord.local_agent_pids());
    let out = run_jobs(&api, jobs, "true", opts).await?;
    split.report(&mut report);
    memory_figures(&mut report, "coordinator_", coord.pid()?);
    out.report(&mut report);
    Ok(report)
}

/// What happened to a batch of jobs.
pub(super) struct JobsOutcome {
    pub jobs: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// From the first submit until every create returned.
    pub submit_s: f64,
    /// From the first submit until the client saw every job end.
    pub total_s: f64,
    pub first_failure: Option<String>,
}

impl JobsOutcome {
    pub fn report(&self, report: &mut Report) {
        let rate = |s: f64| {
            if s > 0.0 {
                round3(self.jobs as f64 / s)
            } else {
                0.0
            }
        };
        report
            .figure("jobs_per_s", rate(self.total_s))
            .figure("submit_per_s", rate(self.submit_s))
            .figure("elapsed_s", round3(self.total_s))
            .figure("submit_s", round3(self.submit_s))
            .figure("jobs", self.jobs)
            .figure("jobs_succeeded", self.succeeded)
            .figure("jobs_failed", self.failed);
        if let Some(f) = &self.first_failure {
            report.figure("first_failure", f.clone());
        }
    }
}

/// Submits `n` jobs running `command` as fast as possible and waits (WatchJob)
/// until every one has ended.
pub(super) async fn run_jobs(
    api: &Api,
    n: usize,
    command: &str,
    opts: &Opts,
) -> Result<JobsOutcome> {
    let t0 = Instant::now();
    let (tx, mut created) = mpsc::unbounded_channel::<String>();
    let submitter = {
        let (api, command, conc) = (
            api.clone(),
            command.to_string(),
            opts.submit_concurrency.max(1),
        );
        tokio::spawn(async move {
            let mut creates = futures::stream::iter(0..n)
                .map(|i| {
                    let (mut client, command) = (api.jobs(i), command.clone());
                    async move {
                        let name = format!("job-{i:06}");
                        api::create_job(&mut client, &name, &command)
                            .await
                            .map(|_| name)
                    }
                })
                .buffer_unordered(conc);
            while let Some(r) = creates.next().await {
                let _ = tx.send(r?);
            }
            Ok::<_, anyhow::Error>(t0.elapsed().as_secs_f64())
        })
    };

    let window = opts.watch_window.max(1);
    let mut watching = FuturesUnordered::new();
    let (mut open, mut started) = (true, 0usize);
    let mut out = JobsOutcome {
        jobs: n,
        succeeded: 0,
        failed: 0,
        submit_s: 0.0,
        total_s: 0.0,
        first_failure: None,
    };
    while open || !watching.is_empty() {
        tokio::select! {
            name = created.recv(), if open && watching.len() < window => match name {
                Some(name) => {
                    let mut client = api.jobs(started);
                    started += 1;
                    watching.push(async move { api::watch_until_ended(&mut client, &name).await });
                }
                None => open = false,
            },
            Some(r) = watching.next(), if !watching.is_empty() => {
                let (job, _) = r?;
                if api::succeeded(&job) {
                    out.succeeded += 1;
                } else {
                    out.failed += 1;
                    out.first_failure.get_or_insert_with(|| format!("{}: {:?}", job.name, job.execution_info));
                }
            }
        }
    }
    out.total_s = t0.elapsed().as_secs_f64();
    out.submit_s = submitter.await.context("submitter task")??;
    Ok(out)
}
