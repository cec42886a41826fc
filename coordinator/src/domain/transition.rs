//! Job and node transitions as functions over values: each takes a job (or a
//! node's state) as it is and returns it as it must become, or a
//! [`TransitionError`] when the state machine forbids the change. A store
//! reads, calls one of these, and writes what it returns; it decides nothing.
//!
//! The "free node" rule lives here too ([`is_free`], [`cannot_take`], with
//! the GPU arithmetic of [`super::gpus`]): the scheduler, the store's
//! assignment check and the store's pre-filtering query all follow it (the
//! SQLite query is tested against it).

use super::spec::{BatchAiError, DeallocationOption};
use super::state::{ExecutionState, JOB_LOST, JOB_TERMINATED, JobExit, NODE_REMOVED, NodeState};
use super::types::{Attempt, AttemptOutcome, Gang, GangEnd, Job, JobRank, Millis, Node};

/// A change the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("job {job} cannot go from {from} to {to}")]
    Job {
        job: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("node {node} cannot go from {from} to {to}")]
    Node {
        node: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("node {node} cannot take job {job}: {why}")]
    NodeNotFree {
        node: String,
        job: String,
        why: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, TransitionError>;

/// Whether the node holds no job and is idle: what the store can know of
/// "free" (whether an agent is connected is known only to live sessions).
pub fn is_unoccupied(node: &Node) -> bool {
    node.state == NodeState::Idle && node.running_job_ids.is_empty()
}

/// Whether the node's state lets it take jobs: idle with no job, or running
/// jobs (which GPU jobs may share it with).
pub fn takes_jobs(node: &Node) -> bool {
    is_unoccupied(node) || (node.state == NodeState::Running && !node.running_job_ids.is_empty())
}

/// Whether a node can take some job now: its agent connected, its state
/// taking jobs, and room left ([`super::gpus::room`]: unoccupied, or free
/// GPUs and no whole-node job). The one rule every placement follows.
pub fn is_free(node: &Node) -> bool {
    node.connected && takes_jobs(node) && super::gpus::room(node) > 0
}

/// Why `node` cannot take `job` as far as the store knows (connection aside),
/// or `None` if it can: of the job's cluster, in a state that takes jobs, a
/// container runtime for a container job, and unoccupied for a whole-node
/// job or with enough free GPUs for a GPU job.
pub fn cannot_take(node: &Node, job: &Job) -> Option<&'static str> {
    if node.workspace != job.spec.cluster.workspace || node.cluster != job.spec.cluster.name {
        Some("it belongs to another cluster")
    } else if job.spec.container_settings.is_some() && node.info.container_runtime.is_empty() {
        Some("it has no container runtime")
    } else if !takes_jobs(node) {
        Some("it is not idle or running")
    } else {
        super::gpus::cannot_serve(node, job)
    }
}

/// Moves `job` to `to` at `now`; a no-op if it is already there.
pub fn transition(mut job: Job, to: ExecutionState, now: Millis) -> Result<Job> {
    if job.execution_state == to {
        return Ok(job);
    }
    if !job.execution_state.can_become(to) {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: to.as_str(),
        });
    }
    job.execution_state = to;
    job.execution_state_transition_time = now;
    Ok(job)
}

/// Puts an active job back in the queue for a new attempt: no node, no exit,
/// no errors; it keeps its place in the queue (creation order).
pub fn requeue(job: Job, now: Millis) -> Result<Job> {
    if !job.execution_state.is_active() {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: ExecutionState::Queued.as_str(),
        });
    }
    let errors = job
        .gang
        .as_ref()
        .and_then(|g| g.end.as_ref())
        .map(|e| e.errors.clone())
        .unwrap_or_default();
    let exit_code = job.exit_code;
    let mut job = transition(job, ExecutionState::Queued, now)?;
    let mut errors_all = std::mem::take(&mut job.errors);
    errors_all.extend(errors);
    close_attempt(
        &mut job,
        AttemptOutcome::Requeued,
        now,
        exit_code,
        errors_all,
    );
    job.node_id = None;
    job.attempt_started = false;
    job.requeue_on_exit = false;
    job.exit_code = None;
    job.end_time = None;
    job.errors.clear();
    job.metrics = None;
    job.gpu_uuids.clear();
    job.gang = None;
    Ok(job)
}

/// Queued → running on `node` with the GPUs [`super::gpus::pick`] gives it
/// (whose state the caller then derives from its jobs). Fails if the job is
/// not queued or the node cannot take it.
pub fn assign(job: Job, node: &Node, now: Millis) -> Result<Job> {
    assign_gang(job, &[node], now)
}

