//! Why a queued job waits: its place in its cluster's queue and a reason in
//! words, computed from the same rules that place jobs. A pass of
//! [`super::schedule`] over the cluster as it is now says which jobs are being
//! placed; for every other job the reason comes from the free-node rule
//! ([`transition::cannot_take`], connection included, as [`transition::is_free`]
//! has it) and the GPU arithmetic of [`gpus`]: no nodes, a `gpusPerNode` no
//! node has, too few nodes that can take it (with the cluster's nodes counted
//! by state), or nodes that could take it but are taken first by the jobs
//! ahead of it. Pure: the caller reads the cluster's nodes (with `connected`
//! from live sessions) and queued jobs.

use super::schedule;
use crate::domain::gpus;
use crate::domain::transition;
use crate::domain::{ClusterKey, Job, Millis, Node, NodeState};
use std::collections::HashSet;

/// A queued job's 1-based place in its cluster's queue (scheduling order:
/// priority high → low, then creation) and why it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub position: u32,
    pub reason: String,
}

/// For each queued job of `cluster` in scheduling order, its id and
/// [`QueueInfo`]. `queued` are the cluster's queued jobs in creation order or
/// already in scheduling order (a stable sort by priority keeps either);
/// `nodes` are the cluster's nodes with `connected` filled in; `target` is
/// the cluster's target node count where it is known. Jobs and nodes of
/// other clusters are left out.
pub fn explain(
    cluster: &ClusterKey,
    target: Option<u32>,
    queued: &[Job],
    nodes: &[Node],
    now: Millis,
) -> Vec<(String, QueueInfo)> {
    let mut nodes: Vec<Node> = nodes
        .iter()
        .filter(|n| n.workspace == cluster.workspace && n.cluster == cluster.name)
        .cloned()
        .collect();
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let mut order: Vec<&Job> = queued
        .iter()
        .filter(|j| &j.spec.cluster == cluster)
        .collect();
    order.sort_by_key(|j| j.spec.scheduling_priority.rank());
    // Only this cluster's nodes are given, so only its jobs can be placed.
    let placed: HashSet<String> = schedule(queued, &nodes, now)
        .into_iter()
        .map(|p| p.job_id)
        .collect();
    let mut placed_ahead = 0;
    // The first job that is not placed: nodes are reserved for it (EASY
    // backfill), so a job behind it that could run waits for those.
    let mut blocked_ahead: Option<&Job> = None;
    let mut out = Vec::with_capacity(order.len());
    for (i, job) in order.iter().enumerate() {
        let reason = if placed.contains(&job.id) {
            placed_ahead += 1;
            "being placed".to_string()
        } else {
            let r = why(
                &cluster.name,
                target,
                job,
                &nodes,
                placed_ahead,
                blocked_ahead,
            );
            blocked_ahead = blocked_ahead.or(Some(job));
            r
        };
        let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
        out.push((job.id.clone(), QueueInfo { position, reason }));
    }
    out
}

