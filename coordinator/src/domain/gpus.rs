//! GPUs and how jobs get them. A job with `gpus_per_node = 0` (the default,
//! as in Batch AI) takes its node whole, with all of its GPUs; one with
//! `gpus_per_node = g > 0` takes `g` GPUs, and such jobs share a node while
//! it has free GPUs (bai's extension). Which GPUs a job holds is decided
//! here, at assignment, kept in the job's record, and handed to the agent as
//! UUIDs; two active jobs never hold the same GPU.
//!
//! Health: a GPU with a fault (a fault XID, a double-bit ECC error, a failed
//! health check after a reset — the agent says which events are faults) is
//! out of scheduling: no job is given it, a whole-node job gets the node's
//! healthy GPUs only, and the job holding it is terminated with `GpuFault`.
//! It returns when its agent reports it recovered or an operator clears it;
//! every event is kept in the node's GPU history.

use super::types::{Job, Millis, Node};
use serde::{Deserialize, Serialize};

/// The error a job holding a GPU that faulted ends with.
pub const GPU_FAULT: &str = "GpuFault";

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
    /// Set while the GPU is out of scheduling.
    pub fault: Option<GpuFault>,
}

/// Why and since when a GPU is out of scheduling.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuFault {
    pub time: Millis,
    pub reason: String,
}

/// What happened to a GPU's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuEventKind {
    Xid,
    DoubleBitEcc,
    Recovered,
    CheckFailed,
    /// An operator returned it to service.
    Cleared,
}

impl GpuEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xid => "xid",
            Self::DoubleBitEcc => "double_bit_ecc",
            Self::Recovered => "recovered",
            Self::CheckFailed => "check_failed",
            Self::Cleared => "cleared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Xid,
            Self::DoubleBitEcc,
            Self::Recovered,
            Self::CheckFailed,
            Self::Cleared,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a GPU's health history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvent {
    pub node_id: String,
    pub uuid: String,
    pub index: u32,
    pub time: Millis,
    pub kind: GpuEventKind,
    /// The XID, or the number of new ECC errors.
    pub code: u64,
    /// Takes the GPU out of scheduling.
    pub fault: bool,
    pub message: String,
    /// The job holding the GPU when it happened (filled by the store).
    pub job_id: Option<String>,
}

/// What an event changes on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// The GPU was healthy and is faulted now.
    Faulted,
    /// The GPU was faulted and is healthy now.
    Restored,
    Unchanged,
}

/// Applies `ev` to the GPU it names on `node` (an unknown GPU: unchanged).
pub fn apply(node: &mut Node, ev: &GpuEvent) -> HealthChange {
    let Some(g) = node.info.gpus.iter_mut().find(|g| g.uuid == ev.uuid) else {
        return HealthChange::Unchanged;
    };
    match (ev.fault, ev.kind, g.fault.is_some()) {
        (true, _, false) => {
            g.fault = Some(GpuFault {
                time: ev.time,
                reason: ev.message.clone(),
            });
            HealthChange::Faulted
        }
        (false, GpuEventKind::Recovered | GpuEventKind::Cleared, true) => {
            g.fault = None;
            HealthChange::Restored
        }
        _ => HealthChange::Unchanged,
    }
}

/// The GPU of `node` named by `gpu`, a UUID or an index.
pub fn find<'a>(node: &'a Node, gpu: &str) -> Option<&'a Gpu> {
    let gpus = &node.info.gpus;
    gpus.iter().find(|g| g.uuid == gpu).or_else(|| {
        gpu.parse::<u32>()
            .ok()
            .and_then(|i| gpus.iter().find(|g| g.index == i))
    })
}

/// A registering agent's GPUs keep the faults the store has for them (a
/// restart does not return a broken GPU to service).
pub fn keep_faults(old: &[Gpu], new: &mut [Gpu]) {
    for g in new {
        if let Some(o) = old.iter().find(|o| o.uuid == g.uuid) {
            g.fault.clone_from(&o.fault);
        }
    }
}

