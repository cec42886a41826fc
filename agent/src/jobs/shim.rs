//! The job supervisor, run as `bai-agent shim <job-dir>` (one per job).
//!
//! It makes itself a session leader (so the agent's terminal, session and
//! service stop do not reach the job), starts `<shell> -c <command line>` in
//! a new process group with stdout/stderr opened straight onto the spool files
//! (no pipe through the agent, so output survives the agent dying), records
//! the pids in `started.json`, waits, kills whatever the job left behind in its
//! process group and its cgroup, and writes `exit.json` atomically. Where
//! the host has cgroups, the job is spawned while the shim sits in the
//! job's cgroup (recorded in `launch.json`), so it is born there; the shim
//! then goes back to the agent's cgroup. Neither record is
//! fsynced: like the spool output they describe a job that a power loss ends
//! anyway (a record lost that way reads as missing, and the agent reports the
//! job lost), while they survive any agent restart. Plain blocking code: no
//! runtime, nothing shared with the agent but the job directory.

use super::layout::{
    ExitRecord, JobPaths, LaunchRecord, StartedRecord, log_line, read_record, write_record_volatile,
};
use crate::model::{JobError, Stream};
use crate::timefmt;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::SystemTime;

/// Runs the supervisor for `job_dir`; returns the shim's own exit status.
pub fn run(job_dir: &Path) -> i32 {
    // Not a group leader (the agent spawns it without a new group), so this
    // succeeds; if it does not, the job still runs in its own process group.
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("bai-agent shim: setsid: {e}");
    }
    let paths = JobPaths::new(job_dir.to_owned(), PathBuf::new(), PathBuf::new());
    let exec_log = paths.stream(Stream::ExecutionLog);
    let log = |msg: &str| {
        if let Err(e) = log_line(&exec_log, msg) {
            eprintln!("bai-agent shim: cannot write {}: {e}", exec_log.display());
        }
    };
    let finish = |rec: ExitRecord| -> i32 {
        match write_record_volatile(&paths.exit, &rec, 0o644) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bai-agent shim: cannot write {}: {e}", paths.exit.display());
                1
            }
        }
    };
    let not_started = |code: &str, message: String| -> i32 {
        log(&format!("the job could not be started: {message}"));
        finish(ExitRecord {
            exit_code: -1,
            end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
            error: Some(JobError::new(code, message)),
        })
    };

    let rec: LaunchRecord = match read_record(&paths.launch) {
        Ok(Some(r)) => r,
        Ok(None) => return not_started("JobRecordMissing", "launch.json is missing".into()),
        Err(e) => return not_started("JobRecordUnreadable", format!("launch.json: {e}")),
    };
    let (stdout, stderr) = match (
        open_spool(&paths, Stream::Stdout),
        open_spool(&paths, Stream::Stderr),
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return not_started(
                "SpoolNotWritable",
                format!(
                    "cannot open the output files in {}: {e}",
                    paths.spool.display()
                ),
            );
        }
    };
    // The agent's unit protects it from the OOM killer; jobs must not inherit that.
    let oom = OomScoreAdj::neutral_for_children();
    let mut cmd = Command::new(&rec.shell);
    cmd.arg("-c")
        .arg(&rec.command_line)
        .env_clear()
        .envs(rec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&rec.work_dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(u) = &rec.run_as {
        // The cluster's admin user, not root (std drops root's
        // supplementary groups when it sets the uid).
        use std::os::unix::process::CommandExt;
        cmd.uid(u.uid)
            .gid(u.gid)
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    // In the job's cgroup while it is spawned, so the job is born there
    // (no child of it ever runs outside), then back to the agent's.
    let cgroup = rec.cgroup.as_ref();
    if let Some(cg) = cgroup
        && let Err(e) = cg.enter()
    {
        drop(oom);
        return not_started(
            "JobCgroupFailed",
            format!("cannot enter the job's cgroup: {e}"),
        );
    }
    let spawned = cmd.spawn();
    if let Some(cg) = cgroup
        && let Err(e) = cg.leave()
    {
        log(&format!(
            "the supervisor could not leave the job's cgroup ({e}): terminating the job may end the supervisor too"
        ));
    }
    drop(oom);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return not_started(
                "JobStartFailed",
                format!(
                    "cannot run {} in {}: {e}",
                    rec.shell.display(),
                    rec.work_dir.display()
                ),
            );
        }
    };
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let started = StartedRecord {
        shim_pid: std::process::id() as i32,
        pid,
        pgid: pid,
        start_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
    };
    log(&format!(
        "started the job: process {pid} ({} -c), working directory {}",
        rec.shell.display(),
        rec.work_dir.display()
    ));
    if let Err(e) = write_record_volatile(&paths.started, &started, 0o644) {
        // The agent will still see exit.json; only the start report is lost.
        eprintln!(
            "bai-agent shim: cannot write {}: {e}",
            paths.started.display()
        );
    }
    // Wait for the exit without reaping, so the job's pid (its process group
    // id) cannot be reused before the group's leftovers are killed.
    while let Err(nix::errno::Errno::EINTR) = waitid(
        Id::Pid(Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    ) {}
    // Anything the job left running in its process group goes with it. The
    // unreaped leader keeps the group alive, so success says nothing about
    // leftovers: log nothing rather than claim a kill on every job.
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    // And so does whatever left the group (a `setsid()` child): the cgroup
    // holds every process the job started.
    if let Some(cg) = cgroup {
        let me = std::process::id() as i32;
        if let Err(e) = cg.kill_all(&[me, pid]) {
            log(&format!("cannot kill what the job left in its cgroup: {e}"));
        }
    }
    let status = loop {
        match child.wait() {
            Ok(s) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("bai-agent shim: wait: {e}");
                break None;
            }
        }
    };
    let (exit_code, error) = match status {
        Some(s) => (exit_code(s), None),
        None => (
            -1,
            Some(JobError::new(
                "ExitStatusUnknown",
                "the supervisor could not wait for the job",
            )),
        ),
    };
    log(&describe(status, exit_code));
    finish(ExitRecord {
        exit_code,
        end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
        error,
    })
}

/// Sets this process's `oom_score_adj` to 0 while children are spawned
/// (they inherit it) and restores it when dropped (lowering it back needs
/// root, which the agent normally is; otherwise the shim stays at 0).
struct OomScoreAdj(Option<String>);

impl OomScoreAdj {
    const PATH: &'static str = "/proc/self/oom_score_adj";

    fn neutral_for_children() -> Self {
        match std::fs::read_to_string(Self::PATH) {
            Ok(v) if v.trim() != "0" && std::fs::write(Self::PATH, "0").is_ok() => {
                Self(Some(v.trim().to_owned()))
            }
            _ => Self(None),
        }
    }
}

impl Drop for OomScoreAdj {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(Self::PATH, v);
        }
    }
}

fn open_spool(paths: &JobPaths, s: Stream) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(paths.stream(s))
}

/// The exit code reported for a status: the code, or 128+N for signal N.
pub fn exit_code(s: ExitStatus) -> i32 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

fn describe(status: Option<ExitStatus>, code: i32) -> String {
    match status.and_then(|s| s.signal()) {
        Some(sig) => {
            let name = Signal::try_from(sig).map_or("unknown signal", |s| s.as_str());
            format!("the job was killed by signal {sig} ({name}); exit code {code}")
        }
        None => format!("the job exited with code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert!(describe(Some(ExitStatus::from_raw(15)), 143).contains("SIGTERM"));
    }
}
