//! Job and node state machines: the states, which transitions are allowed, and
//! how a job's exit decides its final state.

use super::spec::BatchAiError;
use super::types::Millis;

/// Batch AI's job `executionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionState {
    Queued,
    Running,
    Terminating,
    Succeeded,
    Failed,
}

impl ExecutionState {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Terminating,
        Self::Succeeded,
        Self::Failed,
    ];

    /// Whether the job has ended (succeeded or failed).
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    /// Whether the job occupies a node (running or terminating).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Terminating)
    }

    /// Allowed transitions:
    /// queued → running (assigned) | failed (terminated before it ran);
    /// running → terminating | succeeded | failed | queued (requeued);
    /// terminating → succeeded | failed | queued (requeued);
    /// succeeded and failed are final.
    pub fn can_become(self, to: Self) -> bool {
        use ExecutionState::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Failed)
                | (Running, Terminating)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Queued)
                | (Terminating, Succeeded)
                | (Terminating, Failed)
                | (Terminating, Queued)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Terminating => "terminating",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Batch AI's node states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    Preparing,
    Idle,
    Running,
    Leaving,
    Unusable,
}

impl NodeState {
    pub const ALL: [Self; 5] = [
        Self::Preparing,
        Self::Idle,
        Self::Running,
        Self::Leaving,
        Self::Unusable,
    ];

    /// Allowed transitions: preparing → idle | running | unusable; idle ⇄
    /// running; idle | running → preparing (its setup must be redone: a
    /// reboot);
    /// idle | running → unusable (lost, or a mount died); unusable →
    /// preparing | idle | running (its agent registered again); any →
    /// leaving; leaving is final (the node is then removed). Staying is
    /// always allowed.
    pub fn can_become(self, to: Self) -> bool {
        use NodeState::*;
        if self == to {
            return true;
        }
        self != Leaving
            && matches!(
                (self, to),
                (Preparing, Idle | Running | Unusable)
                    | (Idle, Running | Unusable | Preparing)
                    | (Running, Idle | Unusable | Preparing)
                    | (Unusable, Preparing | Idle | Running)
                    | (_, Leaving)
            )
    }

    /// The state of a node that (re)registers, given its state in the store
    /// (`None` for a new node), whether jobs are assigned to it, and whether
    /// it is ready for its cluster's setup (nothing to prepare, or its agent
    /// reports this setup done): a node with jobs runs them, a ready one is
    /// idle, any other prepares.
    pub fn on_register(previous: Option<Self>, has_jobs: bool, ready: bool) -> Self {
        match previous {
            Some(Self::Leaving) => Self::Leaving,
            _ if has_jobs => Self::Running,
            _ if ready => Self::Idle,
            _ => Self::Preparing,
        }
    }