/// Queued → running on `nodes`, rank by rank (rank 0, the master, first),
/// each with the GPUs [`super::gpus::pick`] gives it; a job of one node is
/// not a gang. Fails if the job is not queued, the count is not the job's
/// `nodeCount`, a node is named twice, or any node cannot take it (a gang
/// starts on all its nodes or not at all).
pub fn assign_gang(job: Job, nodes: &[&Node], now: Millis) -> Result<Job> {
    for (i, node) in nodes.iter().enumerate() {
        let why = if nodes[..i].iter().any(|n| n.node_id == node.node_id) {
            Some("it is named twice")
        } else {
            cannot_take(node, &job)
        };
        if let Some(why) = why {
            return Err(TransitionError::NodeNotFree {
                node: node.node_id.clone(),
                job: job.id,
                why,
            });
        }
    }
    if job.execution_state != ExecutionState::Queued || nodes.len() != job.spec.node_count as usize
    {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: ExecutionState::Running.as_str(),
        });
    }
    let ranks: Vec<JobRank> = nodes
        .iter()
        .enumerate()
        .map(|(rank, n)| {
            let launched = super::env::runs_on_rank(&job, rank as u32);
            JobRank {
                node_id: n.node_id.clone(),
                address: n.info.ip_address.clone(),
                gpu_uuids: super::gpus::pick(n, &job),
                launched,
                started: false,
                // A rank that runs nothing has nothing to wait for.
                ended: !launched,
            }
        })
        .collect();
    let gpus = ranks[0].gpu_uuids.clone();
    let gang = (ranks.len() > 1).then(|| Gang {
        ranks,
        end: None,
        token: super::Secret::new(uuid::Uuid::new_v4().simple().to_string()),
    });
    let mut job = transition(job, ExecutionState::Running, now)?;
    job.attempts.push(Attempt {
        number: job.attempts.len() as u32 + 1,
        node_ids: nodes.iter().map(|n| n.node_id.clone()).collect(),
        assigned_time: now,
        ..Attempt::default()
    });
    job.node_id = Some(nodes[0].node_id.clone());
    job.gpu_uuids = gpus;
    job.attempt_started = false;
    job.requeue_on_exit = false;
    job.gang = gang;
    Ok(job)
}

/// The job's process started at `start` (the job must be active).
pub fn started(job: Job, start: Millis) -> Result<Job> {
    let node = job.node_id.clone().unwrap_or_default();
    started_on(job, &node, start)
}

/// The job's process on `node` started at `start` (the job must be active;
/// the attempt's start is its first rank's).
pub fn started_on(mut job: Job, node: &str, start: Millis) -> Result<Job> {
    if !job.execution_state.is_active() {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: "started",
        });
    }
    if let Some(r) = rank_mut(&mut job, node) {
        r.started = true;
    }
    // The attempt's start is its first rank's.
    job.start_time = match job.start_time {
        Some(s) if job.attempt_started => Some(s.min(start)),
        _ => Some(start),
    };
    job.attempt_started = true;
    if let Some(a) = job.attempts.last_mut() {
        a.start_time = job.start_time;
    }
    Ok(job)
}

/// Closes the job's current attempt (if it has one open) with how it ended.
fn close_attempt(
    job: &mut Job,
    outcome: AttemptOutcome,
    end_time: Millis,
    exit_code: Option<i32>,
    errors: Vec<BatchAiError>,
) {
    if let Some(a) = job.attempts.last_mut().filter(|a| a.outcome.is_none()) {
        a.outcome = Some(outcome);
        a.end_time = Some(end_time);
        a.exit_code = exit_code;
        a.errors = errors;
    }
}

fn rank_mut<'a>(job: &'a mut Job, node: &str) -> Option<&'a mut JobRank> {
    job.gang
        .as_mut()?
        .ranks
        .iter_mut()
        .find(|r| r.node_id == node)
}

/// The job's process exited: its final state from the exit, or back to the
/// queue if it was to be requeued (see [`super::state::exit_outcome`]).
pub fn finish(job: Job, exit: &JobExit) -> Result<Job> {
    let outcome = super::state::exit_outcome(job.execution_state, job.requeue_on_exit, exit);
    if outcome.state == ExecutionState::Queued {
        let mut job = job;
        job.exit_code = Some(exit.exit_code);
        return requeue(job, exit.end_time);
    }
    if !job.execution_state.is_active() {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: outcome.state.as_str(),
        });
    }
    ended(
        job,
        outcome.state,
        exit.end_time,
        exit.end_time,
        outcome.exit_code,
        outcome.errors,
        exit.metrics,
    )
}

