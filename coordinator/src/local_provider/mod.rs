//! The local node provider (`--local-agents`): keeps, per cluster, as many
//! `bai-agent` processes on this machine as the cluster's target node count.
//!
//! - Each agent gets a node id `<cluster>-<8 hex>`, its own state dir
//!   `<state>/local-nodes/<node id>/` holding `local-node.json` (its cluster),
//!   `agent.pid` and `agent.log`, and runs in its own process group.
//! - After a coordinator restart (even `kill -9`, when agents keep running and
//!   reconnect on their own) live agents are ADOPTED from their pid files
//!   (`/proc/<pid>/cmdline` names bai-agent and the node id); dead ones are
//!   started again with the same node id, so they report the jobs they hold.
//! - An agent's exit is an event, not polled: a task per agent waits on
//!   `Child::wait` (agents we started) or a pidfd (adopted ones) and wakes
//!   the provider. File and `/proc` work runs on blocking threads.
//! - Resize down picks dead agents, then unusable and not yet registered
//!   ones, then idle nodes, then nodes preparing, then busy ones. The node is marked leaving (the scheduler
//!   skips it) and its running jobs are handled per the deallocation option:
//!   requeue (terminated, then back to the queue), terminate (terminated, end
//!   failed) or waitforjobcompletion. Once it has no jobs the agent gets
//!   Shutdown, then SIGTERM (SIGKILL 10 s later), and the node is removed
//!   from the store and its directory deleted. An agent that is gone for 30 s
//!   while jobs remain is removed anyway (the jobs are requeued or fail).
//! - A deleted cluster's agents are stopped the same way.
//! - At coordinator shutdown every agent gets SIGTERM; jobs keep running and
//!   the agents are started again (same ids) on the next start.

mod plan;
mod process;

pub use plan::{ClusterPlan, Member, plan_cluster};
pub use process::{Launcher, NodeRecord};

use crate::agent::registry::Outbound;
use crate::core::{Core, stopped};
use crate::domain::{Node, NodeState};
use crate::store::StoreError;
use bai_common::process::ProcessHandle;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The agent binary: `--agent-bin`, else `bai-agent` next to the running executable.
pub fn agent_bin(config: &crate::Config) -> std::io::Result<PathBuf> {
    match &config.agent_bin {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?.with_file_name("bai-agent")),
    }
}

const STOP_GRACE: Duration = Duration::from_secs(2);
const KILL_AFTER: Duration = Duration::from_secs(10);
const GONE_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent process's state. A running one has a task waiting for its exit
/// (`Child::wait` for ours, its pidfd for an adopted one), which reports it on
/// the provider's exit channel: no agent's liveness is polled. Signals go
/// through the pidfd, so they never reach a process that reused the pid.
enum Proc {
    Running(i32, Arc<ProcessHandle>),
    Dead,
}

/// "Agent `node` with pid `pid` has exited", from an agent's exit watcher.
struct Exited {
    node: String,
    pid: i32,
    status: Option<String>,
}

struct Removing {
    since: Instant,
    shutdown_sent: Option<Instant>,
    sigterm_sent: Option<Instant>,
}

struct LocalAgent {
    rec: NodeRecord,
    dir: PathBuf,
    proc: Proc,
    removing: Option<Removing>,
    restarts: Restarts,
}

/// When an agent that keeps exiting may be started again: at once the first
/// time, then after 1 s, 2 s, 4 s ... up to a minute (an agent with a bad
/// configuration exits at once; it must not be restarted in a busy loop).
/// An agent that ran a minute starts the count over.
#[derive(Debug, Clone, Copy, Default)]
struct Restarts {
    started: Option<tokio::time::Instant>,
    quick_exits: u32,
    not_before: Option<tokio::time::Instant>,
}

impl Restarts {
    const STABLE: Duration = Duration::from_secs(60);
    const MAX_DELAY: Duration = Duration::from_secs(60);

