//! Each job in its own cgroup: what the host offers, found once at agent
//! start ([`Cgroups::detect`]), and a [`JobCgroup`] per job, created before
//! its shim starts and recorded in `launch.json`.
//!
//! - **v2** (`<root>/cgroup.controllers` exists): the agent's own cgroup
//!   (`0::` in `/proc/self/cgroup`) is its delegated subtree (systemd's
//!   `Delegate=yes`). A non-root cgroup with controllers enabled for its
//!   children may hold no process, so the agent moves itself into the leaf
//!   `<own>/agent` (unless it already runs in such a leaf) and jobs go to
//!   `<own>/jobs/<job-id>`, with `cpu`, `memory` and `pids` enabled where the
//!   kernel lets it. An agent in the root cgroup (no delegation, no
//!   systemd) leaves itself there and uses `/<name>/jobs/<job-id>`.
//! - **v1** (per-controller hierarchies `<root>/<controller>/`): for each of
//!   `memory`, `cpuacct`, `freezer` and (for a job with GPUs to deny)
//!   `devices` that is mounted, the job's directory is
//!   `<root>/<ctl>/<agent's path in ctl>/<name>/<job-id>`.
//! - **none** (not root, read-only or absent cgroupfs, `enabled = false`):
//!   logged once; jobs run in their process groups as before.
//!
//! The shim moves itself into the job's cgroup, spawns the job (which is
//! born there: no child can fork before it is placed, and a job run as the
//! admin user needs no permission of its own) and moves itself back to the
//! agent's cgroup. Terminate signals every process in the cgroup (frozen
//! meanwhile), so a child that called `setsid()` goes too.

mod devices;
mod job;
pub mod parse;

pub use devices::{CharDevice, NVIDIA_MAJOR, NvidiaDevices};
pub use job::{CgroupDir, Figures, JobCgroup, Version};

use serde::Deserialize;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// The agent config's `[cgroups]` table.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Put jobs in cgroups where the host allows [default: true].
    pub enabled: bool,
    /// Where cgroupfs is mounted [default: /sys/fs/cgroup].
    pub root: PathBuf,
    /// The name of the agent's subtree (v1, and v2 without delegation) [default: bai].
    pub name: String,
    /// Where the GPU device nodes are [default: /dev].
    pub dev_dir: PathBuf,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: PathBuf::from("/sys/fs/cgroup"),
            name: "bai".into(),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

/// The v1 controllers a job gets a directory in, where mounted: figures
/// (memory, cpuacct), kill (freezer), GPU confinement (devices, only for a
/// job with GPUs to deny). Not `pids`: nothing uses it yet, and each
/// controller costs the shim two migrations per job (each one a write lock
/// that holds up every fork on the host for a moment).
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpuacct", "freezer", "devices"];
/// The v2 controllers enabled for jobs, where available.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot {what} {path}: {message}")]
pub struct CgroupError {
    pub what: &'static str,
    pub path: PathBuf,
    pub message: String,
}

#[derive(Clone, Debug)]
struct V1Controller {
    name: &'static str,
    /// `<root>/<ctl>/<agent's path>/<name>`: where job directories go.
    base: PathBuf,
    /// The agent's own directory in this controller.
    home: PathBuf,
}

#[derive(Clone, Debug)]
enum Mode {
    None { why: String },
    V1(Vec<V1Controller>),
    V2 { jobs: PathBuf, home: PathBuf },
}

/// What the host offers for job cgroups (found once; cheap to share).
#[derive(Clone, Debug)]
pub struct Cgroups {
    mode: Mode,
    devices: NvidiaDevices,
}

