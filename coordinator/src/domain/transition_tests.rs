//! Every transition from every job state.

use super::*;
use crate::domain::fixtures;
use crate::domain::spec::Toolkit;
use crate::domain::state::{CLUSTER_DELETED, JOB_LOST, JOB_TERMINATED};
use ExecutionState::*;

/// A job in `state` on node `n1` (if active), with a past attempt's traces.
fn job_in(state: ExecutionState) -> Job {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.id = "j1".into();
    j.execution_state = state;
    j.execution_state_transition_time = 10;
    if state != Queued {
        j.node_id = Some("n1".into());
        j.attempt_started = true;
        j.start_time = Some(11);
    }
    if state.is_ended() {
        j.end_time = Some(12);
        j.exit_code = Some(3);
    }
    j
}

fn idle(id: &str) -> Node {
    fixtures::node(id, "w", "c", NodeState::Idle)
}

fn exit(code: i32, terminated: bool) -> JobExit {
    JobExit {
        end_time: 50,
        exit_code: code,
        error: None,
        terminated,
        metrics: None,
    }
}

fn err() -> BatchAiError {
    BatchAiError::new(CLUSTER_DELETED, "gone")
}

#[test]
fn transition_follows_the_state_machine() {
    for from in ExecutionState::ALL {
        for to in ExecutionState::ALL {
            let r = transition(job_in(from), to, 99);
            if from == to {
                let j = r.unwrap();
                assert_eq!(j.execution_state_transition_time, 10, "{from:?} → itself");
            } else if from.can_become(to) {
                let j = r.unwrap();
                assert_eq!(
                    (j.execution_state, j.execution_state_transition_time),
                    (to, 99)
                );
            } else {
                assert_eq!(
                    r.unwrap_err(),
                    TransitionError::Job {
                        job: "j1".into(),
                        from: from.as_str(),
                        to: to.as_str()
                    }
                );
            }
        }
    }
}

#[test]
fn requeue_only_from_active_and_clears_the_attempt() {
    for from in ExecutionState::ALL {
        let mut j = job_in(from);
        j.requeue_on_exit = true;
        j.errors.push(err());
        j.exit_code = Some(1);
        j.end_time = Some(40);
        let r = requeue(j, 60);
        if from.is_active() {
            let j = r.unwrap();
            assert_eq!(j.execution_state, Queued);
            assert_eq!(j.execution_state_transition_time, 60);
            assert_eq!(j.node_id, None);
            assert!(!j.attempt_started && !j.requeue_on_exit);
            assert_eq!((j.exit_code, j.end_time), (None, None));
            assert!(j.errors.is_empty());
        } else {
            assert!(r.is_err(), "{from:?}");
        }
    }
}

#[test]
fn assign_needs_a_queued_job_and_an_unoccupied_node_of_its_cluster() {
    for from in ExecutionState::ALL {
        let r = assign(job_in(from), &idle("n2"), 70);
        if from == Queued {
            let j = r.unwrap();
            assert_eq!(j.execution_state, Running);
            assert_eq!(j.node_id.as_deref(), Some("n2"));
            assert!(!j.attempt_started && !j.requeue_on_exit);
        } else {
            assert!(r.is_err(), "{from:?}");
        }
    }
    let mut busy = idle("n2");
    busy.running_job_ids.push("other".into());
    let other_cluster = fixtures::node("n3", "w", "c2", NodeState::Idle);
    let other_ws = fixtures::node("n4", "w2", "c", NodeState::Idle);
    for n in [busy, other_cluster, other_ws] {
        assert!(matches!(
            assign(job_in(Queued), &n, 70),
            Err(TransitionError::NodeNotFree { .. })
        ));
    }
    for s in NodeState::ALL {
        let n = fixtures::node("n5", "w", "c", s);
        assert_eq!(assign(job_in(Queued), &n, 70).is_ok(), s == NodeState::Idle);
    }
}

#[test]
fn started_only_while_active() {
    for from in ExecutionState::ALL {
        let mut j = job_in(from);
        j.attempt_started = false;
        let r = started(j, 80);
        if from.is_active() {
            let j = r.unwrap();
            assert_eq!(j.start_time, Some(80));
            assert!(j.attempt_started);
        } else {
            assert!(r.is_err(), "{from:?}");
        }
    }
}

