//! The scheduler: a pure function that places queued jobs on free nodes.
//!
//! Policy, per cluster: jobs go in priority order (high, normal, low) and, at
//! equal priority, in creation order (FIFO; a requeued job keeps its place).
//! Only free nodes ([`transition::is_free`]) of the job's cluster take jobs,
//! in node id order: a whole-node job (`gpus_per_node = 0`, Batch AI's way)
//! takes nodes with no job; a GPU job takes the first nodes with enough free
//! GPUs and no whole-node job, so GPU jobs pack onto nodes. A job of
//! `node_count` N starts on N nodes at once or not at all (gang).
//!
//! **EASY backfill**, as Slurm does it: the first job of a cluster that
//! cannot start gets a *reservation* — the N nodes that can serve it
//! soonest if every job on them runs to its wall-clock limit, and the time
//! the last of them frees (the *shadow* time). Jobs behind it still start
//! where there is room, but on a reserved node only if they are sure to end
//! by the shadow time (now + their `maxWallClockTime`), so no later job can
//! delay the reserved one's start; on other nodes, freely. Only that first
//! blocked job reserves; a job that no node of the cluster could ever serve
//! reserves nothing (it would block the queue for good).
//!
//! [`queue::explain`] says, by the same rules, where each queued job stands
//! and why it waits.

pub mod queue;

use crate::domain::gpus::{self, Holding};
use crate::domain::transition;
use crate::domain::{ClusterKey, Job, Millis, Node, NodeState};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// Put job `job_id` on nodes `node_ids` (rank order: the first is the master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job_id: String,
    pub node_ids: Vec<String>,
}

/// The nodes held for a cluster's first blocked job, until `shadow`.
#[derive(Debug, Default)]
struct Reservation {
    nodes: BTreeSet<String>,
    shadow: Millis,
}

/// Chooses placements at time `now`. `queued` must be the queued jobs in
/// creation order; `nodes` are the nodes that may take or later free up for
/// jobs (running ones with their holdings; only connected nodes in a state
/// that takes jobs are used, in node id order).
pub fn schedule(queued: &[Job], nodes: &[Node], now: Millis) -> Vec<Placement> {
    // Per cluster, its usable nodes as this pass changes them; a node is
    // copied only when a job placed on it leaves room for more.
    let mut pools: BTreeMap<(&str, &str), Vec<Cow<'_, Node>>> = BTreeMap::new();
    let mut sorted: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.connected && transition::takes_jobs(n))
        .collect();
    sorted.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    for n in sorted {
        pools
            .entry((n.workspace.as_str(), n.cluster.as_str()))
            .or_default()
            .push(Cow::Borrowed(n));
    }
    let mut reservations: BTreeMap<(&str, &str), Reservation> = BTreeMap::new();
    let mut order: Vec<&Job> = queued.iter().collect();
    // Stable: equal priorities keep creation order.
    order.sort_by_key(|j| j.spec.scheduling_priority.rank());
    let mut out = Vec::new();
    for job in order {
        let ClusterKey { workspace, name } = &job.spec.cluster;
        let key = (workspace.as_str(), name.as_str());
        let Some(pool) = pools.get_mut(&key) else {
            continue;
        };
        let need = job.spec.node_count.max(1) as usize;
        let ends_by = now.saturating_add(wall_clock(job));
        let reserved = reservations.get(&key);
        let fits_before_shadow = reserved.is_some_and(|r| ends_by <= r.shadow);
        // Nodes that can take the job now: unreserved ones first, then
        // reserved ones it is sure to leave in time; id order within each.
        let mut usable: Vec<(bool, usize)> = pool
            .iter()
            .enumerate()
            .filter(|(_, n)| transition::is_free(n) && transition::cannot_take(n, job).is_none())
            .filter_map(|(i, n)| {
                let is_reserved = reserved.is_some_and(|r| r.nodes.contains(&n.node_id));
                (!is_reserved || fits_before_shadow).then_some((is_reserved, i))
            })
            .collect();
        usable.sort();
        if usable.len() >= need {
            let picked: Vec<usize> = usable.iter().take(need).map(|&(_, i)| i).collect();
            let mut node_ids = Vec::with_capacity(need);
            for i in picked {
                let node = pool[i].to_mut();
                node_ids.push(node.node_id.clone());
                let gpu_uuids = gpus::pick(node, job);
                node.state = NodeState::Running;
                node.running_job_ids.push(job.id.clone());
                node.holdings.push(Holding {
                    job_id: job.id.clone(),
                    whole_node: job.spec.gpus_per_node == 0,
                    gpu_uuids,
                    ends_by,
                });
            }
            out.push(Placement {
                job_id: job.id.clone(),
                node_ids,
            });
            continue;
        }
        if reserved.is_none()
            && let Some(r) = reserve(pool, job, need, now)
        {
            reservations.insert(key, r);
        }
    }
    out
}

