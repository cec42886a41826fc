//! One task per held job. It prepares the job (or picks up what a previous
//! agent left), follows it through the phases of [`phase::Phase`], enforces
//! termination and the max wall clock time, and ships the spool files over
//! the current session link, sending `JobExited` only after every byte up to
//! the final lengths.
//!
//! The task does no blocking work itself: file and process work (setup,
//! records, signals, cleanup) runs on the blocking pool, at most
//! [`BLOCKING_JOBS`] jobs' worth at once. It sleeps until something happens:
//! a message from the manager, a change in the job directory or the spool
//! (inotify, see `watch.rs`), the supervisor's exit (a pidfd), or a deadline
//! it set (SIGKILL, wall clock, an ack stall, a short pause to let a fast
//! writer fill a chunk). A running job that writes nothing wakes it never.
//!
//! The task outlives sessions: the manager attaches it to each new session
//! (with the coordinator's resume offsets) and detaches it when the session
//! ends; meanwhile it keeps supervising the job.

use super::JobSettings;
use super::launcher::{Launcher, ShimHandle};
use super::layout::{JobPaths, StartedRecord, TerminateRecord};
use super::watch::{Changes, JobWatch, Watcher};
use crate::model::{JobExit, JobId, JobSpec, Outbound, STREAMS, Stream};
use crate::output::{Read, Shipper, read_batch};
use crate::timefmt;
use futures::future::BoxFuture;
use phase::{Action, Event, Phase};
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

pub mod phase;
mod prepare;
mod supervise;

/// Chunks shipped per loop turn before the task looks at its messages again.
const BATCH: usize = 16;
/// Chunks read per hand-off to a blocking thread.
const READS_PER_HANDOFF: usize = 4;
/// After a turn that shipped output, wait this long before reading the spool
/// again, so a fast writer yields full chunks rather than many small ones.
const COALESCE: Duration = Duration::from_millis(5);
/// Where inotify or a pidfd is unavailable: how often to look instead.
const FALLBACK_POLL: Duration = Duration::from_millis(250);
/// How many jobs' blocking work may run at once.
pub const BLOCKING_JOBS: usize = 8;

/// Where a worker sends its messages while a session is up.
#[derive(Clone, Debug)]
pub struct Link {
    pub out: mpsc::UnboundedSender<Outbound>,
}

/// Instructions from the job manager.
#[derive(Debug)]
pub enum Ctl {
    /// A session is up: ship from these offsets (the coordinator's lengths).
    Attach {
        link: Link,
        resume: [u64; STREAMS],
    },
    /// The session ended.
    Detach,
    Ack(Stream, u64),
    /// A duplicate assignment: report the current state again.
    Report,
    Terminate(Option<Duration>),
    Release,
}

/// What the manager reads for `Register`.
#[derive(Debug)]
pub struct Shared {
    pub start_time: Option<SystemTime>,
    pub exit: Option<JobExit>,
    pub released: bool,
    /// The spool lengths the worker last saw (the final ones once exited).
    pub lengths: [u64; STREAMS],
    pub phase: Phase,
    /// How many times the task woke up (for tests and diagnostics: an idle
    /// running job must not add to it).
    pub wakeups: u64,
    /// The GPUs the job holds (known once it is prepared or adopted).
    pub gpu_uuids: Vec<String>,
    /// The job's process group, once it started.
    pub pgid: Option<i32>,
    /// The job's cgroup, where the node has them (its figures are the
    /// job's, whatever process groups its processes moved to).
    pub cgroup: Option<super::cgroup::JobCgroup>,
    /// The container the job runs in, if it does.
    pub container: Option<super::container::ContainerLaunch>,
}

/// Settings every worker shares.
#[derive(Clone)]
pub struct Deps {
    pub launcher: Arc<dyn Launcher>,
    pub settings: Arc<JobSettings>,
    /// `None` where inotify could not be set up: workers then poll.
    pub watcher: Option<Watcher>,
    /// Bounds the blocking work of all jobs together.
    pub blocking: Arc<Semaphore>,
}

/// Where a worker's job comes from.
pub enum Origin {
    /// Assigned now: set up its directory and start its supervisor (unless
    /// a directory for it exists: then it is adopted, never run twice).
    New(Box<JobSpec>),
    /// Left by a previous agent.
    Adopted,
}

/// How a worker begins.
pub struct Start {
    pub id: JobId,
    pub paths: JobPaths,
    pub origin: Origin,
}

/// The manager's side of a worker.
pub struct Handle {
    pub ctl: mpsc::UnboundedSender<Ctl>,
    pub shared: Arc<Mutex<Shared>>,
    /// Becomes true once the job's state is known (preparation done).
    pub ready: watch::Receiver<bool>,
}

