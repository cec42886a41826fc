//! The jobs this node holds. [`JobManager`] turns assignments into job
//! directories and supervisors, adopts what a previous agent left running,
//! routes acks, terminations and releases to each job's worker task, and
//! lists held jobs for `Register`.
//!
//! Rule 4 lives here: an assignment for a job the node already holds (running
//! or finished and not released, in memory or on disk) never starts a second
//! process; the job's worker reports its current state instead.

pub mod cgroup;
pub mod container;
pub mod env;
pub mod image_cache;
pub mod job_mounts;
pub mod launcher;
pub mod layout;
pub mod shim;
pub mod watch;
pub mod worker;

use crate::config::ShipConfig;
use crate::model::{Ack, HeldJob, JobId, JobSpec, STREAMS};
use env::BaseEnv;
use launcher::Launcher;
use layout::Layout;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{info, warn};
use watch::Watcher;
use worker::phase::Phase;
use worker::{Ctl, Deps, Handle, Link, Origin, Start};

/// Settings for running jobs on this node.
#[derive(Clone)]
pub struct JobSettings {
    pub layout: Layout,
    pub shell: PathBuf,
    pub base_env: BaseEnv,
    pub default_grace: Duration,
    pub ship: ShipConfig,
    pub node_id: String,
    /// Who new jobs run as: the cluster's admin user once the node is
    /// prepared (none: the agent's user). A started job keeps its own.
    pub run_as: tokio::sync::watch::Receiver<Option<crate::node::admin_user::RunAs>>,
    /// How the node mounts (drivers, endpoints), for the jobs' own mounts;
    /// `None`: a job with mounts fails with `JobMountFailed`.
    pub mounts: Option<crate::node::mounts::MountContext>,
    /// The host's job cgroups, found once at agent start.
    pub cgroups: Arc<cgroup::Cgroups>,
    /// The node's GPUs, UUID → NVIDIA minor number, from the GPU inventory:
    /// how a job's `gpu_uuids` name its device nodes. Empty: not known (no
    /// inventory), and a job's GPU devices are not confined.
    pub gpu_minors: Arc<HashMap<String, u32>>,
    /// `bai-mpi`, OpenMPI's remote launcher for multi-node jobs (installed
    /// beside the agent).
    pub mpi_launcher: PathBuf,
    /// The node's container runtime, if it has one.
    pub containers: Option<Arc<container::Runtime>>,
    /// The images its jobs used, capped (with a runtime).
    pub image_cache: Option<Arc<image_cache::ImageCache>>,
}

/// The jobs this node holds, each with its worker task.
pub struct JobManager {
    settings: JobSettings,
    deps: Deps,
    jobs: HashMap<JobId, Handle>,
    link: Option<Link>,
}

impl JobManager {
    /// Must be called within the runtime (it starts the file watcher).
    pub fn new(settings: JobSettings, launcher: Arc<dyn Launcher>) -> Self {
        let watcher = Watcher::start()
            .map_err(|e| warn!(error = %e, "cannot use inotify: job files will be polled"))
            .ok();
        let deps = Deps {
            launcher,
            settings: Arc::new(settings.clone()),
            watcher,
            blocking: Arc::new(Semaphore::new(worker::BLOCKING_JOBS)),
        };
        Self {
            settings,
            deps,
            jobs: HashMap::new(),
            link: None,
        }
    }

