//! A process's exit as an event, for any process (not only our children): a pidfd becomes
//! readable when the process exits, so waiting costs nothing while it runs.

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use std::io;
use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A handle on one process, taken while it is known to be the process meant (a pid can be
/// reused once the process is gone; the pidfd cannot).
#[derive(Debug)]
pub struct ProcessHandle {
    fd: AsyncFd<OwnedFd>,
}

impl ProcessHandle {
    /// Opens a pidfd on `pid`. Fails with `NotFound` when no such process exists (it may
    /// already have exited), or with the OS error where pidfds are unsupported (Linux < 5.3).
    /// Must be called inside a tokio runtime.
    pub fn open(pid: i32) -> io::Result<Self> {
        let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("pid must be positive"))?;
        let fd = pidfd_open(pid, PidfdFlags::NONBLOCK).map_err(|e| {
            if e == rustix::io::Errno::SRCH {
                io::Error::new(io::ErrorKind::NotFound, "no such process")
            } else {
                io::Error::from(e)
            }
        })?;
        // Deprecated because a `T` that does not own its descriptor could close it while it is
        // registered; an `OwnedFd` moved in is owned by the `AsyncFd` until it is dropped.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// Sends `signal` to the process, never to another that reused its pid. `Ok(false)` when
    /// it has exited (a zombie included).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<bool> {
        let sig = rustix::process::Signal::from_named_raw(signal as i32)
            .ok_or_else(|| io::Error::other(format!("unknown signal {signal}")))?;
        match rustix::process::pidfd_send_signal(self.fd.get_ref(), sig) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::SRCH => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves once the process has exited (a zombie counts as exited).
    pub async fn exited(&self) -> io::Result<()> {
        // A pidfd stays readable once the process is gone; the guard is not cleared.
        let _guard = self.fd.readable().await?;
        Ok(())
    }
}

/// Resolves once process `pid` has exited; at once if there is no such process.
pub async fn exited(pid: i32) -> io::Result<()> {
    match ProcessHandle::open(pid) {
        Ok(h) => h.exited().await,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn resolves_when_a_process_exits_and_not_before() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let h = ProcessHandle::open(child.id() as i32).expect("pidfd");
        let early = tokio::time::timeout(Duration::from_millis(200), h.exited()).await;
        assert!(early.is_err(), "exit reported for a running process");
        assert!(h.signal(nix::sys::signal::Signal::SIGKILL).expect("signal"));
        tokio::time::timeout(Duration::from_secs(20), h.exited())
            .await
            .expect("exit never reported")
            .expect("wait");
        let status = child.wait().expect("reap");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
        assert!(!h.signal(nix::sys::signal::Signal::SIGKILL).expect("signal"));
    }

    #[tokio::test]
    async fn a_missing_process_has_exited() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id() as i32;
        child.wait().expect("reap");
        assert_eq!(
            ProcessHandle::open(pid).expect_err("gone").kind(),
            io::ErrorKind::NotFound
        );
        exited(pid).await.expect("missing counts as exited");
        assert!(ProcessHandle::open(0).is_err());
    }
}
