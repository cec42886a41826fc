//! `gang`: multi-node ("gang") jobs of mixed sizes and lengths on a coordinator
//! WITHOUT local agents and `--nodes` (64) simulated agents that run each
//! `sleep <s>` job for its time (`SimConfig::run_sleeps`). `--jobs` (300) jobs
//! from a fixed-seed workload ([`workload`]) are created one after another,
//! so the queue holds them in workload order, then watched until every one
//! has ended. What it shows: how full the scheduler keeps the nodes
//! (`utilization`), how long the whole batch takes (`makespan_s`), and whether
//! the big jobs wait for their turn without starving (`big_wait_s_*`,
//! `head_big_wait_s`) while small ones backfill (`small_wait_s_*`).
//!
//! Every time is a coordinator or agent stamp on the same host: submit is the
//! job's `creation_time`, start and end its `execution_info` (stamped by the
//! master's simulated agent). Invariants, checked: every job succeeded, each
//! ran on exactly `node_count` distinct nodes, no node ever held two jobs at
//! once, and every job was "run" once (one JobExited per job: a custom
//! toolkit job's other ranks only hold their nodes).

use super::{CpuWindow, start};
use crate::api::{self, Api};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::report::Report;
use crate::sim::{Fleet, SimConfig};
use crate::stats::{percentile, round3};
use anyhow::{Context, Result, bail};
use bai_proto::v1 as pb;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// The workload's seed: every run submits the same jobs.
pub const SEED: u64 = 0x6a09_e667_f3bc_c908;

/// Node counts and their weights (per 100 jobs).
pub const MIX: [(u32, u32); 6] = [(1, 70), (2, 10), (4, 8), (8, 6), (16, 4), (32, 2)];

/// Run times are drawn uniformly from this range, in whole milliseconds.
pub const DURATION_MS: (u64, u64) = (50, 500);

/// Jobs of at least this many nodes are the "big" ones.
pub const BIG: u32 = 16;

/// One job of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub node_count: u32,
    /// What it runs for (`sleep <s>`).
    pub duration_ms: u64,
}

impl Spec {
    /// Its `max_wall_clock_time`: twice its run time. The API keeps whole
    /// milliseconds (it drops finer nanos), and the run time is whole ms.
    pub fn wall_clock(&self) -> Duration {
        Duration::from_millis(2 * self.duration_ms)
    }

    pub fn command_line(&self) -> String {
        format!("sleep {:.3}", self.duration_ms as f64 / 1e3)
    }
}

/// A 64-bit linear congruential generator (Knuth's MMIX constants); the high
/// bits are the output.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// Uniform in `0..n` (the modulo bias is negligible for small `n`).
    fn below(&mut self, n: u64) -> u64 {
        u64::from(self.next()) % n
    }
}

/// `jobs` jobs drawn with `seed`: node counts by [`MIX`] (capped at `nodes`,
/// so every job fits the cluster), run times uniform in [`DURATION_MS`].
pub fn workload(jobs: usize, nodes: usize, seed: u64) -> Vec<Spec> {
    let mut rng = Lcg(seed);
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let cap = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    (0..jobs)
        .map(|_| {
            let mut pick = rng.below(u64::from(total)) as u32;
            let mut node_count = MIX[0].0;
            for (n, w) in MIX {
                if pick < w {
                    node_count = n;
                    break;
                }
                pick -= w;
            }
            let (lo, hi) = DURATION_MS;
            Spec {
                node_count: node_count.min(cap),
                duration_ms: lo + rng.below(hi - lo + 1),
            }
        })
        .collect()
}

/// What a job did, in seconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub node_count: u32,
    pub submitted: f64,
    pub started: f64,
    pub ended: f64,
    pub node_ids: Vec<String>,
}

impl Observed {
    fn wait(&self) -> f64 {
        self.started - self.submitted
    }
}

