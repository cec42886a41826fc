//! The supervision half of a job's worker: preparing or adopting the job,
//! reading its records, noticing a supervisor that died, terminating
//! (SIGTERM, then SIGKILL after the grace period) and enforcing the max wall
//! clock time. Every decision is written to `execution.log` and, where it
//! must survive an agent restart, to a record in the job directory. All file
//! and process work goes through [`Worker::blocking`].

use super::phase::{Event, Phase};
use super::{Origin, Prepared, Worker, prepare};
use crate::jobs::cgroup::JobCgroup;
use crate::jobs::job_mounts;
use crate::jobs::launcher::ShimHandle;
use crate::jobs::layout::{
    ExitRecord, JobPaths, LaunchRecord, StartedRecord, TerminateReason, TerminateRecord, log_line,
    read_record, write_record,
};
use crate::jobs::watch::JobWatch;
use crate::model::{JobError, JobExit, STREAMS, Stream};
use crate::timefmt;
use nix::sys::signal::Signal;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{info, warn};

/// What the blocking half of preparation returns.
struct Found {
    watch: Option<JobWatch>,
    files: [Option<Arc<File>>; STREAMS],
    shim: Option<ShimHandle>,
    /// Set for a new job that could not be started.
    failed: Option<JobExit>,
    adopted: Option<Adopted>,
    max_wall: Option<Duration>,
    /// The job has (or may have) mounts of its own.
    mounted: bool,
    cgroup: Option<JobCgroup>,
    container: Option<crate::jobs::container::ContainerLaunch>,
    gpu_uuids: Vec<String>,
}

/// The records an adopted job's directory held.
struct Adopted {
    started: io::Result<Option<StartedRecord>>,
    exit: Records,
    terminate: Option<TerminateRecord>,
}

type Records = io::Result<Option<(ExitRecord, [u64; STREAMS])>>;

fn read_exit(paths: &JobPaths) -> Records {
    Ok(read_record::<ExitRecord>(&paths.exit)?.map(|r| (r, paths.lengths())))
}

fn open_spool(paths: &JobPaths) -> [Option<Arc<File>>; STREAMS] {
    Stream::ALL.map(|s| File::open(paths.stream(s)).ok().map(Arc::new))
}

impl Worker {
    /// Sets up a new job or reads an adopted one; the phase leaves `Preparing`.
    pub(super) async fn prepare(&mut self, origin: Origin) -> Prepared {
        let (paths, deps) = (self.paths.clone(), self.deps.clone());
        let found = self
            .blocking(move || {
                let watch = |p: &JobPaths| match &deps.watcher {
                    Some(w) => w
                        .watch(&p.dir, &p.spool)
                        .map_err(|e| warn!(error = %e, "cannot watch the job directory: polling"))
                        .ok(),
                    None => None,
                };
                let spec = match origin {
                    // Rule 4: a directory for the job means it was started before.
                    Origin::New(spec) if !paths.dir.exists() => spec,
                    Origin::New(_) | Origin::Adopted => {
                        // Watch first, so no record written after the reads is missed.
                        let w = watch(&paths);
                        let launch = read_record::<LaunchRecord>(&paths.launch).ok().flatten();
                        let max_wall = launch
                            .as_ref()
                            .and_then(|r| r.max_wall_clock_ms)
                            .map(Duration::from_millis);
                        let cgroup = launch.as_ref().and_then(|r| r.cgroup.clone());
                        let container = launch.as_ref().and_then(|r| r.container.clone());
                        let gpu_uuids = launch.map(|r| r.gpu_uuids).unwrap_or_default();
                        let started = read_record::<StartedRecord>(&paths.started);
                        let known = started.as_ref().ok().and_then(|s| s.map(|s| s.shim_pid));
                        // Found before exit.json is read: a shim that is gone
                        // by then has written its exit record if it ever will.
                        let shim = deps.launcher.find_shim(known, &paths.dir);
                        let exit = read_exit(&paths);
                        let terminate = read_record::<TerminateRecord>(&paths.terminate)
                            .ok()
                            .flatten();
                        return Found {
                            cgroup,
                            container,
                            mounted: job_mounts::has_mounts(&paths),
                            watch: w,
                            files: open_spool(&paths),
                            shim,
                            failed: None,
                            adopted: Some(Adopted {
                                started,
                                exit,
                                terminate,
                            }),
                            max_wall,
                            gpu_uuids,
                        };
                    }
                };
                let max_wall = spec.max_wall_clock_time;
                let mut found = Found {
                    cgroup: None,
                    container: None,
                    mounted: !spec.volumes.is_empty(),
                    watch: None,
                    files: Default::default(),
                    shim: None,
                    failed: None,
                    adopted: None,
                    max_wall,
                    gpu_uuids: spec.gpu_uuids.clone(),
                };
                match prepare::prepare(&deps.settings, &spec, &paths) {
                    Ok((cgroup, container)) => {
                        found.cgroup = cgroup;
                        found.container = container;
                    }
                    Err(err) => {
                        found.failed = Some(prepare::record_failure(&paths, err));
                        // What execution.log says of the failure is shipped too.
                        found.files = open_spool(&paths);
                        return found;
                    }
                }
                found.watch = watch(&paths);
                found.files = open_spool(&paths);
                match deps.launcher.launch(&paths) {
                    Ok(h) => found.shim = Some(h),
                    Err(e) => {
                        let err = JobError::new("JobStartFailed", e.to_string());
                        found.failed = Some(prepare::record_failure(&paths, err));
                    }
                }
                found
            })
            .await;
        self.files = found.files;
        self.mounted = found.mounted;
        self.cgroup = found.cgroup.clone();
        self.container = found.container.clone();
        self.max_wall = found.max_wall;
        self.shim_pid = found.shim.as_ref().map(|h| h.pid);
        if let Ok(mut sh) = self.shared.lock() {
            sh.gpu_uuids = found.gpu_uuids;
            sh.cgroup = found.cgroup.clone();
            sh.container = found.container.clone();
        }
        if let Some(exit) = found.failed {
            self.set_exit(exit).await;
            return Prepared {
                watch: found.watch,
                shim: None,
            };
        }
        self.apply(Event::Prepared).await;
        if let Some(a) = found.adopted {
            match a.started {
                Ok(Some(s)) => self.on_started(s).await,
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read started.json"),
            }
            if let Some(t) = a.terminate {
                // Adopted mid-termination: keep the SIGKILL time; SIGTERM
                // went out then if the job had started.
                let due =
                    timefmt::from_unix_nanos(t.requested_at_ns) + Duration::from_millis(t.grace_ms);
                let kill_at =
                    Instant::now() + due.duration_since(SystemTime::now()).unwrap_or_default();
                self.terminate = Some(t);
                let ev = if self.started.is_some() {
                    Event::Resume { kill_at }
                } else {
                    Event::Terminate { kill_at }
                };
                self.apply(ev).await;
            }
            self.on_records(Ok(None), a.exit, found.shim.is_some())
                .await;
        }
        Prepared {
            watch: found.watch,
            shim: found.shim,
        }
    }

