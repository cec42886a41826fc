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
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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
    let (stdout, stderr) = match open_pair(&paths, Stream::Stdout, Stream::Stderr) {
        Ok(p) => p,
        Err(e) => return not_started("SpoolNotWritable", format!("the output files: {e}")),
    };
    let cgroup = rec.cgroup.as_ref();
    // Batch AI's jobPreparation runs first, as the job would (same shell,
    // environment, user, directory and cgroup), with its output in its own
    // two files. The command line then joins the preparation's process
    // group — kept alive by its unreaped leader — so the job is one group
    // from the start record on: a terminate signals both alike.
    let mut pgid = None;
    let mut prep_child = None;
    // In a container the preparation runs inside it, first (`container.rs`).
    let host_prep = rec.preparation.as_ref().filter(|_| rec.container.is_none());
    if let Some(prep) = host_prep {
        let (out, err) = match open_pair(&paths, Stream::JobPrepStdout, Stream::JobPrepStderr) {
            Ok(p) => p,
            Err(e) => {
                return not_started(
                    "SpoolNotWritable",
                    format!("the job preparation's output files: {e}"),
                );
            }
        };
        let child = match spawn(&rec, prep, None, out, err, None, &log) {
            Ok(c) => c,
            Err((code, message)) => return not_started(code, message),
        };
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        record_start(&paths, pid, pid);
        log(&format!(
            "started the job preparation: process {pid} ({} -c), working directory {}",
            rec.shell.display(),
            rec.work_dir.display()
        ));
        let status = wait_unreaped(pid);
        let failed = !matches!(status, Ok(WaitStatus::Exited(_, 0)));
        let terminated = paths.terminate.exists();
        if failed || terminated {
            let status = end_group(pid, pid, cgroup, child, &log);
            let exit_code = status.map_or(-1, exit_code);
            log(&describe("the job preparation", status, exit_code));
            let error = (failed && !terminated).then(|| {
                JobError::new(
                    "JobPreparationFailed",
                    format!(
                        "the job preparation exited with code {exit_code}; its output is in stdout-job_prep.txt and stderr-job_prep.txt, and the command line did not run"
                    ),
                )
            });
            return finish(ExitRecord {
                exit_code,
                end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
                error,
            });
        }
        log("the job preparation exited with code 0");
        pgid = Some(pid);
        prep_child = Some(child);
    }
    // A container's preparation runs inside it, before the command line.
    let (prep_out, prep_err) = (
        paths.stream(Stream::JobPrepStdout),
        paths.stream(Stream::JobPrepStderr),
    );
    let marker = super::container::preparation_marker(&rec.work_dir);
    let in_container = rec
        .preparation
        .as_deref()
        .filter(|_| rec.container.is_some())
        .map(|line| super::container::Preparation {
            line,
            stdout: &prep_out,
            stderr: &prep_err,
            marker: &marker,
        });
    let child = match spawn(
        &rec,
        &rec.command_line,
        in_container.as_ref(),
        stdout,
        stderr,
        pgid,
        &log,
    ) {
        Ok(c) => c,
        Err((code, message)) => return not_started(code, message),
    };
    if let Some(mut prep) = prep_child {
        // Reaped only now: its pid was the group's anchor until the job joined.
        let _ = prep.wait();
    }
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let pgid = pgid.unwrap_or(pid);
    if pgid == pid {
        record_start(&paths, pid, pgid);
    }
    match &rec.container {
        Some(c) => log(&format!(
            "started the job in container {} of {}: process {pid} ({}), working directory {}",
            c.run.name,
            c.run.image,
            c.runtime.kind.name(),
            rec.work_dir.display()
        )),
        None => log(&format!(
            "started the job: process {pid} ({} -c), working directory {}",
            rec.shell.display(),
            rec.work_dir.display()
        )),
    }
    wait_unreaped(pid).ok();
    let status = end_group(pid, pgid, cgroup, child, &log);
    // A client that returned on its own has removed its container (`--rm`);
    // one killed (after the grace period) leaves it running: it goes by
    // name, so nothing of the job outlives it.
    let killed = status.is_none_or(|s| s.signal().is_some());
    if let Some(c) = rec.container.as_ref().filter(|_| killed)
        && let Err(e) = super::container::remove(&c.runtime, &c.run.name)
    {
        log(&format!("cannot remove the job's container: {e}"));
    }
    if in_container.is_some()
        && let Ok(code) = std::fs::read_to_string(&marker)
    {
        let _ = std::fs::remove_file(&marker);
        let code = code.trim();
        log(&format!("the job preparation exited with code {code}"));
        if !paths.terminate.exists() {
            return finish(ExitRecord {
                exit_code: status.map_or(-1, exit_code),
                end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
                error: Some(JobError::new(
                    "JobPreparationFailed",
                    format!(
                        "the job preparation exited with code {code}; its output is in stdout-job_prep.txt and stderr-job_prep.txt, and the command line did not run"
                    ),
                )),
            });
        }
    }
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
    log(&describe("the job", status, exit_code));
    finish(ExitRecord {
        exit_code,
        end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
        error,
    })
}

