//! The jobs this node holds. [`JobManager`] turns assignments into job
//! directories and supervisors, adopts what a previous agent left running,
//! routes acks, terminations and releases to each job's worker task, and
//! lists held jobs for `Register`.
//!
//! Rule 4 lives here: an assignment for a job the node already holds (running
//! or finished and not released, in memory or on disk) never starts a second
//! process; the job's worker reports its current state instead.

pub mod env;
pub mod launcher;
pub mod layout;
pub mod shim;
pub mod worker;

use crate::config::ShipConfig;
use crate::model::{Ack, HeldJob, JobError, JobExit, JobId, JobSpec, Stream};
use crate::timefmt;
use env::{BaseEnv, NodePaths, job_env};
use launcher::Launcher;
use layout::{JobPaths, LaunchRecord, Layout, log_line, write_record};
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tracing::{info, warn};
use worker::{Ctl, Deps, Link, Shared, Start};

/// Settings for running jobs on this node.
#[derive(Clone)]
pub struct JobSettings {
    pub layout: Layout,
    pub shell: PathBuf,
    pub base_env: BaseEnv,
    pub default_grace: Duration,
    pub ship: ShipConfig,
    pub node_id: String,
}

struct Handle {
    ctl: mpsc::UnboundedSender<Ctl>,
    shared: Arc<Mutex<Shared>>,
    paths: JobPaths,
}

/// The jobs this node holds, each with its worker task.
pub struct JobManager {
    settings: JobSettings,
    deps: Deps,
    jobs: HashMap<JobId, Handle>,
    link: Option<Link>,
}

impl JobManager {
    pub fn new(settings: JobSettings, launcher: Arc<dyn Launcher>) -> Self {
        let deps = Deps {
            launcher,
            default_grace: settings.default_grace,
            ship: settings.ship,
        };
        Self {
            settings,
            deps,
            jobs: HashMap::new(),
            link: None,
        }
    }