/// Starts the worker task.
pub fn spawn(start: Start, deps: Deps, attach: Option<(Link, [u64; STREAMS])>) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = watch::channel(false);
    let shared = Arc::new(Mutex::new(Shared {
        start_time: None,
        exit: None,
        released: false,
        lengths: [0; STREAMS],
        phase: Phase::Preparing,
        wakeups: 0,
        gpu_uuids: Vec::new(),
        pgid: None,
        cgroup: None,
        container: None,
    }));
    let span = tracing::info_span!(parent: None, "job", job = %start.id);
    let w = Worker {
        shipper: Shipper::new(deps.settings.ship),
        deps,
        shared: shared.clone(),
        link: None,
        files: Default::default(),
        phase: Phase::Preparing,
        started: None,
        exit: None,
        terminate: None,
        max_wall: None,
        wall_at: None,
        shim_pid: None,
        mounted: false,
        cgroup: None,
        container: None,
        id: start.id,
        paths: start.paths,
    };
    tokio::spawn(w.run(rx, start.origin, attach, ready_tx).instrument(span));
    Handle {
        ctl: tx,
        shared,
        ready,
    }
}

struct Worker {
    id: JobId,
    paths: JobPaths,
    deps: Deps,
    shared: Arc<Mutex<Shared>>,
    link: Option<Link>,
    shipper: Shipper,
    files: [Option<Arc<File>>; STREAMS],
    phase: Phase,
    started: Option<StartedRecord>,
    exit: Option<JobExit>,
    terminate: Option<TerminateRecord>,
    max_wall: Option<Duration>,
    /// When the max wall clock time runs out (known once the job started).
    wall_at: Option<Instant>,
    shim_pid: Option<i32>,
    /// The job has (or may have) mounts of its own to remove.
    mounted: bool,
    /// The job's cgroup (from its preparation or `launch.json`).
    cgroup: Option<super::cgroup::JobCgroup>,
    /// The container it runs in, if it does (from the same).
    container: Option<super::container::ContainerLaunch>,
}

/// What preparation found or made.
struct Prepared {
    watch: Option<JobWatch>,
    shim: Option<ShimHandle>,
}