/// Starts `<shell> -c <line>` as the job: its environment, directory and
/// user, stdin from /dev/null, in process group `pgid` (a new one if
/// `None`), spawned from inside the job's cgroup so it is born there.
fn spawn(
    rec: &LaunchRecord,
    line: &str,
    prep: Option<&super::container::Preparation<'_>>,
    stdout: File,
    stderr: File,
    pgid: Option<i32>,
    log: &dyn Fn(&str),
) -> Result<Child, (&'static str, String)> {
    // The agent's unit protects it from the OOM killer; jobs must not inherit that.
    let oom = OomScoreAdj::neutral_for_children();
    let mut cmd = match &rec.container {
        // The runtime's client runs as the agent (root); the container runs
        // as the job's user (`--user`) with the job's variables by name.
        Some(c) => {
            let argv = super::container::run_argv_prepared(
                &c.runtime,
                &c.run,
                &rec.env,
                &rec.work_dir,
                line,
                prep,
            );
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
        None => {
            let mut cmd = Command::new(&rec.shell);
            cmd.arg("-c").arg(line);
            cmd
        }
    };
    cmd.env_clear()
        .envs(rec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&rec.work_dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(pgid.unwrap_or(0));
    if let Some(u) = rec.run_as.as_ref().filter(|_| rec.container.is_none()) {
        // The cluster's admin user, not root (std drops root's
        // supplementary groups when it sets the uid).
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
        return Err((
            "JobCgroupFailed",
            format!("cannot enter the job's cgroup: {e}"),
        ));
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
    spawned.map_err(|e| {
        (
            "JobStartFailed",
            format!(
                "cannot run {} in {}: {e}",
                rec.shell.display(),
                rec.work_dir.display()
            ),
        )
    })
}

/// Writes `started.json`: the job runs as process group `pgid`.
fn record_start(paths: &JobPaths, pid: i32, pgid: i32) {
    let started = StartedRecord {
        shim_pid: std::process::id() as i32,
        pid,
        pgid,
        start_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
    };
    if let Err(e) = write_record_volatile(&paths.started, &started, 0o644) {
        // The agent will still see exit.json; only the start report is lost.
        eprintln!(
            "bai-agent shim: cannot write {}: {e}",
            paths.started.display()
        );
    }
}

/// Waits for `pid` to exit without reaping it, so its pid (and a process
/// group it leads) cannot be reused before the group's leftovers are killed.
fn wait_unreaped(pid: i32) -> nix::Result<WaitStatus> {
    loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// After `pid` (of group `pgid`) exited: kills what is left in the group
/// and the job's cgroup, then reaps `child` and returns its status.
fn end_group(
    pid: i32,
    pgid: i32,
    cgroup: Option<&super::cgroup::JobCgroup>,
    mut child: Child,
    log: &dyn Fn(&str),
) -> Option<ExitStatus> {
    // Anything the job left running in its process group goes with it. The
    // unreaped exited process keeps the group alive, so success says nothing
    // about leftovers: log nothing rather than claim a kill on every job.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    // And so does whatever left the group (a `setsid()` child): the cgroup
    // holds every process the job started.
    if let Some(cg) = cgroup {
        let me = std::process::id() as i32;
        if let Err(e) = cg.kill_all(&[me, pid]) {
            log(&format!("cannot kill what the job left in its cgroup: {e}"));
        }
    }
    loop {
        match child.wait() {
            Ok(s) => return Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("bai-agent shim: wait: {e}");
                return None;
            }
        }
    }
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

/// Opens a process's stdout and stderr spool files; the error names the file.
fn open_pair(paths: &JobPaths, out: Stream, err: Stream) -> Result<(File, File), String> {
    let open = |s| open_spool(paths, s).map_err(|e| format!("{}: {e}", paths.stream(s).display()));
    Ok((open(out)?, open(err)?))
}

/// The exit code reported for a status: the code, or 128+N for signal N.
pub fn exit_code(s: ExitStatus) -> i32 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

fn describe(what: &str, status: Option<ExitStatus>, code: i32) -> String {
    match status.and_then(|s| s.signal()) {
        Some(sig) => {
            let name = Signal::try_from(sig).map_or("unknown signal", |s| s.as_str());
            format!("{what} was killed by signal {sig} ({name}); exit code {code}")
        }
        None => format!("{what} exited with code {code}"),
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
        assert!(describe("the job", Some(ExitStatus::from_raw(15)), 143).contains("SIGTERM"));
    }
}
