//! One task per held job. It watches the job's records (`started.json`,
//! `exit.json`) and its supervisor, enforces termination and the max wall
//! clock time, and ships the spool files over the current session link,
//! sending `JobExited` only after every byte up to the final lengths.
//!
//! The task outlives sessions: the manager attaches it to each new session
//! (with the coordinator's resume offsets) and detaches it when the session
//! ends; meanwhile it keeps supervising the job.

use super::launcher::{Launcher, ShimHandle};
use super::layout::{JobPaths, StartedRecord, TerminateReason, TerminateRecord, log_line};
use crate::config::ShipConfig;
use crate::model::{JobExit, JobId, Outbound, Stream};
use crate::output::{AdaptivePoll, Read, Shipper, read_batch};
use crate::timefmt;
use futures::future::BoxFuture;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};

mod supervise;

/// Chunks shipped per loop turn before the task looks at its messages again.
const BATCH: usize = 16;
/// Chunks read per hand-off to a blocking thread.
const READS_PER_HANDOFF: usize = 4;

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
        resume: [u64; 3],
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
#[derive(Debug, Default)]
pub struct Shared {
    pub start_time: Option<SystemTime>,
    pub exit: Option<JobExit>,
    pub released: bool,
}

/// Settings every worker shares.
#[derive(Clone)]
pub struct Deps {
    pub launcher: Arc<dyn Launcher>,
    pub default_grace: Duration,
    pub ship: ShipConfig,
}

/// How a worker begins.
pub struct Start {
    pub id: JobId,
    pub paths: JobPaths,
    /// The supervisor this agent just started (absent for adopted jobs).
    pub shim: Option<ShimHandle>,
    /// An exit known without a job directory (the job could not be set up).
    pub preset_exit: Option<JobExit>,
    pub max_wall_clock: Option<Duration>,
}

/// Starts the worker task; returns its control channel and shared state.
pub fn spawn(
    start: Start,
    deps: Deps,
    attach: Option<(Link, [u64; 3])>,
) -> (mpsc::UnboundedSender<Ctl>, Arc<Mutex<Shared>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (shim_pid, shim_exit) = match start.shim {
        Some(h) => (Some(h.pid), Some(h.exited)),
        None => (None, None),
    };
    let own_shim = shim_exit.is_some();
    let span = tracing::info_span!(parent: None, "job", job = %start.id);
    let mut w = Worker {
        shipper: Shipper::new(deps.ship),
        deps,
        shared: shared.clone(),
        link: None,
        files: [None, None, None],
        started: None,
        exit: None,
        exit_reported: false,
        shim_pid,
        own_shim,
        shim_gone: false,
        terminate: None,
        term_signalled: false,
        kill_at: None,
        kill_sent: false,
        max_wall: start.max_wall_clock,
        poll: AdaptivePoll::new(Duration::from_millis(5), Duration::from_millis(100)),
        released: false,
        id: start.id,
        paths: start.paths,
    };
    if let Some(e) = start.preset_exit {
        w.set_exit(e);
    }
    w.load_terminate();
    if !w.own_shim && w.exit.is_none() {
        // Adopted: know the job's state before the next Register lists it.
        if !w.paths.started.exists() {
            w.shim_pid = w.deps.launcher.find_shim(&w.paths.dir);
        }
        w.refresh();
    }
    if let Some((link, resume)) = attach {
        w.handle(Ctl::Attach { link, resume });
    }
    tokio::spawn(w.run(rx, shim_exit).instrument(span));
    (tx, shared)
}

struct Worker {
    id: JobId,
    paths: JobPaths,
    deps: Deps,
    shared: Arc<Mutex<Shared>>,
    link: Option<Link>,
    shipper: Shipper,
    files: [Option<Arc<File>>; 3],
    started: Option<StartedRecord>,
    exit: Option<JobExit>,
    exit_reported: bool,
    shim_pid: Option<i32>,
    own_shim: bool,
    shim_gone: bool,
    terminate: Option<TerminateRecord>,
    term_signalled: bool,
    kill_at: Option<Instant>,
    kill_sent: bool,
    max_wall: Option<Duration>,
    poll: AdaptivePoll,
    released: bool,
}

