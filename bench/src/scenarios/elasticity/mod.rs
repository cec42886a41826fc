//! `elasticity`: a burst of one-node jobs on an empty autoScale cluster of
//! real agents. The coordinator runs in local mode (its local provider starts
//! and stops `bai-agent` processes to follow each cluster's target) with a
//! short autoscaler (`--autoscale-interval-secs`, `--autoscale-idle-grace-secs`).
//! The cluster is autoScale min 0, max `--nodes` (8), initial 0; once it has
//! no nodes, `--nodes` jobs of `sleep <--job-secs>` are created at once, so
//! the autoscaler must bring up one node per job and, after they end and the
//! grace has passed, take every node away again.
//!
//! What it reports, as seconds from the first CreateJob being sent (`t0`):
//! - up: the first job's process start, and the last one's — the moment all
//!   N nodes were busy (each job on its own node, none ended before the last
//!   started), split along the last job's path into the autoscaler's
//!   reaction, the provider's spawn of that node's agent, the agent's start
//!   and registration, the assignment and the process start;
//! - down: from the last job's end to the cluster's zero nodes, with the
//!   grace subtracted, split along the last node's path.
//!
//! Where each time comes from (all this host's clock): the API's stamps in
//! ms — the cluster's `allocation_state_transition_time` (set when the
//! autoscaler changes the target), a job's running transition (its
//! assignment), `execution_info` start and end (the agent's), a node's idle
//! transition; the coordinator's own log in µs (it runs with `--log-format
//! json`) for what the API does not keep: an agent started by the provider,
//! an agent registered, a node's removal begun and done, and each
//! autoscaler decision with its reason. What only the bench sees (all jobs
//! running at once, zero nodes) is polled every `--poll-ms`: resolution that
//! interval plus one poll round (reported).

mod figures;

use figures::{Burst, JobSeen, LogEvent, apply_log, figures, secs, ts};

use super::{CpuWindow, connect};
use crate::api::{self, Api};
use crate::cli::Opts;
use crate::harness::{Binaries, Coordinator, CoordinatorOpts};
use crate::report::Report;
use crate::stats::{percentile, round3};
use anyhow::{Context, Result, bail};
use bai_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

/// A cluster's maximum is at most 100 (Batch AI's limit).
const MAX_NODES: usize = 100;

/// What the poller keeps between rounds.
#[derive(Default)]
struct Poll {
    burst: Burst,
    jobs: BTreeMap<String, JobState>,
    last_alloc: Option<f64>,
    listed: BTreeSet<String>,
    max_nodes: i32,
    rounds_ms: Vec<f64>,
}

#[derive(Default)]
struct JobState {
    node: String,
    assigned: Option<f64>,
    started: Option<f64>,
    ended: Option<f64>,
    state: pb::ExecutionState,
}

