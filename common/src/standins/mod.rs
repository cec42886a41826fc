//! Real servers for tests, started on loopback in their own temporary directories and
//! stopped on drop: [`samba::Samba`] (smbd), Azurite (`azurite`), sshd (`sshd`).
//!
//! A test that needs a component this machine lacks asks [`require`]: outside CI it prints
//! why and the test returns early; under CI (the `CI` environment variable set) it fails,
//! because CI installs every component (`scripts/test-deps.sh`).

pub mod azurite;
pub mod samba;
pub mod sshd;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether a test may go on: `true` when `ok`. When not, under CI it panics naming
/// `component`; elsewhere it prints `skipping: <component>` and returns `false`.
#[track_caller]
pub fn require(component: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI must provide {component} (scripts/test-deps.sh installs it)");
    }
    eprintln!("skipping: {component}");
    false
}

/// [`require`] for running as root.
#[track_caller]
pub fn require_root() -> bool {
    require("root", rustix::process::geteuid().is_root())
}

/// [`require`] for a program on `PATH` (or in /usr/sbin, /sbin); its path when present.
#[track_caller]
pub fn require_program(program: &str) -> Option<PathBuf> {
    let found = which(program);
    require(&format!("the program {program}"), found.is_some()).then_some(found)?
}

/// [`require`] for FUSE mounts through rclone: root, rclone, fusermount3 and /dev/fuse.
#[track_caller]
pub fn require_rclone_fuse() -> bool {
    require_root()
        && require_program("rclone").is_some()
        && require_program("fusermount3").is_some()
        && require("/dev/fuse", Path::new("/dev/fuse").exists())
}

/// [`require_rclone_fuse`] and both storage stand-ins (smbd, azurite-blob): the
/// Azurite program when all are there.
#[track_caller]
pub fn require_storage() -> Option<PathBuf> {
    if !require_rclone_fuse() {
        return None;
    }
    require_program("smbd")?;
    require_program("azurite-blob")
}

/// Where `program` is: a path with a `/` as it is, else the first executable match on
/// `PATH`, then /usr/sbin and /sbin (which a non-login root `PATH` may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// A loopback TCP port nobody listens on right now. Another process may take it before the
/// caller binds it; stand-ins that fail to listen are started again on a fresh port.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`, for at most
/// `timeout`; `alive` is asked between tries and stops the wait early when it says the
/// server is gone. Whether it is listening.
pub fn wait_for_port(port: u16, timeout: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() || !alive()
    }) && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `done` every 20 ms until it is true or `timeout` has passed; whether it became true.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A name no other stand-in of this or another test process uses at the same time:
/// `<prefix><pid>x<n>`, short enough for a Linux user name.
pub(crate) fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The last `n` lines of a log file, for an error message.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_passes_what_is_there() {
        assert!(require("something present", true));
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port().expect("port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind the free port");
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-bai").is_none());
    }

    #[test]
    fn unique_names_differ_and_fit_a_user_name() {
        let (a, b) = (unique_name("baismb"), unique_name("baismb"));
        assert_ne!(a, b);
        assert!(a.len() <= 32);
    }
}
