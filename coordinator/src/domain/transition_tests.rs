//! Every transition from every job state.

use super::*;
use crate::domain::fixtures;
use crate::domain::state::CLUSTER_DELETED;
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
            let r = on_node_removal(job_in(from), option, 110).unwrap();
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
    let j = on_node_removed(job_in(Running), "n1", 120).unwrap();
    assert_eq!(j.execution_state, Failed);
    assert_eq!(j.errors[0].code, NODE_REMOVED);
    assert!(j.errors[0].message.contains("n1"));

    let cause = BatchAiError::new("NodeLost", "away");
    let j = on_node_lost(job_in(Terminating), "n1", &cause, 130).unwrap();
    assert_eq!(j.execution_state, Failed);
    assert_eq!(j.errors[0].code, JOB_LOST);
    assert!(j.errors[0].message.contains("away"));

    let mut r = job_in(Terminating);
    r.requeue_on_exit = true;
    assert_eq!(
        on_node_lost(r, "n1", &cause, 130).unwrap().execution_state,
        Queued
    );
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
