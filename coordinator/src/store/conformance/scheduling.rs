//! Concurrent writes, the scheduler's reads and a pass's assignments, heartbeats.

use super::*;
use crate::store::StoreError;

pub async fn concurrent_writes_commit_together_and_a_failure_poisons_none(b: &dyn Backend) {
    let s = seeded(b).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Every 8th request names a missing experiment: it must fail alone.
            let exp = if i % 8 == 0 { "missing" } else { "e" };
            s.create_job(fixtures::job("w", exp, &format!("j{i:02}"), "c"))
                .await
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::NotFound { .. }) => assert_eq!(i % 8, 0),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 56);
    // A duplicate inside a group fails alone too, and changes nothing.
    let dup = s.create_job(fixtures::job("w", "e", "j01", "c")).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists { .. })));
    drop(s);
    let s = b.open();
    let jobs = s.list_jobs("w", "e", &page(0, "")).await.unwrap();
    assert_eq!(jobs.items.len(), 56);
}

pub async fn schedulable_reads_idle_nodes_and_as_many_jobs_in_priority_order(b: &dyn Backend) {
    let s = seeded(b).await;
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    let (idle, queued) = s.schedulable().await.unwrap();
    assert!(
        idle.is_empty() && queued.is_empty(),
        "nothing queued: nothing read"
    );
    for (name, p) in [
        ("low", JobPriority::Low),
        ("n1", JobPriority::Normal),
        ("high", JobPriority::High),
        ("n2", JobPriority::Normal),
    ] {
        let mut j = fixtures::job("w", "e", name, "c");
        j.spec.scheduling_priority = p;
        s.create_job(j).await.unwrap();
    }
    let lookahead = crate::store::BACKFILL_LOOKAHEAD;
    for i in 0..lookahead + 8 {
        s.create_job(fixtures::job("w", "e", &format!("f{i:02}"), "c"))
            .await
            .unwrap();
    }
    let names = |v: &[Job]| v.iter().map(|j| j.key.name.clone()).collect::<Vec<_>>();
    let (idle, queued) = s.schedulable().await.unwrap();
    assert_eq!(idle.len(), 1);
    let got = names(&queued);
    assert_eq!(got.len(), 1 + lookahead, "room for one, and the lookahead");
    assert_eq!(got[..4], ["high", "n1", "n2", "f00"]);
    for n in ["n2", "n3", "n4", "n5"] {
        s.register_node(reg(n, "c"), 10).await.unwrap();
    }
    let (idle, queued) = s.schedulable().await.unwrap();
    assert_eq!(idle.len(), 5);
    let got = names(&queued);
    assert_eq!(got.len(), 5 + lookahead);
    assert_eq!(got[..3], ["high", "n1", "n2"]);
    assert_eq!(got.last().map(String::as_str), Some("f33"));
    assert!(!got.contains(&"low".to_string()), "low comes last: {got:?}");
}

