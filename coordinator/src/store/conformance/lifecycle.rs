//! Jobs and nodes through their states: assignment, exits, terminate, loss and removal.

use super::*;
use crate::domain::state::{JOB_LOST, JOB_TERMINATED, NODE_REMOVED};
use crate::store::StoreError;

pub async fn job_lifecycle_and_node_state(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    let (node, held) = s.register_node(reg("n1", "c"), 10).await.unwrap();
    assert_eq!(node.state, NodeState::Idle);
    assert!(node.connected);
    assert!(held.is_empty());

    let j = assign(&s, &job.id, "n1", 20).await.unwrap();
    assert_eq!(j.execution_state, ExecutionState::Running);
    assert_eq!(j.node_id.as_deref(), Some("n1"));
    let n = s.get_node("n1").await.unwrap();
    assert_eq!(n.state, NodeState::Running);
    assert_eq!(n.running_job_ids, vec![job.id.clone()]);
    // Assigning again changes nothing.
    assert!(assign(&s, &job.id, "n1", 21).await.is_none());

    let j = s
        .record_job_started(&job.id, "n1", 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.start_time, Some(30));
    assert!(j.attempt_started);
    assert!(
        s.record_job_started(&job.id, "other", 30)
            .await
            .unwrap()
            .is_none()
    );

    let j = s.finish_job(&job.id, "n1", exit(0)).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Succeeded);
    assert_eq!(j.exit_code, Some(0));
    assert_eq!(j.end_time, Some(9_000));
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
    // A repeated exit (after a reconnect) changes nothing.
    assert!(
        s.finish_job(&job.id, "n1", exit(1))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.get_job(&job.key).await.unwrap().execution_state,
        ExecutionState::Succeeded
    );
}

pub async fn terminate_paths(b: &dyn Backend) {
    let s = seeded(b).await;
    let queued = s
        .create_job(fixtures::job("w", "e", "q", "c"))
        .await
        .unwrap();
    let t = s.terminate_job(&queued.key, 50).await.unwrap();
    assert_eq!(t.execution_state, ExecutionState::Failed);
    assert_eq!(t.errors[0].code, JOB_TERMINATED);
    assert_eq!(t.exit_code, None);
    // Terminating an ended job is a no-op.
    assert_eq!(s.terminate_job(&queued.key, 60).await.unwrap(), t);

    let job = s
        .create_job(fixtures::job("w", "e", "r", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &job.id, "n1", 20).await.unwrap();
    let t = s.terminate_job(&job.key, 70).await.unwrap();
    assert_eq!(t.execution_state, ExecutionState::Terminating);
    let mut e = exit(143);
    e.terminated = true;
    let j = s.finish_job(&job.id, "n1", e).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Failed);
    assert_eq!(j.exit_code, Some(143));
    assert_eq!(j.errors[0].code, JOB_TERMINATED);
}

pub async fn lost_jobs_and_reregistration(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &job.id, "n1", 20).await.unwrap();
    s.set_node_connected("n1", false, Some(25)).await.unwrap();
    assert!(!s.get_node("n1").await.unwrap().connected);
    let (node, held) = s.register_node(reg("n1", "c"), 30).await.unwrap();
    assert_eq!(node.state, NodeState::Running);
    assert!(node.connected);
    assert_eq!(held.len(), 1);
    let j = s
        .fail_job(&job.id, "n1", BatchAiError::new(JOB_LOST, "lost"), 40)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.execution_state, ExecutionState::Failed);
    assert_eq!(j.errors[0].code, JOB_LOST);
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
    // A node id cannot move to another cluster.
    s.create_cluster(fixtures::cluster("w", "c2", 0))
        .await
        .unwrap();
    assert!(matches!(
        s.register_node(reg("n1", "c2"), 50).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert!(matches!(
        s.register_node(reg("n9", "nope"), 50).await.unwrap_err(),
        StoreError::NotFound {
            kind: "cluster",
            ..
        }
    ));
    s.disconnect_all_nodes().await.unwrap();
    assert!(!s.get_node("n1").await.unwrap().connected);
}

pub async fn node_removal_requeues_or_fails(b: &dyn Backend) {
    let s = seeded(b).await;
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &a.id, "n1", 20).await.unwrap();
    let removal = s
        .begin_node_removal("n1", DeallocationOption::Requeue, "resize down", 30)
        .await
        .unwrap();
    assert_eq!(removal.node.state, NodeState::Leaving);
    assert_eq!(removal.terminating.len(), 1);
    assert!(removal.terminating[0].requeue_on_exit);
    let leaving = s.list_leaving_nodes().await.unwrap();
    assert_eq!(leaving.len(), 1);
    assert_eq!(
        (
            leaving[0].node_id.as_str(),
            leaving[0].running_job_ids.len()
        ),
        ("n1", 1)
    );
    let mut e = exit(143);
    e.terminated = true;
    let j = s.finish_job(&a.id, "n1", e).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    assert_eq!(j.node_id, None);
    assert_eq!(j.exit_code, None);
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Leaving);
    s.remove_node("n1", 40).await.unwrap();
    assert!(s.get_node("n1").await.is_err());

    // Terminate option, node removed before the job exits.
    s.register_node(reg("n2", "c"), 50).await.unwrap();
    assign(&s, &a.id, "n2", 60).await.unwrap();
    s.begin_node_removal("n2", DeallocationOption::Terminate, "resize down", 70)
        .await
        .unwrap();
    let changed = s.remove_node("n2", 80).await.unwrap();
    assert_eq!(changed[0].execution_state, ExecutionState::Failed);
    assert_eq!(changed[0].errors[0].code, NODE_REMOVED);
}

