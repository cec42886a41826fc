//! The dispatcher over a real SQLite store and real output files: a requeued
//! job never mixes attempts, and the lost-node timeout on injected time.

use super::*;
use crate::core::Settings;
use crate::domain::state::JOB_LOST;
use crate::domain::{DeallocationOption, ExecutionState, JobExit, NodeInfo, fixtures};
use crate::output::{Chunk, OutputStore, StreamKind};
use crate::store::NodeRegistration;
use crate::store::sqlite::SqliteStore;
use tokio::sync::{mpsc, watch};

type Inbox = mpsc::UnboundedReceiver<Result<crate::agent::registry::Outbound, tonic::Status>>;

struct Harness {
    core: Core,
    _dir: tempfile::TempDir,
    _shutdown: watch::Sender<bool>,
    /// What each attached node's session was sent.
    inboxes: Vec<(String, Inbox)>,
}

impl Harness {
    async fn new(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("bai.db")).unwrap();
        let outputs = OutputStore::new(dir.path().join("output"));
        let (tx, rx) = watch::channel(false);
        let core = Core::new(std::sync::Arc::new(store), outputs, settings, rx);
        let s = &core.store;
        s.create_workspace(fixtures::workspace("w")).await.unwrap();
        s.create_experiment(fixtures::experiment("w", "e"))
            .await
            .unwrap();
        s.create_cluster(fixtures::cluster("w", "c", 1))
            .await
            .unwrap();
        Self {
            core,
            _dir: dir,
            _shutdown: tx,
            inboxes: Vec::new(),
        }
    }

    /// Registers the node at `now`; with a live session if `connected`
    /// (returns its generation).
    async fn node(&mut self, id: &str, now: Millis, connected: bool) -> u64 {
        let reg = NodeRegistration {
            node_id: id.into(),
            workspace: "w".into(),
            cluster: "c".into(),
            info: NodeInfo::default(),
            ready: true,
            step: String::new(),
        };
        self.core.store.register_node(reg, now).await.unwrap();
        if connected {
            let (tx, rx) = mpsc::unbounded_channel();
            let a = self.core.sessions.attach(id, tx);
            self.core.sessions.ready(id, a.generation);
            self.inboxes.push((id.to_string(), rx));
            return a.generation;
        }
        0
    }

    /// How many messages node `id`'s session was sent so far.
    fn sent_to(&mut self, id: &str) -> usize {
        let (_, rx) = self.inboxes.iter_mut().find(|(n, _)| n == id).unwrap();
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Writes a chunk as node `node` sends it; returns the durable length.
    async fn write(
        &self,
        node: &str,
        job: &Job,
        stream: StreamKind,
        offset: u64,
        data: &[u8],
    ) -> u64 {
        let file = self.core.outputs.file(job, stream).await.unwrap().unwrap();
        self.core
            .outputs
            .write(vec![Chunk {
                file: file.clone(),
                writer: node.into(),
                offset,
                data: data.to_vec(),
            }])
            .await
            .unwrap();
        file.durable_len()
    }
}

fn killed() -> JobExit {
    JobExit {
        end_time: 40,
        exit_code: 143,
        error: None,
        terminated: true,
        metrics: None,
    }
}

