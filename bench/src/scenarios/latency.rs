//! `latency`: a coordinator and one real agent (local mode); jobs running
//! `true` one after another. For each job, from the moment its CreateJob RPC
//! returned to the client:
//! - submit-to-start: until `execution_info.start_time`, which the agent stamps
//!   when it has started the job's process (both clocks are this host's);
//! - submit-to-done: until a client waiting with WatchJob (opened right after
//!   the create returned) receives the job as succeeded.
//!
//! With `--image REF` every job runs `true` in that container image through
//! podman (the agent gets `[containers]` with `--runtime-arg`/`--run-arg`);
//! the image is on the node after the warm-up jobs, so what is measured is a
//! cached image's job. A container job's start is stamped when the runtime's
//! client starts, so compare `submit_to_done_ms_*` with
//! `plain_podman_run_ms_*`: the same image's `podman run --rm <image> true`,
//! timed from spawn to exit, on the same machine right after.

use super::{CpuSplit, memory_figures, start_with};
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
    let config_dir = tempfile::tempdir()?;
    let mut extra = Vec::new();
    if let Some(image) = &opts.image {
        report.param("image", image.as_str());
        let toml = format!(
            "[containers]\nruntime = \"podman\"\nglobal_args = {}\nrun_args = {}\n",
            serde_json::to_string(&opts.runtime_args)?,
            serde_json::to_string(&opts.run_args)?
        );
        let path = config_dir.path().join("agent.toml");
        std::fs::write(&path, toml)?;
        extra = vec![
            "--local-agent-config".to_string(),
            path.display().to_string(),
        ];
    }
    let job = |name: &str| {
        let mut j = api::job(name, "true");
        if let Some(image) = &opts.image {
            j.container_settings = Some(bai_proto::v1::ContainerSettings {
                image_source_registry: Some(bai_proto::v1::ImageSourceRegistry {
                    image: image.clone(),
                    ..Default::default()
                }),
                shm_size: String::new(),
            });
        }
        j
    };
    let (coord, api) = start_with(opts, bins, true, 1, extra).await?;
    let mut client = api.jobs(0);
    for i in 0..WARMUP {
        let name = format!("warmup-{i}");
        api::create(&mut client, job(&name)).await?;
        let (ended, _) = api::watch_until_ended(&mut client, &name).await?;
        if !api::succeeded(&ended) {
            bail!(
                "warm-up job {name} did not succeed: {:?}",
                ended.execution_info
            );
        }
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
        let (_, returned) = api::create(&mut client, job(&name)).await?;
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
    if let Some(image) = &opts.image {
        let plain = plain_podman_runs(opts, image, jobs.min(50))?;
        report
            .figure("plain_podman_run_ms_p50", p(&plain, 50.0))
            .figure("plain_podman_run_ms_p99", p(&plain, 99.0));
    }
    Ok(report)
}

/// `n` timings (ms, spawn to exit) of `podman <runtime args> run --rm <run
/// args> --network host <image> true`, as bai's container job runs it.
fn plain_podman_runs(opts: &Opts, image: &str, n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = std::time::Instant::now();
        let status = std::process::Command::new("podman")
            .args(&opts.runtime_args)
            .args(["run", "--rm"])
            .args(&opts.run_args)
            .args(["--network", "host", image, "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("podman run --rm {image} true failed: {status}");
        }
        out.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}