    fn exited(&mut self, now: tokio::time::Instant) -> Duration {
        if self.started.is_some_and(|s| now - s >= Self::STABLE) {
            self.quick_exits = 0;
        }
        let delay = match self.quick_exits {
            0 => Duration::ZERO,
            n => Duration::from_secs(1 << (n - 1).min(6)).min(Self::MAX_DELAY),
        };
        self.quick_exits += 1;
        self.not_before = Some(now + delay);
        delay
    }

    fn may_start(&self, now: tokio::time::Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }
}

impl LocalAgent {
    fn pid(&self) -> Option<i32> {
        match self.proc {
            Proc::Running(p, _) => Some(p),
            Proc::Dead => None,
        }
    }

    fn alive(&self) -> bool {
        matches!(self.proc, Proc::Running(..))
    }

    fn signal(&self, sig: Signal) {
        if let Proc::Running(pid, h) = &self.proc {
            send(&self.rec.node_id, *pid, h, sig);
        }
    }
}

/// What [`LocalProvider::adopt`] finds in one node directory (read on a blocking thread).
struct Found {
    rec: NodeRecord,
    dir: PathBuf,
    /// The pid of a live agent of this node, and the coordinator URL it dials.
    live: Option<(i32, Option<String>)>,
}

pub struct LocalProvider {
    core: Arc<Core>,
    launcher: Launcher,
    dir: PathBuf,
    agents: BTreeMap<String, LocalAgent>,
    exits_tx: mpsc::UnboundedSender<Exited>,
    exits: mpsc::UnboundedReceiver<Exited>,
}

