//! Starting and signalling job processes, behind the [`Launcher`] trait.
//!
//! The real [`ShimLauncher`] starts `<agent-exe> shim <job-dir>` (see
//! `shim.rs`), which runs the job in its own session and process group with
//! output going straight to the spool files, so the job outlives the agent.
//! Signals go to the job's process group; liveness and leftover processes are
//! found through `/proc`.

use super::layout::JobPaths;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A started shim: its pid, and a future that resolves when it exits.
pub struct ShimHandle {
    pub pid: i32,
    pub exited: BoxFuture<'static, ()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the job supervisor {exe}: {source}")]
pub struct LaunchError {
    pub exe: String,
    pub source: io::Error,
}

/// Process launching and signalling.
pub trait Launcher: Send + Sync + 'static {
    /// Starts the supervisor of the job whose `launch.json` is in `paths.dir`.
    fn launch(&self, paths: &JobPaths) -> Result<ShimHandle, LaunchError>;
    /// Sends `signal` to every process in group `pgid`; `Ok(false)` when the
    /// group has no process left.
    fn signal_group(&self, pgid: i32, signal: Signal) -> io::Result<bool>;
    /// Whether process `pid` is alive and is the supervisor of `job_dir`.
    fn shim_alive(&self, pid: i32, job_dir: &Path) -> bool;
    /// The pid of a live supervisor of `job_dir`, if any.
    fn find_shim(&self, job_dir: &Path) -> Option<i32>;
    /// SIGKILLs every process whose environment holds `marker` (`NAME=value`);
    /// returns how many were signalled. Used to clean up after a lost shim.
    fn kill_marked(&self, marker: &str) -> usize;
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
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("shim")
            .arg(&paths.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(false)
            .spawn()
            .map_err(err)?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| err(io::Error::other("the supervisor has no pid")))?;
        Ok(ShimHandle {
            pid,
            exited: Box::pin(async move {
                let _ = child.wait().await;
            }),
        })
    }

    fn signal_group(&self, pgid: i32, signal: Signal) -> io::Result<bool> {
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

    fn shim_alive(&self, pid: i32, job_dir: &Path) -> bool {
        pid > 0 && is_shim_of(&proc_cmdline(pid), job_dir)
    }

    fn find_shim(&self, job_dir: &Path) -> Option<i32> {
        pids().find(|&pid| is_shim_of(&proc_cmdline(pid), job_dir))
    }

    fn kill_marked(&self, marker: &str) -> usize {
        let me = std::process::id() as i32;
        let mut n = 0;
        for pid in pids().filter(|&p| p != me) {
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
                && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            {
                n += 1;
            }
        }
        n
    }
}

/// Pids of every process in `/proc`.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

fn proc_cmdline(pid: i32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// Whether a NUL-separated command line is `... shim <job_dir>`.
fn is_shim_of(cmdline: &[u8], job_dir: &Path) -> bool {
    let dir = job_dir.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w[0] == b"shim" && w[1] == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_shim_command_lines() {
        let dir = Path::new("/var/lib/bai-agent/jobs/j1");
        assert!(is_shim_of(
            b"/usr/bin/bai-agent\0shim\0/var/lib/bai-agent/jobs/j1\0",
            dir
        ));
        assert!(!is_shim_of(
            b"/usr/bin/bai-agent\0shim\0/var/lib/bai-agent/jobs/j10\0",
            dir
        ));
        assert!(!is_shim_of(b"sleep\x001000\x00", dir));
        assert!(!is_shim_of(b"", dir));
    }

    #[test]
    fn signalling_a_missing_group_says_so() {
        let l = ShimLauncher {
            exe: "/nonexistent".into(),
        };
        // Pid 0x3fffff0 is far above any real pid_max default.
        assert!(!l.signal_group(0x3fff_fff0, Signal::SIGTERM).unwrap());
        assert!(l.signal_group(1, Signal::SIGTERM).is_err());
        assert!(!l.shim_alive(std::process::id() as i32, Path::new("/x")));
    }

    #[test]
    fn kill_marked_kills_only_marked_processes() {
        let marker = format!("BAI_TEST_MARKER={}", uuid::Uuid::new_v4());
        let (name, value) = marker.split_once('=').unwrap();
        let mut marked = std::process::Command::new("sleep")
            .arg("100")
            .env(name, value)
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let l = ShimLauncher {
            exe: "/nonexistent".into(),
        };
        assert_eq!(l.kill_marked(&marker), 1);
        let st = marked.wait().unwrap();
        assert!(st.code().is_none(), "killed by a signal");
        assert!(
            other.try_wait().unwrap().is_none(),
            "unmarked process survives"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