#[tokio::test]
async fn a_requeued_job_whose_output_cannot_be_kept_apart_stays_queued_and_never_mixes() {
    let mut h = Harness::new(Settings::default()).await;
    let job = h
        .core
        .store
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    h.node("n1", 10, true).await;
    assert_eq!(pass(&h.core).await.unwrap(), 1);
    assert_eq!(h.sent_to("n1"), 1, "AssignJob");

    // The first attempt writes output, then its node leaves with requeue.
    assert_eq!(h.write("n1", &job, StreamKind::Stderr, 0, b"old").await, 3);
    h.core
        .store
        .begin_node_removal("n1", DeallocationOption::Requeue, "resize down", 30)
        .await
        .unwrap();
    let j = h
        .core
        .store
        .finish_job(&job.id, "n1", killed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    h.core.job_attempt_ended(&j);
    h.core.store.remove_node("n1", 50).await.unwrap();

    // Keeping the old attempt's output apart fails: where its directory
    // goes (`<uuid>/attempts`) is a file, so the new attempt cannot start
    // from empty files and the old bytes stay where they are.
    let dir = h.core.outputs.stdouterr_dir(&job);
    let kept = h.core.outputs.attempt_dir(&job, 1);
    let blocker = kept.parent().unwrap().parent().unwrap().to_path_buf();
    std::fs::write(&blocker, b"in the way").unwrap();
    h.node("n2", 60, true).await;
    assert_eq!(pass(&h.core).await.unwrap(), 0, "nothing assigned");
    let j = h.core.store.get_job(&job.key).await.unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    assert_eq!(j.node_id, None);
    assert!(
        h.core
            .store
            .get_node("n2")
            .await
            .unwrap()
            .running_job_ids
            .is_empty()
    );
    assert_eq!(
        h.sent_to("n2"),
        0,
        "no AssignJob for a job that stays queued"
    );

    // Once the output can be emptied, a later pass assigns the job and the
    // new attempt starts from nothing: its first bytes are stored, not taken
    // for duplicates of the old attempt's.
    assert_eq!(
        std::fs::read(dir.join(StreamKind::Stderr.file_name())).unwrap(),
        b"old"
    );
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(pass(&h.core).await.unwrap(), 1);
    assert_eq!(h.sent_to("n2"), 1, "AssignJob");
    let j = h.core.store.get_job(&job.key).await.unwrap();
    assert_eq!(j.node_id.as_deref(), Some("n2"));
    for s in StreamKind::ALL {
        let f = h.core.outputs.file(&job, s).await.unwrap().unwrap();
        assert_eq!(f.durable_len(), 0, "{s:?} starts empty");
    }
    assert_eq!(h.write("n2", &job, StreamKind::Stderr, 0, b"new!").await, 4);
    assert_eq!(
        std::fs::read(dir.join(StreamKind::Stderr.file_name())).unwrap(),
        b"new!"
    );
    assert_eq!(
        std::fs::read(kept.join(StreamKind::Stderr.file_name())).unwrap(),
        b"old",
        "the first attempt's output is kept apart"
    );
}

#[tokio::test]
async fn a_node_is_lost_exactly_when_its_agent_stayed_away_for_the_timeout() {
    let settings = Settings {
        node_lost_timeout: std::time::Duration::from_secs(600),
        ..Settings::default()
    };
    let mut h = Harness::new(settings).await;
    let timeout: Millis = 600_000;
    let job = h
        .core
        .store
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    // n1 runs the job and its agent goes away after a heartbeat at 1_000;
    // n2 keeps its session; n3 registered later (at 5_000) and went away.
    let generation = h.node("n1", 500, true).await;
    assert_eq!(pass(&h.core).await.unwrap(), 1);
    assert!(h.core.sessions.detach("n1", generation));
    h.core
        .store
        .set_node_connected("n1", false, Some(1_000))
        .await
        .unwrap();
    let n2 = h.node("n2", 500, true).await;
    h.node("n3", 5_000, false).await;
    let started = 0;
    // n2's session beats; a connected node counts from its last beat.
    let beat = |at: Millis| h.core.sessions.heartbeat("n2", n2, at);

    beat(1_000 + timeout - 2);
    let lost = reap_lost_nodes(&h.core, started, 1_000 + timeout - 1).await;
    assert_eq!(lost.unwrap(), 0, "one millisecond early");
    let n1 = h.core.store.get_node("n1").await.unwrap();
    assert_eq!(n1.state, NodeState::Running);

    let lost = reap_lost_nodes(&h.core, started, 1_000 + timeout).await;
    assert_eq!(lost.unwrap(), 1);
    let n1 = h.core.store.get_node("n1").await.unwrap();
    assert_eq!(n1.state, NodeState::Unusable);
    assert_eq!(n1.errors[0].code, "NodeLost");
    // The cluster's deallocation option is requeue: the job runs again.
    let j = h.core.store.get_job(&job.key).await.unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    assert_eq!(j.attempts[0].errors[0].code, JOB_LOST);

    // n3 counts from its own registration; n2 beats and is not lost.
    beat(5_000 + timeout - 2);
    let lost = reap_lost_nodes(&h.core, started, 5_000 + timeout - 1).await;
    assert_eq!(lost.unwrap(), 0);
    beat(5_000 + timeout - 1);
    let lost = reap_lost_nodes(&h.core, started, 5_000 + timeout).await;
    assert_eq!(lost.unwrap(), 1);
    assert_eq!(
        h.core.store.get_node("n3").await.unwrap().state,
        NodeState::Unusable
    );
    let at = 5_000 + timeout - 1 + timeout - 1;
    assert_eq!(reap_lost_nodes(&h.core, started, at).await.unwrap(), 0);
    assert_eq!(
        h.core.store.get_node("n2").await.unwrap().state,
        NodeState::Idle
    );
    // n2's agent stops beating but keeps its connection (kill -STOP): it is
    // lost a timeout after its last beat.
    let far = reap_lost_nodes(&h.core, started, 5_000 + timeout - 1 + timeout).await;
    assert_eq!(far.unwrap(), 1, "connected but silent");
    assert_eq!(
        h.core.store.get_node("n2").await.unwrap().state,
        NodeState::Unusable
    );
    let far = reap_lost_nodes(&h.core, started, 100 * timeout).await;
    assert_eq!(far.unwrap(), 0, "unusable nodes are not lost again");
}

#[tokio::test]
async fn a_coordinator_restart_restarts_the_lost_node_clock() {
    let mut h = Harness::new(Settings::default()).await;
    let timeout: Millis = 600_000;
    h.node("n1", 1_000, false).await;
    // The coordinator started long after the node's last heartbeat: the
    // node gets a full timeout from the start to reconnect.
    let started = 50_000;
    let lost = reap_lost_nodes(&h.core, started, started + timeout - 1).await;
    assert_eq!(lost.unwrap(), 0);
    let lost = reap_lost_nodes(&h.core, started, started + timeout).await;
    assert_eq!(lost.unwrap(), 1);
}

#[tokio::test]
async fn the_run_time_rule_preempts_only_low_priority_nodes_whose_job_ran_past_it() {
    use crate::domain::VmPriority;
    let mut h = Harness::new(Settings::default()).await;
    let mut low = fixtures::cluster("w", "low", 1);
    low.spec.vm_priority = VmPriority::LowPriority;
    h.core.store.create_cluster(low).await.unwrap();
    // One job on the dedicated cluster's n1, one on the low-priority l1.
    let dedicated = h
        .core
        .store
        .create_job(fixtures::job("w", "e", "d", "c"))
        .await
        .unwrap();
    let cheap = h
        .core
        .store
        .create_job(fixtures::job("w", "e", "l", "low"))
        .await
        .unwrap();
    h.node("n1", 10, true).await;
    let reg = NodeRegistration {
        node_id: "l1".into(),
        workspace: "w".into(),
        cluster: "low".into(),
        info: NodeInfo::default(),
        ready: true,
        step: String::new(),
    };
    h.core.store.register_node(reg, 10).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let a = h.core.sessions.attach("l1", tx);
    h.core.sessions.ready("l1", a.generation);
    h.inboxes.push(("l1".into(), rx));
    assert_eq!(pass(&h.core).await.unwrap(), 2);
    for (job, node) in [(&dedicated, "n1"), (&cheap, "l1")] {
        h.core
            .store
            .record_job_started(&job.id, node, 1_000)
            .await
            .unwrap();
    }
    let day = std::time::Duration::from_secs(86_400);
    let at = |ms: i64| crate::autoscaler::preempt_long_runs(&h.core, day, 1_000 + ms);
    assert_eq!(at(86_400_000 - 1).await.unwrap(), 0, "a millisecond early");
    assert_eq!(
        at(86_400_000).await.unwrap(),
        1,
        "only the low-priority node"
    );
    let l = h.core.store.get_job(&cheap.key).await.unwrap();
    assert_eq!(l.execution_state, ExecutionState::Terminating);
    assert!(l.requeue_on_exit);
    assert!(
        l.attempts[0]
            .requeue_reason
            .starts_with("preempted: a job ran 86400 s"),
        "{:?}",
        l.attempts
    );
    let d = h.core.store.get_job(&dedicated.key).await.unwrap();
    assert_eq!(d.execution_state, ExecutionState::Running);
    assert_eq!(
        h.core.store.get_node("l1").await.unwrap().state,
        NodeState::Leaving
    );
    assert_eq!(
        at(2 * 86_400_000).await.unwrap(),
        0,
        "a leaving node is not preempted again"
    );
}