    /// Adopts every job directory left by a previous agent: running jobs
    /// (supervisor alive) and finished ones (exit record present). The
    /// directory is listed off the runtime; each worker reads its own job.
    pub async fn adopt_existing(&mut self) -> std::io::Result<usize> {
        let root = self.settings.layout.jobs_root.clone();
        let ids = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<JobId>> {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(&root)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(|s| JobId::parse(s).ok()) else {
                    warn!(entry = ?name, "skipping a job directory whose name is not a job id");
                    continue;
                };
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut n = 0;
        for id in ids {
            if !self.jobs.contains_key(&id) {
                self.adopt(id);
                n += 1;
            }
        }
        Ok(n)
    }

    fn adopt(&mut self, id: JobId) {
        let paths = self.settings.layout.job(&id);
        info!(job = %id, "adopting job");
        self.spawn(Start {
            id,
            paths,
            origin: Origin::Adopted,
        });
    }

    fn spawn(&mut self, start: Start) {
        let id = start.id.clone();
        let attach = self.link.clone().map(|l| (l, [0; STREAMS]));
        let handle = worker::spawn(start, self.deps.clone(), attach);
        self.jobs.insert(id, handle);
    }

    fn prune(&mut self) {
        self.jobs.retain(|_, h| {
            !h.ctl.is_closed() && !h.shared.lock().map(|s| s.released).unwrap_or(false)
        });
    }

    /// Every held job (running, or exited and not released) for `Register`,
    /// once each job's state is known (adopted jobs have read their records).
    pub async fn held(&mut self) -> Vec<HeldJob> {
        self.prune();
        for h in self.jobs.values_mut() {
            // An error means the worker ended; it is listed as it left things.
            let _ = h.ready.wait_for(|r| *r).await;
        }
        let mut out: Vec<HeldJob> = self
            .jobs
            .iter()
            .map(|(id, h)| {
                let (start_time, exit, lengths) = match h.shared.lock() {
                    Ok(s) => (s.start_time, s.exit.clone(), s.lengths),
                    Err(_) => (None, None, [0; STREAMS]),
                };
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
            let mut offsets = [0u64; STREAMS];
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

    /// Starts an assigned job, unless this node already holds it. The job's
    /// directory and supervisor are set up by its worker, off this task.
    pub fn assign(&mut self, spec: JobSpec) {
        self.prune();
        if let Some(h) = self.jobs.get(&spec.job_id) {
            info!(job = %spec.job_id, "assignment of a job already held: reporting its state");
            let _ = h.ctl.send(Ctl::Report);
            return;
        }
        info!(job = %spec.job_id, name = %spec.job_name, "starting job");
        let paths = self.settings.layout.job(&spec.job_id);
        self.spawn(Start {
            id: spec.job_id.clone(),
            paths,
            origin: Origin::New(Box::new(spec)),
        });
    }

    /// How often the worker of job `id` has woken up (see [`Shared::wakeups`]).
    pub fn wakeups(&self, id: &JobId) -> Option<u64> {
        let h = self.jobs.get(id)?;
        h.shared.lock().ok().map(|s| s.wakeups)
    }

    /// Whether any job's process runs now (cheap: no pruning, no copies).
    pub fn any_running(&self) -> bool {
        self.jobs.values().any(|h| {
            h.shared
                .lock()
                .is_ok_and(|s| s.pgid.is_some() && s.exit.is_none())
        })
    }

    /// The jobs whose process runs now, for their metrics.
    pub fn running(&mut self) -> Vec<crate::metrics::RunningJob> {
        self.prune();
        self.jobs
            .iter()
            .filter_map(|(id, h)| {
                let s = h.shared.lock().ok()?;
                let pgid = s.pgid.filter(|_| s.exit.is_none())?;
                Some(crate::metrics::RunningJob {
                    id: id.clone(),
                    gpu_uuids: s.gpu_uuids.clone(),
                    pgid,
                    cgroup: s.cgroup.clone(),
                    container: s.container.clone(),
                })
            })
            .collect()
    }

    /// Writes `message` into the execution log of every running job holding
    /// GPU `uuid` (the GPU's fault events: the user sees them with the job's
    /// output). Off the runtime: one small append per job.
    pub fn log_gpu_event(&mut self, uuid: &str, message: &str) {
        self.prune();
        let holders: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, h)| {
                h.shared
                    .lock()
                    .is_ok_and(|s| s.exit.is_none() && s.gpu_uuids.iter().any(|u| u == uuid))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in holders {
            let path = self
                .settings
                .layout
                .job(&id)
                .stream(crate::model::Stream::ExecutionLog);
            let message = message.to_owned();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = layout::log_line(&path, &message) {
                    warn!(job = %id, error = %e, "cannot write a GPU event to the execution log");
                }
            });
        }
    }

    /// The phase of job `id`.
    pub fn phase(&self, id: &JobId) -> Option<Phase> {
        let h = self.jobs.get(id)?;
        h.shared.lock().ok().map(|s| s.phase)
    }
}

/// `bai-mpi` beside the running agent binary (where packages and
/// `cargo build` put both), else on `PATH`.
pub fn mpi_launcher() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("bai-mpi")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("bai-mpi"))
}