    /// The state of a node after its jobs changed: idle and running follow
    /// whether it has jobs; preparing, leaving and unusable stay.
    pub fn with_jobs(self, has_jobs: bool) -> Self {
        match self {
            Self::Idle | Self::Running if has_jobs => Self::Running,
            Self::Idle | Self::Running => Self::Idle,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Leaving => "leaving",
            Self::Unusable => "unusable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Error code of a job ended by a terminate request (or a removed node).
pub const JOB_TERMINATED: &str = "JobTerminated";
/// Error code of a job whose node lost it (its agent came back without it).
pub const JOB_LOST: &str = "JobLost";
/// Error code of a job whose cluster was deleted.
pub const CLUSTER_DELETED: &str = "ClusterDeleted";
/// Error code of a job whose node was removed while the job ran.
pub const NODE_REMOVED: &str = "NodeRemoved";

/// What the agent reports when a job's process has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobExit {
    pub end_time: Millis,
    /// 128+N when killed by signal N; -1 when it could not be started.
    pub exit_code: i32,
    pub error: Option<BatchAiError>,
    /// The process ended because the coordinator asked to terminate it.
    pub terminated: bool,
    /// The attempt's summary, from its last heartbeat.
    pub metrics: Option<super::types::JobMetricsSummary>,
}

/// How a job's attempt ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: ExecutionState,
    pub exit_code: Option<i32>,
    pub errors: Vec<BatchAiError>,
}

/// The job's state after its process exited. `state` is its state before
/// (running or terminating); `requeue` puts it back in the queue. A job
/// succeeds when it exited 0 on its own with no error; a job that was being
/// terminated fails with `JobTerminated` unless it had already exited 0.
pub fn exit_outcome(state: ExecutionState, requeue: bool, exit: &JobExit) -> Outcome {
    if requeue {
        return Outcome {
            state: ExecutionState::Queued,
            exit_code: None,
            errors: Vec::new(),
        };
    }
    let succeeded = exit.exit_code == 0 && exit.error.is_none() && !exit.terminated;
    let mut errors = Vec::new();
    if let Some(e) = &exit.error {
        errors.push(e.clone());
    }
    if !succeeded && (exit.terminated || state == ExecutionState::Terminating) {
        errors.push(BatchAiError::new(
            JOB_TERMINATED,
            "the job was terminated by a request",
        ));
    }
    Outcome {
        state: if succeeded {
            ExecutionState::Succeeded
        } else {
            ExecutionState::Failed
        },
        exit_code: Some(exit.exit_code),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionState::*;
    use super::*;

    #[test]
    fn job_transitions() {
        assert!(Queued.can_become(Running));
        assert!(Queued.can_become(Failed));
        assert!(!Queued.can_become(Succeeded));
        assert!(!Queued.can_become(Terminating));
        assert!(Running.can_become(Terminating));
        assert!(Running.can_become(Queued));
        assert!(Terminating.can_become(Failed));
        for s in ExecutionState::ALL {
            assert!(!Succeeded.can_become(s));
            assert!(!Failed.can_become(s));
        }
        assert!(Running.is_active() && Terminating.is_active() && !Queued.is_active());
        assert!(Succeeded.is_ended() && Failed.is_ended() && !Running.is_ended());
    }

    #[test]
    fn node_transitions() {
        use NodeState::*;
        assert!(Preparing.can_become(Idle));
        assert!(Idle.can_become(Running));
        assert!(Running.can_become(Idle));
        assert!(Unusable.can_become(Leaving));
        assert!(!Leaving.can_become(Idle));
        assert!(Unusable.can_become(Idle));
        assert!(Idle.can_become(Preparing));
        // Every state the register and job rules produce is reachable.
        for from in NodeState::ALL {
            for has_jobs in [false, true] {
                for ready in [false, true] {
                    let to = NodeState::on_register(Some(from), has_jobs, ready);
                    assert!(from.can_become(to), "{from:?} -> {to:?}");
                }
                assert!(from.can_become(from.with_jobs(has_jobs)));
            }
            assert!(from.can_become(Leaving));
            assert_eq!(
                Leaving.can_become(from),
                from == Leaving,
                "leaving is final"
            );
        }
        assert_eq!(NodeState::on_register(None, false, true), Idle);
        assert_eq!(NodeState::on_register(None, false, false), Preparing);
        assert_eq!(NodeState::on_register(Some(Idle), true, false), Running);
        assert_eq!(NodeState::on_register(Some(Leaving), false, true), Leaving);
        assert_eq!(NodeState::on_register(Some(Unusable), false, true), Idle);
        assert_eq!(
            NodeState::on_register(Some(Unusable), false, false),
            Preparing
        );
        assert_eq!(NodeState::on_register(Some(Idle), false, false), Preparing);
        assert_eq!(Running.with_jobs(false), Idle);
        assert_eq!(Idle.with_jobs(true), Running);
        assert_eq!(Leaving.with_jobs(false), Leaving);
    }

    #[test]
    fn round_trip_names() {
        for s in ExecutionState::ALL {
            assert_eq!(ExecutionState::parse(s.as_str()), Some(s));
        }
        for s in NodeState::ALL {
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ExecutionState::parse("nope"), None);
    }

    fn exit(code: i32, terminated: bool) -> JobExit {
        JobExit {
            end_time: 5,
            exit_code: code,
            error: None,
            terminated,
            metrics: None,
        }
    }

    #[test]
    fn outcomes() {
        let o = exit_outcome(Running, false, &exit(0, false));
        assert_eq!(o.state, Succeeded);
        assert_eq!(o.exit_code, Some(0));
        assert!(o.errors.is_empty());

        let o = exit_outcome(Running, false, &exit(3, false));
        assert_eq!(o.state, Failed);
        assert_eq!(o.exit_code, Some(3));
        assert!(o.errors.is_empty());

        let o = exit_outcome(Terminating, false, &exit(143, true));
        assert_eq!(o.state, Failed);
        assert_eq!(o.exit_code, Some(143));
        assert_eq!(o.errors[0].code, JOB_TERMINATED);

        // Exited 0 by itself just before the terminate reached it.
        let o = exit_outcome(Terminating, false, &exit(0, false));
        assert_eq!(o.state, Succeeded);

        let mut e = exit(-1, false);
        e.error = Some(BatchAiError::new("MountFailed", "no"));
        let o = exit_outcome(Running, false, &e);
        assert_eq!(o.state, Failed);
        assert_eq!(o.errors[0].code, "MountFailed");

        let o = exit_outcome(Terminating, true, &exit(143, true));
        assert_eq!(o.state, Queued);
        assert_eq!(o.exit_code, None);
    }
}
