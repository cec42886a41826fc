//! The [`Preparer`]: one task per agent that prepares the node for its
//! cluster's setup and then watches it.
//!
//! It takes `PrepareNode` from each session, runs the steps in order (admin
//! user, each mount, the setup task), reporting `NodeStatus` at every step
//! and `READY` or `UNUSABLE` at the end, ships the setup task's output, and
//! keeps what it finished in `<state>/node/status.json` with the boot id: an
//! agent restart skips finished steps (healthy mounts are kept, not mounted
//! twice; a finished setup task does not run again), a reboot (new boot id)
//! starts over. A failed preparation is retried once per agent start, not on
//! every reconnect. Once ready, the mounts are checked when a FUSE daemon
//! exits (a pidfd) and every [`CHECK_EVERY`]; a lost mount makes the node
//! unusable with the reason.
//!
//! The admin user and mounts are reached through [`NodeOps`] (the real
//! implementation is [`SystemOps`]), so the sequencing is tested without root.

use super::admin_user::RunAs;
use super::mounts::{Mounted, Volume};
use super::setup_task::{self, RunFiles, Shipper};
use super::{
    ADMIN_USER_FAILED, AdminUser, MOUNT_FAILED, MOUNT_LOST, NodeError, NodeSetup, NodeStatus,
    Phase, SETUP_TASK_FAILED, STEP_ADMIN_USER, STEP_SETUP_TASK, mount_step,
};
use crate::model::{Outbound, Stream};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// How often a ready node's mounts are checked (besides FUSE daemon exits).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What preparation needs from the system (root's work).
pub trait NodeOps: Send + Sync + 'static {
    /// Creates or updates the admin user (idempotent).
    fn admin_user(&self, u: &AdminUser) -> Result<RunAs, String>;
    /// Mounts `v` under the mount root, owned by `owner`.
    fn mount(&self, v: &Volume, owner: Option<(u32, u32)>) -> Result<Mounted, String>;
    /// Why the mount no longer works, or `None` if it does.
    fn check(&self, m: &Mounted) -> Option<String>;
    /// Undoes a mount (idempotent).
    fn unmount(&self, m: &Mounted) -> Result<(), String>;
}

/// Where the preparer keeps its files and what the setup task sees.
#[derive(Clone, Debug)]
pub struct PrepareSettings {
    /// `<state>/node`: `status.json` and `setup/<run>/`.
    pub dir: PathBuf,
    /// `$AZ_BATCHAI_MOUNT_ROOT`.
    pub mount_root: PathBuf,
    pub node_id: String,
    /// The setup task's base environment (PATH, HOME, USER, LANG, ...).
    pub base_env: Vec<(String, String)>,
    pub check_every: Duration,
}

/// What the preparer keeps across agent restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Record {
    boot_id: String,
    generation: String,
    status: Option<NodeStatus>,
    admin_done: bool,
    run_as: Option<RunAs>,
    /// Mounts made, by relative mount path.
    mounts: Vec<(String, Mounted)>,
    setup_done: bool,
    setup_run: String,
}

impl Record {
    fn load(path: &Path, boot_id: &str) -> Self {
        let rec: Option<Record> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match rec {
            Some(r) if r.boot_id == boot_id => r,
            Some(r) => Record {
                // A reboot: every step again, but the old mounts' records are
                // kept so their private files are cleaned up.
                boot_id: boot_id.to_string(),
                mounts: r.mounts,
                ..Record::default()
            },
            None => Record {
                boot_id: boot_id.to_string(),
                ..Record::default()
            },
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bai_common::fs::write_atomic(path, &bytes)
    }
}

enum Cmd {
    Prepare(Box<NodeSetup>),
    Ack {
        run: String,
        stream: Stream,
        offset: u64,
    },
    Attach(mpsc::UnboundedSender<Outbound>),
    Detach,
    Check,
    Leave(tokio::sync::oneshot::Sender<()>),
}

/// What the steps tell the preparer as they go.
enum Event {
    Status(NodeStatus),
    AdminUser(Option<RunAs>),
    Mounted(String, Mounted),
    Unmounted(String),
    SetupStarted(RunFiles, watch::Receiver<[u64; 3]>),
    SetupDone,
}

/// The session's handle on the preparer.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    status: Arc<Mutex<Option<NodeStatus>>>,
    run_as: watch::Receiver<Option<RunAs>>,
}

