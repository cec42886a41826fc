//! Starting, finding and signalling job supervisors, behind the [`Launcher`]
//! trait.
//!
//! The real [`ShimLauncher`] starts `<agent-exe> shim <job-dir>` (see
//! `shim.rs`), which runs the job in its own session and process group with
//! output going straight to the spool files, so the job outlives the agent.
//! A supervisor's exit is an event: a pidfd ([`ProcessHandle`], Linux 5.3+),
//! which works the same for a shim this agent started and for one adopted
//! after a restart (where the agent is not its parent). Signals go to the job's process
//! group. Every method but [`Launcher::signal_group`] may block (it starts a
//! process or reads `/proc`): call them off the async runtime.

use super::cgroup::JobCgroup;
use super::layout::JobPaths;
use bai_common::process::ProcessHandle;
use bai_common::procfs;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A running supervisor.
#[derive(Debug)]
pub struct ShimHandle {
    pub pid: i32,
    /// Reports the supervisor's exit (a pidfd). `None` where the kernel has
    /// no pidfd: the worker then checks [`Launcher::shim_alive`] now and then.
    pub exit: Option<ProcessHandle>,
    /// This agent is the supervisor's parent and reaps it.
    pub child: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the job supervisor {exe}: {source}")]
pub struct LaunchError {
    pub exe: String,
    pub source: io::Error,
}

/// Process launching and signalling. Methods returning a [`ShimHandle`]
/// must run inside the runtime (the blocking pool is inside it).
pub trait Launcher: Send + Sync + 'static {
    /// Starts the supervisor of the job whose `launch.json` is in `paths.dir`.
    fn launch(&self, paths: &JobPaths) -> Result<ShimHandle, LaunchError>;
    /// The live supervisor of `job_dir`: process `pid` when known, else
    /// whichever process is one; `None` when there is none.
    fn find_shim(&self, pid: Option<i32>, job_dir: &Path) -> Option<ShimHandle>;
    /// Whether process `pid` is alive and is the supervisor of `job_dir`.
    fn shim_alive(&self, pid: i32, job_dir: &Path) -> bool;
    /// Sends `signal` to every process of the job: each one in `cgroup`
    /// when it has one (frozen meanwhile, so none forks past the signal;
    /// SIGKILL by `cgroup.kill` on v2), else group `pgid`. `Ok(false)`
    /// when no process was left.
    fn signal_job(&self, pgid: i32, cgroup: Option<&JobCgroup>, signal: Signal)
    -> io::Result<bool>;
    /// Reaps a supervisor this agent started, once it has exited.
    fn reap(&self, pid: i32);
    /// SIGKILLs what is left of a job whose supervisor `shim_pid` died
    /// without recording the exit: every process in its `cgroup` when it has
    /// one; else the job's process group `pgid` (when the job was recorded
    /// as started), and processes that left the group but not the
    /// supervisor's session and whose environment holds `marker`
    /// (`NAME=value`). Returns how many kills were sent.
    fn kill_lost(
        &self,
        shim_pid: Option<i32>,
        pgid: Option<i32>,
        cgroup: Option<&JobCgroup>,
        marker: &str,
    ) -> usize;
}

/// The real launcher: re-executes the agent binary as `shim`.
pub struct ShimLauncher {
    pub exe: PathBuf,
}

impl Launcher for ShimLauncher {
    fn launch(&self, paths: &JobPaths) -> Result<ShimHandle, LaunchError> {
        let err = |source| LaunchError {
            exe: self.exe.display().to_string(),
            source,
        };
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&paths.shim_log)
            .map_err(err)?;
        let log2 = log.try_clone().map_err(err)?;
        // A std child: dropping it neither kills nor waits; the pidfd
        // reports its exit and `reap` collects it.
        let child = std::process::Command::new(&self.exe)
            .arg("shim")
            .arg(&paths.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(err)?;
        let pid =
            i32::try_from(child.id()).map_err(|_| err(io::Error::other("pid out of range")))?;
        // Our unreaped child: its pid cannot be reused, so the pidfd is its.
        Ok(ShimHandle {
            pid,
            exit: ProcessHandle::open(pid).ok(),
            child: true,
        })
    }