    /// Adopts every job directory left by a previous agent: running jobs
    /// (supervisor alive) and finished ones (exit record present).
    pub fn adopt_existing(&mut self) -> std::io::Result<usize> {
        let root = &self.settings.layout.jobs_root;
        let mut n = 0;
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|s| JobId::parse(s).ok()) else {
                warn!(entry = ?name, "skipping a job directory whose name is not a job id");
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || self.jobs.contains_key(&id) {
                continue;
            }
            self.adopt(id);
            n += 1;
        }
        Ok(n)
    }

    fn adopt(&mut self, id: JobId) {
        let paths = self.settings.layout.job(&id);
        let max_wall_clock = layout::read_record::<LaunchRecord>(&paths.launch)
            .ok()
            .flatten()
            .and_then(|r| r.max_wall_clock_ms)
            .map(Duration::from_millis);
        info!(job = %id, "adopting job");
        self.spawn(Start {
            id,
            paths,
            shim: None,
            preset_exit: None,
            max_wall_clock,
        });
    }

    fn spawn(&mut self, start: Start) {
        let id = start.id.clone();
        let paths = start.paths.clone();
        let attach = self.link.clone().map(|l| (l, [0; 3]));
        let (ctl, shared) = worker::spawn(start, self.deps.clone(), attach);
        self.jobs.insert(id, Handle { ctl, shared, paths });
    }

    fn prune(&mut self) {
        self.jobs.retain(|_, h| {
            !h.ctl.is_closed() && !h.shared.lock().map(|s| s.released).unwrap_or(false)
        });
    }

    /// Every held job (running, or exited and not released) for `Register`.
    pub fn held(&mut self) -> Vec<HeldJob> {
        self.prune();
        let mut out: Vec<HeldJob> = self
            .jobs
            .iter()
            .map(|(id, h)| {
                let (start_time, exit) = match h.shared.lock() {
                    Ok(s) => (s.start_time, s.exit.clone()),
                    Err(_) => (None, None),
                };
                let lengths = exit
                    .as_ref()
                    .map_or_else(|| h.paths.lengths(), |e| e.lengths);
                HeldJob {
                    job_id: id.clone(),
                    start_time,
                    exit,
                    lengths,
                }
            })
            .collect();
        out.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        out
    }

    /// A session is up: every job ships from the coordinator's resume
    /// offsets (streams not listed resume from 0).
    pub fn attach(&mut self, link: Link, resume: &[Ack]) {
        self.prune();
        self.link = Some(link.clone());
        for (id, h) in &self.jobs {
            let mut offsets = [0u64; 3];
            for a in resume.iter().filter(|a| &a.job_id == id) {
                offsets[a.stream.index()] = a.offset;
            }
            let _ = h.ctl.send(Ctl::Attach {
                link: link.clone(),
                resume: offsets,
            });
        }
    }

    /// The session ended.
    pub fn detach(&mut self) {
        self.link = None;
        for h in self.jobs.values() {
            let _ = h.ctl.send(Ctl::Detach);
        }
    }

    pub fn ack(&mut self, ack: Ack) {
        match self.jobs.get(&ack.job_id) {
            Some(h) => {
                let _ = h.ctl.send(Ctl::Ack(ack.stream, ack.offset));
            }
            None => warn!(job = %ack.job_id, "output ack for a job this node does not hold"),
        }
    }

    pub fn terminate(&mut self, id: &JobId, grace: Option<Duration>) {
        match self.jobs.get(id) {
            Some(h) => {
                let _ = h.ctl.send(Ctl::Terminate(grace));
            }
            None => warn!(job = %id, "terminate for a job this node does not hold"),
        }
    }

    pub fn release(&mut self, id: &JobId) {
        match self.jobs.get(id) {
            Some(h) => {
                let _ = h.ctl.send(Ctl::Release);
            }
            None => warn!(job = %id, "release for a job this node does not hold"),
        }
    }

    /// Number of jobs held (running or awaiting release).
    pub fn len(&mut self) -> usize {
        self.prune();
        self.jobs.len()
    }

    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Starts an assigned job, unless this node already holds it.
    pub fn assign(&mut self, spec: JobSpec) {
        self.prune();
        if let Some(h) = self.jobs.get(&spec.job_id) {
            info!(job = %spec.job_id, "assignment of a job already held: reporting its state");
            let _ = h.ctl.send(Ctl::Report);
            return;
        }
        let paths = self.settings.layout.job(&spec.job_id);
        if paths.dir.exists() {
            // Left by an earlier agent and not adopted yet: never run it twice.
            self.adopt(spec.job_id.clone());
            return;
        }
        info!(job = %spec.job_id, name = %spec.job_name, "starting job");
        let max_wall_clock = spec.max_wall_clock_time;
        let (shim, preset_exit) = match self.prepare(&spec, &paths) {
            Ok(()) => match self.deps.launcher.launch(&paths) {
                Ok(h) => (Some(h), None),
                Err(e) => {
                    let err = JobError::new("JobStartFailed", e.to_string());
                    (None, Some(self.record_failure(&paths, err)))
                }
            },
            Err(err) => (None, Some(self.record_failure(&paths, err))),
        };
        self.spawn(Start {
            id: spec.job_id,
            paths,
            shim,
            preset_exit,
            max_wall_clock,
        });
    }

    /// Creates the job's directories, spool files and `launch.json`.
    fn prepare(&self, spec: &JobSpec, paths: &JobPaths) -> Result<(), JobError> {
        let fail = |what: &str, path: &Path, e: std::io::Error| {
            JobError::new(
                "JobSetupFailed",
                format!("cannot create {what} {}: {e}", path.display()),
            )
        };
        let mut private = std::fs::DirBuilder::new();
        private.recursive(true).mode(0o700);
        let mut public = std::fs::DirBuilder::new();
        public.recursive(true).mode(0o755);
        private
            .create(&paths.dir)
            .map_err(|e| fail("the job directory", &paths.dir, e))?;
        public
            .create(&paths.spool)
            .map_err(|e| fail("the output directory", &paths.spool, e))?;
        for s in Stream::ALL {
            let p = paths.stream(s);
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&p)
                .map_err(|e| fail("the output file", &p, e))?;
        }
        for (what, dir) in [
            ("the job temp directory", &paths.temp),
            ("the shared job temp directory", &paths.shared_temp),
            ("the job mount root", &paths.mount_root),
        ] {
            public.create(dir).map_err(|e| fail(what, dir, e))?;
        }
        let layout = &self.settings.layout;
        let env = job_env(
            &self.settings.base_env,
            spec,
            &NodePaths {
                job_temp: &paths.temp,
                job_temp_root: &layout.job_temp_root,
                shared_job_temp: &paths.shared_temp,
                stdouterr_dir: &paths.spool,
                mount_root: &layout.mount_root,
                job_mount_root: &paths.mount_root,
                num_gpus: 0,
            },
        );
        let rec = LaunchRecord {
            job_id: spec.job_id.as_str().to_owned(),
            shell: self.settings.shell.clone(),
            command_line: spec.command_line.clone(),
            work_dir: paths.temp.clone(),
            env,
            max_wall_clock_ms: spec
                .max_wall_clock_time
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            assigned_at_ns: timefmt::to_unix_nanos(SystemTime::now()),
        };
        write_record(&paths.launch, &rec, 0o600)
            .map_err(|e| fail("the launch record", &paths.launch, e))?;
        let _ = log_line(
            &paths.stream(Stream::ExecutionLog),
            &format!(
                "bai-agent {} on node {}: starting job {}/{}/{} ({})",
                env!("CARGO_PKG_VERSION"),
                self.settings.node_id,
                spec.workspace,
                spec.experiment,
                spec.job_name,
                spec.job_id
            ),
        );
        Ok(())
    }

    /// Records a job that could not be started: an `execution.log` line and
    /// `exit.json` where the directory allows, and the exit either way.
    fn record_failure(&self, paths: &JobPaths, err: JobError) -> JobExit {
        warn!(code = %err.code, "{}", err.message);
        let now = SystemTime::now();
        let _ = log_line(
            &paths.stream(Stream::ExecutionLog),
            &format!("the job could not be started: {}", err.message),
        );
        let _ = write_record(
            &paths.exit,
            &layout::ExitRecord {
                exit_code: -1,
                end_time_ns: timefmt::to_unix_nanos(now),
                error: Some(err.clone()),
            },
            0o644,
        );
        JobExit {
            exit_code: -1,
            end_time: now,
            error: Some(err),
            terminated: false,
            lengths: paths.lengths(),
        }
    }
}