impl Worker {
    async fn run(
        mut self,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        origin: Origin,
        attach: Option<(Link, [u64; STREAMS])>,
        ready: watch::Sender<bool>,
    ) {
        let Prepared { watch, shim } = self.prepare(origin).await;
        let _ = ready.send(true);
        if let Some((link, resume)) = attach {
            self.handle(Ctl::Attach { link, resume }).await;
        }
        let changes: Option<Arc<Changes>> = watch.as_ref().map(|w| w.changes.clone());
        let mut shim_exit = shim.map(|h| self.exit_future(h));
        let mut look = false;
        loop {
            if look {
                self.refresh(shim_exit.is_some()).await;
                look = false;
            }
            self.enforce_deadlines().await;
            let shipped = self.ship().await;
            self.report_exit();
            if self.phase == Phase::Released {
                return;
            }
            if shipped.more {
                while let Ok(c) = ctl.try_recv() {
                    self.handle(c).await;
                }
                tokio::task::yield_now().await;
                continue;
            }
            let hold = shipped.sent.then(|| Instant::now() + COALESCE);
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                c = ctl.recv() => match c {
                    Some(c) => self.handle(c).await,
                    None => return,
                },
                () = wait_opt(&mut shim_exit) => {
                    shim_exit = None;
                    look = true;
                }
                seen = changed_opt(changes.as_deref()), if hold.is_none() => {
                    look = seen.records && self.records_matter(shim_exit.is_some());
                }
                () = sleep_until_opt(hold) => {
                    let records = changes.as_ref().is_some_and(|c| c.take().records);
                    look = records && self.records_matter(shim_exit.is_some());
                }
                () = sleep_until_opt(deadline) => {}
                () = tokio::time::sleep(FALLBACK_POLL), if changes.is_none() => look = true,
            }
            if let Ok(mut sh) = self.shared.lock() {
                sh.wakeups += 1;
            }
        }
    }

    /// Whether a change in the job directory is worth reading: until the
    /// start is known, or when the supervisor's exit is not watched. Once
    /// it runs and is watched, the exit record needs no event: the shim
    /// writes it just before it exits, and its exit is read anyway.
    fn records_matter(&self, shim_watched: bool) -> bool {
        self.phase.is_live() && (self.started.is_none() || !shim_watched)
    }

    /// Runs blocking work on the blocking pool, within the shared bound.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self.deps.blocking.clone().acquire_owned().await.ok();
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The supervisor's exit as a future: its pidfd becoming readable (or,
    /// without one, a slow liveness check), then reaping it if it is ours.
    fn exit_future(&self, h: ShimHandle) -> BoxFuture<'static, ()> {
        let launcher = self.deps.launcher.clone();
        let dir = self.paths.dir.clone();
        Box::pin(async move {
            match h.exit {
                Some(exit) => {
                    let _ = exit.exited().await;
                }
                None => loop {
                    tokio::time::sleep(FALLBACK_POLL).await;
                    let (l, d) = (launcher.clone(), dir.clone());
                    let alive = tokio::task::spawn_blocking(move || l.shim_alive(h.pid, &d))
                        .await
                        .unwrap_or(false);
                    if !alive {
                        break;
                    }
                },
            }
            if h.child {
                launcher.reap(h.pid);
            }
        })
    }

    /// Moves to the next phase and carries out its actions.
    async fn apply(&mut self, event: Event) {
        let step = self.phase.on(event, Instant::now());
        if step.phase != self.phase {
            debug!(from = ?self.phase, to = ?step.phase, ?event, "job phase");
        }
        self.phase = step.phase;
        if let Ok(mut sh) = self.shared.lock() {
            sh.phase = step.phase;
        }
        for a in step.actions {
            match a {
                Action::SigTerm => self.signal(nix::sys::signal::Signal::SIGTERM).await,
                Action::SigKill => {
                    self.exec_log(
                        "the grace period is over: sending SIGKILL to every process of the job"
                            .into(),
                    )
                    .await;
                    self.signal(nix::sys::signal::Signal::SIGKILL).await;
                }
                Action::Unmount => self.unmount().await,
                Action::Delete => self.delete().await,
            }
        }
    }

    async fn handle(&mut self, c: Ctl) {
        match c {
            Ctl::Attach { link, resume } => {
                self.shipper.resume(resume, Instant::now().into_std());
                self.link = Some(link);
                if self.exit.is_none() {
                    self.send_started();
                } else {
                    self.apply(Event::Unreported).await;
                }
            }
            Ctl::Detach => self.link = None,
            Ctl::Ack(stream, offset) => {
                self.shipper.ack(stream, offset, Instant::now().into_std());
            }
            Ctl::Report => {
                if self.exit.is_some() {
                    self.apply(Event::Unreported).await;
                } else {
                    self.send_started();
                }
            }
            Ctl::Terminate(grace) => {
                let grace = grace.unwrap_or(self.deps.settings.default_grace);
                self.begin_terminate(super::layout::TerminateReason::Coordinator, grace)
                    .await;
            }
            Ctl::Release => {
                if self.phase.is_live() {
                    warn!("release of a job that is still running: ignored");
                } else {
                    self.apply(Event::Release).await;
                }
            }
        }
    }

    fn send(&mut self, msg: Outbound) -> bool {
        match &self.link {
            Some(l) if l.out.send(msg).is_ok() => true,
            Some(_) => {
                self.link = None;
                false
            }
            None => false,
        }
    }

    fn send_started(&mut self) {
        if let Some(s) = self.started {
            self.send(Outbound::JobStarted {
                job_id: self.id.clone(),
                start_time: timefmt::from_unix_nanos(s.start_time_ns),
                pid: s.pid,
            });
        }
    }

    fn lengths(&mut self) -> [u64; STREAMS] {
        let lengths = match &self.exit {
            Some(e) => e.lengths,
            // fstat on descriptors held open: no path lookup, no disk IO.
            None => std::array::from_fn(|i| {
                self.files[i]
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .map_or(0, |m| m.len())
            }),
        };
        if let Ok(mut sh) = self.shared.lock() {
            sh.lengths = lengths;
        }
        lengths
    }

    /// Ships what is available within the window.
    async fn ship(&mut self) -> Shipped {
        let mut out = Shipped::default();
        // JobStarted goes first: hold output until the start (or the end) is known.
        if self.link.is_none() || (self.started.is_none() && self.exit.is_none()) {
            return out;
        }
        if self.shipper.rewind_if_stalled(Instant::now().into_std()) {
            debug!("acknowledgements stalled: re-sending from the acknowledged offsets");
        }
        let lengths = self.lengths();
        let mut budget = BATCH;
        while budget > 0 {
            // Plan a few reads on a copy of the cursors, do them with one
            // hand-off to a blocking thread, then send what was read.
            let mut plan = self.shipper.clone();
            let mut reads = Vec::with_capacity(READS_PER_HANDOFF);
            while reads.len() < READS_PER_HANDOFF.min(budget) {
                let Some(r) = plan.next_read(&lengths) else {
                    break;
                };
                let Some(file) = self.files[r.stream.index()].clone() else {
                    break;
                };
                plan.advance(r.stream, r.len as u64, Instant::now().into_std());
                reads.push((file, r));
            }
            if reads.is_empty() {
                break;
            }
            budget -= reads.len();
            let planned: Vec<Read> = reads.iter().map(|(_, r)| *r).collect();
            let datas = match read_batch(reads).await {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "cannot read the spool");
                    break;
                }
            };
            let complete = datas.len() == planned.len()
                && datas.last().map(Vec::len) == planned.last().map(|r| r.len);
            for (r, data) in planned.into_iter().zip(datas) {
                if data.is_empty() {
                    break;
                }
                let n = data.len() as u64;
                out.more = data.len() == self.deps.settings.ship.chunk_bytes;
                let msg = Outbound::Output {
                    job_id: self.id.clone(),
                    stream: r.stream,
                    offset: r.offset,
                    data,
                };
                if !self.send(msg) {
                    out.more = false;
                    return out;
                }
                self.shipper.advance(r.stream, n, Instant::now().into_std());
                out.sent = true;
            }
            if !complete {
                break;
            }
        }
        out
    }

    /// Rule 3: `JobExited` goes out only after every byte up to the final lengths.
    fn report_exit(&mut self) {
        let Some(exit) = &self.exit else { return };
        if self.phase != Phase::Collecting
            || self.link.is_none()
            || !self.shipper.caught_up(&exit.lengths)
        {
            return;
        }
        let msg = Outbound::JobExited {
            job_id: self.id.clone(),
            exit: exit.clone(),
            metrics: None,
        };
        if self.send(msg) {
            // Reported is a phase change without actions: no await needed.
            let step = self.phase.on(Event::Reported, Instant::now());
            self.phase = step.phase;
            if let Ok(mut sh) = self.shared.lock() {
                sh.phase = step.phase;
            }
        }
    }

    /// Removes the job's own mounts once its processes are gone.
    async fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        let paths = self.paths.clone();
        let result = self
            .blocking(move || super::job_mounts::unmount_all(&paths))
            .await;
        match result {
            Ok(()) => self.mounted = false,
            // Tried again at release; the records stay until then.
            Err(e) => warn!(error = %e, "cannot remove the job's mounts"),
        }
    }

    /// Deletes the job's files (the job has ended and been released).
    async fn delete(&mut self) {
        let paths = self.paths.clone();
        let mounted = self.mounted;
        let cgroup = self.cgroup.take();
        let shared = self.deps.settings.layout.shared_temp(&self.id);
        self.blocking(move || {
            // Before the directory that records it: a crash in between
            // leaves the record for the next agent to retry.
            if let Some(cg) = cgroup
                && let Err(e) = cg.remove()
            {
                warn!(error = %e, "cannot remove the job's cgroup");
            }
            if mounted && let Err(e) = super::job_mounts::unmount_all(&paths) {
                warn!(error = %e, "cannot remove the job's mounts: their records go with the job");
            }
            // A multi-node job's shared temp, if this node (the master's)
            // made it: its record says so, read only where one exists.
            let shared = shared
                .filter(|d| d.exists())
                .and_then(|_| {
                    super::layout::read_record::<super::layout::LaunchRecord>(&paths.launch).ok()
                })
                .flatten()
                .and_then(|r| r.shared_temp);
            for dir in [Some(&paths.dir), Some(&paths.temp), shared.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Err(e) = std::fs::remove_dir_all(dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(error = %e, dir = %dir.display(), "cannot delete");
                }
            }
            // Only an empty mount directory is removed: never delete through a mount.
            let _ = std::fs::remove_dir(&paths.mount_root);
        })
        .await;
        info!("job released");
        if let Ok(mut sh) = self.shared.lock() {
            sh.released = true;
        }
    }

    /// The earliest time the task must wake without an event.
    fn next_deadline(&self) -> Option<Instant> {
        let wall = self.wall_at.filter(|_| self.phase == Phase::Running);
        let stall = self
            .link
            .as_ref()
            .and_then(|_| self.shipper.stall_deadline())
            .map(Instant::from_std);
        [self.phase.deadline(), wall, stall]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What one shipping turn did.
#[derive(Debug, Default)]
struct Shipped {
    /// At least one chunk went out.
    sent: bool,
    /// The last chunk was full size: more is probably waiting.
    more: bool,
}

async fn wait_opt(f: &mut Option<BoxFuture<'static, ()>>) {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn changed_opt(c: Option<&Changes>) -> super::watch::Seen {
    match c {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