/// The node's GPUs without a fault.
pub fn healthy(node: &Node) -> impl Iterator<Item = &Gpu> {
    node.info.gpus.iter().filter(|g| g.fault.is_none())
}

/// What one active job on a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holding {
    pub job_id: String,
    /// The job took the node whole (`gpus_per_node = 0`).
    pub whole_node: bool,
    pub gpu_uuids: Vec<String>,
    /// When the job ends at the latest: its start (or assignment, before it
    /// starts) plus its `maxWallClockTime`. What reservations plan with.
    pub ends_by: Millis,
}

/// The job holding `uuid` on `node`, if any.
pub fn holder<'a>(node: &'a Node, uuid: &str) -> Option<&'a str> {
    node.holdings
        .iter()
        .find(|h| h.gpu_uuids.iter().any(|u| u == uuid))
        .map(|h| h.job_id.as_str())
}

/// The node's healthy GPUs no active job holds, in index order.
pub fn free(node: &Node) -> impl Iterator<Item = &Gpu> {
    healthy(node).filter(|g| holder(node, &g.uuid).is_none())
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
        if !node.running_job_ids.is_empty() {
            return Some("it already has a job");
        }
        let has_gpus = !node.info.gpus.is_empty();
        return (has_gpus && healthy(node).next().is_none())
            .then_some("every GPU of it is faulted");
    }
    if taken_whole(node) {
        Some("a job holds it whole")
    } else if free(node).count() < want as usize {
        Some("it has too few free GPUs")
    } else {
        None
    }
}

/// The GPUs `job` gets on `node`: all its healthy ones for a whole-node job,
/// else the first `gpus_per_node` free ones by index. Call only where
/// [`cannot_serve`] said `None`.
pub fn pick(node: &Node, job: &Job) -> Vec<String> {
    let want = job.spec.gpus_per_node as usize;
    if want == 0 {
        healthy(node).map(|g| g.uuid.clone()).collect()
    } else {
        free(node).take(want).map(|g| g.uuid.clone()).collect()
    }
}

/// The earliest time `node` can serve `job` (cluster and connection aside)
/// if every job on it runs to its wall-clock limit: `now` if it can now,
/// `None` if it never can (too few healthy GPUs).
pub fn free_at(node: &Node, job: &Job, now: Millis) -> Option<Millis> {
    if cannot_serve(node, job).is_none() {
        return Some(now);
    }
    let want = job.spec.gpus_per_node as usize;
    let healthy_count = healthy(node).count();
    if want == 0 {
        if !node.info.gpus.is_empty() && healthy_count == 0 {
            return None;
        }
        let last = node.holdings.iter().map(|h| h.ends_by).max();
        return Some(last.unwrap_or(now).max(now));
    }
    if healthy_count < want {
        return None;
    }
    // Release holdings in the order they end until the job fits.
    let mut by_end: Vec<&Holding> = node.holdings.iter().collect();
    by_end.sort_by_key(|h| h.ends_by);
    let mut free_now = free(node).count();
    let mut whole = by_end.iter().filter(|h| h.whole_node).count();
    for h in by_end {
        if h.whole_node {
            whole -= 1;
        }
        free_now += h
            .gpu_uuids
            .iter()
            .filter(|u| healthy(node).any(|g| &g.uuid == *u))
            .count();
        if whole == 0 && free_now >= want {
            return Some(h.ends_by.max(now));
        }
    }
    None
}