impl NodeHandle {
    /// The last status (for Register).
    pub fn status(&self) -> Option<NodeStatus> {
        self.status.lock().ok().and_then(|s| s.clone())
    }

    /// The user jobs run as (none: the agent's user), once the node is ready.
    pub fn run_as(&self) -> watch::Receiver<Option<RunAs>> {
        self.run_as.clone()
    }

    pub fn prepare(&self, setup: NodeSetup) {
        let _ = self.tx.send(Cmd::Prepare(Box::new(setup)));
    }

    pub fn ack(&self, run: String, stream: Stream, offset: u64) {
        let _ = self.tx.send(Cmd::Ack {
            run,
            stream,
            offset,
        });
    }

    /// A session is up: status and setup output go to `out`.
    pub fn attach(&self, out: mpsc::UnboundedSender<Outbound>) {
        let _ = self.tx.send(Cmd::Attach(out));
    }

    pub fn detach(&self) {
        let _ = self.tx.send(Cmd::Detach);
    }

    /// The node leaves its cluster (the coordinator sent Shutdown): undoes
    /// every mount and forgets the preparation; returns when done.
    pub async fn leave(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The preparation task's state.
pub struct Preparer {
    ops: Arc<dyn NodeOps>,
    settings: PrepareSettings,
    record: Record,
    status: Arc<Mutex<Option<NodeStatus>>>,
    run_as: watch::Sender<Option<RunAs>>,
    link: Option<mpsc::UnboundedSender<Outbound>>,
    setup: Option<NodeSetup>,
    /// Whether this agent process has tried the current generation.
    tried: bool,
    /// Whether the steps are running.
    busy: bool,
    shipper: Option<(Shipper, watch::Receiver<[u64; 3]>)>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Preparer {
    /// Starts the preparer (within the runtime). Reads its record first
    /// (blocking), so the first Register carries where preparation stands.
    pub async fn start(ops: Arc<dyn NodeOps>, settings: PrepareSettings) -> NodeHandle {
        let path = settings.dir.join("status.json");
        let record = tokio::task::spawn_blocking(move || Record::load(&path, &super::boot_id()))
            .await
            .unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(record.status.clone()));
        let ready_as = match &record.status {
            Some(s) if s.phase == Phase::Ready => record.run_as.clone(),
            _ => None,
        };
        let (run_as, run_as_rx) = watch::channel(ready_as);
        let p = Preparer {
            ops,
            settings,
            record,
            status: status.clone(),
            run_as,
            link: None,
            setup: None,
            tried: false,
            busy: false,
            shipper: None,
            cmds: tx.clone(),
        };
        tokio::spawn(p.run(rx));
        NodeHandle {
            tx,
            status,
            run_as: run_as_rx,
        }
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let (ev_tx, mut events) = mpsc::unbounded_channel::<Event>();
        let mut work: Option<BoxFuture<'static, ()>> = None;
        let mut tick = tokio::time::interval(self.settings.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let grew = async {
                match &mut self.shipper {
                    Some((_, rx)) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let working = async {
                match &mut work {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(c) => {
                        if let Some(w) = self.on_cmd(c, &ev_tx).await {
                            work = Some(w);
                        }
                    }
                },
                Some(ev) = events.recv() => self.on_event(ev).await,
                () = working => {
                    work = None;
                    self.busy = false;
                }
                true = grew => self.ship().await,
                _ = tick.tick() => {
                    if work.is_none() {
                        self.check_mounts().await;
                    }
                }
            }
        }
    }

    fn send(&self, m: Outbound) {
        if let Some(l) = &self.link {
            let _ = l.send(m);
        }
    }

    async fn on_cmd(
        &mut self,
        c: Cmd,
        ev: &mpsc::UnboundedSender<Event>,
    ) -> Option<BoxFuture<'static, ()>> {
        match c {
            Cmd::Attach(out) => {
                self.link = Some(out);
                None
            }
            Cmd::Detach => {
                self.link = None;
                None
            }
            Cmd::Ack {
                run,
                stream,
                offset,
            } => {
                if let Some((s, _)) = &mut self.shipper {
                    s.ack(&run, stream, offset);
                }
                self.ship().await;
                None
            }
            Cmd::Check => {
                self.check_mounts().await;
                None
            }
            Cmd::Leave(done) => {
                let ops = self.ops.clone();
                let mounts = std::mem::take(&mut self.record.mounts);
                let _ = tokio::task::spawn_blocking(move || {
                    for (rel, m) in mounts.iter().rev() {
                        if let Err(why) = ops.unmount(m) {
                            warn!(path = %rel, reason = %why, "cannot undo a mount");
                        }
                    }
                })
                .await;
                self.record = Record {
                    boot_id: self.record.boot_id.clone(),
                    ..Record::default()
                };
                self.persist().await;
                info!("left the cluster: mounts undone");
                let _ = done.send(());
                None
            }
            Cmd::Prepare(setup) => self.on_prepare(*setup, ev).await,
        }
    }

    async fn on_prepare(
        &mut self,
        setup: NodeSetup,
        ev: &mpsc::UnboundedSender<Event>,
    ) -> Option<BoxFuture<'static, ()>> {
        if let Some((s, _)) = &mut self.shipper {
            s.resume(&setup.held_run, setup.held_lengths);
        }
        let same = self.record.generation == setup.generation;
        self.setup = Some(setup.clone());
        let current = self
            .record
            .status
            .clone()
            .filter(|s| s.generation == setup.generation);
        let settled = match &current {
            // Already on it, or done (a failure is retried once per agent start).
            Some(_) if same && self.busy => true,
            Some(s) if s.phase == Phase::Ready => {
                self.check_mounts().await;
                true
            }
            Some(s) => s.phase == Phase::Unusable && self.tried,
            None => false,
        };
        if settled {
            if let Some(s) = self.record.status.clone() {
                self.send(Outbound::NodeStatus(s));
            }
            self.ship().await;
            return None;
        }
        if !same {
            self.record.generation = setup.generation.clone();
            self.record.admin_done = false;
            self.record.setup_done = false;
        }
        self.tried = true;
        self.busy = true;
        let _ = self.run_as.send(None);
        Some(
            steps(
                self.ops.clone(),
                self.settings.clone(),
                setup,
                self.record.clone(),
                ev.clone(),
            )
            .boxed(),
        )
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Status(s) => {
                match s.phase {
                    Phase::Preparing => info!(step = %s.step, "preparing the node"),
                    Phase::Ready => info!("node prepared"),
                    Phase::Unusable => warn!(
                        step = %s.step,
                        reason = %s.error.as_ref().map_or("", |e| e.message.as_str()),
                        "node unusable"
                    ),
                }
                if s.phase == Phase::Ready {
                    let _ = self.run_as.send(self.record.run_as.clone());
                    self.watch_fuse();
                }
                self.record.status = Some(s.clone());
                if let Ok(mut g) = self.status.lock() {
                    *g = Some(s.clone());
                }
                self.persist().await;
                self.send(Outbound::NodeStatus(s));
            }
            Event::AdminUser(run_as) => {
                self.record.admin_done = true;
                self.record.run_as = run_as;
                self.persist().await;
            }
            Event::Mounted(rel, m) => {
                self.record.mounts.retain(|(r, _)| *r != rel);
                self.record.mounts.push((rel, m));
                self.persist().await;
            }
            Event::Unmounted(rel) => {
                self.record.mounts.retain(|(r, _)| *r != rel);
                self.persist().await;
            }
            Event::SetupStarted(files, grew) => {
                self.record.setup_run = files.run.clone();
                self.persist().await;
                let (run, held) = self
                    .setup
                    .as_ref()
                    .map(|s| (s.held_run.clone(), s.held_lengths))
                    .unwrap_or_default();
                self.shipper = Some((Shipper::new(files, &run, held), grew));
            }
            Event::SetupDone => {
                self.record.setup_done = true;
                self.persist().await;
            }
        }
    }

    async fn persist(&self) {
        let rec = self.record.clone();
        let path = self.settings.dir.join("status.json");
        let dir = self.settings.dir.clone();
        let r = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            rec.save(&path)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = r.map_err(std::io::Error::other) {
            warn!(error = %e, "cannot record the node's preparation");
        }
    }

    /// Sends what the shipper has ready.
    async fn ship(&mut self) {
        if self.link.is_none() {
            return;
        }
        let Some((shipper, rx)) = self.shipper.take() else {
            return;
        };
        let lengths = *rx.borrow();
        let r = tokio::task::spawn_blocking(move || {
            let mut shipper = shipper;
            let chunks = shipper.next_chunks(&lengths);
            (shipper, chunks)
        })
        .await;
        match r {
            Ok((shipper, chunks)) => {
                match chunks {
                    Ok(chunks) => {
                        for c in chunks {
                            self.send(Outbound::SetupOutput(c));
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot read the setup task's output"),
                }
                self.shipper = Some((shipper, rx));
            }
            Err(e) => warn!(error = %e, "setup output shipping failed"),
        }
    }

    /// Checks every mount of a ready node; a lost one makes it unusable.
    async fn check_mounts(&mut self) {
        let ready = self
            .record
            .status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Ready);
        if !ready || self.record.mounts.is_empty() {
            return;
        }
        let ops = self.ops.clone();
        let mounts = self.record.mounts.clone();
        let lost = tokio::task::spawn_blocking(move || {
            mounts
                .iter()
                .find_map(|(rel, m)| ops.check(m).map(|why| (rel.clone(), why)))
        })
        .await
        .ok()
        .flatten();
        if let Some((rel, why)) = lost {
            let generation = self.record.generation.clone();
            let setup_run = self.record.setup_run.clone();
            self.on_event(Event::Status(NodeStatus {
                generation,
                phase: Phase::Unusable,
                step: mount_step(&rel),
                error: Some(NodeError {
                    code: MOUNT_LOST.into(),
                    message: format!("the mount at {rel} stopped working: {why}"),
                    details: vec![("relative_mount_path".into(), rel)],
                }),
                setup_run,
            }))
            .await;
        }
    }

    /// A check as soon as any FUSE daemon of a mount exits.
    fn watch_fuse(&self) {
        for (_, m) in &self.record.mounts {
            if let Some(pid) = m.pid {
                let tx = self.cmds.clone();
                tokio::spawn(async move {
                    if bai_common::process::exited(pid).await.is_ok() {
                        let _ = tx.send(Cmd::Check);
                    }
                });
            }
        }
    }
}

fn status(
    setup: &NodeSetup,
    phase: Phase,
    step: &str,
    error: Option<NodeError>,
    run: &str,
) -> Event {
    Event::Status(NodeStatus {
        generation: setup.generation.clone(),
        phase,
        step: step.to_string(),
        error,
        setup_run: run.to_string(),
    })
}

/// Runs the steps not yet done, reporting as it goes.
async fn steps(
    ops: Arc<dyn NodeOps>,
    settings: PrepareSettings,
    setup: NodeSetup,
    record: Record,
    ev: mpsc::UnboundedSender<Event>,
) {
    let run = record.setup_run.clone();
    let fail = |step: &str, code: &str, message: String, details: Vec<(String, String)>| {
        let _ = ev.send(status(
            &setup,
            Phase::Unusable,
            step,
            Some(NodeError {
                code: code.into(),
                message,
                details,
            }),
            &run,
        ));
    };
    // 1. The admin user.
    let mut run_as = record.run_as.clone();
    match &setup.admin_user {
        Some(u) if !(record.admin_done && run_as.as_ref().is_some_and(|r| r.name == u.name)) => {
            let _ = ev.send(status(
                &setup,
                Phase::Preparing,
                STEP_ADMIN_USER,
                None,
                &run,
            ));
            let (o, user) = (ops.clone(), u.clone());
            match blocking(move || o.admin_user(&user)).await {
                Ok(r) => {
                    run_as = Some(r);
                    let _ = ev.send(Event::AdminUser(run_as.clone()));
                }
                Err(why) => {
                    return fail(
                        STEP_ADMIN_USER,
                        ADMIN_USER_FAILED,
                        format!("cannot create the admin user {}: {why}", u.name),
                        vec![],
                    );
                }
            }
        }
        Some(_) => {}
        None => {
            run_as = None;
            let _ = ev.send(Event::AdminUser(None));
        }
    }
    let owner = run_as.as_ref().map(|r| (r.uid, r.gid));
    // 2. The mounts: keep healthy ones made for the same volume, undo the rest.
    let wanted: Vec<String> = setup
        .volumes
        .iter()
        .map(|v| v.relative_mount_path().to_string())
        .collect();
    for (rel, m) in &record.mounts {
        let keep = setup
            .volumes
            .iter()
            .any(|v| v.relative_mount_path() == rel && v.digest() == m.digest);
        if !keep || !wanted.contains(rel) {
            let (o, m2) = (ops.clone(), m.clone());
            if let Err(why) = blocking(move || o.unmount(&m2)).await {
                warn!(path = %rel, reason = %why, "cannot undo an old mount");
            }
            let _ = ev.send(Event::Unmounted(rel.clone()));
        }
    }
    for v in &setup.volumes {
        let rel = v.relative_mount_path().to_string();
        let step = mount_step(&rel);
        let existing = record
            .mounts
            .iter()
            .find(|(r, m)| *r == rel && m.digest == v.digest())
            .map(|(_, m)| m.clone());
        if let Some(m) = existing {
            let (o, m2) = (ops.clone(), m.clone());
            match blocking(move || Ok::<_, String>(o.check(&m2))).await {
                Ok(None) => continue,
                _ => {
                    let o = ops.clone();
                    let _ = blocking(move || o.unmount(&m)).await;
                    let _ = ev.send(Event::Unmounted(rel.clone()));
                }
            }
        }
        let _ = ev.send(status(&setup, Phase::Preparing, &step, None, &run));
        let (o, v2) = (ops.clone(), v.clone());
        match blocking(move || o.mount(&v2, owner)).await {
            Ok(m) => {
                let _ = ev.send(Event::Mounted(rel, m));
            }
            Err(why) => {
                return fail(
                    &step,
                    MOUNT_FAILED,
                    format!("cannot mount {rel}: {why}"),
                    vec![("relative_mount_path".into(), rel.clone())],
                );
            }
        }
    }
    // 3. The setup task, unless it already succeeded for this setup.
    let mut run = run;
    if let Some(task) = setup.setup_task.as_ref().filter(|_| !record.setup_done) {
        run = uuid::Uuid::new_v4().to_string();
        let _ = ev.send(status(
            &setup,
            Phase::Preparing,
            STEP_SETUP_TASK,
            None,
            &run,
        ));
        let files = RunFiles::new(&settings.dir.join("setup"), &run);
        let (grew, rx) = watch::channel([0; 3]);
        let _ = ev.send(Event::SetupStarted(files.clone(), rx));
        let mut env = settings.base_env.clone();
        env.push((
            "AZ_BATCHAI_MOUNT_ROOT".into(),
            settings.mount_root.display().to_string(),
        ));
        env.push((
            "AZ_BATCHAI_STDOUTERR_DIR".into(),
            files.dir.display().to_string(),
        ));
        env.push(("AZ_BATCHAI_NODE_ID".into(), settings.node_id.clone()));
        for v in task.environment_variables.iter().chain(&task.secrets) {
            env.push((v.name.clone(), v.value.clone()));
        }
        let outcome = setup_task::run(task, env, &files, &grew).await;
        if let Some(dir) = setup_task::mirror_dir(task, &settings.mount_root) {
            let (f, d, node) = (files.clone(), dir.clone(), settings.node_id.clone());
            if let Err(why) =
                blocking(move || setup_task::mirror(&f, &d, &node).map_err(|e| e.to_string())).await
            {
                warn!(dir = %dir.display(), reason = %why, "cannot copy the setup output to its mount");
            }
        }
        match outcome {
            Ok(o) if o.exit_code == 0 => {
                let _ = ev.send(Event::SetupDone);
            }
            Ok(o) => {
                let details = vec![
                    ("exit_code".to_string(), o.exit_code.to_string()),
                    ("output_tail".to_string(), o.output_tail),
                ];
                let run_for = run.clone();
                let _ = ev.send(Event::Status(NodeStatus {
                    generation: setup.generation.clone(),
                    phase: Phase::Unusable,
                    step: STEP_SETUP_TASK.into(),
                    error: Some(NodeError {
                        code: SETUP_TASK_FAILED.into(),
                        message: format!("the setup task exited with code {}", o.exit_code),
                        details,
                    }),
                    setup_run: run_for,
                }));
                return;
            }
            Err(e) => {
                let _ = ev.send(Event::Status(NodeStatus {
                    generation: setup.generation.clone(),
                    phase: Phase::Unusable,
                    step: STEP_SETUP_TASK.into(),
                    error: Some(NodeError {
                        code: SETUP_TASK_FAILED.into(),
                        message: format!("cannot run the setup task: {e}"),
                        details: vec![],
                    }),
                    setup_run: run.clone(),
                }));
                return;
            }
        }
    }
    let _ = ev.send(status(&setup, Phase::Ready, "", None, &run));
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the step panicked: {e}"))?
}