    /// Reads the job's records (after an event said they changed).
    pub(super) async fn refresh(&mut self, shim_running: bool) {
        if !self.phase.is_live() {
            return;
        }
        let paths = self.paths.clone();
        let need_started = self.started.is_none();
        let (started, exit) = self
            .blocking(move || {
                let started = if need_started {
                    read_record::<StartedRecord>(&paths.started)
                } else {
                    Ok(None)
                };
                (started, read_exit(&paths))
            })
            .await;
        self.on_records(started, exit, shim_running).await;
    }

    async fn on_records(
        &mut self,
        started: io::Result<Option<StartedRecord>>,
        exit: Records,
        shim_running: bool,
    ) {
        match started {
            Ok(Some(s)) if self.started.is_none() => self.on_started(s).await,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read started.json"),
        }
        match exit {
            Ok(Some((r, lengths))) => return self.on_exit(r, lengths).await,
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot read exit.json"),
        }
        if !shim_running && self.phase.is_live() {
            let (code, msg) = match self.started {
                Some(s) => (
                    "ExitStatusUnknown",
                    format!("the job's supervisor (process {}) ended without recording the job's exit status", s.shim_pid),
                ),
                None => (
                    "JobStartFailed",
                    "the job's supervisor ended before the job started (the agent may have stopped while starting it)".to_owned(),
                ),
            };
            self.lose(code, msg).await;
        }
    }

    pub(super) async fn on_started(&mut self, s: StartedRecord) {
        info!(pid = s.pid, "job process started");
        self.started = Some(s);
        self.shim_pid.get_or_insert(s.shim_pid);
        let start = timefmt::from_unix_nanos(s.start_time_ns);
        if let Ok(mut sh) = self.shared.lock() {
            sh.start_time = Some(start);
            sh.pgid = Some(s.pgid);
        }
        self.wall_at = self.max_wall.map(|max| {
            Instant::now()
                + (start + max)
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
        });
        self.send_started();
        self.apply(Event::Started).await;
    }

    async fn on_exit(&mut self, r: ExitRecord, lengths: [u64; STREAMS]) {
        let reason = self.terminate.map(|t| t.reason);
        let error = r.error.or_else(|| {
            (reason == Some(TerminateReason::MaxWallClockTime)).then(|| {
                JobError::new(
                    "MaxWallClockTimeExceeded",
                    "the job ran longer than its maximum wall clock time and was terminated",
                )
            })
        });
        let exit = JobExit {
            exit_code: r.exit_code,
            end_time: timefmt::from_unix_nanos(r.end_time_ns),
            error,
            terminated: reason == Some(TerminateReason::Coordinator),
            lengths,
        };
        info!(
            exit_code = exit.exit_code,
            terminated = exit.terminated,
            "job exited"
        );
        self.set_exit(exit).await;
    }

    pub(super) async fn set_exit(&mut self, exit: JobExit) {
        if let Ok(mut sh) = self.shared.lock() {
            sh.exit = Some(exit.clone());
            sh.lengths = exit.lengths;
        }
        self.exit = Some(exit);
        self.apply(Event::Exited).await;
    }

