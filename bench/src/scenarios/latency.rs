//! `latency`: a coordinator and one real agent (local mode); jobs running
//! `true` one after another. For each job, from the moment its CreateJob RPC
//! returned to the client:
//! - submit-to-start: until `execution_info.start_time`, which the agent stamps
//!   when it has started the job's process (both clocks are this host's);
//! - submit-to-done: until a client waiting with WatchJob (opened right after
//!   the create returned) receives the job as succeeded.

use super::{CpuSplit, memory_figures, start};
use crate::api::{self, ms_between};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::report::Report;
use crate::stats::{percentile, round3};
use anyhow::{Result, bail};

/// Jobs run first and not counted (connections, caches, the agent's first fork).
const WARMUP: usize = 3;

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let jobs = opts.jobs();
    let mut report = Report::new("latency");
    report
        .param("jobs", jobs)
        .param("warmup_jobs", WARMUP)
        .param("command", "true");
    let (coord, api) = start(opts, bins, true, 1).await?;
    let mut client = api.jobs(0);
    for i in 0..WARMUP {
        let name = format!("warmup-{i}");
        api::create_job(&mut client, &name, "true").await?;
        api::watch_until_ended(&mut client, &name).await?;
    }

    let split = CpuSplit::start(coord.pid()?, coord.local_agent_pids());
    let (mut to_start, mut to_done) = (Vec::with_capacity(jobs), Vec::with_capacity(jobs));
    let (mut create_rpc, mut sent_to_start, mut sent_to_done) = (
        Vec::with_capacity(jobs),
        Vec::with_capacity(jobs),
        Vec::with_capacity(jobs),
    );
    let (mut succeeded, mut first_failure) = (0usize, None);
    for i in 0..jobs {
        let name = format!("job-{i:06}");
        let sent = std::time::SystemTime::now();
        let (_, returned) = api::create_job(&mut client, &name, "true").await?;
        create_rpc.push(ms_between(returned, sent));
        let (ended, seen) = api::watch_until_ended(&mut client, &name).await?;
        if !api::succeeded(&ended) {
            first_failure.get_or_insert_with(|| format!("{name}: {:?}", ended.execution_info));
            continue;
        }
        let Some(started) = api::start_time(&ended) else {
            bail!("{name} succeeded without execution_info.start_time");
        };
        succeeded += 1;
        to_start.push(ms_between(started, returned));
        to_done.push(ms_between(seen, returned));
        sent_to_start.push(ms_between(started, sent));
        sent_to_done.push(ms_between(seen, sent));
    }
    split.report(&mut report);
    memory_figures(&mut report, "coordinator_", coord.pid()?);

    let p = |v: &[f64], q: f64| percentile(v, q).map(round3);
    report
        .figure("submit_to_start_ms_p50", p(&to_start, 50.0))
        .figure("submit_to_start_ms_p99", p(&to_start, 99.0))
        .figure("submit_to_done_ms_p50", p(&to_done, 50.0))
        .figure("submit_to_done_ms_p99", p(&to_done, 99.0))
        .figure("send_to_start_ms_p50", p(&sent_to_start, 50.0))
        .figure("send_to_start_ms_p99", p(&sent_to_start, 99.0))
        .figure("send_to_done_ms_p50", p(&sent_to_done, 50.0))
        .figure("send_to_done_ms_p99", p(&sent_to_done, 99.0))
        .figure("create_rpc_ms_p50", p(&create_rpc, 50.0))
        .figure("create_rpc_ms_p99", p(&create_rpc, 99.0))
        .figure("submit_to_start_ms_max", p(&to_start, 100.0))
        .figure("submit_to_done_ms_max", p(&to_done, 100.0))
        .figure(
            "start_time_source",
            "execution_info.start_time (stamped by the agent at process start)",
        )
        .figure("jobs", jobs)
        .figure("jobs_succeeded", succeeded);
    if let Some(f) = first_failure {
        report.figure("first_failure", f);
    }
    Ok(report)
}
