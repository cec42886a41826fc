//! The scheduler: a pure function that places queued jobs on free nodes, and
//! the task that runs a pass whenever something changed.
//!
//! Policy: per cluster, jobs go in priority order (high, normal, low) and, at
//! equal priority, in creation order (FIFO; a requeued job keeps its place).
//! One job per node; only free nodes ([`transition::is_free`]: idle, connected,
//! no active job) of the job's cluster take jobs.
//! Jobs whose cluster has no free node stay queued.

use crate::domain::transition;
use crate::domain::{ClusterKey, Job, Node};
use std::collections::{BTreeMap, VecDeque};

/// Put job `job_id` on node `node_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job_id: String,
    pub node_id: String,
}

/// Chooses placements. `queued` must be the queued jobs in creation order;
/// `nodes` are all nodes (only free ones are used, in node id order).
pub fn schedule(queued: &[Job], nodes: &[Node]) -> Vec<Placement> {
    let mut free: BTreeMap<(String, String), VecDeque<&str>> = BTreeMap::new();
    let mut sorted_nodes: Vec<&Node> = nodes.iter().filter(|n| transition::is_free(n)).collect();
    sorted_nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    for n in sorted_nodes {
        free.entry((n.workspace.clone(), n.cluster.clone()))
            .or_default()
            .push_back(&n.node_id);
    }
    let mut order: Vec<&Job> = queued.iter().collect();
    // Stable: equal priorities keep creation order.
    order.sort_by_key(|j| j.spec.scheduling_priority.rank());
    let mut out = Vec::new();
    for job in order {
        if job.spec.node_count != 1 {
            continue;
        }
        let ClusterKey { workspace, name } = &job.spec.cluster;
        if let Some(slots) = free.get_mut(&(workspace.clone(), name.clone()))
            && let Some(node) = slots.pop_front()
        {
            out.push(Placement {
                job_id: job.id.clone(),
                node_id: node.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobPriority, NodeState, fixtures};

    fn job(name: &str, cluster: &str, p: JobPriority) -> Job {
        let mut j = fixtures::job("w", "e", name, cluster);
        j.id = name.to_string();
        j.spec.scheduling_priority = p;
        j
    }

    fn node(id: &str, cluster: &str) -> Node {
        fixtures::node(id, "w", cluster, NodeState::Idle)
    }

    fn pairs(p: &[Placement]) -> Vec<(&str, &str)> {
        p.iter()
            .map(|p| (p.job_id.as_str(), p.node_id.as_str()))
            .collect()
    }

    #[test]
    fn fifo_one_job_per_node() {
        let jobs = [
            job("a", "c", JobPriority::Normal),
            job("b", "c", JobPriority::Normal),
            job("c", "c", JobPriority::Normal),
        ];
        let nodes = [node("n2", "c"), node("n1", "c")];
        assert_eq!(pairs(&schedule(&jobs, &nodes)), [("a", "n1"), ("b", "n2")]);
    }

    #[test]
    fn priority_before_fifo() {
        let jobs = [
            job("low", "c", JobPriority::Low),
            job("n1", "c", JobPriority::Normal),
            job("high", "c", JobPriority::High),
            job("n2", "c", JobPriority::Normal),
        ];
        let nodes = [node("x", "c"), node("y", "c"), node("z", "c")];
        assert_eq!(
            pairs(&schedule(&jobs, &nodes)),
            [("high", "x"), ("n1", "y"), ("n2", "z")]
        );
    }

    #[test]
    fn only_free_nodes_of_the_jobs_cluster() {
        let jobs = [
            job("a", "c1", JobPriority::Normal),
            job("b", "c2", JobPriority::Normal),
        ];
        let mut busy = node("n1", "c1");
        busy.running_job_ids.push("other".into());
        let mut gone = node("n2", "c1");
        gone.connected = false;
        let leaving = fixtures::node("n3", "w", "c1", NodeState::Leaving);
        let preparing = fixtures::node("n4", "w", "c1", NodeState::Preparing);
        let other_ws = fixtures::node("n5", "w2", "c1", NodeState::Idle);
        let nodes = [busy, gone, leaving, preparing, other_ws, node("m1", "c2")];
        assert_eq!(pairs(&schedule(&jobs, &nodes)), [("b", "m1")]);
    }

    #[test]
    fn no_nodes_no_placements() {
        let jobs = [job("a", "c", JobPriority::High)];
        assert!(schedule(&jobs, &[]).is_empty());
        assert!(schedule(&[], &[node("n", "c")]).is_empty());
    }

    #[test]
    fn multi_node_jobs_are_not_placed() {
        let mut j = job("a", "c", JobPriority::Normal);
        j.spec.node_count = 2;
        assert!(schedule(&[j], &[node("n1", "c"), node("n2", "c")]).is_empty());
    }
}