impl Worker {
    async fn run(
        mut self,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        mut shim_exit: Option<BoxFuture<'static, ()>>,
    ) {
        loop {
            self.refresh();
            self.enforce_deadlines();
            let shipped = self.ship().await;
            self.report_exit();
            if self.released {
                return;
            }
            if shipped.more {
                while let Ok(c) = ctl.try_recv() {
                    self.handle(c);
                }
                tokio::task::yield_now().await;
                continue;
            }
            if shipped.sent {
                // Caught up with the job: give it a moment to write more, so
                // a fast writer yields full chunks rather than many small ones.
                self.poll.active();
            }
            let wait = self.poll.idle();
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                c = ctl.recv() => match c {
                    Some(c) => {
                        self.handle(c);
                        self.poll.active();
                    }
                    None => return,
                },
                () = wait_opt(&mut shim_exit) => {
                    shim_exit = None;
                    self.shim_gone = true;
                    self.poll.active();
                }
                () = sleep_until_opt(deadline) => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn handle(&mut self, c: Ctl) {
        match c {
            Ctl::Attach { link, resume } => {
                self.shipper.resume(resume, Instant::now());
                self.exit_reported = false;
                self.link = Some(link);
                if self.exit.is_none() {
                    self.send_started();
                }
            }
            Ctl::Detach => self.link = None,
            Ctl::Ack(stream, offset) => self.shipper.ack(stream, offset, Instant::now()),
            Ctl::Report => {
                if self.exit.is_some() {
                    self.exit_reported = false;
                } else {
                    self.send_started();
                }
            }
            Ctl::Terminate(grace) => {
                let grace = grace.unwrap_or(self.deps.default_grace);
                self.begin_terminate(TerminateReason::Coordinator, grace);
            }
            Ctl::Release => self.release(),
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

    fn exec_log(&self, msg: &str) {
        if let Err(e) = log_line(&self.paths.stream(Stream::ExecutionLog), msg) {
            warn!(error = %e, "cannot write execution.log");
        }
    }

    fn file(&mut self, s: Stream) -> Option<Arc<File>> {
        let slot = &mut self.files[s.index()];
        if slot.is_none() {
            *slot = File::open(self.paths.stream(s)).ok().map(Arc::new);
        }
        slot.clone()
    }

    fn lengths(&mut self) -> [u64; 3] {
        if let Some(e) = &self.exit {
            return e.lengths;
        }
        Stream::ALL.map(|s| {
            self.file(s)
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len())
        })
    }

    /// Ships what is available within the window.
    async fn ship(&mut self) -> Shipped {
        let mut out = Shipped::default();
        // JobStarted goes first: hold output until the start (or the end) is known.
        if self.link.is_none() || (self.started.is_none() && self.exit.is_none()) {
            return out;
        }
        if self.shipper.rewind_if_stalled(Instant::now()) {
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
                let Some(file) = self.file(r.stream) else {
                    break;
                };
                plan.advance(r.stream, r.len as u64, Instant::now());
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
                out.more = data.len() == self.deps.ship.chunk_bytes;
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
                self.shipper.advance(r.stream, n, Instant::now());
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
        if self.exit_reported || self.link.is_none() || !self.shipper.caught_up(&exit.lengths) {
            return;
        }
        let msg = Outbound::JobExited {
            job_id: self.id.clone(),
            exit: exit.clone(),
        };
        self.exit_reported = self.send(msg);
    }

    fn release(&mut self) {
        if self.exit.is_none() {
            warn!("release of a job that is still running: ignored");
            return;
        }
        for dir in [&self.paths.dir, &self.paths.temp] {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(error = %e, dir = %dir.display(), "cannot delete");
            }
        }
        // Only an empty mount directory is removed: never delete through a mount.
        let _ = std::fs::remove_dir(&self.paths.mount_root);
        info!("job released");
        if let Ok(mut sh) = self.shared.lock() {
            sh.released = true;
        }
        self.released = true;
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

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
