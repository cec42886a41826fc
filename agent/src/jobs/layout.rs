//! Where a job's files live and the small records kept in its directory.
//!
//! ```text
//! <state-dir>/jobs/<job-id>/
//!     launch.json      what to run: shell, command line, full environment (0600: holds secrets),
//!                      the job's cgroup directories and allowed GPU minors
//!     started.json     written by the shim once the job's process runs: pids, start time
//!     exit.json        written by the shim (or the agent) once the job has ended
//!     terminate.json   written by the agent before it signals the job: why, when, grace
//!     shim.log         the shim's own stderr (panics, nothing else)
//!     stdouterr/{stdout.txt,stderr.txt,execution.log}   the output spool
//!     mounts/          a record per mount the job has (see `job_mounts.rs`)
//!     mount-private/   their credentials, configs and FUSE logs (0700)
//! <job-temp-root>/<job-id>/          $AZ_BATCHAI_JOB_TEMP, the job's working directory
//! <job-temp-root>/<job-id>/shared/   $AZ_BATCHAI_SHARED_JOB_TEMP, or with a shared
//!                                    root (an NFS share on every node): <root>/<job-id>/
//! <state-dir>/job-mounts/<job-id>/   $AZ_BATCHAI_JOB_MOUNT_ROOT
//! ```
//!
//! Every record is written with [`bai_common::fs::write_atomic_with`], so a reader
//! sees either nothing or the whole record. The agent's records (`launch.json`,
//! `terminate.json`, an `exit.json` it writes for a lost job) are also fsynced
//! with their directory; the shim's (`started.json`, `exit.json`) are not: like
//! the spool output, they describe a job that a power loss ends anyway.

use crate::model::{JobError, JobId, STREAMS, Stream};
use crate::timefmt;
use bai_common::fs::{WriteOptions, write_atomic_with};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The roots under which job files are created.
#[derive(Clone, Debug)]
pub struct Layout {
    pub jobs_root: PathBuf,
    pub job_temp_root: PathBuf,
    pub job_mounts_root: PathBuf,
    pub mount_root: PathBuf,
    /// Where the jobs' shared temp directories go, if every node of the
    /// cluster has this directory (else in each job's own temp).
    pub shared_temp_root: Option<PathBuf>,
}

impl Layout {
    pub fn new(state_dir: &Path, job_temp_root: &Path, mount_root: &Path) -> Self {
        Self {
            jobs_root: state_dir.join("jobs"),
            job_temp_root: job_temp_root.to_owned(),
            job_mounts_root: state_dir.join("job-mounts"),
            mount_root: mount_root.to_owned(),
            shared_temp_root: None,
        }
    }

    /// With the jobs' shared temp directories under `root`.
    pub fn with_shared_temp_root(mut self, root: Option<PathBuf>) -> Self {
        self.shared_temp_root = root;
        self
    }

    pub fn job(&self, id: &JobId) -> JobPaths {
        JobPaths::new(
            self.jobs_root.join(id.as_str()),
            self.job_temp_root.join(id.as_str()),
            self.job_mounts_root.join(id.as_str()),
        )
    }

    /// Where job `id`'s `$AZ_BATCHAI_SHARED_JOB_TEMP` is on the shared root, if
    /// the agent has one (a multi-node job's; a single-node job keeps it in
    /// its own temp, `paths.shared_temp`).
    pub fn shared_temp(&self, id: &JobId) -> Option<PathBuf> {
        Some(self.shared_temp_root.as_ref()?.join(id.as_str()))
    }
}

/// Paths of one job's files.
#[derive(Clone, Debug)]
pub struct JobPaths {
    pub dir: PathBuf,
    pub spool: PathBuf,
    pub launch: PathBuf,
    pub started: PathBuf,
    pub exit: PathBuf,
    pub terminate: PathBuf,
    pub shim_log: PathBuf,
    pub temp: PathBuf,
    pub shared_temp: PathBuf,
    pub mount_root: PathBuf,
    /// Records of the job's mounts.
    pub mounts: PathBuf,
    /// The job mounts' private files.
    pub mount_private: PathBuf,
}

impl JobPaths {
    /// Paths for a job directory; `temp` and `mount_root` are the node-local
    /// directories the job uses (not inside `dir`).
    pub fn new(dir: PathBuf, temp: PathBuf, mount_root: PathBuf) -> Self {
        Self {
            spool: dir.join("stdouterr"),
            launch: dir.join("launch.json"),
            started: dir.join("started.json"),
            exit: dir.join("exit.json"),
            terminate: dir.join("terminate.json"),
            shim_log: dir.join("shim.log"),
            mounts: dir.join("mounts"),
            mount_private: dir.join("mount-private"),
            shared_temp: temp.join("shared"),
            temp,
            mount_root,
            dir,
        }
    }

    pub fn stream(&self, s: Stream) -> PathBuf {
        self.spool.join(s.file_name())
    }

    /// Current length of each spool file (0 where missing).
    pub fn lengths(&self) -> [u64; STREAMS] {
        Stream::ALL.map(|s| std::fs::metadata(self.stream(s)).map_or(0, |m| m.len()))
    }
}

