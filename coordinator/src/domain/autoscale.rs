//! The autoscaler's decision for one cluster (`autoscaler.rs` runs it; the
//! provider follows the target): from the cluster's nodes and its queue, the node count it should have and which nodes to take out, with
//! the reason in words. Pure: the caller supplies the clock.
//!
//! Rules, in order:
//! - Up: every queued job needs its `nodeCount` nodes besides the nodes
//!   that are busy now; nodes already joining (preparing) or idle count as
//!   there. The target is that need, within `[min, max]`.
//! - Down, only with nothing queued: nodes idle for longer than the grace
//!   period go, the longest idle first, never below `min`. A busy node is
//!   never chosen; a leaving or unusable one counts as gone already.
//! - Otherwise the cluster stays as it is (`min` still lifts it).

use super::NodeState;

/// A cluster's `autoScale` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoScale {
    pub min: u32,
    pub max: u32,
    /// The cluster's target now: nodes asked for that have not joined yet
    /// are coming, and a queue never takes them back.
    pub target: u32,
}

/// One node as the autoscaler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub state: NodeState,
    /// Since when it has run nothing (ms since the epoch), if it is idle.
    pub idle_since_ms: Option<i64>,
}

/// What the autoscaler decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub target: u32,
    /// Nodes to remove (idle ones), longest idle first.
    pub remove: Vec<String>,
    /// Why, for the cluster's events ("2 queued jobs need 5 nodes: 1 → 4, at the maximum").
    pub reason: String,
}

