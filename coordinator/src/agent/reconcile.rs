//! What to do when an agent registers: compare the jobs it holds with the jobs
//! the store has running or terminating on its node (agent.proto's rules). Pure.
//!
//! - Held and active here: resume its output from the coordinator's durable
//!   lengths; re-send TerminateJob if it is terminating; record a start the
//!   store missed; if it already exited, process the exit as a JobExited.
//! - Held but not active here (unknown, ended, deleted, or moved): if it exited,
//!   ReleaseJob; else TerminateJob (and ReleaseJob once its exit arrives). Its
//!   output is not wanted, so it resumes at the agent's own lengths.
//! - Active here but not held: never started → re-send AssignJob (the agent may
//!   never have got it), unless it is terminating (then it ends failed, or is
//!   requeued if its node is leaving with requeue);
//!   started → the node lost it: the job fails with `JobLost` (or is requeued
//!   if its node is leaving with requeue).

use super::convert::{Exited, HeldJob};
use crate::domain::state::{JOB_LOST, JOB_TERMINATED};
use crate::domain::{BatchAiError, ExecutionState, Job, Millis};
use crate::output::StreamKind;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held jobs active here: resume from the coordinator's lengths.
    pub wanted: Vec<String>,
    /// (job, stream, offset) for held jobs whose output is not wanted.
    pub skip_output: Vec<(String, StreamKind, u64)>,
    pub reassign: Vec<Job>,
    pub lost: Vec<(Job, BatchAiError)>,
    pub terminate: Vec<String>,
    /// Of `terminate`, the held jobs that are no longer this node's (they
    /// ended, or went elsewhere while the node was lost): the node takes no
    /// job until they have exited, so no job runs twice here.
    pub stale: Vec<String>,
    pub release: Vec<String>,
    pub exits: Vec<Exited>,
    pub started: Vec<(String, Millis)>,
}

/// Plans the reconciliation of `node_id`'s `held` jobs with `active`, the
/// store's jobs running or terminating on it.
pub fn plan(node_id: &str, active: &[Job], held: &[HeldJob]) -> Plan {
    let mut p = Plan::default();
    for h in held {
        match active
            .iter()
            .find(|j| j.id == h.job_id && j.is_active_on(node_id))
        {
            Some(job) => {
                p.wanted.push(h.job_id.clone());
                if job.execution_state == ExecutionState::Terminating && h.exited.is_none() {
                    p.terminate.push(h.job_id.clone());
                }
                if let Some(start) = h.start_time
                    && !job.attempt_started
                {
                    p.started.push((h.job_id.clone(), start));
                }
                if let Some(e) = &h.exited {
                    p.exits.push(e.clone());
                }
            }
            None => {
                for (s, len) in &h.lengths {
                    p.skip_output.push((h.job_id.clone(), *s, *len));
                }
                if h.exited.is_some() {
                    p.release.push(h.job_id.clone());
                } else {
                    p.terminate.push(h.job_id.clone());
                    p.stale.push(h.job_id.clone());
                }
            }
        }
    }
    for job in active {
        if !job.is_active_on(node_id) || held.iter().any(|h| h.job_id == job.id) {
            continue;
        }
        if job.execution_state == ExecutionState::Terminating {
            // Ends failed, or goes back to the queue if it was to be requeued.
            p.lost.push((
                job.clone(),
                BatchAiError::new(JOB_TERMINATED, "the job was terminated before it started"),
            ));
        } else if !job.started_on(node_id) {
            p.reassign.push(job.clone());
        } else {
            p.lost.push((
                job.clone(),
                BatchAiError::new(
                    JOB_LOST,
                    format!("node {node_id} lost the job: its agent came back without it"),
                ),
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobExit, fixtures};

    fn active(name: &str, state: ExecutionState, started: bool) -> Job {
        let mut j = fixtures::job("w", "e", name, "c");
        j.id = name.to_string();
        j.execution_state = state;
        j.node_id = Some("n".into());
        j.attempt_started = started;
        j
    }

    fn held(id: &str, started: bool, exited: bool) -> HeldJob {
        HeldJob {
            job_id: id.into(),
            start_time: started.then_some(100),
            exited: exited.then(|| Exited {
                job_id: id.into(),
                exit: JobExit {
                    end_time: 200,
                    exit_code: 0,
                    error: None,
                    terminated: false,
                    metrics: None,
                },
                lengths: vec![(StreamKind::Stdout, 5)],
            }),
            lengths: vec![(StreamKind::Stdout, 5)],
        }
    }

    #[test]
    fn held_and_active() {
        let jobs = [
            active("a", ExecutionState::Running, true),
            active("b", ExecutionState::Terminating, true),
            active("c", ExecutionState::Running, false),
        ];
        let p = plan(
            "n",
            &jobs,
            &[
                held("a", true, true),
                held("b", true, false),
                held("c", true, false),
            ],
        );
        assert_eq!(p.wanted, ["a", "b", "c"]);
        assert_eq!(p.exits.len(), 1);
        assert_eq!(p.exits[0].job_id, "a");
        assert_eq!(p.terminate, ["b"]);
        assert!(p.stale.is_empty(), "b is still ours, terminating");
        assert_eq!(p.started, [("c".to_string(), 100)]);
        assert!(p.reassign.is_empty() && p.lost.is_empty() && p.release.is_empty());
        assert!(p.skip_output.is_empty());
    }

    #[test]
    fn held_but_not_ours() {
        let p = plan("n", &[], &[held("x", true, true), held("y", true, false)]);
        assert_eq!(p.release, ["x"]);
        assert_eq!(p.terminate, ["y"]);
        assert_eq!(p.stale, ["y"], "the node takes nothing until y is gone");
        assert_eq!(p.skip_output.len(), 2);
        assert!(p.wanted.is_empty());
        // A job the store has on another node is not ours either.
        let mut other = active("z", ExecutionState::Running, true);
        other.node_id = Some("m".into());
        let p = plan("n", &[other], &[held("z", true, false)]);
        assert_eq!(
            (p.terminate, p.stale),
            (vec!["z".to_string()], vec!["z".to_string()])
        );
    }

    #[test]
    fn ours_but_not_held() {
        let mut requeue = active("r", ExecutionState::Terminating, false);
        requeue.requeue_on_exit = true;
        let jobs = [
            active("new", ExecutionState::Running, false),
            active("gone", ExecutionState::Running, true),
            active("term", ExecutionState::Terminating, false),
            requeue,
        ];
        let p = plan("n", &jobs, &[]);
        let names: Vec<_> = p.reassign.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(names, ["new"]);
        assert_eq!(p.lost.len(), 3);
        assert_eq!(p.lost[0].0.id, "gone");
        assert_eq!(p.lost[0].1.code, JOB_LOST);
        assert_eq!(p.lost[1].0.id, "term");
        assert_eq!(p.lost[1].1.code, JOB_TERMINATED);
    }
}