pub async fn queued_jobs_in_creation_order(b: &dyn Backend) {
    let s = seeded(b).await;
    for n in ["z", "a", "m"] {
        s.create_job(fixtures::job("w", "e", n, "c")).await.unwrap();
    }
    for n in ["n1", "n2", "n3", "n4"] {
        s.register_node(reg(n, "c"), 10).await.unwrap();
    }
    let (_, queued) = s.schedulable().await.unwrap();
    let names: Vec<_> = queued.into_iter().map(|j| j.key.name).collect();
    assert_eq!(
        names,
        ["z", "a", "m"],
        "equal priorities keep creation order"
    );
}

pub async fn lost_nodes_become_unusable_until_they_register(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &job.id, "n1", 20).await.unwrap();
    let changed = s
        .mark_node_lost("n1", BatchAiError::new("NodeLost", "gone for 10m"), 30)
        .await
        .unwrap();
    // The cluster's deallocation option is requeue: a new attempt elsewhere.
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].execution_state, ExecutionState::Queued);
    let first = &changed[0].attempts[0];
    assert_eq!(first.outcome, Some(AttemptOutcome::Requeued));
    assert_eq!(first.requeue_reason, "node n1 lost: gone for 10m");
    assert_eq!(first.errors[0].code, JOB_LOST);
    let n = s.get_node("n1").await.unwrap();
    assert_eq!(n.state, NodeState::Unusable);
    assert_eq!(n.errors[0].code, "NodeLost");
    let (n, held) = s.register_node(reg("n1", "c"), 40).await.unwrap();
    assert_eq!(n.state, NodeState::Idle);
    assert!(n.errors.is_empty());
    assert!(held.is_empty(), "the job is no longer the node's");

    // With terminate, the job fails with JobLost.
    let terminate = ScaleSettings::Manual {
        target_node_count: 1,
        deallocation: DeallocationOption::Terminate,
    };
    s.update_cluster_scale("w", "c", terminate, 45)
        .await
        .unwrap();
    assign(&s, &job.id, "n1", 50).await.unwrap();
    let changed = s
        .mark_node_lost("n1", BatchAiError::new("NodeLost", "gone again"), 60)
        .await
        .unwrap();
    assert_eq!(changed[0].execution_state, ExecutionState::Failed);
    assert_eq!(changed[0].errors[0].code, JOB_LOST);
    assert_eq!(changed[0].attempts.len(), 2);
    assert_eq!(changed[0].attempts[1].outcome, Some(AttemptOutcome::Failed));
}