#[test]
fn finish_from_every_state() {
    for from in ExecutionState::ALL {
        let r = finish(job_in(from), &exit(0, false));
        if from.is_active() {
            let j = r.unwrap();
            assert_eq!(j.execution_state, Succeeded);
            assert_eq!((j.exit_code, j.end_time), (Some(0), Some(50)));
        } else {
            assert!(r.is_err(), "{from:?}");
        }
    }
    let j = finish(job_in(Terminating), &exit(143, true)).unwrap();
    assert_eq!(j.execution_state, Failed);
    assert_eq!(j.errors[0].code, JOB_TERMINATED);
    let j = finish(job_in(Running), &exit(2, false)).unwrap();
    assert_eq!((j.execution_state, j.exit_code), (Failed, Some(2)));

    // To be requeued: back in the queue whatever the exit.
    let mut t = job_in(Terminating);
    t.requeue_on_exit = true;
    let j = finish(t, &exit(143, true)).unwrap();
    assert_eq!(j.execution_state, Queued);
    assert_eq!((j.node_id, j.exit_code, j.end_time), (None, None, None));
}

#[test]
fn end_without_exit_from_every_state() {
    for from in ExecutionState::ALL {
        let r = end_without_exit(job_in(from), err(), 90);
        if from.is_ended() {
            assert!(r.is_err(), "{from:?}");
        } else {
            let j = r.unwrap();
            assert_eq!((j.execution_state, j.end_time), (Failed, Some(90)));
            assert_eq!(j.errors, vec![err()]);
        }
        let mut j = job_in(from);
        j.requeue_on_exit = true;
        let r = end_without_exit(j, err(), 90);
        if from.is_active() {
            assert_eq!(r.unwrap().execution_state, Queued);
        } else if from == Queued {
            assert_eq!(r.unwrap().execution_state, Failed);
        } else {
            assert!(r.is_err());
        }
    }
}

#[test]
fn terminate_from_every_state() {
    for from in ExecutionState::ALL {
        let mut j = job_in(from);
        j.requeue_on_exit = from.is_active();
        let before = j.clone();
        let j = terminate(j, 100).unwrap();
        match from {
            Queued => {
                assert_eq!((j.execution_state, j.end_time), (Failed, Some(100)));
                assert_eq!(j.errors[0].code, JOB_TERMINATED);
            }
            Running | Terminating => {
                assert_eq!(j.execution_state, Terminating);
                assert!(!j.requeue_on_exit, "a user's terminate is not requeued");
                let t = if from == Running { 100 } else { 10 };
                assert_eq!(j.execution_state_transition_time, t);
            }
            Succeeded | Failed => assert_eq!(j, before),
        }
    }
}

#[test]
fn node_removal_per_option_and_state() {
    use DeallocationOption::*;
    for option in [Requeue, Terminate, WaitForJobCompletion] {
        for from in ExecutionState::ALL {
            let r = on_node_removal(job_in(from), option, "resize down", 110).unwrap();
            if option != WaitForJobCompletion && from == Running {
                let j = r.unwrap();
                assert_eq!(j.execution_state, Terminating);
                assert_eq!(j.requeue_on_exit, option == Requeue);
            } else {
                assert!(r.is_none(), "{option:?} {from:?}");
            }
        }
    }
}

#[test]
fn removed_and_lost_nodes_end_or_requeue_their_jobs() {
    use DeallocationOption::*;
    let j = on_node_removed(job_in(Running), "n1", 120).unwrap();
    assert_eq!(j.execution_state, Failed);
    assert_eq!(j.errors[0].code, NODE_REMOVED);
    assert!(j.errors[0].message.contains("n1"));

    let cause = BatchAiError::new("NodeLost", "away");
    let j = on_node_lost(job_in(Terminating), "n1", &cause, Requeue, 130).unwrap();
    assert_eq!(j.execution_state, Failed, "a terminate wins over a requeue");
    assert_eq!(j.errors[0].code, JOB_LOST);
    assert!(j.errors[0].message.contains("away"));

    let mut r = job_in(Terminating);
    r.requeue_on_exit = true;
    assert_eq!(
        on_node_lost(r, "n1", &cause, Terminate, 130)
            .unwrap()
            .execution_state,
        Queued
    );
    // A running job follows the cluster's option: requeue runs it again (the
    // attempt says why); terminate and waitforjobcompletion fail it.
    let j = on_node_lost(job_in(Running), "n1", &cause, Requeue, 130).unwrap();
    assert_eq!(j.execution_state, Queued);
    for option in [Terminate, WaitForJobCompletion] {
        let j = on_node_lost(job_in(Running), "n1", &cause, option, 130).unwrap();
        assert_eq!(
            (j.execution_state, j.errors[0].code.as_str()),
            (Failed, JOB_LOST)
        );
    }
    for s in NodeState::ALL {
        let want = if s == NodeState::Leaving {
            NodeState::Leaving
        } else {
            NodeState::Unusable
        };
        assert_eq!(node_lost(s), want);
    }
}

