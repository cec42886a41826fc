//! What a burst showed and the figures made of it: pure, so the arithmetic
//! and the log parsing are unit-tested. Times are seconds since the epoch.

use crate::report::Report;
use crate::stats::{percentile, round3};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::SystemTime;

/// Seconds since the epoch.
pub fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An API timestamp in seconds since the epoch.
pub fn ts(t: Option<prost_types::Timestamp>) -> Option<f64> {
    t.and_then(|t| SystemTime::try_from(t).ok()).map(secs)
}

/// One node as the run saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSeen {
    /// The provider started its agent (log: "started local agent").
    pub spawned: Option<f64>,
    /// Its agent registered (log: "agent registered").
    pub registered: Option<f64>,
    /// It went idle after running a job (its API state transition, which the
    /// store stamps with the job's end: the grace runs from there).
    pub idle: Option<f64>,
    /// Its removal began (log: "removing local node …").
    pub removing: Option<f64>,
    /// It was removed from the store (log: "local node removed").
    pub removed: Option<f64>,
    /// The bench saw it running a job.
    pub ran_job: bool,
}

/// One job of the burst.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSeen {
    pub node: String,
    /// Its running transition: the commit of its assignment.
    pub assigned: Option<f64>,
    /// `execution_info.start_time` and `end_time` (the agent's stamps).
    pub started: f64,
    pub ended: f64,
}

/// A line of the coordinator's JSON log that the run uses.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub t: f64,
    pub message: String,
    /// The event's `node` field, else its span's.
    pub node: Option<String>,
    /// An autoscaler decision's reason ("8 jobs queued need 8 nodes, 0 busy:
    /// 0 → 8"). Its `target` field is not read: tracing's JSON writes the
    /// event's module path under the same key, after it.
    pub autoscale: Option<String>,
}

impl LogEvent {
    /// A JSON log line (tracing's format: `timestamp`, `message`, the
    /// event's fields flattened, the current span under `span`).
    pub fn parse(line: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(line).ok()?;
        let t = prost_types::Timestamp::from_str(v["timestamp"].as_str()?).ok()?;
        let str_of = |v: &Value| v.as_str().map(str::to_string);
        let message = v["message"].as_str()?.to_string();
        Some(Self {
            t: secs(SystemTime::try_from(t).ok()?),
            node: str_of(&v["node"]).or_else(|| str_of(&v["span"]["node"])),
            autoscale: (message == "autoscale").then(|| str_of(&v["reason"]).unwrap_or_default()),
            message,
        })
    }
}

/// Adds what the log says about each node to `nodes` (the first of each).
pub fn apply_log(nodes: &mut BTreeMap<String, NodeSeen>, events: &[LogEvent]) {
    for e in events {
        let Some(id) = &e.node else { continue };
        let m = e.message.as_str();
        let known = matches!(
            m,
            "started local agent" | "agent registered" | "local node removed"
        ) || m.starts_with("removing local node");
        if !known {
            continue;
        }
        let n = nodes.entry(id.clone()).or_default();
        let slot = match m {
            "started local agent" => &mut n.spawned,
            "agent registered" => &mut n.registered,
            "local node removed" => &mut n.removed,
            _ => &mut n.removing,
        };
        slot.get_or_insert(e.t);
    }
}

/// Everything one burst showed.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    pub nodes_wanted: usize,
    /// The first CreateJob was sent.
    pub t0: f64,
    /// The last CreateJob returned.
    pub submitted: f64,
    /// The cluster's `allocation_state_transition_time`s seen after `t0`:
    /// each a change of its target by the autoscaler.
    pub decisions: Vec<f64>,
    pub jobs: Vec<JobSeen>,
    pub nodes: BTreeMap<String, NodeSeen>,
    /// Polled: every job running at once; the cluster at zero nodes.
    pub all_running_seen: Option<f64>,
    pub zero_seen: f64,
    pub grace_s: f64,
}

fn max_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    v.reduce(f64::max)
}

fn min_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    v.reduce(f64::min)
}