/// An active job goes to `to` at `now`, ended at `end_time` with its exit
/// code, its errors after those the attempt gathered while it ran (a GPU
/// fault comes first), and the attempt's summary if there is one.
fn ended(
    job: Job,
    to: ExecutionState,
    now: Millis,
    end_time: Millis,
    exit_code: Option<i32>,
    errors: Vec<BatchAiError>,
    metrics: Option<super::types::JobMetricsSummary>,
) -> Result<Job> {
    let mut job = transition(job, to, now)?;
    job.end_time = Some(end_time);
    job.exit_code = exit_code;
    job.errors.extend(errors);
    if metrics.is_some() {
        job.metrics = metrics;
    }
    let outcome = if to == ExecutionState::Succeeded {
        AttemptOutcome::Succeeded
    } else {
        AttemptOutcome::Failed
    };
    let errors = job.errors.clone();
    close_attempt(&mut job, outcome, end_time, exit_code, errors);
    Ok(job)
}

/// The job's process on `node` exited. A single-node job ends
/// ([`finish`]). A multi-node job's rank ends; the master's exit decides how
/// the job ends, and so does a rank that fails on its own (exit code not 0,
/// not terminated); the job then terminates until its other ranks are gone
/// too ([`settle`]). A rank ending 0 before its master changes nothing else.
pub fn finish_on(mut job: Job, node: &str, exit: &JobExit) -> Result<Job> {
    if job.gang.is_none() {
        return finish(job, exit);
    }
    let (Some(rank), true) = (job.rank_of(node), job.is_active_on(node)) else {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: "exited",
        });
    };
    let requeue = job.requeue_on_exit;
    let state = job.execution_state;
    let gang = job.gang.as_mut().expect("a gang");
    gang.ranks[rank as usize].ended = true;
    let failed_alone = exit.exit_code != 0 && !exit.terminated;
    if gang.end.is_none() && (rank == 0 || failed_alone) {
        let mut outcome = super::state::exit_outcome(state, requeue, exit);
        if rank != 0 {
            outcome.errors.insert(
                0,
                BatchAiError::new(
                    "RankFailed",
                    format!(
                        "rank {rank} on node {node} exited with code {}; the job's other ranks were stopped",
                        exit.exit_code
                    ),
                ),
            );
        }
        gang.end = Some(GangEnd {
            requeue: outcome.state == ExecutionState::Queued,
            succeeded: outcome.state == ExecutionState::Succeeded,
            exit_code: outcome.exit_code,
            errors: outcome.errors,
            end_time: exit.end_time,
            metrics: exit.metrics,
        });
    } else if rank == 0
        && let Some(end) = gang.end.as_mut()
        && exit.metrics.is_some()
    {
        end.metrics = exit.metrics;
    }
    settle(job, exit.end_time)
}

/// A multi-node job whose end is decided: ended (or requeued as a whole)
/// once no rank's process is left, else terminating (its live ranks are to
/// be stopped). Unchanged while the end is open.
pub fn settle(job: Job, now: Millis) -> Result<Job> {
    let Some(gang) = &job.gang else {
        return Ok(job);
    };
    let Some(end) = gang.end.clone() else {
        return Ok(job);
    };
    if gang.ranks.iter().any(|r| !r.ended) {
        return transition(job, ExecutionState::Terminating, now);
    }
    if end.requeue {
        let mut job = job;
        job.exit_code = end.exit_code;
        return requeue(job, now);
    }
    let to = if end.succeeded {
        ExecutionState::Succeeded
    } else {
        ExecutionState::Failed
    };
    ended(
        job,
        to,
        now,
        end.end_time,
        end.exit_code,
        end.errors,
        end.metrics,
    )
}

/// A GPU the running job holds faulted: the job is terminated (it cannot
/// finish on a broken GPU, and it keeps the node's other GPUs while it
/// hangs) and will end failed with `error` first among its errors. A job
/// already terminating gains the error; other states are unchanged.
pub fn gpu_fault(job: Job, error: BatchAiError, now: Millis) -> Result<Option<Job>> {
    if !job.execution_state.is_active() {
        return Ok(None);
    }
    let mut job = transition(job, ExecutionState::Terminating, now)?;
    job.requeue_on_exit = false;
    job.errors.push(error);
    Ok(Some(job))
}

/// Ends a queued or active job without an exit code, failed with `error`; an
/// active job that was to be requeued goes back to the queue instead. An
/// ended job is refused (it would gain a second end).
pub fn end_without_exit(job: Job, error: BatchAiError, now: Millis) -> Result<Job> {
    if job.execution_state.is_ended() {
        return Err(TransitionError::Job {
            job: job.id,
            from: job.execution_state.as_str(),
            to: ExecutionState::Failed.as_str(),
        });
    }
    if job.requeue_on_exit && job.execution_state.is_active() {
        // The attempt keeps why it ended; the job starts over without it.
        let mut job = job;
        job.errors.push(error);
        return requeue(job, now);
    }
    let mut job = transition(job, ExecutionState::Failed, now)?;
    job.end_time = Some(now);
    job.errors.push(error);
    let errors = job.errors.clone();
    close_attempt(&mut job, AttemptOutcome::Failed, now, None, errors);
    Ok(job)
}

