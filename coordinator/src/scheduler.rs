//! The scheduler: a pure function that places queued jobs on free nodes, and
//! the task that runs a pass whenever something changed.
//!
//! Policy: per cluster, jobs go in priority order (high, normal, low) and, at
//! equal priority, in creation order (FIFO; a requeued job keeps its place).
//! Only free nodes ([`transition::is_free`]) of the job's cluster take jobs,
//! in node id order: a whole-node job (`gpus_per_node = 0`, Batch AI's way)
//! takes a node with no job; a GPU job takes the first node with enough free
//! GPUs and no whole-node job, so GPU jobs pack onto nodes. A job that fits
//! nowhere stays queued and the jobs behind it still get their turn (no
//! reservation yet: backfill with reservations comes with gang scheduling).
//!
//! [`queue::explain`] says, by the same rules, where each queued job stands
//! and why it waits.

pub mod queue;

use crate::domain::gpus::{self, Holding};
use crate::domain::transition;
use crate::domain::{ClusterKey, Job, Node, NodeState};
use std::borrow::Cow;
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
    // Per cluster, the free nodes as this pass changes them; a node with no
    // room left drops out, so the common case (whole-node jobs on nodes
    // without GPUs) takes the first node every time. A node is copied only
    // when a GPU job leaves it room for more.
    let mut free: BTreeMap<(&str, &str), VecDeque<Cow<'_, Node>>> = BTreeMap::new();
    let mut sorted: Vec<&Node> = nodes.iter().filter(|n| transition::is_free(n)).collect();
    sorted.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    for n in sorted {
        free.entry((n.workspace.as_str(), n.cluster.as_str()))
            .or_default()
            .push_back(Cow::Borrowed(n));
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
        let Some(candidates) = free.get_mut(&(workspace.as_str(), name.as_str())) else {
            continue;
        };
        let Some(at) = candidates
            .iter()
            .position(|n| transition::cannot_take(n, job).is_none())
        else {
            continue;
        };
        out.push(Placement {
            job_id: job.id.clone(),
            node_id: candidates[at].node_id.clone(),
        });
        if job.spec.gpus_per_node == 0 {
            // A whole-node job fills its node.
            candidates.remove(at);
            continue;
        }
        let node = candidates[at].to_mut();
        node.state = NodeState::Running;
        node.running_job_ids.push(job.id.clone());
        let gpu_uuids = gpus::pick(node, job);
        node.holdings.push(Holding {
            job_id: job.id.clone(),
            whole_node: false,
            gpu_uuids,
        });
        if gpus::room(node) == 0 {
            candidates.remove(at);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobPriority, fixtures};

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

    fn gpu_node(id: &str, n: u32) -> Node {
        let mut node = node(id, "c");
        node.info.gpus = (0..n)
            .map(|i| crate::domain::gpus::Gpu {
                index: i,
                uuid: format!("{id}-gpu{i}"),
                ..Default::default()
            })
            .collect();
        node
    }

    fn gpu_job(name: &str, gpus: u32) -> Job {
        let mut j = job(name, "c", JobPriority::Normal);
        j.spec.gpus_per_node = gpus;
        j
    }

    #[test]
    fn gpu_jobs_pack_onto_nodes_and_whole_node_jobs_wait_for_an_empty_one() {
        let jobs = [
            gpu_job("a", 2),
            gpu_job("b", 2),
            gpu_job("whole", 0),
            gpu_job("c", 1),
            gpu_job("d", 3),
        ];
        let nodes = [gpu_node("n1", 4), gpu_node("n2", 4)];
        // a and b fill n1; the whole-node job takes the empty n2; c and d
        // find no room left.
        assert_eq!(
            pairs(&schedule(&jobs, &nodes)),
            [("a", "n1"), ("b", "n1"), ("whole", "n2")]
        );
        let jobs = [gpu_job("x", 1), gpu_job("y", 1), gpu_job("z", 1)];
        let nodes = [gpu_node("n1", 2), gpu_node("n2", 2)];
        assert_eq!(
            pairs(&schedule(&jobs, &nodes)),
            [("x", "n1"), ("y", "n1"), ("z", "n2")]
        );
    }

    #[test]
    fn a_running_gpu_node_takes_jobs_for_its_free_gpus_only() {
        let mut n = gpu_node("n1", 2);
        n.state = NodeState::Running;
        n.running_job_ids.push("held".into());
        n.holdings.push(Holding {
            job_id: "held".into(),
            whole_node: false,
            gpu_uuids: vec!["n1-gpu0".into()],
        });
        let jobs = [gpu_job("two", 2), gpu_job("whole", 0), gpu_job("one", 1)];
        assert_eq!(pairs(&schedule(&jobs, &[n.clone()])), [("one", "n1")]);
        n.holdings[0].whole_node = true;
        assert!(
            schedule(&jobs, &[n]).is_empty(),
            "a whole-node job shares with no one"
        );
    }
}
