//! The live agent sessions, by node id, and what can be sent to a node.
//! A second session of the same node replaces the first (which is told to stop).
//! Each session's last heartbeat time lives here, not in the store: a
//! heartbeat is not a state change, so it costs no transaction; the session
//! stores the last one when it ends (a crash loses it, which only delays a
//! node-lost verdict: that clock starts no earlier than the coordinator's start).
//!
//! Everything here is domain form: [`Outbound`] messages go into a session's
//! channel as they are, and `agent/mod.rs` converts them (`convert::outbound`)
//! as the response stream is sent.

use crate::domain::Millis;
use crate::domain::env::Assignment;
use crate::domain::node_setup::NodeSetupPlan;
use crate::output::StreamKind;
use crate::setup_output::Held;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A message for a node's agent.
#[derive(Debug, Clone)]
pub enum Outbound {
    Registered {
        node_id: String,
        heartbeat_interval: Duration,
        resume: Vec<(String, StreamKind, u64)>,
    },
    Assign(Box<Assignment>),
    Terminate {
        job_id: String,
        grace: Duration,
    },
    Ack {
        job_id: String,
        stream: StreamKind,
        offset: u64,
    },
    Release {
        job_id: String,
    },
    Shutdown {
        reason: String,
    },
    /// The cluster's node setup, and what the coordinator holds of the
    /// node's setup output (agent.proto rule 6).
    Prepare {
        plan: Box<NodeSetupPlan>,
        held: Held,
    },
    /// Setup output of `run` is durable up to `offset`.
    SetupAck {
        run: String,
        stream: StreamKind,
        offset: u64,
    },
}

/// The sending half of a session's response stream: messages for the agent,
/// or the status that ends the stream (made by `error::to_status`).
pub type Sender = mpsc::UnboundedSender<Result<Outbound, tonic::Status>>;

struct Entry {
    generation: u64,
    tx: Sender,
    stop: watch::Sender<bool>,
    /// Until the session has sent Registered, messages wait here.
    pending: Option<Vec<Outbound>>,
    /// When the session's last heartbeat arrived (in memory only; stored
    /// when the session ends).
    last_heartbeat: Option<Millis>,
    /// Jobs the agent holds that are no longer its own, told to stop: the
    /// node takes no job until each has exited.
    fencing: HashSet<String>,
}

/// Sessions by node id.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