pub async fn idle_nodes_and_assigning_a_pass_at_once(b: &dyn Backend) {
    let s = seeded(b).await;
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    let b = s
        .create_job(fixtures::job("w", "e", "b", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.register_node(reg("n2", "c"), 10).await.unwrap();
    let (idle, queued) = s.schedulable().await.unwrap();
    let idle: Vec<String> = idle.into_iter().map(|n| n.node_id).collect();
    assert_eq!(idle, ["n1", "n2"]);
    assert_eq!(queued.len(), 2);
    let out = s
        .assign_jobs(
            vec![
                (a.id.clone(), vec!["n1".into()]),
                (b.id.clone(), vec!["n1".into()]), // n1 is taken by then
                (b.id.clone(), vec!["n2".into()]),
            ],
            20,
        )
        .await
        .unwrap();
    assert!(out[0].is_some() && out[1].is_none() && out[2].is_some());
    let nodes = s.list_workspace_nodes("w").await.unwrap();
    assert_eq!(nodes[0].running_job_ids, vec![a.id]);
    assert_eq!(nodes[1].running_job_ids, vec![b.id]);
    let c = s
        .create_job(fixtures::job("w", "e", "c", "c"))
        .await
        .unwrap();
    let (busy, queued) = s.schedulable().await.unwrap();
    assert_eq!(busy.len(), 2, "running nodes are read, for reservations");
    assert!(busy.iter().all(|n| crate::domain::gpus::room(n) == 0));
    assert!(queued.is_empty(), "no room: no queued job read");
    s.finish_job(&nodes[0].running_job_ids[0], "n1", exit(0))
        .await
        .unwrap()
        .unwrap();
    let (nodes, queued) = s.schedulable().await.unwrap();
    let idle: Vec<&str> = nodes
        .iter()
        .filter(|n| crate::domain::gpus::room(n) > 0)
        .map(|n| n.node_id.as_str())
        .collect();
    assert_eq!(idle, ["n1"]);
    assert_eq!(queued[0].id, c.id);
}

/// Node `id` of cluster `c` with `n` GPUs `GPU-0`...
fn gpu_reg(id: &str, n: u32) -> NodeRegistration {
    let mut r = reg(id, "c");
    r.info.gpus = (0..n)
        .map(|i| crate::domain::gpus::Gpu {
            index: i,
            uuid: format!("GPU-{i}"),
            name: "H100".into(),
            memory_bytes: 80 << 30,
            ..Default::default()
        })
        .collect();
    r
}

pub async fn a_gpu_fault_terminates_its_holder_and_outlives_a_reregistration(b: &dyn Backend) {
    use crate::domain::gpus::{GPU_FAULT, GpuEvent, GpuEventKind, HealthChange};
    let s = seeded(b).await;
    s.register_node(gpu_reg("g1", 2), 10).await.unwrap();
    let mut j = fixtures::job("w", "e", "a", "c");
    j.spec.gpus_per_node = 1;
    let a = s.create_job(j).await.unwrap();
    assign(&s, &a.id, "g1", 20).await.unwrap();
    let ev = |uuid: &str, kind, code, fault| GpuEvent {
        node_id: "g1".into(),
        uuid: uuid.into(),
        index: 0,
        time: 30,
        kind,
        code,
        fault,
        message: format!("XID {code}"),
        job_id: None,
    };
    // An application XID: history only.
    let out = s
        .record_gpu_event(ev("GPU-0", GpuEventKind::Xid, 13, false))
        .await
        .unwrap();
    assert_eq!(out.change, HealthChange::Unchanged);
    assert!(out.terminated.is_none());
    // A fault: the GPU is out, its holder terminating with GpuFault.
    let out = s
        .record_gpu_event(ev("GPU-0", GpuEventKind::Xid, 79, true))
        .await
        .unwrap();
    assert_eq!(out.change, HealthChange::Faulted);
    let t = out.terminated.expect("the holder");
    assert_eq!(t.execution_state, ExecutionState::Terminating);
    assert_eq!(t.errors[0].code, GPU_FAULT);
    assert!(out.node.info.gpus[0].fault.is_some());
    // It ends: failed with GpuFault first, JobTerminated after.
    let mut e = exit(143);
    e.terminated = true;
    let done = s.finish_job(&a.id, "g1", e).await.unwrap().unwrap();
    assert_eq!(done.execution_state, ExecutionState::Failed);
    assert_eq!(
        done.errors
            .iter()
            .map(|e| e.code.as_str())
            .collect::<Vec<_>>(),
        [GPU_FAULT, crate::domain::state::JOB_TERMINATED]
    );
    // A restart of its agent (and of the store) keeps the fault.
    let s = b.open();
    s.register_node(gpu_reg("g1", 2), 40).await.unwrap();
    let node = s.get_node("g1").await.unwrap();
    assert!(node.info.gpus[0].fault.is_some());
    assert_eq!(crate::domain::gpus::room(&node), 1);
    // Cleared by UUID or index; a healthy GPU or an unknown one changes nothing.
    let node = s.clear_gpu_fault("g1", "0", "test", 50).await.unwrap();
    assert!(node.info.gpus[0].fault.is_none());
    s.clear_gpu_fault("g1", "GPU-1", "test", 60).await.unwrap();
    assert!(s.clear_gpu_fault("g1", "GPU-7", "test", 60).await.is_err());
    let history = s.list_gpu_events("w", "c", None).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| (e.kind, e.code, e.job_id.clone()))
            .collect::<Vec<_>>(),
        [
            (GpuEventKind::Xid, 13, Some(a.id.clone())),
            (GpuEventKind::Xid, 79, Some(a.id.clone())),
            (GpuEventKind::Cleared, 0, None),
        ]
    );
    assert_eq!(
        s.list_gpu_events("w", "c", Some("g2")).await.unwrap().len(),
        0
    );
    assert!(s.list_gpu_events("w", "nope", None).await.is_err());
    // The history goes with its node.
    s.remove_node("g1", 70).await.unwrap();
    s.register_node(gpu_reg("g1", 2), 80).await.unwrap();
    assert!(s.list_gpu_events("w", "c", None).await.unwrap().is_empty());
}