/// Jobs on one node whose runs overlapped (each pair once), in workload order.
pub fn node_overlaps(jobs: &[Observed]) -> Vec<(usize, usize, String)> {
    let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        for n in &j.node_ids {
            by_node.entry(n.as_str()).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for (node, mut on) in by_node {
        on.sort_by(|&a, &b| jobs[a].started.total_cmp(&jobs[b].started));
        for w in on.windows(2) {
            if jobs[w[1]].started < jobs[w[0]].ended {
                out.push((w[0].min(w[1]), w[0].max(w[1]), node.to_string()));
            }
        }
    }
    out.sort();
    out
}

/// The makespan of strict FIFO without backfill and without any overhead: each
/// job starts when the nodes it needs are free, but never before the job ahead
/// of it started. What the coordinator's backfill should beat.
pub fn fifo_makespan_s(specs: &[Spec], nodes: usize) -> f64 {
    let mut free = vec![0.0f64; nodes.max(1)];
    let (mut last_start, mut end) = (0.0f64, 0.0f64);
    for s in specs {
        free.sort_by(f64::total_cmp);
        let k = (s.node_count as usize).clamp(1, free.len());
        let start = free[k - 1].max(last_start);
        let ends = start + s.duration_ms as f64 / 1e3;
        free[..k].iter_mut().for_each(|f| *f = ends);
        last_start = start;
        end = end.max(ends);
    }
    end
}

/// No schedule can finish sooner: the node-seconds over the nodes, or the
/// longest job.
pub fn makespan_lower_bound_s(specs: &[Spec], nodes: usize) -> f64 {
    let work: f64 = specs
        .iter()
        .map(|s| f64::from(s.node_count) * s.duration_ms as f64 / 1e3)
        .sum();
    let longest = specs.iter().map(|s| s.duration_ms).max().unwrap_or(0) as f64 / 1e3;
    (work / nodes.max(1) as f64).max(longest)
}

/// The figures of a finished batch: `jobs` in workload order on `nodes` nodes.
pub fn figures(report: &mut Report, jobs: &[Observed], nodes: usize) {
    let first = jobs.iter().map(|j| j.submitted).fold(f64::MAX, f64::min);
    let last = jobs.iter().map(|j| j.ended).fold(f64::MIN, f64::max);
    let makespan = (last - first).max(0.0);
    let busy: f64 = jobs
        .iter()
        .map(|j| f64::from(j.node_count) * (j.ended - j.started))
        .sum();
    let utilization = if makespan > 0.0 {
        busy / (nodes.max(1) as f64 * makespan)
    } else {
        0.0
    };
    let waits = |f: &dyn Fn(&Observed) -> bool| -> Vec<f64> {
        jobs.iter().filter(|j| f(j)).map(Observed::wait).collect()
    };
    let big = waits(&|j| j.node_count >= BIG);
    let small = waits(&|j| j.node_count == 1);
    let all = waits(&|_| true);
    let r = |v: Option<f64>| v.map(round3);
    report
        .figure("makespan_s", round3(makespan))
        .figure("utilization", round3(utilization))
        .figure("node_busy_s", round3(busy))
        .figure("big_jobs", big.len())
        .figure("big_wait_s_p50", r(percentile(&big, 50.0)))
        .figure("big_wait_s_max", r(percentile(&big, 100.0)))
        .figure("small_jobs", small.len())
        .figure("small_wait_s_p50", r(percentile(&small, 50.0)))
        .figure("small_wait_s_p99", r(percentile(&small, 99.0)))
        .figure("wait_s_p50", r(percentile(&all, 50.0)))
        .figure("wait_s_max", r(percentile(&all, 100.0)));
    // Jobs that started before a job submitted ahead of them: backfilled.
    let mut latest = f64::MIN;
    let mut backfilled = 0;
    for j in jobs {
        backfilled += usize::from(j.started < latest);
        latest = latest.max(j.started);
    }
    report.figure("backfilled_jobs", backfilled);
    // The first big job submitted: the one the queue reserves nodes for first.
    let head = jobs.iter().position(|j| j.node_count >= BIG);
    report.figure("head_big_job", head);
    report.figure("head_big_wait_s", head.map(|h| round3(jobs[h].wait())));
    // Jobs submitted after it that started before it: backfilled past it.
    report.figure(
        "backfilled_past_head",
        head.map(|h| {
            jobs[h + 1..]
                .iter()
                .filter(|j| j.started < jobs[h].started)
                .count()
        }),
    );
}

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let (n_jobs, nodes) = (opts.jobs(), opts.nodes());
    let specs = workload(n_jobs, nodes, SEED);
    let mut report = Report::new("gang");
    report
        .param("jobs", n_jobs)
        .param("nodes", nodes)
        .param("seed", format!("{SEED:#x}"))
        .param(
            "mix",
            MIX.iter()
                .map(|(n, w)| format!("{n}:{w}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .param("duration_ms", vec![DURATION_MS.0, DURATION_MS.1])
        .param("wall_clock", "2x duration")
        .param("watch_window", opts.watch_window);
    let (coord, mut api) = start(opts, bins, false, nodes).await?;
    let fleet = Fleet::start(
        &coord.url(),
        SimConfig {
            run_sleeps: true,
            ..SimConfig::of(opts, nodes)
        },
    )?;
    let within = Duration::from_secs(60 + nodes as u64 / 20);
    fleet.wait_registered(within).await?;
    api.wait_idle_nodes(nodes, within).await?;

    let cpu = CpuWindow::start(vec![coord.pid()?]);
    let out = submit_and_watch(&api, &specs, opts.watch_window).await;
    let cpu_s = cpu.cpu_s();
    let stats = &fleet.stats;
    let (done, reassigned, lost, ranks_stopped) = (
        stats.jobs_done.load(Ordering::Relaxed),
        stats.reassigned.load(Ordering::Relaxed),
        stats.lost.load(Ordering::Relaxed),
        stats.ranks_stopped.load(Ordering::Relaxed),
    );
    let errors = stats.first_errors();
    fleet.stop().await;
    let ended =
        out.map_err(|e| e.context(format!("coordinator log tail:\n{}", coord.log_tail(30))))?;

    let succeeded = ended.iter().filter(|j| api::succeeded(j)).count();
    if succeeded != n_jobs {
        let failed = ended.iter().find(|j| !api::succeeded(j));
        bail!(
            "{succeeded} of {n_jobs} jobs succeeded; first other: {:?}",
            failed.map(|j| (&j.name, j.execution_state, &j.execution_info))
        );
    }
    let observed = ended
        .iter()
        .zip(&specs)
        .map(|(j, s)| observe(j, s))
        .collect::<Result<Vec<_>>>()?;
    let overlaps = node_overlaps(&observed);
    if let Some((a, b, node)) = overlaps.first() {
        bail!(
            "{} pairs of jobs overlapped on a node, first {} and {} on {node}",
            overlaps.len(),
            ended[*a].name,
            ended[*b].name
        );
    }
    if done != n_jobs as u64 {
        bail!("the simulated agents ran {done} jobs for {n_jobs} submitted");
    }

    report
        .figure("jobs", n_jobs)
        .figure("jobs_succeeded", succeeded);
    figures(&mut report, &observed, nodes);
    report
        .figure(
            "makespan_lower_bound_s",
            round3(makespan_lower_bound_s(&specs, nodes)),
        )
        .figure(
            "fifo_no_backfill_makespan_s",
            round3(fifo_makespan_s(&specs, nodes)),
        )
        .figure("cpu_s", round3(cpu_s))
        .figure("sim_jobs_done", done)
        .figure("sim_ranks_stopped", ranks_stopped)
        .figure("sim_reassigned", reassigned)
        .figure("sim_sessions_lost", lost);
    if !errors.is_empty() {
        report.figure("sim_errors", errors);
    }
    Ok(report)
}

/// Creates the jobs one after another (so the queue holds them in workload
/// order), then watches them, `window` at a time, until all have ended;
/// returns the ended jobs in workload order.
async fn submit_and_watch(api: &Api, specs: &[Spec], window: usize) -> Result<Vec<pb::Job>> {
    let mut client = api.jobs(0);
    let mut names = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let name = format!("gang-{i:05}-n{}", s.node_count);
        let mut job = api::job(&name, &s.command_line());
        job.node_count = i32::try_from(s.node_count).context("node count")?;
        job.constraints = Some(pb::JobBasePropertiesConstraints {
            max_wall_clock_time: Some(s.wall_clock().try_into()?),
        });
        client
            .create_job(pb::CreateJobRequest { job: Some(job) })
            .await
            .with_context(|| format!("CreateJob {name}"))?;
        names.push(name);
    }
    stream::iter(names.into_iter().enumerate())
        .map(|(i, name)| {
            let mut client = api.jobs(i);
            async move {
                api::watch_until_ended(&mut client, &name)
                    .await
                    .map(|(j, _)| j)
            }
        })
        .buffered(window.max(1))
        .try_collect()
        .await
}

/// The job's stamps and nodes, checked against what was asked.
fn observe(j: &pb::Job, s: &Spec) -> Result<Observed> {
    let secs = |t: Option<SystemTime>, what: &str| -> Result<f64> {
        let t = t.with_context(|| format!("{}: no valid {what}", j.name))?;
        Ok(t.duration_since(SystemTime::UNIX_EPOCH)?.as_secs_f64())
    };
    let info = j.execution_info.as_ref();
    let o = Observed {
        node_count: s.node_count,
        submitted: secs(
            j.creation_time.and_then(|t| SystemTime::try_from(t).ok()),
            "creation_time",
        )?,
        started: secs(api::start_time(j), "start_time")?,
        ended: secs(
            info.and_then(|i| i.end_time)
                .and_then(|t| SystemTime::try_from(t).ok()),
            "end_time",
        )?,
        node_ids: j.node_ids.clone(),
    };
    let mut distinct = o.node_ids.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != s.node_count as usize || o.node_ids.len() != distinct.len() {
        bail!(
            "{} asked for {} nodes and ran on {:?}",
            j.name,
            s.node_count,
            o.node_ids
        );
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_fixed_by_its_seed_and_follows_the_mix() {
        let w = workload(3000, 64, SEED);
        assert_eq!(w, workload(3000, 64, SEED));
        assert_ne!(w, workload(3000, 64, SEED + 1));
        for (n, weight) in MIX {
            let got = w.iter().filter(|s| s.node_count == n).count() as f64 / 30.0;
            assert!((got - f64::from(weight)).abs() < 2.5, "{n} nodes: {got}%");
        }
        let (lo, hi) = DURATION_MS;
        assert!(w.iter().all(|s| (lo..=hi).contains(&s.duration_ms)));
        assert_eq!(w.iter().map(|s| s.duration_ms).min(), Some(lo));
        assert_eq!(w.iter().map(|s| s.duration_ms).max(), Some(hi));
    }

    #[test]
    fn jobs_fit_a_small_cluster_and_ask_for_whole_milliseconds() {
        assert!(workload(500, 8, SEED).iter().all(|s| s.node_count <= 8));
        let s = Spec {
            node_count: 2,
            duration_ms: 125,
        };
        assert_eq!(s.command_line(), "sleep 0.125");
        assert_eq!(
            crate::sim::sleep_duration(&s.command_line()),
            Some(Duration::from_millis(125))
        );
        assert_eq!(s.wall_clock(), Duration::from_millis(250));
    }

    fn job(node_count: u32, started: f64, ended: f64, nodes: &[&str]) -> Observed {
        Observed {
            node_count,
            submitted: 0.0,
            started,
            ended,
            node_ids: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn overlapping_jobs_on_a_node_are_found() {
        let jobs = [
            job(2, 0.0, 1.0, &["a", "b"]),
            job(1, 1.0, 2.0, &["a"]),
            job(1, 0.5, 1.5, &["c"]),
            job(2, 1.2, 2.0, &["b", "c"]),
        ];
        assert_eq!(node_overlaps(&jobs), vec![(2, 3, "c".to_string())]);
        assert!(node_overlaps(&jobs[..3]).is_empty());
    }

    #[test]
    fn utilization_and_waits_come_from_the_stamps() {
        // Two nodes for 2 s: a 2-node job for 1 s, then a 1-node job for 1 s.
        let mut jobs = vec![job(2, 0.0, 1.0, &["a", "b"]), job(1, 1.0, 2.0, &["a"])];
        jobs[1].submitted = 0.5;
        let mut r = Report::new("gang");
        figures(&mut r, &jobs, 2);
        let v = r.to_json();
        assert_eq!(v["makespan_s"], 2.0);
        assert_eq!(v["utilization"], 0.75);
        assert_eq!(v["small_wait_s_p50"], 0.5);
        assert_eq!(v["head_big_job"], serde_json::Value::Null);
        assert_eq!(v["backfilled_jobs"], 0);
        // The second starts before the first: it was backfilled.
        jobs[0].started = 0.5;
        jobs[1].started = 0.0;
        jobs[1].node_ids = vec!["c".into()];
        let mut r = Report::new("gang");
        figures(&mut r, &jobs, 3);
        assert_eq!(r.to_json()["backfilled_jobs"], 1);
    }

    #[test]
    fn fifo_waits_for_the_nodes_and_never_overtakes() {
        let s = |node_count, duration_ms| Spec {
            node_count,
            duration_ms,
        };
        // 2 nodes: [1 node 1 s] [2 nodes 1 s] [1 node 1 s]: the third may not
        // start before the second (at 1 s), so 3 s in all.
        let w = [s(1, 1000), s(2, 1000), s(1, 1000)];
        assert_eq!(fifo_makespan_s(&w, 2), 3.0);
        assert_eq!(makespan_lower_bound_s(&w, 2), 2.0);
    }
}