impl Cgroups {
    /// Finds what the host offers and prepares the agent's subtree. Blocking;
    /// logs what it found once. Never fails: anything unusable is `none`.
    pub fn detect(cfg: &CgroupConfig) -> Self {
        let proc_devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
        let devices = NvidiaDevices::detect(&cfg.dev_dir, &proc_devices);
        let mode = if !cfg.enabled {
            Mode::None {
                why: "disabled in the configuration".into(),
            }
        } else {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            detect_mode(cfg, &parse::proc_cgroup(&own))
        };
        let cg = Self { mode, devices };
        match &cg.mode {
            Mode::None { why } => {
                warn!(reason = %why, "jobs run without cgroups: terminate reaches only their process groups")
            }
            Mode::V1(ctls) => info!(
                controllers = ?ctls.iter().map(|c| c.name).collect::<Vec<_>>(),
                gpus = ?cg.devices.gpu_minors,
                "jobs run in cgroup v1"
            ),
            Mode::V2 { jobs, .. } => info!(
                dir = %jobs.display(),
                gpus = ?cg.devices.gpu_minors,
                "jobs run in cgroup v2 (GPU devices are not confined: no device program)"
            ),
        }
        cg
    }

    /// No cgroups (for tests and embedding).
    pub fn none() -> Self {
        Self {
            mode: Mode::None {
                why: "not set up".into(),
            },
            devices: NvidiaDevices::default(),
        }
    }

    /// How a job is kept to its GPUs on this node, given how many GPUs the
    /// inventory has and the minors it knows (UUID → N of `/dev/nvidiaN`):
    /// `devices-cgroup-v1` where the v1 devices controller denies the GPU
    /// device nodes found at start and every GPU's minor is known;
    /// `env-only` where only `CUDA_VISIBLE_DEVICES` keeps a job to its GPUs
    /// (cgroup v2, which needs an eBPF device program the agent does not
    /// attach; no devices controller; simulated GPUs, which have no device
    /// nodes); empty on a node without GPUs.
    pub fn gpu_isolation(&self, gpus: usize, minors: &HashMap<String, u32>) -> &'static str {
        let devices_ctl =
            matches!(&self.mode, Mode::V1(ctls) if ctls.iter().any(|c| c.name == "devices"));
        match gpus {
            0 => "",
            n if devices_ctl && minors.len() == n && !self.devices.gpu_minors.is_empty() => {
                "devices-cgroup-v1"
            }
            _ => "env-only",
        }
    }

    /// `v1`, `v2` or `none`.
    pub fn kind(&self) -> &'static str {
        match self.mode {
            Mode::None { .. } => "none",
            Mode::V1(_) => "v1",
            Mode::V2 { .. } => "v2",
        }
    }

    /// The node's NVIDIA devices, as found at start.
    pub fn devices(&self) -> &NvidiaDevices {
        &self.devices
    }

    /// Creates a job's cgroup directory `name`, denying the GPUs it was not
    /// given (see `devices.rs` for `gpu_minors`), before anything runs in it.
    /// `Ok(None)` where the host has no cgroups. Blocking.
    pub fn create(
        &self,
        name: &str,
        gpu_minors: Option<&[u32]>,
    ) -> Result<Option<JobCgroup>, CgroupError> {
        let err = |what, path: &Path, e: io::Error| CgroupError {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        };
        let deny = self.devices.denied(gpu_minors);
        let cg = match &self.mode {
            Mode::None { .. } => return Ok(None),
            Mode::V1(ctls) => JobCgroup {
                version: Version::V1,
                dirs: ctls
                    .iter()
                    .filter(|c| c.name != "devices" || !deny.is_empty())
                    .map(|c| CgroupDir {
                        controller: c.name.to_owned(),
                        path: c.base.join(name),
                        home: c.home.clone(),
                    })
                    .collect(),
            },
            Mode::V2 { jobs, home } => JobCgroup {
                version: Version::V2,
                dirs: vec![CgroupDir {
                    controller: String::new(),
                    path: jobs.join(name),
                    home: home.clone(),
                }],
            },
        };
        let undo = |cg: &JobCgroup| {
            let _ = cg.remove();
        };
        for d in &cg.dirs {
            match std::fs::create_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    undo(&cg);
                    return Err(err("create the job's cgroup", &d.path, e));
                }
            }
        }
        if let Some(d) = cg.dirs.iter().find(|d| d.controller == "devices") {
            let file = d.path.join("devices.deny");
            for dev in &deny {
                // One rule per write: the kernel parses a single entry.
                if let Err(e) = std::fs::write(&file, dev.v1_rule()) {
                    undo(&cg);
                    return Err(err("deny a GPU in", &file, e));
                }
            }
        }
        Ok(Some(cg))
    }
}