pub async fn gpu_jobs_share_a_node_with_disjoint_gpus_kept_in_their_records(b: &dyn Backend) {
    let s = seeded(b).await;
    s.register_node(gpu_reg("g1", 4), 10).await.unwrap();
    let gpu_job = |name: &str, gpus: u32| {
        let mut j = fixtures::job("w", "e", name, "c");
        j.spec.gpus_per_node = gpus;
        j
    };
    let a = s.create_job(gpu_job("a", 2)).await.unwrap();
    let b2 = s.create_job(gpu_job("b", 2)).await.unwrap();
    let whole = s.create_job(gpu_job("whole", 0)).await.unwrap();
    let (nodes, queued) = s.schedulable().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(queued.len(), 3, "room for four GPU jobs, three queued");
    let out = s
        .assign_jobs(
            vec![
                (a.id.clone(), vec!["g1".into()]),
                (whole.id.clone(), vec!["g1".into()]), // taken by a GPU job
                (b2.id.clone(), vec!["g1".into()]),
            ],
            20,
        )
        .await
        .unwrap();
    assert!(out[0].is_some() && out[1].is_none() && out[2].is_some());
    let a = s.get_job_by_id(&a.id).await.unwrap();
    let b2 = s.get_job_by_id(&b2.id).await.unwrap();
    assert_eq!(a.gpu_uuids, ["GPU-0", "GPU-1"]);
    assert_eq!(b2.gpu_uuids, ["GPU-2", "GPU-3"]);
    let node = s.get_node("g1").await.unwrap();
    assert_eq!(node.state, NodeState::Running);
    assert_eq!(node.holdings.len(), 2);
    assert_eq!(
        crate::domain::gpus::holder(&node, "GPU-3"),
        Some(b2.id.as_str())
    );
    let (nodes, _) = s.schedulable().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(crate::domain::gpus::room(&nodes[0]), 0, "every GPU is held");
    assert!(
        nodes[0].holdings.iter().all(|h| h.ends_by > 20),
        "holdings say when they end at the latest: {:?}",
        nodes[0].holdings
    );
    // One ends: its GPUs are free for a GPU job; the whole-node job still waits.
    s.finish_job(&a.id, "g1", exit(0)).await.unwrap().unwrap();
    let (nodes, queued) = s.schedulable().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        queued
            .iter()
            .map(|j| j.key.name.as_str())
            .collect::<Vec<_>>(),
        ["whole"]
    );
    let out = s
        .assign_jobs(vec![(whole.id.clone(), vec!["g1".into()])], 30)
        .await
        .unwrap();
    assert!(out[0].is_none(), "a whole-node job waits for an empty node");
    let one = s.create_job(gpu_job("one", 1)).await.unwrap();
    let out = s
        .assign_jobs(vec![(one.id.clone(), vec!["g1".into()])], 40)
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().gpu_uuids, ["GPU-0"]);
    s.finish_job(&b2.id, "g1", exit(0)).await.unwrap().unwrap();
    s.finish_job(&one.id, "g1", exit(0)).await.unwrap().unwrap();
    let out = s
        .assign_jobs(vec![(whole.id.clone(), vec!["g1".into()])], 50)
        .await
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap().gpu_uuids,
        ["GPU-0", "GPU-1", "GPU-2", "GPU-3"],
        "a whole-node job gets every GPU"
    );
}