/// What the shim runs (`launch.json`, mode 0600: the environment holds the
/// job's secrets, which appear nowhere else on disk and on no argv).
#[derive(Clone, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub job_id: String,
    pub shell: PathBuf,
    pub command_line: String,
    pub work_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub max_wall_clock_ms: Option<u64>,
    pub assigned_at_ns: u64,
    /// The cluster's admin user the job runs as (absent: the agent's user).
    #[serde(default)]
    pub run_as: Option<crate::node::admin_user::RunAs>,
    /// The job's cgroup, created before the shim starts (absent: the host
    /// has none, or the record predates cgroups). The shim spawns the job
    /// inside it; a restarted agent signals and removes it from here.
    #[serde(default)]
    pub cgroup: Option<super::cgroup::JobCgroup>,
    /// The NVIDIA GPU minors the job may open; `None`: not known, nothing
    /// denied (the contract is in `cgroup/devices.rs`).
    #[serde(default)]
    pub gpu_minors: Option<Vec<u32>>,
    /// The GPUs the job was given (for the GPU health and metrics of an
    /// adopted job).
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    /// The job preparation, run before `command_line` by the same shell
    /// process (see `shim.rs`).
    #[serde(default)]
    pub preparation: Option<String>,
    /// The job's shared temp directory on the cluster's shared root, which
    /// this node (the master's) removes when the job is released; absent
    /// where it lies in the job's own temp or another node owns it.
    #[serde(default)]
    pub shared_temp: Option<PathBuf>,
    /// Run the command line in this container (absent: on the node).
    #[serde(default)]
    pub container: Option<super::container::ContainerLaunch>,
}

/// The job's process is running (`started.json`, written by the shim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRecord {
    pub shim_pid: i32,
    pub pid: i32,
    pub pgid: i32,
    pub start_time_ns: u64,
}

/// The job has ended (`exit.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code; 128+N when killed by signal N; -1 when it never ran.
    pub exit_code: i32,
    pub end_time_ns: u64,
    #[serde(default)]
    pub error: Option<JobError>,
}

/// Why the agent is stopping a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateReason {
    /// The coordinator sent TerminateJob.
    Coordinator,
    /// The job ran past its max wall clock time.
    MaxWallClockTime,
}

/// The agent decided to stop the job (`terminate.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateRecord {
    pub reason: TerminateReason,
    pub requested_at_ns: u64,
    pub grace_ms: u64,
}

/// Writes a JSON record atomically and durably.
pub fn write_record<T: Serialize>(path: &Path, record: &T, mode: u32) -> io::Result<()> {
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    write_atomic_with(
        path,
        &bytes,
        WriteOptions {
            mode,
            durable: true,
        },
    )
}

/// Writes a JSON record atomically but not durably: for the shim's records,
/// which describe a job that a power loss ends anyway (a record lost or torn
/// by one reads as missing or corrupt, and the job is then reported lost).
pub fn write_record_volatile<T: Serialize>(path: &Path, record: &T, mode: u32) -> io::Result<()> {
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    write_atomic_with(
        path,
        &bytes,
        WriteOptions {
            mode,
            durable: false,
        },
    )
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Appends one timestamped line to a job's `execution.log` in a single
/// `write` on an `O_APPEND` descriptor, so the agent's and the shim's lines
/// never interleave.
pub fn log_line(path: &Path, message: &str) -> io::Result<()> {
    let line = format!("{} {message}\n", timefmt::rfc3339(SystemTime::now()));
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn records_round_trip_atomically_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        assert!(read_record::<ExitRecord>(&p).unwrap().is_none());
        let rec = ExitRecord {
            exit_code: 143,
            end_time_ns: 5,
            error: Some(JobError::new("X", "y")),
        };
        write_record(&p, &rec, 0o600).unwrap();
        assert_eq!(read_record::<ExitRecord>(&p).unwrap(), Some(rec));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("exit.json.tmp").exists());
    }

    #[test]
    fn volatile_records_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("started.json");
        let rec = |pid| StartedRecord {
            shim_pid: 1,
            pid,
            pgid: pid,
            start_time_ns: 7,
        };
        write_record_volatile(&p, &rec(10), 0o644).unwrap();
        write_record_volatile(&p, &rec(11), 0o644).unwrap();
        assert_eq!(read_record::<StartedRecord>(&p).unwrap(), Some(rec(11)));
        assert!(!dir.path().join("started.json.tmp").exists());
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("started.json");
        std::fs::write(&p, b"{\"shim_pid\":").unwrap();
        assert!(read_record::<StartedRecord>(&p).is_err());
    }

    #[test]
    fn log_lines_append_with_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("execution.log");
        log_line(&p, "one").unwrap();
        log_line(&p, "two").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].ends_with("Z one") && lines[1].ends_with("Z two"),
            "{text}"
        );
    }

    #[test]
    fn paths_follow_the_layout() {
        let l = Layout::new(
            Path::new("/s"),
            Path::new("/s/work"),
            Path::new("/s/mounts"),
        );
        let p = l.job(&JobId::parse("j1").unwrap());
        assert_eq!(
            p.stream(Stream::Stdout),
            PathBuf::from("/s/jobs/j1/stdouterr/stdout.txt")
        );
        assert_eq!(p.shared_temp, PathBuf::from("/s/work/j1/shared"));
        assert_eq!(p.mount_root, PathBuf::from("/s/job-mounts/j1"));
    }
}