    /// The supervisor is gone without an exit record: kill what is left of
    /// the job (its cgroup; without one, its process group and what left
    /// the group but not the supervisor's session) and record the exit
    /// ourselves.
    async fn lose(&mut self, code: &str, msg: String) {
        let marker = format!("AZ_BATCHAI_STDOUTERR_DIR={}", self.paths.spool.display());
        let (launcher, paths) = (self.deps.launcher.clone(), self.paths.clone());
        let (shim, pgid) = (self.shim_pid, self.started.map(|s| s.pgid));
        let cgroup = self.cgroup.clone();
        let container = self.container.clone();
        let code = code.to_owned();
        let (rec, lengths) = self
            .blocking(move || {
                let killed = launcher.kill_lost(shim, pgid, cgroup.as_ref(), &marker);
                warn!(killed, "{msg}");
                let mut line = msg.clone();
                if killed > 0 {
                    line.push_str(&format!("; killed {killed} remaining processes of the job"));
                }
                // A container outlives its client (the runtime's monitor
                // keeps it): it goes by name, as the supervisor would have
                // removed it.
                if let Some(c) = container {
                    match crate::jobs::container::remove(&c.runtime, &c.run.name) {
                        Ok(()) => line.push_str(&format!("; removed its container {}", c.run.name)),
                        Err(e) => {
                            warn!(error = %e, "cannot remove the job's container");
                            line.push_str(&format!("; could not remove its container: {e}"));
                        }
                    }
                }
                if let Err(e) = log_line(&paths.stream(Stream::ExecutionLog), &line) {
                    warn!(error = %e, "cannot write execution.log");
                }
                let rec = ExitRecord {
                    exit_code: -1,
                    end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
                    error: Some(JobError::new(&code, msg)),
                };
                if let Err(e) = write_record(&paths.exit, &rec, 0o644) {
                    warn!(error = %e, "cannot write exit.json");
                }
                (rec, paths.lengths())
            })
            .await;
        self.on_exit(rec, lengths).await;
    }

    pub(super) async fn exec_log(&self, msg: String) {
        let path = self.paths.stream(Stream::ExecutionLog);
        self.blocking(move || {
            if let Err(e) = log_line(&path, &msg) {
                warn!(error = %e, "cannot write execution.log");
            }
        })
        .await;
    }

    pub(super) async fn begin_terminate(&mut self, reason: TerminateReason, grace: Duration) {
        if !self.phase.is_live() || self.terminate.is_some() {
            return;
        }
        let rec = TerminateRecord {
            reason,
            requested_at_ns: timefmt::to_unix_nanos(SystemTime::now()),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        let why = match reason {
            TerminateReason::Coordinator => "the coordinator asked to terminate the job".to_owned(),
            TerminateReason::MaxWallClockTime => format!(
                "the job exceeded its maximum wall clock time of {}s",
                self.max_wall.unwrap_or_default().as_secs()
            ),
        };
        let how = match (self.started, &self.cgroup) {
            (Some(_), Some(cg)) => format!(
                "sending SIGTERM to every process in the job's cgroup {}, SIGKILL in {:.1}s",
                cg.describe(),
                grace.as_secs_f64()
            ),
            (Some(s), None) => format!(
                "sending SIGTERM to process group {}, SIGKILL in {:.1}s",
                s.pgid,
                grace.as_secs_f64()
            ),
            (None, _) => "the job has not started yet; it will be stopped as it starts".to_owned(),
        };
        info!(?reason, "terminating the job");
        let paths = self.paths.clone();
        let line = format!("terminating: {why}; {how}");
        self.blocking(move || {
            // Durable before any signal: a restarted agent keeps the reason
            // and the SIGKILL time.
            if let Err(e) = write_record(&paths.terminate, &rec, 0o644) {
                warn!(error = %e, "cannot write terminate.json");
            }
            if let Err(e) = log_line(&paths.stream(Stream::ExecutionLog), &line) {
                warn!(error = %e, "cannot write execution.log");
            }
        })
        .await;
        self.terminate = Some(rec);
        self.apply(Event::Terminate {
            kill_at: Instant::now() + grace,
        })
        .await;
    }

    pub(super) async fn signal(&self, sig: Signal) {
        let Some(s) = self.started else { return };
        let (launcher, exit) = (self.deps.launcher.clone(), self.paths.exit.clone());
        let cgroup = self.cgroup.clone();
        self.blocking(move || {
            // Once the supervisor has recorded the exit, the group is gone (it
            // kills leftovers first) and its id may be reused: never signal it.
            if !exit.exists()
                && let Err(e) = launcher.signal_job(s.pgid, cgroup.as_ref(), sig)
            {
                warn!(error = %e, pgid = s.pgid, %sig, "cannot signal the job");
            }
        })
        .await;
    }

    pub(super) async fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        if self.phase == Phase::Running && self.wall_at.is_some_and(|t| now >= t) {
            let grace = self.deps.settings.default_grace;
            self.begin_terminate(TerminateReason::MaxWallClockTime, grace)
                .await;
        }
        if self.phase.deadline().is_some_and(|t| now >= t) {
            self.apply(Event::GraceOver).await;
        }
    }
}
