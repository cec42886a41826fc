use super::*;
use crate::domain::gpus::{Gpu, GpuFault, Holding};
use crate::domain::{JobPriority, fixtures};

fn key() -> ClusterKey {
    ClusterKey {
        workspace: "w".into(),
        name: "c1".into(),
    }
}

fn job(name: &str) -> Job {
    let mut j = fixtures::job("w", "e", name, "c1");
    j.id = name.to_string();
    j
}

fn gpu_job(name: &str, gpus: u32) -> Job {
    let mut j = job(name);
    j.spec.gpus_per_node = gpus;
    j
}

fn node(id: &str, state: NodeState) -> Node {
    fixtures::node(id, "w", "c1", state)
}

fn gpu_node(id: &str, n: u32) -> Node {
    let mut node = node(id, NodeState::Idle);
    node.info.gpus = (0..n)
        .map(|i| Gpu {
            index: i,
            uuid: format!("{id}-gpu{i}"),
            ..Default::default()
        })
        .collect();
    node
}

/// `node` running job `job_id` holding the given GPUs (whole: every GPU).
fn running(mut node: Node, job_id: &str, whole: bool, gpus: &[u32]) -> Node {
    node.state = NodeState::Running;
    node.running_job_ids.push(job_id.into());
    node.holdings.push(Holding {
        job_id: job_id.into(),
        whole_node: whole,
        gpu_uuids: gpus
            .iter()
            .map(|i| format!("{}-gpu{i}", node.node_id))
            .collect(),
        ends_by: 1_000_000 + 60_000,
    });
    node
}

fn explained(target: Option<u32>, jobs: &[Job], nodes: &[Node]) -> Vec<(String, u32, String)> {
    explain(&key(), target, jobs, nodes, 1_000_000)
        .into_iter()
        .map(|(id, q)| (id, q.position, q.reason))
        .collect()
}

fn reasons(target: Option<u32>, jobs: &[Job], nodes: &[Node]) -> Vec<String> {
    explained(target, jobs, nodes)
        .into_iter()
        .map(|(_, _, r)| r)
        .collect()
}

#[test]
fn positions_follow_priority_then_creation() {
    let mut low = job("low");
    low.spec.scheduling_priority = JobPriority::Low;
    let mut high = job("high");
    high.spec.scheduling_priority = JobPriority::High;
    let jobs = [low, job("a"), high, job("b")];
    let got: Vec<(String, u32)> = explained(Some(0), &jobs, &[])
        .into_iter()
        .map(|(id, p, _)| (id, p))
        .collect();
    assert_eq!(
        got,
        [
            ("high".to_string(), 1),
            ("a".to_string(), 2),
            ("b".to_string(), 3),
            ("low".to_string(), 4)
        ]
    );
}

#[test]
fn other_clusters_jobs_and_nodes_are_left_out() {
    let other = fixtures::job("w", "e", "x", "c2");
    let other_ws = fixtures::node("n9", "w2", "c1", NodeState::Idle);
    let got = explained(Some(1), &[other, job("a")], &[other_ws]);
    assert_eq!(
        got,
        [(
            "a".to_string(),
            1,
            "cluster c1 has no nodes yet: its target is 1".to_string()
        )]
    );
}

#[test]
fn a_cluster_without_nodes_says_its_target() {
    let jobs = [job("a")];
    assert_eq!(
        reasons(Some(0), &jobs, &[]),
        ["cluster c1 has no nodes: its target is 0"]
    );
    assert_eq!(
        reasons(Some(3), &jobs, &[]),
        ["cluster c1 has no nodes yet: its target is 3"]
    );
    assert_eq!(reasons(None, &jobs, &[]), ["cluster c1 has no nodes"]);
}

#[test]
fn whole_node_jobs_wait_for_idle_nodes_counted_by_state() {
    let mut gone = node("n5", NodeState::Idle);
    gone.connected = false;
    let nodes = [
        running(node("n1", NodeState::Idle), "r1", true, &[]),
        running(node("n2", NodeState::Idle), "r2", true, &[]),
        node("n3", NodeState::Preparing),
        node("n4", NodeState::Unusable),
        gone,
    ];
    assert_eq!(
        reasons(Some(5), &[job("a"), job("b")], &nodes),
        [
            "needs 1 idle node in cluster c1: 0 idle, 2 running, 1 preparing, 1 unusable, 1 disconnected",
            "needs 1 idle node in cluster c1: 0 idle, 2 running, 1 preparing, 1 unusable, 1 disconnected",
        ]
    );
}

#[test]
fn an_idle_node_whose_gpus_are_all_faulted_is_no_idle_node() {
    let mut n = gpu_node("n1", 1);
    n.info.gpus[0].fault = Some(GpuFault {
        time: 1,
        reason: "xid 79".into(),
    });
    let leaving = node("n2", NodeState::Leaving);
    assert_eq!(
        reasons(Some(1), &[job("a")], &[n, leaving]),
        ["needs 1 idle node in cluster c1: 0 idle, 1 with every GPU faulted, 1 leaving"]
    );
}

