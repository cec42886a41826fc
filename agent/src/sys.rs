//! The agent's only `unsafe` code: two system calls the safe crates do not
//! wrap yet, each a few lines with its reasoning.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// A pidfd for `pid`: readable once the process has exited, whoever its
/// parent is (Linux 5.3+).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
    // descriptor or -1; nothing else owns the new descriptor.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: `fd` is a descriptor just returned to us and owned by nothing else.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers a descriptor owner with the runtime's reactor.
pub fn async_fd<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: callers pass types that own their descriptor (`OwnedFd`, an
    // inotify instance) and never close or replace it while the `AsyncFd`
    // holds them; the descriptor is deregistered before it is closed when the
    // `AsyncFd` drops.
    #[allow(unsafe_code)]
    unsafe {
        AsyncFd::register(inner).map_err(io::Error::from)
    }
}