#[test]
fn free_node_rule() {
    let job = job_in(Queued);
    for s in NodeState::ALL {
        for connected in [false, true] {
            for busy in [false, true] {
                let mut n = fixtures::node("n", "w", "c", s);
                n.connected = connected;
                if busy {
                    n.running_job_ids.push("x".into());
                }
                // A node running a whole-node job (no GPUs) has no room.
                let free = s == NodeState::Idle && connected && !busy;
                assert_eq!(is_free(&n), free, "{s:?} {connected} {busy}");
                assert_eq!(is_unoccupied(&n), s == NodeState::Idle && !busy);
                assert_eq!(n.connected && cannot_take(&n, &job).is_none(), free);
                let mut other = n.clone();
                other.cluster = "c2".into();
                assert!(cannot_take(&other, &job).is_some());
            }
        }
    }
}

#[test]
fn node_moves_follow_the_node_state_machine() {
    for from in NodeState::ALL {
        for to in NodeState::ALL {
            let n = fixtures::node("n", "w", "c", from);
            match node_to(&n, to) {
                Ok(s) => {
                    assert!(from.can_become(to));
                    assert_eq!(s, to);
                }
                Err(e) => {
                    assert!(!from.can_become(to));
                    assert_eq!(
                        e,
                        TransitionError::Node {
                            node: "n".into(),
                            from: from.as_str(),
                            to: to.as_str()
                        }
                    );
                }
            }
        }
        assert!(node_to(&fixtures::node("n", "w", "c", from), node_lost(from)).is_ok());
    }
}

/// A queued job of `n` nodes with `toolkit`, and idle nodes n1..=n`n`.
fn gang_of(n: u32, toolkit: Toolkit) -> (Job, Vec<Node>) {
    let mut j = job_in(Queued);
    j.spec.node_count = n;
    j.spec.toolkit = toolkit;
    let nodes = (1..=n).map(|i| idle(&format!("n{i}"))).collect();
    (j, nodes)
}

use fixtures::pytorch;

fn assigned_gang(n: u32, toolkit: Toolkit) -> Job {
    let (j, nodes) = gang_of(n, toolkit);
    let refs: Vec<&Node> = nodes.iter().collect();
    assign_gang(j, &refs, 70).unwrap()
}

#[test]
fn a_gang_starts_on_all_its_nodes_or_none() {
    let (j, nodes) = gang_of(3, pytorch());
    let refs: Vec<&Node> = nodes.iter().collect();
    let g = assign_gang(j.clone(), &refs, 70).unwrap();
    assert_eq!(g.execution_state, Running);
    assert_eq!(g.node_id.as_deref(), Some("n1"), "rank 0 is the master");
    assert_eq!(g.node_ids(), ["n1", "n2", "n3"]);
    assert_eq!(g.rank_of("n3"), Some(2));
    assert_eq!(g.rank_of("n9"), None);
    let gang = g.gang.as_ref().unwrap();
    assert!(
        gang.ranks
            .iter()
            .all(|r| r.launched && !r.ended && !r.started)
    );
    assert!(gang.end.is_none());

    // Too few nodes, a node twice, or one busy node: nothing assigned.
    assert!(assign_gang(j.clone(), &refs[..2], 70).is_err());
    assert!(matches!(
        assign_gang(j.clone(), &[refs[0], refs[1], refs[0]], 70),
        Err(TransitionError::NodeNotFree { .. })
    ));
    let mut busy = nodes[2].clone();
    busy.running_job_ids.push("other".into());
    assert!(matches!(
        assign_gang(j, &[refs[0], refs[1], &busy], 70),
        Err(TransitionError::NodeNotFree { .. })
    ));

    // A custom toolkit runs on the master only: the other ranks hold their
    // nodes but have no process to wait for: a TensorFlow job of 3 nodes
    // with one worker and one ps runs nothing on rank 1.
    let c = assigned_gang(3, fixtures::tensorflow(1, 1));
    let ranks = &c.gang.as_ref().unwrap().ranks;
    assert!(ranks[0].launched && !ranks[0].ended);
    assert!(!ranks[1].launched && ranks[1].ended);
    assert!(ranks[2].launched && !ranks[2].ended);
    assert_eq!(c.live_node_ids(), ["n1", "n3"], "two processes");
    assert_eq!(c.node_ids(), ["n1", "n2", "n3"], "every node is held");
    // A custom job's other ranks serve its MPI launches.
    let c = assigned_gang(
        2,
        Toolkit::Custom {
            command_line: "x".into(),
        },
    );
    assert!(c.gang.as_ref().unwrap().ranks.iter().all(|r| r.launched));
    assert!(
        !c.gang.as_ref().unwrap().token.is_empty(),
        "a token per attempt"
    );
    // One node is not a gang.
    assert!(assigned_gang(1, pytorch()).gang.is_none());
}