/// How many more jobs `node` could take at most (0: none): one if it has no
/// job (a whole-node job, or as many GPU jobs as it has GPUs), else one per
/// free GPU unless a whole-node job holds it. Bounds how many queued jobs a
/// scheduling pass reads.
pub fn room(node: &Node) -> usize {
    if node.running_job_ids.is_empty() {
        healthy(node).count().max(1)
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
            ends_by: 0,
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

    fn event(uuid: &str, kind: GpuEventKind, fault: bool) -> GpuEvent {
        GpuEvent {
            node_id: "n".into(),
            uuid: uuid.into(),
            index: 0,
            time: 7,
            kind,
            code: 79,
            fault,
            message: "XID 79".into(),
            job_id: None,
        }
    }

    #[test]
    fn a_faulted_gpu_is_given_to_no_job_until_it_is_restored() {
        let mut n = node_with(4);
        assert_eq!(
            apply(&mut n, &event("GPU-1", GpuEventKind::Xid, true)),
            HealthChange::Faulted
        );
        assert_eq!(
            apply(&mut n, &event("GPU-1", GpuEventKind::DoubleBitEcc, true)),
            HealthChange::Unchanged,
            "a second fault changes nothing"
        );
        assert_eq!(n.info.gpus[1].fault.as_ref().map(|f| f.time), Some(7));
        assert_eq!(room(&n), 3);
        assert_eq!(pick(&n, &job(0)), ["GPU-0", "GPU-2", "GPU-3"]);
        assert_eq!(pick(&n, &job(2)), ["GPU-0", "GPU-2"]);
        assert_eq!(cannot_serve(&n, &job(4)), Some("it has too few free GPUs"));
        // An application XID is history, not a fault.
        assert_eq!(
            apply(&mut n, &event("GPU-2", GpuEventKind::Xid, false)),
            HealthChange::Unchanged
        );
        assert_eq!(free(&n).count(), 3);
        assert_eq!(
            apply(&mut n, &event("GPU-1", GpuEventKind::Cleared, false)),
            HealthChange::Restored
        );
        assert_eq!(cannot_serve(&n, &job(4)), None);
        assert_eq!(
            apply(&mut n, &event("GPU-9", GpuEventKind::Xid, true)),
            HealthChange::Unchanged,
            "an unknown GPU"
        );
    }

    #[test]
    fn a_node_whose_gpus_all_faulted_takes_no_whole_node_job() {
        let mut n = node_with(2);
        for u in ["GPU-0", "GPU-1"] {
            apply(&mut n, &event(u, GpuEventKind::CheckFailed, true));
        }
        assert_eq!(
            cannot_serve(&n, &job(0)),
            Some("every GPU of it is faulted")
        );
        assert_eq!(find(&n, "1").map(|g| g.uuid.as_str()), Some("GPU-1"));
        assert_eq!(find(&n, "GPU-0").map(|g| g.index), Some(0));
        assert!(find(&n, "7").is_none());
        let mut fresh = node_with(2);
        keep_faults(&n.info.gpus, &mut fresh.info.gpus);
        assert!(fresh.info.gpus.iter().all(|g| g.fault.is_some()));
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

    #[test]
    fn free_at_is_when_enough_holdings_have_run_out() {
        let mut job = fixtures::job("w", "e", "j", "c");
        let mut n = node_with(4);
        assert_eq!(free_at(&n, &job, 10), Some(10), "free now");
        let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
        hold(&mut n, "a", false, &uuids[0..1]);
        hold(&mut n, "b", false, &uuids[1..3]);
        n.holdings[0].ends_by = 500;
        n.holdings[1].ends_by = 200;
        // A whole-node job: when the last holding ends.
        assert_eq!(free_at(&n, &job, 10), Some(500));
        // Two GPUs: one is free now, b's two free at 200.
        job.spec.gpus_per_node = 2;
        assert_eq!(free_at(&n, &job, 10), Some(200));
        job.spec.gpus_per_node = 1;
        assert_eq!(free_at(&n, &job, 10), Some(10));
        job.spec.gpus_per_node = 5;
        assert_eq!(free_at(&n, &job, 10), None, "more GPUs than the node has");
        // A faulted GPU never comes back in the plan.
        job.spec.gpus_per_node = 4;
        n.info.gpus[3].fault = Some(Default::default());
        assert_eq!(free_at(&n, &job, 10), None);
        // Holdings past their limit (a job due to be stopped) count as now.
        job.spec.gpus_per_node = 0;
        assert_eq!(free_at(&n, &job, 900), Some(900));
    }
}