/// Why `job`, which this pass does not place, waits; `placed_ahead` jobs
/// ahead of it are placed.
fn why(
    cluster: &str,
    target: Option<u32>,
    job: &Job,
    nodes: &[Node],
    placed_ahead: usize,
    blocked_ahead: Option<&Job>,
) -> String {
    if nodes.is_empty() {
        return match target {
            Some(0) => format!("cluster {cluster} has no nodes: its target is 0"),
            Some(t) => format!("cluster {cluster} has no nodes yet: its target is {t}"),
            None => format!("cluster {cluster} has no nodes"),
        };
    }
    if job.spec.container_settings.is_some()
        && nodes.iter().all(|n| n.info.container_runtime.is_empty())
    {
        return format!(
            "it runs in a container and no node of cluster {cluster} has a container runtime (podman or docker)"
        );
    }
    let want = job.spec.gpus_per_node;
    let most_gpus = nodes.iter().map(|n| n.info.gpus.len()).max().unwrap_or(0);
    if want as usize > most_gpus {
        return format!(
            "gpusPerNode {want} is more than any node of cluster {cluster} has ({most_gpus})"
        );
    }
    let need = job.spec.node_count.max(1) as usize;
    let able = nodes
        .iter()
        .filter(|n| n.connected && transition::cannot_take(n, job).is_none())
        .count();
    if able >= need {
        // A node could take it but the pass gave it none: the jobs placed
        // ahead of it took that room.
        return match (placed_ahead, blocked_ahead) {
            (0, Some(head)) => format!(
                "the nodes that could take it are held for {}, ahead of it in cluster {cluster}; \
                 only a job whose maxWallClockTime ends before that one can start runs meanwhile",
                head.key.name
            ),
            (0, None) => "being placed".to_string(),
            (1, _) => format!("waits behind 1 job ahead of it in cluster {cluster}"),
            (n, _) => format!("waits behind {n} jobs ahead of it in cluster {cluster}"),
        };
    }
    let counts = Counts::of(nodes);
    let nodes_word = |with: &str| match need {
        1 => format!("a node {with}"),
        n => format!("{n} nodes {with}"),
    };
    if want == 0 {
        let idle = if need == 1 { "idle node" } else { "idle nodes" };
        return format!("needs {need} {idle} in cluster {cluster}: {}", counts.all());
    }
    let gpus_word = if want == 1 { "free GPU" } else { "free GPUs" };
    let wanted = nodes_word(&format!("with {want} {gpus_word}"));
    // The node with the most free GPUs among those that take GPU jobs now
    // (first by node id on a tie).
    let best = nodes
        .iter()
        .filter(|n| n.connected && transition::takes_jobs(n) && !gpus::taken_whole(n))
        .map(|n| (gpus::free(n).count(), n.node_id.as_str()))
        .fold(None, |best: Option<(usize, &str)>, (free, id)| match best {
            Some((b, _)) if b >= free => best,
            _ => Some((free, id)),
        });
    match best {
        Some((free, id)) => {
            let mut s = format!("needs {wanted} in cluster {cluster}: most free is {free} ({id})");
            if let Some(rest) = counts.not_taking() {
                s.push_str(&format!(", {rest}"));
            }
            s
        }
        None => format!("needs {wanted} in cluster {cluster}: {}", counts.all()),
    }
}

/// A cluster's nodes by what they can do now: disconnected ones apart from
/// their state, an idle node whose every GPU is faulted apart from idle.
#[derive(Debug, Default)]
struct Counts {
    idle: usize,
    faulted: usize,
    running: usize,
    preparing: usize,
    unusable: usize,
    leaving: usize,
    disconnected: usize,
}

impl Counts {
    fn of(nodes: &[Node]) -> Self {
        let mut c = Self::default();
        for n in nodes {
            let slot = if !n.connected {
                &mut c.disconnected
            } else {
                match n.state {
                    NodeState::Idle if n.running_job_ids.is_empty() => {
                        let all_faulted =
                            !n.info.gpus.is_empty() && gpus::healthy(n).next().is_none();
                        if all_faulted {
                            &mut c.faulted
                        } else {
                            &mut c.idle
                        }
                    }
                    NodeState::Idle | NodeState::Running => &mut c.running,
                    NodeState::Preparing => &mut c.preparing,
                    NodeState::Unusable => &mut c.unusable,
                    NodeState::Leaving => &mut c.leaving,
                }
            };
            *slot += 1;
        }
        c
    }

    /// `0 idle, 2 running, 1 preparing`: idle always, the others when some.
    fn all(&self) -> String {
        let mut parts = vec![format!("{} idle", self.idle)];
        for (n, what) in [
            (self.running, "running"),
            (self.faulted, "with every GPU faulted"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.extend(self.not_taking());
        parts.join(", ")
    }

    /// The nodes in no state to take jobs, if any: `1 preparing, 1 disconnected`.
    fn not_taking(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.preparing, "preparing"),
            (self.unusable, "unusable"),
            (self.leaving, "leaving"),
            (self.disconnected, "disconnected"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