#[test]
fn a_job_that_fits_now_is_being_placed_and_those_behind_wait_for_it() {
    let nodes = [node("n1", NodeState::Idle), node("n2", NodeState::Idle)];
    let jobs = [job("a"), job("b"), job("c")];
    assert_eq!(
        reasons(Some(2), &jobs, &nodes),
        [
            "being placed",
            "being placed",
            "waits behind 2 jobs ahead of it in cluster c1",
        ]
    );
    assert_eq!(
        reasons(Some(2), &jobs[..2], &nodes[..1]),
        [
            "being placed",
            "waits behind 1 job ahead of it in cluster c1"
        ]
    );
}

#[test]
fn being_placed_is_exactly_what_the_scheduler_places() {
    // A GPU job that does not fit reserves n1 (for when its job ends, in a
    // minute); a short job behind it backfills, and the queue says so as the
    // scheduler does it.
    let nodes = [gpu_node("n1", 2)];
    let mut b = gpu_job("b", 1);
    b.spec.max_wall_clock_time_ms = 10_000;
    let jobs = [gpu_job("big", 2), b, gpu_job("c", 1)];
    let nodes = [running(nodes[0].clone(), "r", false, &[0])];
    let placed: Vec<String> = schedule(&jobs, &nodes, 1_000_000)
        .into_iter()
        .map(|p| p.job_id)
        .collect();
    assert_eq!(placed, ["b"]);
    assert_eq!(
        reasons(Some(1), &jobs, &nodes),
        [
            "needs a node with 2 free GPUs in cluster c1: most free is 1 (n1)",
            "being placed",
            "waits behind 1 job ahead of it in cluster c1",
        ]
    );
}

#[test]
fn gpu_jobs_say_the_most_free_gpus_and_the_nodes_not_taking_jobs() {
    let mut gone = gpu_node("n4", 8);
    gone.connected = false;
    let nodes = [
        running(gpu_node("n1", 4), "r1", false, &[0, 1, 2]),
        running(gpu_node("n2", 4), "r2", false, &[0, 1, 2]),
        running(gpu_node("n3", 4), "r3", true, &[0, 1, 2, 3]),
        gone,
        node("n5", NodeState::Preparing),
    ];
    assert_eq!(
        reasons(Some(5), &[gpu_job("a", 2), gpu_job("b", 1)], &nodes),
        [
            "needs a node with 2 free GPUs in cluster c1: most free is 1 (n1), 1 preparing, 1 disconnected",
            "being placed",
        ]
    );
    assert_eq!(
        reasons(Some(1), &[gpu_job("a", 1)], &nodes[2..3]),
        ["needs a node with 1 free GPU in cluster c1: 0 idle, 1 running"]
    );
}

#[test]
fn a_gpu_count_no_node_has_is_named() {
    let nodes = [gpu_node("n1", 4), gpu_node("n2", 2)];
    assert_eq!(
        reasons(Some(2), &[gpu_job("a", 8)], &nodes),
        ["gpusPerNode 8 is more than any node of cluster c1 has (4)"]
    );
    assert_eq!(
        reasons(Some(1), &[gpu_job("a", 1)], &[node("n1", NodeState::Idle)]),
        ["gpusPerNode 1 is more than any node of cluster c1 has (0)"]
    );
}

#[test]
fn multi_node_jobs_say_how_many_nodes_they_need() {
    let mut four = job("a");
    four.spec.node_count = 4;
    let nodes = [
        node("n1", NodeState::Idle),
        node("n2", NodeState::Idle),
        node("n3", NodeState::Preparing),
    ];
    assert_eq!(
        reasons(Some(3), std::slice::from_ref(&four), &nodes),
        ["needs 4 idle nodes in cluster c1: 2 idle, 1 preparing"]
    );
    let mut two_gpus = four.clone();
    two_gpus.spec.gpus_per_node = 2;
    assert_eq!(
        reasons(
            Some(1),
            &[two_gpus],
            &[running(gpu_node("n1", 4), "r", false, &[0, 1, 2])]
        ),
        ["needs 4 nodes with 2 free GPUs in cluster c1: most free is 1 (n1)"]
    );
    let mut two = four;
    two.spec.node_count = 2;
    assert_eq!(
        reasons(Some(3), &[two], &nodes),
        ["being placed"],
        "a gang the nodes can take is placed"
    );
}

#[test]
fn a_job_kept_off_nodes_held_for_a_blocked_job_ahead_says_so() {
    // n1's two GPUs: one held for a minute. The whole-node job waits for
    // it and reserves n1; a GPU job with the default 7-day limit would hold
    // the free GPU past that, so it waits for the reserved job; one that
    // ends within the minute backfills.
    let n1 = running(gpu_node("n1", 2), "held", false, &[0]);
    let mut short = gpu_job("short", 1);
    short.spec.max_wall_clock_time_ms = 30_000;
    let jobs = [job("whole"), gpu_job("long", 1), short];
    let r = reasons(None, &jobs, &[n1]);
    assert!(r[0].starts_with("needs 1 idle node in cluster c1"), "{r:?}");
    assert!(
        r[1].contains("held for whole, ahead of it in cluster c1"),
        "{r:?}"
    );
    assert_eq!(r[2], "being placed");
}