pub async fn nodes_prepare_before_they_take_jobs(b: &dyn Backend) {
    use crate::domain::node_setup::Preparation;
    use crate::domain::transition;
    let s = seeded(b).await;
    let mut r = reg("n1", "c");
    r.ready = false;
    r.step = "admin-user".into();
    let (node, _) = s.register_node(r.clone(), 10).await.unwrap();
    assert_eq!(node.state, NodeState::Preparing);
    assert_eq!(node.preparation_step, "admin-user");
    assert_eq!(node.info.ssh_port, 2222);
    assert_eq!(node.info.blob_driver, "rclone");
    assert!(!transition::is_free(&node), "a preparing node takes no job");

    let step = Preparation::Preparing {
        step: "mount afs".into(),
    };
    let node = s.report_preparation("n1", step, 20).await.unwrap();
    assert_eq!(
        (node.state, node.preparation_step.as_str()),
        (NodeState::Preparing, "mount afs")
    );
    let error = BatchAiError::new("SetupTaskFailed", "exit code 3");
    let failed = Preparation::Unusable {
        step: "setup-task".into(),
        error: error.clone(),
    };
    let node = s.report_preparation("n1", failed, 30).await.unwrap();
    assert_eq!(node.state, NodeState::Unusable);
    assert_eq!(node.errors, vec![error]);
    assert_eq!(node.preparation_step, "setup-task");
    assert_eq!(node.state_transition_time, 30);

    // Registering again prepares again, and ready makes it idle and free.
    let (node, _) = s.register_node(r, 40).await.unwrap();
    assert_eq!(node.state, NodeState::Preparing);
    assert!(node.errors.is_empty());
    let node = s
        .report_preparation("n1", Preparation::Ready, 50)
        .await
        .unwrap();
    assert_eq!(node.state, NodeState::Idle);
    assert!(node.preparation_step.is_empty());
    assert!(transition::is_free(&node));

    // A ready agent's registration is idle at once; a leaving node stays leaving.
    let (node, _) = s.register_node(reg("n1", "c"), 60).await.unwrap();
    assert_eq!(node.state, NodeState::Idle);
    s.begin_node_removal("n1", DeallocationOption::Requeue, "resize down", 70)
        .await
        .unwrap();
    let node = s
        .report_preparation("n1", Preparation::Ready, 80)
        .await
        .unwrap();
    assert_eq!(node.state, NodeState::Leaving);
    assert!(
        s.report_preparation("nope", Preparation::Ready, 90)
            .await
            .is_err()
    );
}

/// A pyTorch job of `n` nodes named `name` (every rank runs the script).
fn gang_job(name: &str, n: u32) -> Job {
    let mut j = fixtures::job("w", "e", name, "c");
    j.spec.node_count = n;
    j.spec.toolkit = fixtures::pytorch();
    j
}

pub async fn a_gang_holds_every_node_until_every_rank_is_gone(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s.create_job(gang_job("g", 3)).await.unwrap();
    for n in ["n1", "n2", "n3", "n4"] {
        s.register_node(reg(n, "c"), 10).await.unwrap();
    }
    // One busy node among the gang's: nothing of the gang is assigned.
    let solo = s
        .create_job(fixtures::job("w", "e", "solo", "c"))
        .await
        .unwrap();
    assign(&s, &solo.id, "n4", 15).await.unwrap();
    let gang = |nodes: &[&str]| {
        vec![(
            job.id.clone(),
            nodes.iter().map(|n| n.to_string()).collect(),
        )]
    };
    let out = s.assign_jobs(gang(&["n1", "n4", "n2"]), 20).await.unwrap();
    assert!(out[0].is_none());
    for n in ["n1", "n2"] {
        let node = s.get_node(n).await.unwrap();
        assert_eq!(node.state, NodeState::Idle, "{n} is untouched");
        assert!(node.running_job_ids.is_empty());
    }
    let j = s.assign_jobs(gang(&["n2", "n1", "n3"]), 20).await.unwrap()[0]
        .clone()
        .expect("the gang is assigned");
    assert_eq!(j.node_ids(), ["n2", "n1", "n3"]);
    assert_eq!(j.node_id.as_deref(), Some("n2"), "rank 0 is the first node");
    // Every node holds it, after a restart too.
    drop(s);
    let s = b.open();
    for (rank, n) in ["n2", "n1", "n3"].iter().enumerate() {
        let node = s.get_node(n).await.unwrap();
        assert_eq!(node.state, NodeState::Running, "{n}");
        assert_eq!(node.running_job_ids, vec![job.id.clone()], "{n}");
        let on = s.jobs_on_node(n).await.unwrap();
        assert_eq!(on.len(), 1, "{n}");
        assert_eq!(on[0].rank_of(n), Some(rank as u32));
    }
    // A reconnecting worker is given its rank back.
    let (_, held) = s.register_node(reg("n3", "c"), 25).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, job.id);

    for n in ["n1", "n2", "n3"] {
        s.record_job_started(&job.id, n, 30).await.unwrap().unwrap();
    }
    // The master ends: the job terminates until its workers are gone.
    let j = s.finish_job(&job.id, "n2", exit(0)).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Terminating);
    assert_eq!(j.live_node_ids(), ["n1", "n3"]);
    let mut stopped = exit(143);
    stopped.terminated = true;
    let j = s
        .finish_job(&job.id, "n1", stopped.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.execution_state, ExecutionState::Terminating);
    assert!(
        s.finish_job(&job.id, "n1", stopped.clone())
            .await
            .unwrap()
            .is_none(),
        "a repeated exit changes nothing"
    );
    let j = s.finish_job(&job.id, "n3", stopped).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Succeeded);
    assert_eq!(j.exit_code, Some(0));
    for n in ["n1", "n2", "n3"] {
        let node = s.get_node(n).await.unwrap();
        assert_eq!(node.state, NodeState::Idle, "{n} is free again");
        assert!(node.running_job_ids.is_empty(), "{n}");
        assert!(s.jobs_on_node(n).await.unwrap().is_empty(), "{n}");
    }
    assert_eq!(s.get_job(&job.key).await.unwrap(), j);
}