/// A user's terminate: queued → failed (`JobTerminated`); running →
/// terminating; an active job is no longer requeued (the user's terminate
/// wins over a node removal's requeue); an ended job is unchanged.
pub fn terminate(job: Job, now: Millis) -> Result<Job> {
    match job.execution_state {
        ExecutionState::Queued => {
            let mut job = transition(job, ExecutionState::Failed, now)?;
            job.end_time = Some(now);
            job.errors.push(BatchAiError::new(
                JOB_TERMINATED,
                "the job was terminated before it started",
            ));
            Ok(job)
        }
        ExecutionState::Running | ExecutionState::Terminating => {
            let mut job = transition(job, ExecutionState::Terminating, now)?;
            job.requeue_on_exit = false;
            Ok(job)
        }
        ExecutionState::Succeeded | ExecutionState::Failed => Ok(job),
    }
}

/// A job on a node whose removal begins with `option`: a running job becomes
/// terminating (to be requeued for `Requeue`); `None` if it does not change
/// (wait for completion, or already terminating or not active).
pub fn on_node_removal(
    job: Job,
    option: DeallocationOption,
    reason: &str,
    now: Millis,
) -> Result<Option<Job>> {
    if option == DeallocationOption::WaitForJobCompletion
        || job.execution_state != ExecutionState::Running
    {
        return Ok(None);
    }
    let mut job = transition(job, ExecutionState::Terminating, now)?;
    job.requeue_on_exit = option == DeallocationOption::Requeue;
    if job.requeue_on_exit
        && let Some(a) = job.attempts.last_mut()
    {
        a.requeue_reason = reason.to_owned();
    }
    Ok(Some(job))
}

/// A job still on `node_id` when the node is deleted: requeued if it was to
/// be, else failed with `NodeRemoved`.
pub fn on_node_removed(job: Job, node_id: &str, now: Millis) -> Result<Job> {
    let error = BatchAiError::new(
        NODE_REMOVED,
        format!("node {node_id} was removed while the job ran"),
    );
    lost_on(job, node_id, error, now)
}

/// A job on `node_id` whose node was lost with `cause`: requeued if it was to
/// be or the cluster's deallocation `option` is requeue (a multi-node job as
/// a whole), else failed with `JobLost` (a lost node cannot be waited for).
pub fn on_node_lost(
    mut job: Job,
    node_id: &str,
    cause: &BatchAiError,
    option: DeallocationOption,
    now: Millis,
) -> Result<Job> {
    let error = BatchAiError::new(
        JOB_LOST,
        format!("node {node_id} was lost: {}", cause.message),
    );
    if option == DeallocationOption::Requeue
        && job.execution_state == ExecutionState::Running
        && !job.requeue_on_exit
    {
        job.requeue_on_exit = true;
        if let Some(a) = job.attempts.last_mut() {
            a.requeue_reason = format!("node {node_id} lost: {}", cause.message);
        }
    }
    lost_on(job, node_id, error, now)
}

/// The job's process on `node_id` is gone without an exit (its node was
/// lost or removed, or its agent lost it): a single-node job ends as
/// [`end_without_exit`] says; a multi-node job's rank ends, the job is to
/// end failed with `error` (or be requeued as a whole if it was to be) and
/// terminates until its other ranks are gone ([`settle`]): never half a job.
pub fn lost_on(mut job: Job, node_id: &str, error: BatchAiError, now: Millis) -> Result<Job> {
    if job.gang.is_none() || !job.execution_state.is_active() {
        return end_without_exit(job, error, now);
    }
    let requeue = job.requeue_on_exit;
    let gang = job.gang.as_mut().expect("a gang");
    let Some(r) = gang.ranks.iter_mut().find(|r| r.node_id == node_id) else {
        return Ok(job);
    };
    if r.launched && r.ended {
        // Its process finished before: the node's loss takes nothing.
        return Ok(job);
    }
    r.ended = true;
    if gang.end.is_none() {
        gang.end = Some(GangEnd {
            requeue,
            succeeded: false,
            exit_code: None,
            errors: vec![error],
            end_time: now,
            metrics: None,
        });
    }
    settle(job, now)
}

/// Checks that `node` may move to `to` (see [`NodeState::can_become`]).
pub fn node_to(node: &Node, to: NodeState) -> Result<NodeState> {
    if node.state.can_become(to) {
        Ok(to)
    } else {
        Err(TransitionError::Node {
            node: node.node_id.clone(),
            from: node.state.as_str(),
            to: to.as_str(),
        })
    }
}

/// A lost node's state: unusable, unless it is already leaving.
pub fn node_lost(state: NodeState) -> NodeState {
    match state {
        NodeState::Leaving => NodeState::Leaving,
        _ => NodeState::Unusable,
    }
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