impl LocalProvider {
    pub fn new(
        core: Arc<Core>,
        coordinator: SocketAddr,
        agent_bin: PathBuf,
        dir: PathBuf,
        extra_args: Vec<String>,
    ) -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Self {
            core,
            launcher: Launcher {
                agent_bin,
                coordinator,
                extra_args,
            },
            dir,
            agents: BTreeMap::new(),
            exits_tx,
            exits,
        }
    }

    /// Reconciles on every kick, agent exit (and every few seconds) until
    /// shutdown, then stops the agents.
    pub async fn run(mut self) {
        tracing::info!(agent_bin = %self.launcher.agent_bin.display(), "local agents enabled");
        self.adopt().await;
        let mut shutdown = self.core.shutdown();
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::error!(error = %e, "local provider pass failed");
            }
            let tick = if self.agents.values().any(|a| a.removing.is_some()) {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(3)
            };
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = self.core.provider_kicked() => {}
                Some(e) = self.exits.recv() => self.exited(e),
                _ = tokio::time::sleep(tick) => {}
            }
        }
        self.stop_all().await;
    }

    /// Marks the agent of an exit report dead, if the report is about its
    /// current process (not one it replaced).
    fn exited(&mut self, e: Exited) {
        let Some(a) = self.agents.get_mut(&e.node) else {
            return;
        };
        if a.pid() == Some(e.pid) {
            let status = e.status.unwrap_or_else(|| "unknown".into());
            let retry_in = a.restarts.exited(tokio::time::Instant::now());
            if retry_in.is_zero() {
                tracing::info!(node = %e.node, pid = e.pid, %status, "local agent exited");
            } else {
                tracing::warn!(
                    node = %e.node, pid = e.pid, %status, ?retry_in,
                    log = %a.dir.join("agent.log").display(),
                    "local agent keeps exiting; restarting it later"
                );
            }
            a.proc = Proc::Dead;
        }
    }

    /// Watches a child we started: reaps it and reports its exit.
    fn watch_child(&self, node: String, pid: i32, mut child: tokio::process::Child) {
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await.map(|s| s.to_string()).ok();
            let _ = tx.send(Exited { node, pid, status });
        });
    }

    /// Watches an adopted agent (not our child) through a pidfd. `None` if it
    /// is not the agent of `node` any more (gone, or its pid reused).
    fn watch_adopted(&self, node: String, pid: i32) -> Option<Arc<ProcessHandle>> {
        // The pidfd is opened first and the process checked after, so the
        // handle is on the process that was checked.
        let handle = match ProcessHandle::open(pid) {
            Ok(h) => h,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(node = %node, pid, error = %e, "cannot watch the local agent's exit");
                }
                return None;
            }
        };
        if !self.launcher.is_agent(pid, &node) {
            return None;
        }
        let handle = Arc::new(handle);
        let (tx, h) = (self.exits_tx.clone(), handle.clone());
        tokio::spawn(async move {
            let status = match h.exited().await {
                Ok(()) => None,
                Err(e) => Some(format!("exit not observable: {e}")),
            };
            let _ = tx.send(Exited { node, pid, status });
        });
        Some(handle)
    }

    /// Loads the local nodes of an earlier run. Live agents are adopted; a
    /// live agent that dials another address (the coordinator now listens on
    /// another port) is stopped and then started again with the same node id
    /// (its jobs keep running and it reports them when it registers).
    async fn adopt(&mut self) {
        let dir = self.dir.clone();
        let launcher = self.launcher.clone();
        let found = match tokio::task::spawn_blocking(move || scan(&dir, &launcher)).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "scanning local node directories failed");
                return;
            }
        };
        let url = self.launcher.url();
        let mut restarting = Vec::new();
        for Found { rec, dir, live } in found {
            let proc = match live {
                Some((pid, dials)) if dials.as_deref() == Some(url.as_str()) => {
                    match self.watch_adopted(rec.node_id.clone(), pid) {
                        Some(h) => {
                            tracing::info!(node = %rec.node_id, pid, "adopted a running local agent");
                            Proc::Running(pid, h)
                        }
                        None => Proc::Dead,
                    }
                }
                Some((pid, _)) => {
                    tracing::info!(node = %rec.node_id, pid, "local agent dials an old coordinator address; restarting it");
                    match ProcessHandle::open(pid) {
                        Ok(h) => {
                            send(&rec.node_id, pid, &h, Signal::SIGTERM);
                            restarting.push((pid, rec.node_id.clone(), h));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(node = %rec.node_id, pid, error = %e, "cannot watch the old agent; killing it");
                            process::signal(pid, Signal::SIGKILL);
                        }
                    }
                    Proc::Dead
                }
                None => Proc::Dead,
            };
            self.agents.insert(
                rec.node_id.clone(),
                LocalAgent {
                    rec,
                    dir,
                    proc,
                    removing: None,
                    restarts: Restarts::default(),
                },
            );
        }
        let deadline = tokio::time::Instant::now() + KILL_AFTER;
        for (pid, id, h) in restarting {
            if tokio::time::timeout_at(deadline, h.exited()).await.is_err() {
                tracing::warn!(node = %id, pid, "local agent ignored SIGTERM; killing it");
                send(&id, pid, &h, Signal::SIGKILL);
                let _ = h.exited().await;
            }
        }
    }

    async fn start(&mut self, rec: NodeRecord) {
        let dir = self.dir.join(&rec.node_id);
        let launcher = self.launcher.clone();
        let (r, d) = (rec.clone(), dir.clone());
        let spawned = tokio::task::spawn_blocking(move || launcher.spawn(&r, &d))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let (removing, mut restarts) = self
            .agents
            .remove(&rec.node_id)
            .map(|a| (a.removing, a.restarts))
            .unwrap_or_default();
        restarts.started = Some(tokio::time::Instant::now());
        let proc = match spawned.map(|c| (c.id().and_then(|p| i32::try_from(p).ok()), c)) {
            Ok((Some(pid), child)) => {
                tracing::info!(node = %rec.node_id, cluster = %format!("{}/{}", rec.workspace, rec.cluster), pid, "started local agent");
                // Unreaped until the watcher waits, so the pid is still this child's.
                let handle = ProcessHandle::open(pid).map(Arc::new);
                self.watch_child(rec.node_id.clone(), pid, child);
                match handle {
                    Ok(h) => Proc::Running(pid, h),
                    Err(e) => {
                        // Only when it exited at once, or pidfds are missing (Linux < 5.3).
                        tracing::warn!(node = %rec.node_id, pid, error = %e, "cannot hold the local agent's pidfd");
                        Proc::Dead
                    }
                }
            }
            Ok((None, _)) => {
                tracing::error!(node = %rec.node_id, "local agent exited as it started");
                Proc::Dead
            }
            Err(e) => {
                // Kept (dead) so the next pass retries with the same id.
                tracing::error!(node = %rec.node_id, agent_bin = %self.launcher.agent_bin.display(), error = %e, "cannot start local agent");
                Proc::Dead
            }
        };
        self.agents.insert(
            rec.node_id.clone(),
            LocalAgent {
                rec,
                dir,
                proc,
                removing,
                restarts,
            },
        );
    }

    async fn reconcile(&mut self) -> Result<(), StoreError> {
        let clusters = self.core.store.list_all_clusters().await?;
        let nodes: HashMap<String, Node> = self
            .core
            .store
            .list_all_nodes()
            .await?
            .into_iter()
            .map(|n| (n.node_id.clone(), n))
            .collect();
        let now = Instant::now();
        for a in self.agents.values_mut() {
            let cluster_exists = clusters
                .iter()
                .any(|c| c.workspace == a.rec.workspace && c.name == a.rec.cluster);
            let leaving = nodes
                .get(&a.rec.node_id)
                .is_some_and(|n| n.state == NodeState::Leaving);
            if a.removing.is_none() && (!cluster_exists || leaving) {
                a.removing = Some(Removing {
                    since: now,
                    shutdown_sent: None,
                    sigterm_sent: None,
                });
            }
        }
        for c in &clusters {
            let mut members = Vec::new();
            for a in self.agents.values_mut().filter(|a| {
                a.removing.is_none() && a.rec.workspace == c.workspace && a.rec.cluster == c.name
            }) {
                let node = nodes.get(&a.rec.node_id);
                members.push(Member {
                    node_id: a.rec.node_id.clone(),
                    alive: a.alive(),
                    state: node.map(|n| n.state),
                    has_jobs: node.is_some_and(|n| !n.running_job_ids.is_empty()),
                });
            }
            let plan = plan_cluster(c.target_node_count, &members);
            for id in plan.respawn {
                if let Some(a) = self.agents.get(&id)
                    && a.restarts.may_start(tokio::time::Instant::now())
                {
                    tracing::info!(node = %id, "local agent is not running; starting it again");
                    let rec = a.rec.clone();
                    self.start(rec).await;
                }
            }
            for _ in 0..plan.spawn {
                let prefix: String = c.name.chars().take(40).collect();
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                self.start(NodeRecord {
                    node_id: format!("{prefix}-{}", &suffix[..8]),
                    workspace: c.workspace.clone(),
                    cluster: c.name.clone(),
                })
                .await;
            }
            for id in plan.remove {
                tracing::info!(node = %id, cluster = %format!("{}/{}", c.workspace, c.name), "removing local node (resize down)");
                if nodes.contains_key(&id) {
                    let reason = format!("cluster target {}", c.target_node_count);
                    self.core
                        .begin_node_removal(&id, c.spec.scale.deallocation(), &reason)
                        .await?;
                }
                if let Some(a) = self.agents.get_mut(&id) {
                    a.removing = Some(Removing {
                        since: now,
                        shutdown_sent: None,
                        sigterm_sent: None,
                    });
                }
            }
        }
        self.progress_removals().await
    }

    async fn progress_removals(&mut self) -> Result<(), StoreError> {
        let ids: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.removing.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let node = match self.core.store.get_node(&id).await {
                Ok(n) => Some(n),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            let connected = self.core.sessions.is_connected(&id);
            let Some(a) = self.agents.get_mut(&id) else {
                continue;
            };
            let alive = a.alive();
            let running = match &a.proc {
                Proc::Running(pid, h) => Some((*pid, h.clone())),
                Proc::Dead => None,
            };
            let Some(r) = a.removing.as_mut() else {
                continue;
            };
            let jobs_left = node.as_ref().is_some_and(|n| !n.running_job_ids.is_empty());
            let gone = (!alive || !connected) && r.since.elapsed() > GONE_TIMEOUT;
            if jobs_left && !gone {
                continue;
            }
            if r.shutdown_sent.is_none() {
                self.core.sessions.send(
                    &id,
                    Outbound::Shutdown {
                        reason: "the node is removed from its cluster".into(),
                    },
                );
                r.shutdown_sent = Some(Instant::now());
            }
            if alive {
                let signal = |sig| {
                    if let Some((pid, h)) = &running {
                        send(&id, *pid, h, sig);
                    }
                };
                match (r.shutdown_sent, r.sigterm_sent) {
                    (Some(t), None) if t.elapsed() >= STOP_GRACE || !connected => {
                        signal(Signal::SIGTERM);
                        r.sigterm_sent = Some(Instant::now());
                    }
                    (_, Some(t)) if t.elapsed() >= KILL_AFTER => {
                        tracing::warn!(node = %id, "local agent ignored SIGTERM; killing it");
                        signal(Signal::SIGKILL);
                    }
                    _ => {}
                }
                continue;
            }
            if node.is_some() {
                self.core.remove_node(&id).await?;
            }
            let dir = a.dir.clone();
            match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
                Ok(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(node = %id, error = %e, "cannot delete local node directory");
                }
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "deleting local node directory failed")
                }
                Ok(_) => {}
            }
            tracing::info!(node = %id, "local node removed");
            self.agents.remove(&id);
            self.core.kick_scheduler();
        }
        Ok(())
    }

    /// SIGTERM to every live agent; waits up to 5 s for their exits.
    async fn stop_all(&mut self) {
        let mut live = 0;
        for a in self.agents.values() {
            if a.alive() {
                a.signal(Signal::SIGTERM);
                live += 1;
            }
        }
        if live == 0 {
            return;
        }
        tracing::info!(
            agents = live,
            "stopping local agents (their jobs keep running)"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.agents.values().any(|a| a.alive()) {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(e)) => self.exited(e),
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// Sends `sig` to an agent through its pidfd.
fn send(node: &str, pid: i32, h: &ProcessHandle, sig: Signal) {
    if let Err(e) = h.signal(sig) {
        tracing::warn!(node = %node, pid, signal = %sig, error = %e, "cannot signal the local agent");
    }
}

/// Reads every node directory under `dir` and finds its live agent, if any.
fn scan(dir: &Path, launcher: &Launcher) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let rec = match process::read_record(&dir) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "not a local node directory; skipped");
                continue;
            }
        };
        let live = process::read_pid(&dir)
            .filter(|&pid| launcher.is_agent(pid, &rec.node_id))
            .map(|pid| (pid, process::coordinator_arg(pid)));
        found.push(Found { rec, dir, live });
    }
    found
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    #[test]
    fn an_agent_that_keeps_exiting_is_restarted_later_and_later() {
        let t0 = tokio::time::Instant::now();
        let mut r = Restarts {
            started: Some(t0),
            ..Restarts::default()
        };
        let delays: Vec<u64> = (0..9).map(|_| r.exited(t0).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert!(!r.may_start(t0));
        assert!(r.may_start(t0 + Duration::from_secs(60)));
        // One that ran a minute starts over.
        r.started = Some(t0);
        assert_eq!(r.exited(t0 + Duration::from_secs(61)), Duration::ZERO);
    }
}