pub async fn a_lost_gang_node_requeues_the_whole_job(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s.create_job(gang_job("g", 2)).await.unwrap();
    for n in ["n1", "n2"] {
        s.register_node(reg(n, "c"), 10).await.unwrap();
    }
    s.assign_jobs(vec![(job.id.clone(), vec!["n1".into(), "n2".into()])], 20)
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    // Removal with requeue: the job is to go back to the queue as a whole.
    let removal = s
        .begin_node_removal("n2", DeallocationOption::Requeue, "resize down", 30)
        .await
        .unwrap();
    assert_eq!(removal.terminating.len(), 1);
    let changed = s.remove_node("n2", 40).await.unwrap();
    assert_eq!(changed[0].execution_state, ExecutionState::Terminating);
    assert_eq!(
        changed[0].live_node_ids(),
        ["n1"],
        "the master is still to stop"
    );
    let mut stopped = exit(143);
    stopped.terminated = true;
    let j = s.finish_job(&job.id, "n1", stopped).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    assert!(j.gang.is_none() && j.node_id.is_none());
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);

    // A lost node without requeue fails it, once the master is stopped.
    let terminate = ScaleSettings::Manual {
        target_node_count: 1,
        deallocation: DeallocationOption::Terminate,
    };
    s.update_cluster_scale("w", "c", terminate, 45)
        .await
        .unwrap();
    s.register_node(reg("n3", "c"), 50).await.unwrap();
    s.assign_jobs(vec![(job.id.clone(), vec!["n1".into(), "n3".into()])], 60)
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    let changed = s
        .mark_node_lost("n3", BatchAiError::new("NodeLost", "gone"), 70)
        .await
        .unwrap();
    assert_eq!(changed[0].execution_state, ExecutionState::Terminating);
    assert_eq!(s.get_node("n3").await.unwrap().state, NodeState::Unusable);
    let j = s
        .fail_job(&job.id, "n1", BatchAiError::new(JOB_LOST, "lost"), 80)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.execution_state, ExecutionState::Failed);
    assert_eq!(j.errors[0].code, JOB_LOST);
    assert!(j.errors[0].message.contains("n3"), "{:?}", j.errors);
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
}

pub async fn every_attempt_is_kept_with_where_and_how_it_ended(b: &dyn Backend) {
    let s = seeded(b).await;
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    assert!(a.attempts.is_empty(), "no attempt before an assignment");
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &a.id, "n1", 20).await.unwrap();
    s.record_job_started(&a.id, "n1", 25).await.unwrap();
    s.begin_node_removal("n1", DeallocationOption::Requeue, "preempted", 30)
        .await
        .unwrap();
    let mut e = exit(143);
    e.terminated = true;
    e.end_time = 35;
    let j = s.finish_job(&a.id, "n1", e).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    let first = Attempt {
        number: 1,
        node_ids: vec!["n1".into()],
        assigned_time: 20,
        start_time: Some(25),
        end_time: Some(35),
        exit_code: Some(143),
        outcome: Some(AttemptOutcome::Requeued),
        requeue_reason: "preempted".into(),
        errors: Vec::new(),
    };
    assert_eq!(j.attempts, std::slice::from_ref(&first));
    s.remove_node("n1", 40).await.unwrap();
    s.register_node(reg("n2", "c"), 50).await.unwrap();
    assign(&s, &a.id, "n2", 60).await.unwrap();
    s.record_job_started(&a.id, "n2", 61).await.unwrap();
    let mut e = exit(0);
    e.end_time = 70;
    s.finish_job(&a.id, "n2", e).await.unwrap().unwrap();
    let j = s.get_job_by_id(&a.id).await.unwrap();
    assert_eq!(j.execution_state, ExecutionState::Succeeded);
    assert_eq!(
        j.attempts,
        [
            first,
            Attempt {
                number: 2,
                node_ids: vec!["n2".into()],
                assigned_time: 60,
                start_time: Some(61),
                end_time: Some(70),
                exit_code: Some(0),
                outcome: Some(AttemptOutcome::Succeeded),
                ..Attempt::default()
            }
        ],
        "kept across a reopen too"
    );
    drop(s);
    let s = b.open();
    assert_eq!(s.get_job_by_id(&a.id).await.unwrap().attempts, j.attempts);
}