#[test]
fn a_gang_starts_with_its_first_rank() {
    let g = assigned_gang(3, pytorch());
    let g = started_on(g, "n2", 90).unwrap();
    let g = started_on(g, "n1", 80).unwrap();
    let g = started_on(g, "n3", 95).unwrap();
    assert_eq!(g.start_time, Some(80));
    assert!(g.started_on("n2") && g.attempt_started);
    assert!(!g.started_on("n9"));
}

#[test]
fn a_gang_ends_with_its_master_once_every_rank_is_gone() {
    let g = assigned_gang(3, pytorch());
    // A worker ending 0 before its master changes nothing else.
    let g = finish_on(g, "n2", &exit(0, false)).unwrap();
    assert_eq!(g.execution_state, Running);
    // The same rank's exit again is refused (it already ended).
    assert!(finish_on(g.clone(), "n2", &exit(0, false)).is_err());
    assert!(finish_on(g.clone(), "n9", &exit(0, false)).is_err());
    // The master's exit decides the end; rank 2 is still to be stopped.
    let g = finish_on(g, "n1", &exit(0, false)).unwrap();
    assert_eq!(g.execution_state, Terminating);
    assert_eq!(g.live_node_ids(), ["n3"]);
    // Stopped by the terminate: the job still ends as its master did.
    let g = finish_on(g, "n3", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Succeeded);
    assert_eq!(g.exit_code, Some(0));
    assert_eq!(g.end_time, Some(50));
    assert!(g.errors.is_empty(), "{:?}", g.errors);
    assert!(g.live_node_ids().is_empty());
}

#[test]
fn a_rank_failing_alone_fails_the_gang() {
    let g = assigned_gang(3, pytorch());
    let g = finish_on(g, "n3", &exit(7, false)).unwrap();
    assert_eq!(g.execution_state, Terminating);
    let g = finish_on(g, "n1", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Terminating, "rank 1 is still running");
    let g = finish_on(g, "n2", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Failed);
    assert_eq!(g.exit_code, Some(7));
    assert_eq!(g.errors[0].code, "RankFailed");
    assert!(g.errors[0].message.contains("rank 2 on node n3"));
}

#[test]
fn a_terminated_gang_fails_once_every_rank_is_stopped() {
    let g = assigned_gang(2, pytorch());
    let g = terminate(g, 60).unwrap();
    assert_eq!(g.execution_state, Terminating);
    let g = finish_on(g, "n2", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Terminating);
    let g = finish_on(g, "n1", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Failed);
    assert_eq!(g.errors[0].code, JOB_TERMINATED);
}

#[test]
fn a_lost_node_ends_or_requeues_the_whole_gang() {
    let cause = BatchAiError::new("NodeLost", "away");
    let g = assigned_gang(3, pytorch());
    let g = on_node_lost(g, "n2", &cause, DeallocationOption::Terminate, 100).unwrap();
    assert_eq!(
        g.execution_state, Terminating,
        "its other ranks are stopped"
    );
    assert_eq!(g.live_node_ids(), ["n1", "n3"]);
    let g = finish_on(g, "n1", &exit(143, true)).unwrap();
    let g = finish_on(g, "n3", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Failed);
    assert_eq!(g.errors[0].code, JOB_LOST);
    assert_eq!(g.exit_code, None);

    // Requeued as a whole, never half: every rank's record goes.
    let mut g = assigned_gang(2, pytorch());
    g.requeue_on_exit = true;
    let g = on_node_removed(g, "n1", 100).unwrap();
    assert_eq!(g.execution_state, Terminating);
    let g = finish_on(g, "n2", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Queued);
    assert!(g.gang.is_none() && g.node_id.is_none());

    // A rank that already finished loses nothing with its node.
    let g = assigned_gang(2, pytorch());
    let g = finish_on(g, "n2", &exit(0, false)).unwrap();
    let g = on_node_lost(g, "n2", &cause, DeallocationOption::Terminate, 100).unwrap();
    assert_eq!(g.execution_state, Running);
    assert!(g.gang.as_ref().unwrap().end.is_none());

    // A custom gang's worker node only serves launches, yet the master
    // counted on it.
    let g = assigned_gang(
        2,
        Toolkit::Custom {
            command_line: "x".into(),
        },
    );
    let g = on_node_lost(g, "n2", &cause, DeallocationOption::Terminate, 100).unwrap();
    assert_eq!(g.execution_state, Terminating);
    let g = finish_on(g, "n1", &exit(143, true)).unwrap();
    assert_eq!(g.execution_state, Failed);
    assert_eq!(g.errors[0].code, JOB_LOST);
}