    fn find_shim(&self, pid: Option<i32>, job_dir: &Path) -> Option<ShimHandle> {
        let pid = match pid {
            Some(p) => p,
            None => procfs::pids().find(|&p| is_shim_of(procfs::args(p), job_dir))?,
        };
        let exit = ProcessHandle::open(pid).ok();
        // Checked after the pidfd is open: if this is still the shim now, the
        // pidfd refers to it and not to a later process reusing the pid.
        self.shim_alive(pid, job_dir).then_some(ShimHandle {
            pid,
            exit,
            child: false,
        })
    }

    fn shim_alive(&self, pid: i32, job_dir: &Path) -> bool {
        pid > 0 && is_shim_of(procfs::args(pid), job_dir)
    }

    fn signal_job(
        &self,
        pgid: i32,
        cgroup: Option<&JobCgroup>,
        signal: Signal,
    ) -> io::Result<bool> {
        if let Some(cg) = cgroup {
            let n = match signal {
                Signal::SIGKILL => cg.kill_all(&[])?,
                s => cg.signal_all(s, &[])?,
            };
            return Ok(n > 0);
        }
        if pgid <= 1 {
            return Err(io::Error::other(format!(
                "refusing to signal process group {pgid}"
            )));
        }
        match killpg(Pid::from_raw(pgid), signal) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn reap(&self, pid: i32) {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }

    fn kill_lost(
        &self,
        shim_pid: Option<i32>,
        pgid: Option<i32>,
        cgroup: Option<&JobCgroup>,
        marker: &str,
    ) -> usize {
        if let Some(cg) = cgroup {
            // The cgroup holds every process the job started, and nothing else.
            return cg.kill_all(&[]).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot kill the job's cgroup");
                0
            });
        }
        let mut n = 0;
        // The group: a pgid cannot be reused while any member lives, so it is
        // the job's unless a process now has that pid outside the job's
        // session (the group emptied and the id was reused).
        if let Some(pgid) = pgid.filter(|&p| p > 1) {
            let reused = procfs::stat(pgid).is_some_and(|s| Some(s.sid) != shim_pid);
            if !reused && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                n += 1;
            }
        }
        // Processes that left the group but stayed in the shim's session
        // (the shim is its session's leader, so the session id is its pid).
        // The marker tells them from a new session that reused the id.
        // Processes that started sessions of their own escape this sweep:
        // only hosts without cgroups come here.
        let Some(sid) = shim_pid.filter(|&p| p > 1) else {
            return n;
        };
        for pid in procfs::other_pids() {
            if procfs::stat(pid).is_some_and(|s| s.sid == sid)
                && procfs::has_env_entry(pid, marker)
                && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            {
                n += 1;
            }
        }
        n
    }
}