pub async fn the_cluster_record_tells_every_size_change_and_why(b: &dyn Backend) {
    use crate::domain::cluster_events::ClusterEventKind as K;
    let s = seeded(b).await;
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &a.id, "n1", 20).await.unwrap();
    let auto = ScaleSettings::AutoScale {
        minimum_node_count: 0,
        maximum_node_count: 4,
        initial_node_count: 0,
    };
    s.update_cluster_scale("w", "c", auto, 25).await.unwrap();
    s.set_autoscale_target("w", "c", 3, "1 job queued needs 3 nodes", 26)
        .await
        .unwrap();
    s.set_autoscale_target("w", "c", 3, "unchanged: not recorded", 27)
        .await
        .unwrap();
    s.begin_node_removal("n1", DeallocationOption::Terminate, "cluster target 0", 30)
        .await
        .unwrap();
    s.remove_node("n1", 40).await.unwrap();
    s.register_node(reg("n2", "c"), 50).await.unwrap();
    s.mark_node_lost("n2", BatchAiError::new("NodeLost", "gone for 10m"), 60)
        .await
        .unwrap();
    let all = s
        .list_cluster_events("w", "c", 0, 100, false)
        .await
        .unwrap();
    let kinds: Vec<K> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            K::Created,
            K::NodeJoined,
            K::Resize,
            K::Autoscale,
            K::NodeLeaving,
            K::NodeRemoved,
            K::NodeJoined,
            K::NodeLost
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let autoscale = &all[3];
    assert_eq!(autoscale.message, "1 job queued needs 3 nodes");
    assert_eq!((autoscale.target, autoscale.time), (Some((1, 3)), 26));
    assert_eq!(all[4].node_id.as_deref(), Some("n1"));
    assert!(
        all[4].message.contains("cluster target 0") && all[4].message.contains("terminate"),
        "{}",
        all[4].message
    );
    assert!(
        all[5].message.contains("job w/e/a failed"),
        "{}",
        all[5].message
    );
    // Paging: after a seq, and the newest few in order.
    let after = s
        .list_cluster_events("w", "c", all[5].seq, 100, false)
        .await
        .unwrap();
    assert_eq!(after, all[6..]);
    let newest = s.list_cluster_events("w", "c", 0, 2, true).await.unwrap();
    assert_eq!(newest, all[6..]);
    assert!(matches!(
        s.list_cluster_events("w", "nope", 0, 10, false).await,
        Err(StoreError::NotFound { .. })
    ));
    // Deleted with its cluster: a new cluster of the name starts empty.
    s.delete_cluster("w", "c", 70).await.unwrap();
    s.create_cluster(fixtures::cluster("w", "c", 1))
        .await
        .unwrap();
    let fresh = s
        .list_cluster_events("w", "c", 0, 100, false)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].kind, K::Created);
}

pub async fn only_low_priority_nodes_are_preempted_and_their_jobs_requeued(b: &dyn Backend) {
    use crate::domain::cluster_events::ClusterEventKind;
    let s = seeded(b).await;
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &a.id, "n1", 20).await.unwrap();
    let before = s.get_node("n1").await.unwrap();
    let refused = s.preempt_node("n1", "spot", 30).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.starts_with("cluster.vm_priority: ")),
        "{refused}"
    );
    assert_eq!(s.get_node("n1").await.unwrap(), before, "nothing changed");

    let mut low = fixtures::cluster("w", "low", 1);
    low.spec.vm_priority = VmPriority::LowPriority;
    s.create_cluster(low).await.unwrap();
    let b_job = s
        .create_job(fixtures::job("w", "e", "b", "low"))
        .await
        .unwrap();
    s.register_node(reg("l1", "low"), 10).await.unwrap();
    assign(&s, &b_job.id, "l1", 20).await.unwrap();
    let removal = s.preempt_node("l1", "spot", 30).await.unwrap();
    assert_eq!(removal.node.state, NodeState::Leaving);
    assert_eq!(removal.terminating.len(), 1);
    assert!(removal.terminating[0].requeue_on_exit);
    assert_eq!(
        removal.terminating[0].attempts[0].requeue_reason,
        "preempted: spot"
    );
    assert!(matches!(
        s.preempt_node("l1", "again", 31).await,
        Err(StoreError::Conflict(_))
    ));
    let events = s
        .list_cluster_events("w", "low", 0, 100, false)
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.kind, ClusterEventKind::NodePreempted);
    assert_eq!(last.node_id.as_deref(), Some("l1"));
}