/// `b - a` when both are known.
fn span(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn r(v: Option<f64>) -> Option<f64> {
    v.map(round3)
}

fn p(v: &[f64], q: f64) -> Option<f64> {
    percentile(v, q).map(round3)
}

/// The figures of a burst (seconds, rounded to ms, unless named `_ms`).
pub fn figures(report: &mut Report, b: &Burst) {
    up(report, b);
    down(report, b);
}

/// Submit to every node busy, and the last job's path there.
fn up(report: &mut Report, b: &Burst) {
    let distinct: BTreeSet<&str> = b.jobs.iter().map(|j| j.node.as_str()).collect();
    let first_start = min_of(b.jobs.iter().map(|j| j.started));
    let last_start = max_of(b.jobs.iter().map(|j| j.started));
    let first_end = min_of(b.jobs.iter().map(|j| j.ended));
    // All N busy at once: every job on its own node, none ended before the last started.
    let all_busy = b.jobs.len() == b.nodes_wanted
        && distinct.len() == b.nodes_wanted
        && first_end.zip(last_start).is_some_and(|(e, s)| e >= s);
    let all_running = last_start.filter(|_| all_busy);
    // The path of the job that started last.
    let last = b.jobs.iter().max_by(|x, y| x.started.total_cmp(&y.started));
    let node = last.and_then(|j| b.nodes.get(&j.node));
    let spawned = node.and_then(|n| n.spawned);
    // The decision that started its node: the latest one before its spawn.
    let decision = max_of(
        b.decisions
            .iter()
            .copied()
            .filter(|&d| spawned.is_none_or(|s| d <= s)),
    );
    let registered = node.and_then(|n| n.registered);
    let assigned = last.and_then(|j| j.assigned);
    report
        .figure("submit_burst_ms", round3((b.submitted - b.t0) * 1e3))
        .figure("distinct_nodes", distinct.len())
        .figure("all_busy_at_once", all_busy)
        .figure(
            "submit_to_first_running_s",
            r(first_start.map(|s| s - b.t0)),
        )
        .figure("submit_to_all_running_s", r(all_running.map(|s| s - b.t0)))
        .figure(
            "submit_to_all_running_seen_s",
            r(b.all_running_seen.map(|s| s - b.t0)),
        )
        .figure("decision_to_all_running_s", r(span(decision, all_running)))
        .figure("up_autoscaler_s", r(decision.map(|d| d - b.t0)))
        .figure("up_provider_spawn_s", r(span(decision, spawned)))
        .figure("up_agent_register_s", r(span(spawned, registered)))
        .figure("up_assign_s", r(span(registered, assigned)))
        .figure(
            "up_process_start_s",
            r(span(assigned, last.map(|j| j.started))),
        )
        .figure(
            "decisions_s",
            b.decisions
                .iter()
                .map(|d| round3(d - b.t0))
                .collect::<Vec<_>>(),
        );
    // The same steps over every node and job.
    let spawns: Vec<f64> = b.nodes.values().filter_map(|n| n.spawned).collect();
    let register: Vec<f64> = b
        .nodes
        .values()
        .filter_map(|n| span(n.spawned, n.registered))
        .collect();
    let assign_ms: Vec<f64> = b
        .jobs
        .iter()
        .filter_map(|j| span(b.nodes.get(&j.node)?.registered, j.assigned))
        .map(|s| s * 1e3)
        .collect();
    let start_ms: Vec<f64> = b
        .jobs
        .iter()
        .filter_map(|j| span(j.assigned, Some(j.started)))
        .map(|s| s * 1e3)
        .collect();
    let spawn_span = span(
        min_of(spawns.iter().copied()),
        max_of(spawns.iter().copied()),
    );
    report
        .figure("spawn_first_to_last_s", r(spawn_span))
        .figure("agent_register_s_p50", p(&register, 50.0))
        .figure("agent_register_s_max", p(&register, 100.0))
        .figure("assign_ms_p50", p(&assign_ms, 50.0))
        .figure("assign_ms_max", p(&assign_ms, 100.0))
        .figure("process_start_ms_p50", p(&start_ms, 50.0))
        .figure("process_start_ms_max", p(&start_ms, 100.0));
}

/// The last job's end to zero nodes, and the last node's path there.
fn down(report: &mut Report, b: &Burst) {
    let last_end = max_of(b.jobs.iter().map(|j| j.ended));
    let to_zero = last_end.map(|e| b.zero_seen - e);
    let last_out = b
        .nodes
        .values()
        .filter_map(|n| Some((n, n.removed?)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(n, _)| n);
    let idle = last_out.and_then(|n| n.idle);
    let removing = last_out.and_then(|n| n.removing);
    let removed = last_out.and_then(|n| n.removed);
    let idle_to_removing = span(idle, removing);
    let grace = |s: f64| s - b.grace_s;
    report
        .figure("last_end_to_zero_nodes_s", r(to_zero))
        .figure(
            "last_end_to_zero_nodes_beyond_grace_s",
            r(to_zero.map(grace)),
        )
        .figure("down_idle_to_removing_s", r(idle_to_removing))
        .figure(
            "down_idle_to_removing_beyond_grace_s",
            r(idle_to_removing.map(grace)),
        )
        .figure("down_removing_to_removed_s", r(span(removing, removed)))
        .figure(
            "down_removed_to_zero_seen_s",
            r(span(removed, Some(b.zero_seen))),
        );
    // Every node: a negative figure is a node removed within its grace.
    let beyond: Vec<f64> = b
        .nodes
        .values()
        .filter_map(|n| span(n.idle, n.removing))
        .map(grace)
        .collect();
    let removal: Vec<f64> = b
        .nodes
        .values()
        .filter_map(|n| span(n.removing, n.removed))
        .collect();
    report
        .figure("idle_to_removing_beyond_grace_s_min", p(&beyond, 0.0))
        .figure("idle_to_removing_beyond_grace_s_p50", p(&beyond, 50.0))
        .figure("idle_to_removing_beyond_grace_s_max", p(&beyond, 100.0))
        .figure("removing_to_removed_s_p50", p(&removal, 50.0))
        .figure("removing_to_removed_s_max", p(&removal, 100.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_their_stamp_node_and_reason() {
        let e = LogEvent::parse(
            r#"{"timestamp":"2026-01-02T03:04:05.250000Z","level":"INFO","message":"agent registered","state":"idle","target":"bai_coordinator::agent::session","span":{"cluster":"bench/bench","node":"bench-1","name":"session"}}"#,
        )
        .expect("parse");
        assert_eq!(e.message, "agent registered");
        assert_eq!(e.node.as_deref(), Some("bench-1"));
        assert_eq!(e.t, 1_767_323_045.25);
        assert_eq!(e.autoscale, None);
        // The event's own node field wins; an autoscale line keeps its reason
        // (its `target` count is shadowed by the module path).
        let e = LogEvent::parse(
            r#"{"timestamp":"2026-01-02T03:04:05Z","message":"autoscale","cluster":"bench/bench","from":0,"target":8,"reason":"8 jobs queued need 8 nodes, 0 busy: 0 → 8","target":"bai_coordinator::autoscaler"}"#,
        )
        .expect("parse");
        assert_eq!(
            e.autoscale.as_deref(),
            Some("8 jobs queued need 8 nodes, 0 busy: 0 → 8")
        );
        assert!(LogEvent::parse("2026-01-02T03:04:05Z INFO text line").is_none());
    }

    fn event(t: f64, message: &str, node: &str) -> LogEvent {
        LogEvent {
            t,
            message: message.into(),
            node: Some(node.into()),
            autoscale: None,
        }
    }

    #[test]
    fn the_log_fills_each_nodes_first_stamps() {
        let mut nodes = BTreeMap::new();
        apply_log(
            &mut nodes,
            &[
                event(1.0, "started local agent", "a"),
                event(1.2, "agent registered", "a"),
                event(1.5, "agent registered", "a"),
                event(1.6, "job started", "a"),
                event(5.0, "removing local node (resize down)", "a"),
                event(5.1, "local node removed", "a"),
                event(9.0, "job started", "b"),
            ],
        );
        assert_eq!(
            nodes["a"],
            NodeSeen {
                spawned: Some(1.0),
                registered: Some(1.2),
                removing: Some(5.0),
                removed: Some(5.1),
                ..NodeSeen::default()
            }
        );
        assert!(!nodes.contains_key("b"), "only the events it knows");
    }

    /// Two nodes: the autoscaler decides at 1.0; a spawns at 1.01 and b at
    /// 1.02, register at 1.2 and 1.3, jobs assigned at 1.201 / 1.302, start
    /// 10 ms later, end at 4.2 / 4.3; removals begin at 7.0, done 7.02.
    fn two_nodes() -> Burst {
        let node = |spawned, registered, idle| NodeSeen {
            spawned: Some(spawned),
            registered: Some(registered),
            idle: Some(idle),
            removing: Some(7.0),
            removed: Some(7.02),
            ran_job: true,
        };
        let job = |node: &str, assigned: f64, ended| JobSeen {
            node: node.into(),
            assigned: Some(assigned),
            started: assigned + 0.01,
            ended,
        };
        Burst {
            nodes_wanted: 2,
            t0: 0.5,
            submitted: 0.502,
            decisions: vec![1.0, 7.0],
            jobs: vec![job("a", 1.201, 4.2), job("b", 1.302, 4.3)],
            nodes: BTreeMap::from([
                ("a".into(), node(1.01, 1.2, 4.2)),
                ("b".into(), node(1.02, 1.3, 4.3)),
            ]),
            all_running_seen: Some(1.35),
            zero_seen: 7.05,
            grace_s: 2.0,
        }
    }

    #[test]
    fn the_up_path_adds_up_to_the_last_start() {
        let mut rep = Report::new("elasticity");
        figures(&mut rep, &two_nodes());
        let v = rep.to_json();
        assert_eq!(v["all_busy_at_once"], true);
        assert_eq!(v["submit_burst_ms"], 2.0);
        assert_eq!(v["submit_to_first_running_s"], 0.711);
        assert_eq!(v["submit_to_all_running_s"], 0.812);
        assert_eq!(v["submit_to_all_running_seen_s"], 0.85);
        assert_eq!(v["decision_to_all_running_s"], 0.312);
        let path: f64 = [
            "up_autoscaler_s",
            "up_provider_spawn_s",
            "up_agent_register_s",
            "up_assign_s",
            "up_process_start_s",
        ]
        .iter()
        .map(|k| v[*k].as_f64().expect(k))
        .sum();
        assert!((path - 0.812).abs() < 1e-9, "{v}");
        assert_eq!(v["up_autoscaler_s"], 0.5);
        assert_eq!(v["up_provider_spawn_s"], 0.02);
        assert_eq!(v["up_agent_register_s"], 0.28);
        assert_eq!(v["spawn_first_to_last_s"], 0.01);
        assert_eq!(v["process_start_ms_p50"], 10.0);
        assert_eq!(v["decisions_s"], serde_json::json!([0.5, 6.5]));
    }

    #[test]
    fn the_down_path_counts_from_the_last_end_and_subtracts_the_grace() {
        let mut rep = Report::new("elasticity");
        figures(&mut rep, &two_nodes());
        let v = rep.to_json();
        assert_eq!(v["last_end_to_zero_nodes_s"], 2.75);
        assert_eq!(v["last_end_to_zero_nodes_beyond_grace_s"], 0.75);
        assert_eq!(v["down_idle_to_removing_s"], 2.7);
        assert_eq!(v["down_idle_to_removing_beyond_grace_s"], 0.7);
        assert_eq!(v["down_removing_to_removed_s"], 0.02);
        assert_eq!(v["down_removed_to_zero_seen_s"], 0.03);
        assert_eq!(v["idle_to_removing_beyond_grace_s_min"], 0.7);
        assert_eq!(v["idle_to_removing_beyond_grace_s_max"], 0.8);
    }

    #[test]
    fn jobs_sharing_a_node_or_ending_early_are_not_all_busy() {
        let mut b = two_nodes();
        b.jobs[1].node = "a".into();
        let mut rep = Report::new("elasticity");
        figures(&mut rep, &b);
        let v = rep.to_json();
        assert_eq!(v["all_busy_at_once"], false);
        assert_eq!(v["submit_to_all_running_s"], serde_json::Value::Null);
        assert_eq!(v["distinct_nodes"], 1);
        let mut b = two_nodes();
        b.jobs[0].ended = 1.25;
        let mut rep = Report::new("elasticity");
        figures(&mut rep, &b);
        assert_eq!(rep.to_json()["all_busy_at_once"], false);
    }
}
