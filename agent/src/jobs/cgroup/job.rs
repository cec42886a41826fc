//! One job's cgroup: its directories (kept in `launch.json`, so a
//! restarted agent finds them), and what is done with them — the shim
//! entering before it spawns the job and leaving after, signalling or
//! killing every process in it, the job's CPU and memory figures, and
//! removal. Plain blocking file work on cgroupfs.

use super::parse;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup interface a job's directories belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// One directory of a job's cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    /// The v1 controller (`memory`, `cpuacct`, `pids`, `freezer`,
    /// `devices`); empty for v2.
    pub controller: String,
    /// The job's directory.
    pub path: PathBuf,
    /// Where the shim was born (the agent's cgroup), to go back to once
    /// the job is spawned.
    pub home: PathBuf,
}

/// A job's cgroup, as recorded in `launch.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCgroup {
    pub version: Version,
    pub dirs: Vec<CgroupDir>,
}

/// A job's resource figures; `None` where the host's cgroup does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// CPU time of all the job's processes, past and present.
    pub cpu_seconds: Option<f64>,
    /// Memory charged to the job now (page cache included).
    pub memory_bytes: Option<u64>,
    /// The most memory charged to the job at once.
    pub memory_peak_bytes: Option<u64>,
}

/// How long a freeze may take before the signals go out anyway (a process
/// in uninterruptible sleep holds a v1 freezer in FREEZING).
const FREEZE_WAIT: Duration = Duration::from_secs(1);
/// How long removal waits for killed processes to leave.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl JobCgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controller == controller)
            .map(|d| d.path.as_path())
    }

    /// The directory whose `cgroup.procs` lists the job's processes.
    fn tracking(&self) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|d| d.path.as_path()),
            Version::V1 => self
                .dir("freezer")
                .or_else(|| self.dirs.first().map(|d| d.path.as_path())),
        }
    }

    /// The cgroup process `pid` is in (a container's, whose runtime made it
    /// outside the job's), for its figures and members: v2 where `root` is
    /// the unified hierarchy, else v1's memory, cpuacct and freezer. `None`
    /// where it cannot be read, or is the root (the whole machine's).
    pub fn of_process(root: &Path, pid: i32) -> Option<JobCgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let own = parse::proc_cgroup(&text);
        let at = |base: &Path, p: &Path| {
            (p != Path::new("/")).then(|| base.join(p.strip_prefix("/").unwrap_or(p)))
        };
        let dir = |controller: &str, path: PathBuf| CgroupDir {
            controller: controller.to_owned(),
            path,
            home: PathBuf::new(),
        };
        if root.join("cgroup.controllers").exists() {
            let path = at(root, parse::v2_path(&own)?)?;
            return Some(JobCgroup {
                version: Version::V2,
                dirs: vec![dir("", path)],
            });
        }
        let dirs: Vec<CgroupDir> = ["memory", "cpuacct", "freezer"]
            .iter()
            .filter_map(|c| {
                let path = at(&root.join(c), parse::v1_path(&own, c)?)?;
                path.is_dir().then(|| dir(c, path))
            })
            .collect();
        (!dirs.is_empty()).then_some(JobCgroup {
            version: Version::V1,
            dirs,
        })
    }

    /// Moves the calling process into every directory of the job's cgroup
    /// (its children are born there). On failure it goes back home.
    pub fn enter(&self) -> io::Result<()> {
        let me = std::process::id().to_string();
        for (i, d) in self.dirs.iter().enumerate() {
            if let Err(e) = write(&d.path.join("cgroup.procs"), &me) {
                for back in &self.dirs[..i] {
                    let _ = write(&back.home.join("cgroup.procs"), &me);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Moves the calling process back to where it was born.
    pub fn leave(&self) -> io::Result<()> {
        let me = std::process::id().to_string();
        let mut first = Ok(());
        for d in &self.dirs {
            if let Err(e) = write(&d.home.join("cgroup.procs"), &me)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// The processes in the job's cgroup now.
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        let Some(dir) = self.tracking() else {
            return Ok(Vec::new());
        };
        Ok(read(&dir.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Freezes the cgroup (no process runs or forks until [`Self::thaw`]);
    /// false where it cannot be frozen.
    fn freeze(&self) -> bool {
        let (file, value, done): (PathBuf, &str, fn(&str) -> bool) = match self.version {
            Version::V1 => match self.dir("freezer") {
                Some(d) => (d.join("freezer.state"), "FROZEN", |s| s.trim() == "FROZEN"),
                None => return false,
            },
            Version::V2 => match self.dirs.first() {
                Some(d) => (d.path.join("cgroup.freeze"), "1", |s| {
                    parse::keyed(s, "frozen") == Some(1)
                }),
                None => return false,
            },
        };
        if write(&file, value).is_err() {
            return false;
        }
        let state = match self.version {
            Version::V1 => file,
            Version::V2 => file.with_file_name("cgroup.events"),
        };
        let deadline = Instant::now() + FREEZE_WAIT;
        while Instant::now() < deadline {
            if read(&state).is_ok_and(|s| done(&s)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Partly frozen is still better than not: signal and thaw.
        true
    }

    fn thaw(&self) {
        let r = match self.version {
            Version::V1 => self
                .dir("freezer")
                .map(|d| write(&d.join("freezer.state"), "THAWED")),
            Version::V2 => self
                .dirs
                .first()
                .map(|d| write(&d.path.join("cgroup.freeze"), "0")),
        };
        if let Some(Err(e)) = r {
            tracing::warn!(error = %e, "cannot thaw the job's cgroup");
        }
    }

    /// Sends `sig` to every process in the cgroup but `skip`, with the
    /// cgroup frozen meanwhile where it can be (so no process forks a child
    /// that misses the signal); returns how many were signalled.
    pub fn signal_all(&self, sig: Signal, skip: &[i32]) -> io::Result<usize> {
        let first = self.procs()?;
        if first.iter().all(|p| skip.contains(p)) {
            return Ok(0);
        }
        let frozen = self.freeze();
        let procs = self.procs();
        let mut n = 0;
        if let Ok(procs) = &procs {
            for &p in procs.iter().filter(|p| !skip.contains(p) && **p > 1) {
                if kill(Pid::from_raw(p), sig).is_ok() {
                    n += 1;
                }
            }
        }
        if frozen {
            self.thaw();
        }
        procs.map(|_| n)
    }

    /// SIGKILLs every process in the cgroup but `skip` (v2: `cgroup.kill`
    /// where the kernel has it and nothing is skipped).
    pub fn kill_all(&self, skip: &[i32]) -> io::Result<usize> {
        if self.version == Version::V2
            && let Some(d) = self.dirs.first()
        {
            let procs = self.procs()?;
            let kill_file = d.path.join("cgroup.kill");
            if !procs.iter().any(|p| skip.contains(p)) && kill_file.exists() {
                if procs.is_empty() {
                    return Ok(0);
                }
                write(&kill_file, "1")?;
                return Ok(procs.len());
            }
        }
        self.signal_all(Signal::SIGKILL, skip)
    }

    /// The job's CPU seconds and memory now and at its peak.
    pub fn figures(&self) -> Figures {
        let num = |p: PathBuf| read(&p).ok().and_then(|s| s.trim().parse::<u64>().ok());
        match self.version {
            Version::V1 => Figures {
                cpu_seconds: self
                    .dir("cpuacct")
                    .and_then(|d| num(d.join("cpuacct.usage")))
                    .map(|ns| ns as f64 / 1e9),
                memory_bytes: self
                    .dir("memory")
                    .and_then(|d| num(d.join("memory.usage_in_bytes"))),
                memory_peak_bytes: self
                    .dir("memory")
                    .and_then(|d| num(d.join("memory.max_usage_in_bytes"))),
            },
            Version::V2 => {
                let Some(d) = self.dirs.first().map(|d| &d.path) else {
                    return Figures::default();
                };
                Figures {
                    cpu_seconds: read(&d.join("cpu.stat"))
                        .ok()
                        .and_then(|s| parse::keyed(&s, "usage_usec"))
                        .map(|us| us as f64 / 1e6),
                    memory_bytes: num(d.join("memory.current")),
                    memory_peak_bytes: num(d.join("memory.peak")),
                }
            }
        }
    }

    /// Removes the cgroup's directories, killing what is left in it first
    /// and waiting (briefly) for it to leave. Missing directories are fine.
    pub fn remove(&self) -> io::Result<()> {
        if self.procs().is_ok_and(|p| !p.is_empty()) {
            self.kill_all(&[])?;
        }
        let deadline = Instant::now() + REMOVE_WAIT;
        for d in &self.dirs {
            loop {
                match std::fs::remove_dir(&d.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(nix::libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot remove {}: {e}", d.path.display()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Where the job's processes are listed (for messages).
    pub fn describe(&self) -> String {
        self.tracking()
            .map_or_else(|| "(no directory)".into(), |p| p.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: Version, root: &Path, controllers: &[&str]) -> JobCgroup {
        JobCgroup {
            version,
            dirs: controllers
                .iter()
                .map(|c| {
                    let path = root.join(c).join("job");
                    std::fs::create_dir_all(&path).unwrap();
                    CgroupDir {
                        controller: (*c).to_owned(),
                        path,
                        home: root.join(c),
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn figures_come_from_each_interfaces_files() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = fake(Version::V1, dir.path(), &["memory", "cpuacct", "freezer"]);
        let j = |c: &str, f: &str, v: &str| {
            std::fs::write(dir.path().join(c).join("job").join(f), v).unwrap()
        };
        j("cpuacct", "cpuacct.usage", "2500000000\n");
        j("memory", "memory.usage_in_bytes", "1048576\n");
        j("memory", "memory.max_usage_in_bytes", "67108864\n");
        assert_eq!(
            v1.figures(),
            Figures {
                cpu_seconds: Some(2.5),
                memory_bytes: Some(1 << 20),
                memory_peak_bytes: Some(64 << 20),
            }
        );
        let v2 = fake(Version::V2, &dir.path().join("v2"), &[""]);
        let p = &v2.dirs[0].path;
        std::fs::write(p.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").unwrap();
        std::fs::write(p.join("memory.current"), "4096\n").unwrap();
        assert_eq!(
            v2.figures(),
            Figures {
                cpu_seconds: Some(1.5),
                memory_bytes: Some(4096),
                memory_peak_bytes: None,
            }
        );
    }

    #[test]
    fn the_record_round_trips_and_lists_its_processes() {
        let dir = tempfile::tempdir().unwrap();
        let cg = fake(Version::V1, dir.path(), &["memory", "freezer"]);
        let json = serde_json::to_string(&cg).unwrap();
        assert!(json.contains("\"version\":\"v1\""), "{json}");
        assert_eq!(serde_json::from_str::<JobCgroup>(&json).unwrap(), cg);
        // The freezer's list is the one read.
        std::fs::write(dir.path().join("freezer/job/cgroup.procs"), "12\n34\n").unwrap();
        std::fs::write(dir.path().join("memory/job/cgroup.procs"), "").unwrap();
        assert_eq!(cg.procs().unwrap(), [12, 34]);
        // Everything skipped: nothing frozen or signalled.
        assert_eq!(cg.signal_all(Signal::SIGKILL, &[12, 34]).unwrap(), 0);
        assert!(!dir.path().join("freezer/job/freezer.state").exists());
        assert_eq!(
            cg.describe(),
            dir.path().join("freezer/job").display().to_string()
        );
    }
}