impl Poll {
    /// One look at the cluster, its nodes and the jobs; true once the jobs
    /// have ended and the cluster has no nodes.
    async fn round(&mut self, api: &mut Api) -> Result<bool> {
        let t = Instant::now();
        let c = api.cluster().await?;
        let nodes = api.nodes().await?;
        let jobs = api
            .jobs(0)
            .list_jobs(pb::ListJobsRequest {
                workspace: api::WORKSPACE.into(),
                experiment: api::EXPERIMENT.into(),
                max_results: 1000,
                page_token: String::new(),
            })
            .await
            .context("ListJobs")?
            .into_inner()
            .jobs;
        let seen = secs(SystemTime::now());
        self.rounds_ms.push(t.elapsed().as_secs_f64() * 1e3);
        self.max_nodes = self.max_nodes.max(c.current_node_count);

        let alloc = ts(c.allocation_state_transition_time);
        if let Some(a) = alloc
            && a >= self.burst.t0
            && alloc != self.last_alloc
        {
            self.burst.decisions.push(a);
        }
        self.last_alloc = alloc;

        self.listed.clear();
        for n in &nodes {
            self.listed.insert(n.node_id.clone());
            let e = self.burst.nodes.entry(n.node_id.clone()).or_default();
            match pb::NodeState::try_from(n.state) {
                Ok(pb::NodeState::Running) => e.ran_job = true,
                Ok(pb::NodeState::Idle) if e.ran_job && e.idle.is_none() => {
                    e.idle = ts(n.state_transition_time);
                }
                _ => {}
            }
        }

        for j in &jobs {
            let e = self.jobs.entry(j.name.clone()).or_default();
            e.state = pb::ExecutionState::try_from(j.execution_state).unwrap_or_default();
            if let Some(n) = j.node_ids.first() {
                e.node.clone_from(n);
            }
            if e.state == pb::ExecutionState::Running && e.assigned.is_none() {
                e.assigned = ts(j.execution_state_transition_time);
            }
            let info = j.execution_info.as_ref();
            e.started = e.started.or(ts(info.and_then(|i| i.start_time)));
            e.ended = e.ended.or(ts(info.and_then(|i| i.end_time)));
        }
        let want = self.burst.nodes_wanted;
        let states = || self.jobs.values().map(|j| j.state);
        let running = states()
            .filter(|s| *s == pb::ExecutionState::Running)
            .count();
        if self.burst.all_running_seen.is_none() && running == want {
            self.burst.all_running_seen = Some(seen);
        }
        let ended = self.jobs.len() == want
            && states().all(|s| {
                matches!(
                    s,
                    pb::ExecutionState::Succeeded | pb::ExecutionState::Failed
                )
            });
        if ended && c.current_node_count == 0 && nodes.is_empty() {
            self.burst.zero_seen = seen;
            return Ok(true);
        }
        Ok(false)
    }
}

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let nodes = opts.nodes();
    if !(1..=MAX_NODES).contains(&nodes) {
        bail!("elasticity: --nodes is the cluster's maximum, 1 to {MAX_NODES}; got {nodes}");
    }
    if !opts.job_secs.is_finite() || opts.job_secs < 0.0 {
        bail!("elasticity: --job-secs must be a number of seconds, at least 0");
    }
    let (interval, grace) = (opts.autoscale_interval_secs, opts.autoscale_idle_grace_secs);
    let command = format!("sleep {}", opts.job_secs);
    let mut report = Report::new("elasticity");
    report
        .param("nodes", nodes)
        .param("jobs", nodes)
        .param("command", command.as_str())
        .param("autoscale_interval_secs", interval)
        .param("autoscale_idle_grace_secs", grace)
        .param("poll_ms", opts.poll_ms)
        .param(
            "cluster",
            format!("autoScale min 0, max {nodes}, initial 0, local agents"),
        );
    let coord = Coordinator::start(
        bins,
        &CoordinatorOpts {
            local_agents: true,
            keep_dir: opts.keep_dir,
            extra_args: vec![
                "--autoscale-interval-secs".into(),
                interval.to_string(),
                "--autoscale-idle-grace-secs".into(),
                grace.to_string(),
                // The log's stamps (µs) say when agents started, registered
                // and went: the API keeps no such times.
                "--log-format".into(),
                "json".into(),
            ],
        },
    )
    .await?;
    let mut api = connect(opts, &coord).await?;
    let mut out = burst(opts, &coord, &mut api, nodes, &command)
        .await
        .map_err(|e| e.context(format!("coordinator log tail:\n{}", coord.log_tail(30))))?;

    let log = std::fs::read_to_string(coord.dir().join("coordinator.log"))
        .context("read coordinator.log")?;
    let events: Vec<LogEvent> = log.lines().filter_map(LogEvent::parse).collect();
    let b = &mut out.burst;
    apply_log(&mut b.nodes, &events);
    let decisions: Vec<String> = events
        .iter()
        .filter_map(|e| Some(format!("+{:.3}s {}", e.t - b.t0, e.autoscale.as_ref()?)))
        .collect();
    figures(&mut report, b);
    let started = b.nodes.values().filter(|n| n.spawned.is_some()).count();
    let rounds = &out.rounds_ms;
    report
        .figure("jobs_succeeded", b.jobs.len())
        .figure("max_nodes", out.max_nodes)
        .figure("agents_started", started)
        .figure("agents_left_at_zero", out.agents_left)
        .figure("poll_round_ms_p50", percentile(rounds, 50.0).map(round3))
        .figure("poll_round_ms_max", percentile(rounds, 100.0).map(round3))
        .figure("coordinator_cpu_s", round3(out.cpu_s))
        .figure("autoscale_decisions", decisions)
        .figure(
            "time_sources",
            "API stamps (ms): allocation_state_transition_time (decisions), job running \
             transition (assigned), execution_info start/end, node idle transition; \
             coordinator JSON log (us): agent started, registered, node removing/removed, \
             autoscale reasons; *_seen_*: polled every poll_ms (resolution poll_ms plus one \
             poll round)",
        );
    Ok(report)
}