/// Whether an argument vector is `... shim <job_dir>` (a zombie's is empty).
fn is_shim_of(args: Option<Vec<OsString>>, job_dir: &Path) -> bool {
    args.is_some_and(|a| {
        a.windows(2)
            .any(|w| w[0] == "shim" && w[1] == job_dir.as_os_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launcher() -> ShimLauncher {
        ShimLauncher {
            exe: "/nonexistent".into(),
        }
    }

    #[test]
    fn signalling_a_missing_group_says_so() {
        let l = launcher();
        // Pid 0x3fffff0 is far above any real pid_max default.
        assert!(!l.signal_job(0x3fff_fff0, None, Signal::SIGTERM).unwrap());
        assert!(l.signal_job(1, None, Signal::SIGTERM).is_err());
        assert!(!l.shim_alive(std::process::id() as i32, Path::new("/x")));
        assert!(l.find_shim(None, Path::new("/x/no-such-job")).is_none());
    }

    #[test]
    fn recognises_shim_argument_vectors() {
        let args = |a: &[&str]| Some(a.iter().map(OsString::from).collect());
        let dir = Path::new("/var/lib/bai-agent/jobs/j1");
        assert!(is_shim_of(
            args(&["/usr/bin/bai-agent", "shim", "/var/lib/bai-agent/jobs/j1"]),
            dir
        ));
        assert!(!is_shim_of(
            args(&["/usr/bin/bai-agent", "shim", "/var/lib/bai-agent/jobs/j10"]),
            dir
        ));
        assert!(!is_shim_of(args(&["sleep", "1000"]), dir));
        assert!(!is_shim_of(args(&[]), dir));
        assert!(!is_shim_of(None, dir));
    }

    #[tokio::test]
    async fn a_launched_shim_reports_its_exit() {
        // `false` stands in for the agent binary: `false shim <dir>` exits
        // at once, so the handle must resolve.
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::jobs::layout::Layout::new(dir.path(), dir.path(), dir.path())
            .job(&crate::model::JobId::parse("j1").unwrap());
        std::fs::create_dir_all(&paths.dir).unwrap();
        let l = ShimLauncher {
            exe: "false".into(),
        };
        let h = l.launch(&paths).unwrap();
        assert!(h.child);
        let exit = h.exit.expect("a pidfd");
        tokio::time::timeout(std::time::Duration::from_secs(20), exit.exited())
            .await
            .expect("exit never reported")
            .unwrap();
        l.reap(h.pid);
        assert!(!l.shim_alive(h.pid, &paths.dir));
    }

    #[test]
    fn kill_lost_kills_the_group_and_marked_session_members_only() {
        use std::io::BufRead;
        let marker = format!("BAI_TEST_MARKER={}", uuid::Uuid::new_v4());
        let (name, value) = marker.split_once('=').unwrap();
        // A stand-in for the lost shim: a session leader (`setsid` execs
        // in place, as this child is not a group leader), whatever session
        // the test runner has (under CI it may have none). In it: a job's
        // group (a leader and its child), a marked process that left the
        // group, and an unmarked one. `perl -e setpgrp` (perl-base is
        // essential on Debian) starts a group, as the shim does for a job.
        let group = |cmd: &str| format!("perl -e 'setpgrp(0,0); exec @ARGV' {cmd}");
        let script = format!(
            "{} & echo $!; {} & echo $!; env -u {name} {} & echo $!; wait",
            group("sh -c 'sleep 100 & wait'"),
            group("sleep 100"),
            group("sleep 100"),
        );
        let mut shim = std::process::Command::new("setsid")
            .args(["sh", "-c", &script])
            .env(name, value)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let sid = shim.id() as i32;
        let mut lines = std::io::BufReader::new(shim.stdout.take().unwrap()).lines();
        let mut pid = || -> i32 { lines.next().unwrap().unwrap().parse().unwrap() };
        let (job, left, unmarked) = (pid(), pid(), pid());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
            while !cond() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let marked = || -> Vec<i32> {
            procfs::pids()
                .filter(|&p| procfs::has_env_entry(p, &marker))
                .collect()
        };
        let in_group = |p: i32| procfs::stat(p).is_some_and(|s| s.pgid == p && s.sid == sid);
        // Three marked groups exist once each `perl` has exec'd; the job's
        // leader has a child.
        wait_for("the processes start", &|| {
            [job, left, unmarked].into_iter().all(in_group)
                && procfs::args(left).is_some_and(|a| a.first().is_some_and(|a| a == "sleep"))
                && procfs::args(unmarked).is_some_and(|a| a.first().is_some_and(|a| a == "sleep"))
                && procfs::in_group(job).len() == 2
        });
        assert_eq!(
            sid,
            procfs::stat(sid).unwrap().sid,
            "the shim leads its session"
        );
        assert!(!procfs::has_env_entry(unmarked, &marker));
        // A group id now held outside the lost shim's session was reused.
        let l = launcher();
        assert_eq!(
            l.kill_lost(Some(0x3fff_fff0), Some(unmarked), None, &marker),
            0
        );
        let n = l.kill_lost(Some(sid), Some(job), None, &marker);
        assert!(n >= 2, "the group and the process that left it: {n}");
        wait_for("the job's group and the leaver die", &|| {
            !procfs::alive(job) && !procfs::alive(left)
        });
        assert!(procfs::alive(unmarked), "unmarked survives");
        kill(Pid::from_raw(unmarked), Signal::SIGKILL).unwrap();
        // The stand-in shim is marked too, and was killed by the sweep.
        shim.wait().unwrap();
        wait_for("nothing marked is left", &|| {
            marked().iter().all(|&p| !procfs::alive(p))
        });
    }
}