/// A session's place in the registry.
#[derive(Debug)]
pub struct Attached {
    pub generation: u64,
    /// Becomes true when a newer session replaced this one (or at shutdown).
    pub stop: watch::Receiver<bool>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map is still a consistent map: entries are replaced whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `tx` the node's session, stopping an earlier one. Messages sent
    /// to the node are held back until [`Sessions::ready`].
    pub fn attach(&self, node_id: &str, tx: Sender) -> Attached {
        let generation = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop_tx, stop) = watch::channel(false);
        let old = self.map().insert(
            node_id.to_string(),
            Entry {
                generation,
                tx,
                stop: stop_tx,
                pending: Some(Vec::new()),
                last_heartbeat: None,
                fencing: HashSet::new(),
            },
        );
        if let Some(old) = old {
            tracing::info!(
                node = node_id,
                "a new session replaces the node's earlier one"
            );
            let _ = old.stop.send(true);
        }
        Attached { generation, stop }
    }

    /// The session has sent Registered: deliver what was held back, then
    /// send directly.
    pub fn ready(&self, node_id: &str, generation: u64) {
        let mut map = self.map();
        if let Some(e) = map.get_mut(node_id).filter(|e| e.generation == generation) {
            for m in e.pending.take().unwrap_or_default() {
                let _ = e.tx.send(Ok(m));
            }
        }
    }

    /// The jobs session `generation` of the node was told to stop because
    /// they are no longer its own (see [`Sessions::takes_jobs`]).
    pub fn fence(&self, node_id: &str, generation: u64, jobs: HashSet<String>) {
        if let Some(e) = self
            .map()
            .get_mut(node_id)
            .filter(|e| e.generation == generation)
        {
            e.fencing = jobs;
        }
    }

    /// A fenced job's process is gone.
    pub fn unfence(&self, node_id: &str, job_id: &str) {
        if let Some(e) = self.map().get_mut(node_id) {
            e.fencing.remove(job_id);
        }
    }

    /// Whether the node may be given jobs: it has a session and holds no
    /// job that is no longer its own.
    pub fn takes_jobs(&self, node_id: &str) -> bool {
        self.map()
            .get(node_id)
            .is_some_and(|e| e.fencing.is_empty())
    }

    /// Ends the node's current session (its agent must register again).
    pub fn stop(&self, node_id: &str) {
        if let Some(e) = self.map().get(node_id) {
            let _ = e.stop.send(true);
        }
    }

    /// Removes the session if it is still the node's current one.
    pub fn detach(&self, node_id: &str, generation: u64) -> bool {
        let mut map = self.map();
        if map.get(node_id).is_some_and(|e| e.generation == generation) {
            map.remove(node_id);
            true
        } else {
            false
        }
    }

    /// Sends to the node's current session; false if it has none.
    pub fn send(&self, node_id: &str, msg: Outbound) -> bool {
        let mut map = self.map();
        match map.get_mut(node_id) {
            Some(e) => match &mut e.pending {
                Some(held) => {
                    held.push(msg);
                    true
                }
                None => e.tx.send(Ok(msg)).is_ok(),
            },
            None => false,
        }
    }

    /// Notes a heartbeat of the node's session `generation` at `time`.
    pub fn heartbeat(&self, node_id: &str, generation: u64, time: Millis) {
        if let Some(e) = self
            .map()
            .get_mut(node_id)
            .filter(|e| e.generation == generation)
        {
            e.last_heartbeat = Some(time);
        }
    }

    /// The last heartbeat of the node's live session, if it sent one.
    pub fn last_heartbeat(&self, node_id: &str) -> Option<Millis> {
        self.map().get(node_id).and_then(|e| e.last_heartbeat)
    }

    pub fn is_connected(&self, node_id: &str) -> bool {
        self.map().get(node_id).is_some_and(|e| !e.tx.is_closed())
    }

    /// Stops every session (shutdown).
    pub fn stop_all(&self) {
        for e in self.map().values() {
            let _ = e.stop.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: &str) -> Outbound {
        Outbound::Release { job_id: id.into() }
    }

    #[test]
    fn holds_messages_until_ready_and_replaces_sessions() {
        let s = Sessions::default();
        assert!(!s.send("n", release("x")), "no session");
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let first = s.attach("n", tx1);
        assert!(s.send("n", release("a")));
        assert!(rx1.try_recv().is_err(), "held back until registered");
        s.ready("n", first.generation);
        let m = rx1.try_recv().unwrap().unwrap();
        assert!(matches!(m, Outbound::Release { ref job_id } if job_id == "a"));
        assert!(s.send("n", release("b")));
        assert!(rx1.try_recv().is_ok(), "sent directly once ready");

        let (tx2, _rx2) = mpsc::unbounded_channel();
        let second = s.attach("n", tx2);
        assert!(*first.stop.borrow(), "the first session is told to stop");
        assert!(
            !s.detach("n", first.generation),
            "a replaced session detaches nothing"
        );
        assert!(s.is_connected("n"));
        assert_eq!(s.last_heartbeat("n"), None);
        s.heartbeat("n", first.generation, 5);
        assert_eq!(s.last_heartbeat("n"), None, "a replaced session's beat");
        s.heartbeat("n", second.generation, 7);
        assert_eq!(s.last_heartbeat("n"), Some(7));
        assert!(s.detach("n", second.generation));
        assert_eq!(s.last_heartbeat("n"), None);
        assert!(!s.is_connected("n"));
    }
}
