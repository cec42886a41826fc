//! GPUs and how jobs get them. A job with `gpus_per_node = 0` (the default,
//! as in Batch AI) takes its node whole, with all of its GPUs; one with
//! `gpus_per_node = g > 0` takes `g` GPUs, and such jobs share a node while
//! it has free GPUs (bai's extension). Which GPUs a job holds is decided
//! here, at assignment, kept in the job's record, and handed to the agent as
//! UUIDs; two active jobs never hold the same GPU.

use super::types::{Job, Node};
use serde::{Deserialize, Serialize};

/// One GPU of a node, as its agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_bytes: u64,
    pub pci_bus_id: String,
    pub mig_mode: String,
}

/// What one active job on a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holding {
    pub job_id: String,
    /// The job took the node whole (`gpus_per_node = 0`).
    pub whole_node: bool,
    pub gpu_uuids: Vec<String>,
}

/// The job holding `uuid` on `node`, if any.
pub fn holder<'a>(node: &'a Node, uuid: &str) -> Option<&'a str> {
    node.holdings
        .iter()
        .find(|h| h.gpu_uuids.iter().any(|u| u == uuid))
        .map(|h| h.job_id.as_str())
}

/// The node's GPUs no active job holds, in index order.
pub fn free(node: &Node) -> impl Iterator<Item = &Gpu> {
    node.info
        .gpus
        .iter()
        .filter(|g| holder(node, &g.uuid).is_none())
}

/// Whether a whole-node job holds the node.
pub fn taken_whole(node: &Node) -> bool {
    node.holdings.iter().any(|h| h.whole_node)
}

/// Why `node`'s GPUs cannot serve `job` (its state and cluster aside), or
/// `None` if they can.
pub fn cannot_serve(node: &Node, job: &Job) -> Option<&'static str> {
    let want = job.spec.gpus_per_node;
    if want == 0 {
        return (!node.running_job_ids.is_empty()).then_some("it already has a job");
    }
    if taken_whole(node) {
        Some("a job holds it whole")
    } else if free(node).count() < want as usize {
        Some("it has too few free GPUs")
    } else {
        None
    }
}

/// The GPUs `job` gets on `node`: all of them for a whole-node job, else
/// the first `gpus_per_node` free ones by index. Call only where
/// [`cannot_serve`] said `None`.
pub fn pick(node: &Node, job: &Job) -> Vec<String> {
    let want = job.spec.gpus_per_node as usize;
    if want == 0 {
        node.info.gpus.iter().map(|g| g.uuid.clone()).collect()
    } else {
        free(node).take(want).map(|g| g.uuid.clone()).collect()
    }
}

/// How many more jobs `node` could take at most (0: none): one if it has no
/// job (a whole-node job, or as many GPU jobs as it has GPUs), else one per
/// free GPU unless a whole-node job holds it. Bounds how many queued jobs a
/// scheduling pass reads.
pub fn room(node: &Node) -> usize {
    if node.running_job_ids.is_empty() {
        node.info.gpus.len().max(1)
    } else if taken_whole(node) {
        0
    } else {
        free(node).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NodeState, fixtures};

    fn node_with(n: u32) -> Node {
        let mut node = fixtures::node("n", "w", "c", NodeState::Idle);
        node.info.gpus = (0..n)
            .map(|i| Gpu {
                index: i,
                uuid: format!("GPU-{i}"),
                ..Gpu::default()
            })
            .collect();
        node
    }

    fn job(gpus: u32) -> Job {
        let mut j = fixtures::job("w", "e", &format!("j{gpus}"), "c");
        j.spec.gpus_per_node = gpus;
        j
    }

    fn hold(node: &mut Node, job_id: &str, whole: bool, uuids: &[String]) {
        node.running_job_ids.push(job_id.into());
        node.holdings.push(Holding {
            job_id: job_id.into(),
            whole_node: whole,
            gpu_uuids: uuids.to_vec(),
        });
    }

    #[test]
    fn gpu_jobs_share_a_node_with_disjoint_gpus() {
        let mut n = node_with(4);
        assert_eq!(room(&n), 4);
        let a = pick(&n, &job(2));
        assert_eq!(a, ["GPU-0", "GPU-1"]);
        hold(&mut n, "a", false, &a);
        assert_eq!(cannot_serve(&n, &job(2)), None);
        let b = pick(&n, &job(2));
        assert_eq!(b, ["GPU-2", "GPU-3"]);
        hold(&mut n, "b", false, &b);
        assert_eq!(room(&n), 0);
        assert_eq!(cannot_serve(&n, &job(1)), Some("it has too few free GPUs"));
        assert_eq!(cannot_serve(&n, &job(0)), Some("it already has a job"));
        assert_eq!(holder(&n, "GPU-3"), Some("b"));
        assert_eq!(holder(&n, "GPU-9"), None);
    }

    #[test]
    fn a_whole_node_job_takes_every_gpu_and_shares_with_no_one() {
        let mut n = node_with(2);
        assert_eq!(cannot_serve(&n, &job(3)), Some("it has too few free GPUs"));
        let all = pick(&n, &job(0));
        assert_eq!(all, ["GPU-0", "GPU-1"]);
        hold(&mut n, "w", true, &all);
        assert_eq!(room(&n), 0);
        assert_eq!(cannot_serve(&n, &job(1)), Some("a job holds it whole"));
        assert_eq!(cannot_serve(&n, &job(0)), Some("it already has a job"));
    }

    #[test]
    fn a_node_without_gpus_takes_one_whole_node_job() {
        let mut n = node_with(0);
        assert_eq!(room(&n), 1);
        assert_eq!(cannot_serve(&n, &job(0)), None);
        assert!(pick(&n, &job(0)).is_empty());
        assert_eq!(cannot_serve(&n, &job(1)), Some("it has too few free GPUs"));
        hold(&mut n, "w", true, &[]);
        assert_eq!(room(&n), 0);
    }
}