fn detect_mode(cfg: &CgroupConfig, own: &[parse::Membership]) -> Mode {
    let none = |why: String| Mode::None { why };
    if !nix::unistd::geteuid().is_root() {
        return none("the agent is not root".into());
    }
    if cfg.root.join("cgroup.controllers").exists() {
        let Some(path) = parse::v2_path(own) else {
            return none("no cgroup v2 line in /proc/self/cgroup".into());
        };
        return match setup_v2(&cfg.root, path, &cfg.name) {
            Ok(m) => m,
            Err(e) => none(e.to_string()),
        };
    }
    let mut ctls = Vec::new();
    let mut skipped = Vec::new();
    for name in V1_CONTROLLERS {
        let mount = cfg.root.join(name);
        if !mount.join("cgroup.procs").exists() {
            skipped.push(format!("{name}: not mounted"));
            continue;
        }
        let Some(path) = parse::v1_path(own, name) else {
            skipped.push(format!("{name}: not in /proc/self/cgroup"));
            continue;
        };
        let home = under(&mount, path);
        let base = home.join(&cfg.name);
        match std::fs::create_dir_all(&base) {
            Ok(()) => ctls.push(V1Controller { name, base, home }),
            Err(e) => skipped.push(format!("{name}: {}: {e}", base.display())),
        }
    }
    if !skipped.is_empty() && !ctls.is_empty() {
        warn!(skipped = ?skipped, "some cgroup v1 controllers are not used for jobs");
    }
    if ctls.is_empty() {
        return none(format!(
            "no usable cgroup v1 controller under {}: {}",
            cfg.root.display(),
            skipped.join("; ")
        ));
    }
    Mode::V1(ctls)
}

/// `<mount>/<path>` for an absolute cgroup path.
fn under(mount: &Path, path: &Path) -> PathBuf {
    mount.join(path.strip_prefix("/").unwrap_or(path))
}

fn setup_v2(root: &Path, own: &Path, name: &str) -> io::Result<Mode> {
    let ctx = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    let own_dir = under(root, own);
    let (base, home) = if own == Path::new("/") {
        // The root cgroup may hold processes and enable controllers at once.
        (root.join(name), own_dir)
    } else if let Some(parent) = own_dir
        .parent()
        .filter(|_| own.file_name().is_some_and(|n| n == "agent"))
    {
        // Already in our leaf (systemd's DelegateSubgroup=agent, or a restart
        // into it): the delegated subtree is the parent.
        (parent.to_owned(), own_dir.clone())
    } else {
        let leaf = own_dir.join("agent");
        std::fs::create_dir_all(&leaf).map_err(|e| ctx("create", &leaf, e))?;
        let procs = leaf.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| ctx("move the agent into", &procs, e))?;
        (own_dir, leaf)
    };
    let jobs = base.join("jobs");
    std::fs::create_dir_all(&jobs).map_err(|e| ctx("create", &jobs, e))?;
    let levels = if own == Path::new("/") {
        vec![root, base.as_path(), jobs.as_path()]
    } else {
        vec![base.as_path(), jobs.as_path()]
    };
    for level in levels {
        enable_v2_controllers(level);
    }
    Ok(Mode::V2 { jobs, home })
}

/// Enables what jobs need of [`V2_CONTROLLERS`] for `dir`'s children; what
/// the kernel refuses (not available, or processes in `dir`) is logged and
/// left out (a job then has no figure for it, and is still tracked).
fn enable_v2_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in V2_CONTROLLERS {
        let has = |list: &str| list.split_whitespace().any(|x| x == c);
        if !has(&available) || has(&enabled) {
            continue;
        }
        if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
            warn!(controller = c, dir = %dir.display(), error = %e, "cannot enable a cgroup controller for jobs");
        }
    }
}

#[cfg(test)]
mod tests;