impl Decision {
    /// Whether it changes nothing for a cluster of `current` nodes.
    pub fn is_steady(&self, current: u32) -> bool {
        self.target == current && self.remove.is_empty()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The decision for a cluster with `nodes`, whose queued jobs need
/// `queued` nodes each (in queue order), at `now_ms`, idle nodes going after
/// `grace_ms`.
pub fn decide(
    s: AutoScale,
    nodes: &[NodeView],
    queued: &[u32],
    now_ms: i64,
    grace_ms: i64,
) -> Decision {
    let live: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| !matches!(n.state, NodeState::Leaving | NodeState::Unusable))
        .collect();
    let joined = count(live.len());
    // What the cluster has or is getting.
    let current = joined.max(s.target);
    let busy = count(
        live.iter()
            .filter(|n| n.state == NodeState::Running)
            .count(),
    );
    let bounded = |n: u32| n.clamp(s.min, s.max);
    if !queued.is_empty() {
        let wanted: u32 = queued.iter().fold(busy, |a, &n| a.saturating_add(n));
        let target = bounded(wanted).max(current.min(s.max));
        let mut reason = format!(
            "{} queued need {}, {} busy: {current} → {target}",
            plural(count(queued.len()), "job"),
            plural(wanted.saturating_sub(busy), "node"),
            busy
        );
        if wanted > s.max {
            reason.push_str(&format!(" (the maximum, {})", s.max));
        }
        return Decision {
            target,
            remove: Vec::new(),
            reason,
        };
    }
    let mut idle: Vec<(i64, &str)> = live
        .iter()
        .filter(|n| n.state == NodeState::Idle)
        .filter_map(|n| Some((n.idle_since_ms?, n.id.as_str())))
        .filter(|(since, _)| now_ms.saturating_sub(*since) > grace_ms)
        .collect();
    idle.sort();
    let spare = joined.saturating_sub(s.min);
    let remove: Vec<String> = idle
        .iter()
        .take(spare as usize)
        .map(|(_, id)| id.to_string())
        .collect();
    if !remove.is_empty() {
        let target = joined - count(remove.len());
        return Decision {
            reason: format!(
                "{} idle past the {} s grace: {current} → {target}",
                plural(count(remove.len()), "node"),
                grace_ms / 1000
            ),
            target,
            remove,
        };
    }
    // No job waits: nodes asked for that have not joined are not needed.
    let target = bounded(joined);
    let reason = if target == current {
        "steady".to_string()
    } else if target < current && target == joined {
        format!(
            "no job queued: {} not joined yet not needed: {current} → {target}",
            plural(current - joined, "node")
        )
    } else if current < s.min {
        format!("the minimum is {}: {current} → {target}", s.min)
    } else {
        format!("the maximum is {}: {current} → {target}", s.max)
    };
    Decision {
        target,
        remove: Vec::new(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 300_000;

    fn node(id: &str, state: NodeState, idle_since_ms: Option<i64>) -> NodeView {
        NodeView {
            id: id.into(),
            state,
            idle_since_ms,
        }
    }

    #[test]
    fn a_queued_job_brings_an_empty_cluster_up_to_its_node_count() {
        let s = AutoScale {
            min: 0,
            max: 8,
            target: 0,
        };
        let d = decide(s, &[], &[4], 0, GRACE);
        assert_eq!(d.target, 4);
        assert!(d.remove.is_empty());
        assert_eq!(d.reason, "1 job queued need 4 nodes, 0 busy: 0 → 4");
        // Within the maximum, and busy nodes stay counted.
        let busy = [node("a", NodeState::Running, None)];
        let d = decide(
            AutoScale {
                min: 0,
                max: 3,
                target: 0,
            },
            &busy,
            &[2, 2],
            0,
            GRACE,
        );
        assert_eq!(d.target, 3);
        assert!(d.reason.ends_with("(the maximum, 3)"), "{}", d.reason);
    }

    #[test]
    fn nodes_joining_or_idle_serve_the_queue_before_new_ones_are_asked_for() {
        let s = AutoScale {
            min: 0,
            max: 8,
            target: 0,
        };
        let nodes = [
            node("a", NodeState::Preparing, None),
            node("b", NodeState::Idle, Some(0)),
        ];
        let d = decide(s, &nodes, &[2], 1_000_000, GRACE);
        assert_eq!(d.target, 2, "{d:?}");
        assert!(d.is_steady(2));
        // Never below what is there while jobs wait, even past the grace.
        assert!(d.remove.is_empty());
    }

    #[test]
    fn nodes_asked_for_and_not_joined_are_kept_while_jobs_wait_and_dropped_after() {
        // Target 80, 18 joined (14 busy, 4 idle), 59 jobs wait: the target
        // never falls while jobs wait (it used to fall to 14 + 59 = 73).
        let mut nodes: Vec<NodeView> = (0..14)
            .map(|i| node(&format!("b{i}"), NodeState::Running, None))
            .collect();
        nodes.extend((0..4).map(|i| node(&format!("i{i}"), NodeState::Idle, Some(0))));
        let s = AutoScale {
            min: 0,
            max: 100,
            target: 80,
        };
        let d = decide(s, &nodes, &[1; 59], 1_000, GRACE);
        assert_eq!(d.target, 80, "{d:?}");
        assert!(d.remove.is_empty());
        assert_eq!(d.reason, "59 jobs queued need 59 nodes, 14 busy: 80 → 80");
        // No job waits any more: those not joined are not needed; the idle
        // ones within the grace stay.
        let d = decide(s, &nodes, &[], 1_000, GRACE);
        assert_eq!((d.target, d.remove.len()), (18, 0));
        assert_eq!(
            d.reason,
            "no job queued: 62 nodes not joined yet not needed: 80 → 18"
        );
    }

    #[test]
    fn idle_nodes_go_after_the_grace_longest_idle_first_never_below_min() {
        let s = AutoScale {
            min: 1,
            max: 8,
            target: 0,
        };
        let nodes = [
            node("recent", NodeState::Idle, Some(900_000)),
            node("old", NodeState::Idle, Some(100_000)),
            node("older", NodeState::Idle, Some(50_000)),
            node("busy", NodeState::Running, None),
        ];
        let d = decide(s, &nodes, &[], 1_000_000, GRACE);
        assert_eq!(
            d.remove,
            ["older", "old"],
            "the recent one is within the grace"
        );
        assert_eq!(d.target, 2);
        assert_eq!(d.reason, "2 nodes idle past the 300 s grace: 4 → 2");
        // The minimum holds: with min 3 only one may go.
        let d = decide(
            AutoScale {
                min: 3,
                max: 8,
                target: 0,
            },
            &nodes,
            &[],
            1_000_000,
            GRACE,
        );
        assert_eq!(d.remove, ["older"]);
        // Down to zero when allowed.
        let idle = [node("x", NodeState::Idle, Some(0))];
        let d = decide(
            AutoScale {
                min: 0,
                max: 8,
                target: 0,
            },
            &idle,
            &[],
            1_000_000,
            GRACE,
        );
        assert_eq!((d.target, d.remove.as_slice()), (0, &["x".to_string()][..]));
    }

    #[test]
    fn leaving_and_unusable_nodes_count_as_gone_and_min_lifts_the_cluster() {
        let s = AutoScale {
            min: 2,
            max: 8,
            target: 0,
        };
        let nodes = [
            node("gone", NodeState::Leaving, None),
            node("broken", NodeState::Unusable, None),
            node("ok", NodeState::Idle, Some(0)),
        ];
        let d = decide(s, &nodes, &[], 1_000, GRACE);
        assert_eq!(d.target, 2);
        assert_eq!(d.reason, "the minimum is 2: 1 → 2");
        let d = decide(s, &nodes[2..], &[], 1_000, GRACE);
        assert_eq!(d.target, 2);
        // A cluster above a lowered maximum comes down to it.
        let many: Vec<NodeView> = (0..5)
            .map(|i| node(&format!("n{i}"), NodeState::Running, None))
            .collect();
        let d = decide(
            AutoScale {
                min: 0,
                max: 3,
                target: 0,
            },
            &many,
            &[],
            0,
            GRACE,
        );
        assert_eq!(
            (d.target, d.reason.as_str()),
            (3, "the maximum is 3: 5 → 3")
        );
    }
}