/// The job's wall-clock limit in milliseconds.
fn wall_clock(job: &Job) -> Millis {
    Millis::try_from(job.spec.max_wall_clock_time_ms).unwrap_or(Millis::MAX)
}

/// The `need` nodes of `pool` that can serve `job` soonest and when the last
/// of them can, or `None` if fewer than `need` ever can.
fn reserve(pool: &[Cow<'_, Node>], job: &Job, need: usize, now: Millis) -> Option<Reservation> {
    let mut times: Vec<(Millis, &str)> = pool
        .iter()
        .filter(|n| n.workspace == job.spec.cluster.workspace && n.cluster == job.spec.cluster.name)
        .filter_map(|n| Some((gpus::free_at(n, job, now)?, n.node_id.as_str())))
        .collect();
    if times.len() < need {
        return None;
    }
    times.sort();
    times.truncate(need);
    Some(Reservation {
        shadow: times.iter().map(|(t, _)| *t).max().unwrap_or(now),
        nodes: times.into_iter().map(|(_, n)| n.to_owned()).collect(),
    })
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

    const NOW: Millis = 1_000_000;

    fn pairs(p: &[Placement]) -> Vec<(&str, &str)> {
        p.iter()
            .map(|p| {
                assert_eq!(p.node_ids.len(), 1, "{p:?}");
                (p.job_id.as_str(), p.node_ids[0].as_str())
            })
            .collect()
    }

    fn gangs(p: &[Placement]) -> Vec<(&str, Vec<&str>)> {
        p.iter()
            .map(|p| {
                (
                    p.job_id.as_str(),
                    p.node_ids.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    /// A job of `nodes` whole nodes that may run `wall` ms.
    fn sized(name: &str, nodes: u32, wall: u64) -> Job {
        let mut j = job(name, "c", JobPriority::Normal);
        j.spec.node_count = nodes;
        j.spec.max_wall_clock_time_ms = wall;
        j
    }

    /// Node `id` running job `holder` whole until `ends_by`.
    fn busy(id: &str, holder: &str, ends_by: Millis) -> Node {
        let mut n = node(id, "c");
        n.state = NodeState::Running;
        n.running_job_ids.push(holder.into());
        n.holdings.push(Holding {
            job_id: holder.into(),
            whole_node: true,
            gpu_uuids: Vec::new(),
            ends_by,
        });
        n
    }

    #[test]
    fn fifo_one_job_per_node() {
        let jobs = [
            job("a", "c", JobPriority::Normal),
            job("b", "c", JobPriority::Normal),
            job("c", "c", JobPriority::Normal),
        ];
        let nodes = [node("n2", "c"), node("n1", "c")];
        assert_eq!(
            pairs(&schedule(&jobs, &nodes, NOW)),
            [("a", "n1"), ("b", "n2")]
        );
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
            pairs(&schedule(&jobs, &nodes, NOW)),
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
        assert_eq!(pairs(&schedule(&jobs, &nodes, NOW)), [("b", "m1")]);
    }

    #[test]
    fn no_nodes_no_placements() {
        let jobs = [job("a", "c", JobPriority::High)];
        assert!(schedule(&jobs, &[], NOW).is_empty());
        assert!(schedule(&[], &[node("n", "c")], NOW).is_empty());
    }

    #[test]
    fn a_gang_starts_on_all_its_nodes_at_once_or_not_at_all() {
        let nodes = [node("n1", "c"), node("n2", "c"), node("n3", "c")];
        assert_eq!(
            gangs(&schedule(&[sized("g", 3, 1000)], &nodes, NOW)),
            [("g", vec!["n1", "n2", "n3"])]
        );
        let nodes = [node("n1", "c"), node("n2", "c"), busy("n3", "x", NOW + 50)];
        assert!(
            schedule(&[sized("g", 3, 1000)], &nodes, NOW).is_empty(),
            "two of three nodes: nothing starts"
        );
    }

    #[test]
    fn a_blocked_gang_is_not_starved_by_small_jobs_but_short_ones_backfill() {
        // g needs 3 nodes; n3 frees at NOW+100 at the latest, so g is due
        // then on n1..n3. `long` would hold a node past that: it waits.
        // `short` ends by NOW+100: it may use a free node meanwhile.
        let nodes = [node("n1", "c"), node("n2", "c"), busy("n3", "x", NOW + 100)];
        let jobs = [
            sized("g", 3, 10_000),
            sized("long", 1, 500),
            sized("short", 1, 100),
        ];
        assert_eq!(pairs(&schedule(&jobs, &nodes, NOW)), [("short", "n1")]);
        // A node the gang does not need takes anything.
        let nodes = [
            node("n1", "c"),
            node("n2", "c"),
            busy("n3", "x", NOW + 100),
            node("n4", "c"),
        ];
        let jobs = [sized("g", 3, 10_000), sized("long", 1, 500)];
        // n1, n2 free now and n4 free now: the gang fits at once on 3 of them.
        assert_eq!(
            gangs(&schedule(&jobs, &nodes, NOW)),
            [("g", vec!["n1", "n2", "n4"])]
        );
    }

    #[test]
    fn the_reservation_takes_the_nodes_that_free_first_and_leaves_the_rest() {
        // g needs 2: n1 (free now) and n2 (frees at +100); n3 frees at +900
        // and is not reserved, so a long job may go there once it frees, and
        // nothing else may take n1 unless it ends by +100.
        let nodes = [
            node("n1", "c"),
            busy("n2", "x", NOW + 100),
            busy("n3", "y", NOW + 900),
        ];
        let jobs = [sized("g", 2, 10_000), sized("long", 1, 500)];
        assert!(schedule(&jobs, &nodes, NOW).is_empty());
        let jobs = [sized("g", 2, 10_000), sized("fits", 1, 100)];
        assert_eq!(pairs(&schedule(&jobs, &nodes, NOW)), [("fits", "n1")]);
    }

    #[test]
    fn a_job_no_node_could_serve_reserves_nothing() {
        // Four nodes are needed; the cluster has two: the jobs behind run.
        let nodes = [node("n1", "c"), node("n2", "c")];
        let jobs = [sized("huge", 4, 100), sized("a", 1, 10_000)];
        assert_eq!(pairs(&schedule(&jobs, &nodes, NOW)), [("a", "n1")]);
    }

    #[test]
    fn a_whole_node_job_is_not_starved_by_gpu_jobs_sharing_its_node() {
        // n1's 2 GPUs: one held until +100. The whole-node job waits for it;
        // a GPU job that would hold the other GPU past +100 waits too, one
        // that ends by then takes it.
        let mut n = gpu_node("n1", 2);
        n.state = NodeState::Running;
        n.running_job_ids.push("held".into());
        n.holdings.push(Holding {
            job_id: "held".into(),
            whole_node: false,
            gpu_uuids: vec!["n1-gpu0".into()],
            ends_by: NOW + 100,
        });
        let mut long = gpu_job("long", 1);
        long.spec.max_wall_clock_time_ms = 1_000;
        let mut short = gpu_job("short", 1);
        short.spec.max_wall_clock_time_ms = 100;
        let jobs = [gpu_job("whole", 0), long.clone(), short];
        assert_eq!(
            pairs(&schedule(&jobs, std::slice::from_ref(&n), NOW)),
            [("short", "n1")]
        );
        // Without the whole-node job ahead, the long one takes the GPU.
        assert_eq!(pairs(&schedule(&[long], &[n], NOW)), [("long", "n1")]);
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
            pairs(&schedule(&jobs, &nodes, NOW)),
            [("a", "n1"), ("b", "n1"), ("whole", "n2")]
        );
        let jobs = [gpu_job("x", 1), gpu_job("y", 1), gpu_job("z", 1)];
        let nodes = [gpu_node("n1", 2), gpu_node("n2", 2)];
        assert_eq!(
            pairs(&schedule(&jobs, &nodes, NOW)),
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
            ends_by: NOW + 1000,
        });
        // (The one-GPU job comes first: behind a blocked one it would have to
        // end before the reservation, which a 7-day limit does not.)
        let jobs = [gpu_job("one", 1), gpu_job("two", 2), gpu_job("whole", 0)];
        assert_eq!(pairs(&schedule(&jobs, &[n.clone()], NOW)), [("one", "n1")]);
        n.holdings[0].whole_node = true;
        assert!(
            schedule(&jobs, &[n], NOW).is_empty(),
            "a whole-node job shares with no one"
        );
    }

    #[test]
    fn a_gpu_gang_needs_its_gpus_free_on_every_node() {
        // n1 has 1 of 2 GPUs held; a gang of 2 nodes x 2 GPUs cannot use it,
        // so it takes n2 and n3; with 1 GPU per node it packs onto n1 too.
        let mut n1 = gpu_node("n1", 2);
        n1.state = NodeState::Running;
        n1.running_job_ids.push("held".into());
        n1.holdings.push(Holding {
            job_id: "held".into(),
            whole_node: false,
            gpu_uuids: vec!["n1-gpu0".into()],
            ends_by: NOW + 100,
        });
        let nodes = [n1, gpu_node("n2", 2), gpu_node("n3", 2)];
        let mut two = gpu_job("two", 2);
        two.spec.node_count = 2;
        assert_eq!(
            gangs(&schedule(&[two.clone()], &nodes, NOW)),
            [("two", vec!["n2", "n3"])]
        );
        let mut one = gpu_job("one", 1);
        one.spec.node_count = 3;
        assert_eq!(
            gangs(&schedule(&[one], &nodes, NOW)),
            [("one", vec!["n1", "n2", "n3"])]
        );
        // Three nodes with two free GPUs each do not exist: it waits.
        two.spec.node_count = 3;
        assert!(schedule(&[two], &nodes, NOW).is_empty());
    }
}