/// A finished burst and what the polling saw besides.
struct Outcome {
    burst: Burst,
    max_nodes: i32,
    rounds_ms: Vec<f64>,
    /// The coordinator's CPU from the submit to zero nodes.
    cpu_s: f64,
    /// Agent processes still running when the cluster showed zero nodes.
    agents_left: usize,
}

/// Creates the autoScale cluster, waits until it is empty and steady,
/// submits the burst at once and polls until every job has succeeded and
/// the cluster has no nodes.
async fn burst(
    opts: &Opts,
    coord: &Coordinator,
    api: &mut Api,
    nodes: usize,
    command: &str,
) -> Result<Outcome> {
    api.setup_with(pb::ScaleSettings {
        manual: None,
        auto_scale: Some(pb::AutoScaleSettings {
            minimum_node_count: 0,
            maximum_node_count: i32::try_from(nodes)?,
            initial_node_count: 0,
        }),
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = api.cluster().await?;
        if c.current_node_count == 0 && c.allocation_state == pb::AllocationState::Steady as i32 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the new cluster did not settle at 0 nodes: {} nodes, allocation state {}",
                c.current_node_count,
                c.allocation_state
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cpu = CpuWindow::start(vec![coord.pid()?]);
    let t0 = SystemTime::now();
    let created = futures::future::try_join_all((0..nodes).map(|i| {
        let mut client = api.jobs(i);
        let name = format!("burst-{i:03}");
        async move { api::create_job(&mut client, &name, command).await }
    }))
    .await?;
    let submitted = created.iter().map(|(_, t)| secs(*t)).fold(0.0, f64::max);
    let mut poll = Poll {
        burst: Burst {
            nodes_wanted: nodes,
            t0: secs(t0),
            submitted,
            grace_s: opts.autoscale_idle_grace_secs as f64,
            ..Burst::default()
        },
        ..Poll::default()
    };
    // Agents starting, the jobs, the grace, the autoscaler's next looks and
    // the removals, generously: to fail rather than hang.
    let within = Duration::from_secs_f64(
        60.0 + 2.0 * nodes as f64
            + opts.job_secs
            + 3.0 * (opts.autoscale_idle_grace_secs + opts.autoscale_interval_secs) as f64,
    );
    let deadline = Instant::now() + within;
    let every = Duration::from_millis(opts.poll_ms.max(1));
    loop {
        let next = Instant::now() + every;
        if poll.round(api).await? {
            break;
        }
        if Instant::now() > deadline {
            let mut states = BTreeMap::<&str, usize>::new();
            for j in poll.jobs.values() {
                *states.entry(j.state.as_str_name()).or_default() += 1;
            }
            bail!(
                "the burst did not end at zero nodes within {within:?}: jobs {states:?}, \
                 nodes listed {:?}",
                poll.listed
            );
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let cpu_s = cpu.cpu_s();
    let agents_left = coord.local_agent_pids().len();

    for (name, j) in &poll.jobs {
        if j.state != pb::ExecutionState::Succeeded {
            bail!("job {name} did not succeed: {}", j.state.as_str_name());
        }
        poll.burst.jobs.push(JobSeen {
            node: j.node.clone(),
            assigned: j.assigned,
            started: j
                .started
                .with_context(|| format!("{name}: no start_time"))?,
            ended: j.ended.with_context(|| format!("{name}: no end_time"))?,
        });
    }
    Ok(Outcome {
        burst: poll.burst,
        max_nodes: poll.max_nodes,
        rounds_ms: poll.rounds_ms,
        cpu_s,
        agents_left,
    })
}