pub async fn state_counts_group_jobs_and_nodes_by_cluster_and_state(b: &dyn Backend) {
    let s = seeded(b).await;
    assert_eq!(
        s.state_counts().await.unwrap(),
        crate::store::StateCounts::default()
    );
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    s.create_job(fixtures::job("w", "e", "b", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.register_node(reg("n2", "c"), 10).await.unwrap();
    s.assign_jobs(vec![(a.id.clone(), vec!["n1".into()])], 20)
        .await
        .unwrap();
    let c = s.state_counts().await.unwrap();
    let row = |st: &str, n: u64| ("w".to_string(), "c".to_string(), st.to_string(), n);
    assert_eq!(c.jobs, vec![row("queued", 1), row("running", 1)]);
    assert_eq!(c.nodes, vec![row("idle", 1), row("running", 1)]);
    assert_eq!(c.active.len(), 1);
    assert_eq!(c.active[0].id, a.id);
}

pub async fn the_last_heartbeat_is_stored_on_disconnect_never_moving_back(b: &dyn Backend) {
    let s = seeded(b).await;
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.set_node_connected("n1", false, Some(50)).await.unwrap();
    assert_eq!(
        s.get_node("n1").await.unwrap().last_heartbeat_time,
        Some(50)
    );
    s.set_node_connected("n1", false, Some(40)).await.unwrap();
    s.set_node_connected("n1", false, None).await.unwrap();
    assert_eq!(
        s.get_node("n1").await.unwrap().last_heartbeat_time,
        Some(50)
    );
}

pub async fn cluster_queue_reads_a_clusters_nodes_and_queued_jobs_in_scheduling_order(
    b: &dyn Backend,
) {
    let s = seeded(b).await;
    s.create_cluster(fixtures::cluster("w", "other", 0))
        .await
        .unwrap();
    let q = s.cluster_queue("w", "c").await.unwrap();
    assert_eq!(q.target_node_count, Some(1));
    assert!(q.nodes.is_empty() && q.queued.is_empty());
    for (name, cluster, p) in [
        ("low", "c", JobPriority::Low),
        ("n1", "c", JobPriority::Normal),
        ("elsewhere", "other", JobPriority::High),
        ("high", "c", JobPriority::High),
        ("n2", "c", JobPriority::Normal),
        ("n3", "c", JobPriority::Normal),
    ] {
        let mut j = fixtures::job("w", "e", name, cluster);
        j.spec.scheduling_priority = p;
        s.create_job(j).await.unwrap();
    }
    s.register_node(reg("m2", "c"), 10).await.unwrap();
    s.register_node(reg("m1", "c"), 10).await.unwrap();
    s.register_node(reg("x1", "other"), 10).await.unwrap();
    let q = s.cluster_queue("w", "c").await.unwrap();
    let names: Vec<&str> = q.queued.iter().map(|j| j.key.name.as_str()).collect();
    assert_eq!(names, ["high", "n1", "n2", "n3", "low"]);
    let ids: Vec<&str> = q.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    // A running job leaves the queue and shows on its node.
    let high = q.queued[0].id.clone();
    assert!(assign(&s, &high, "m1", 20).await.is_some());
    let n1 = q.queued[1].id.clone();
    s.terminate_job(&q.queued[1].key, 21).await.unwrap();
    let q = s.cluster_queue("w", "c").await.unwrap();
    let names: Vec<&str> = q.queued.iter().map(|j| j.key.name.as_str()).collect();
    assert_eq!(
        names,
        ["n2", "n3", "low"],
        "running and ended jobs are not queued"
    );
    assert_eq!(q.nodes[0].running_job_ids, [high]);
    assert_eq!(q.nodes[0].state, NodeState::Running);
    assert!(!q.queued.iter().any(|j| j.id == n1));
    assert_eq!(
        s.cluster_queue("w", "missing").await.unwrap(),
        crate::store::ClusterQueue::default(),
        "an unknown cluster has no queue"
    );
}
