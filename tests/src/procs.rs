//! Looking at and cleaning up processes through /proc (`bai_common::procfs`), so a test can
//! check that a job's whole process tree is gone and leave nothing running behind it.

use bai_common::procfs;
use std::path::Path;

pub use procfs::alive;

/// Pids of processes (other than this one) whose command line contains `needle`.
pub fn with_cmdline(needle: &str) -> Vec<i32> {
    procfs::other_pids()
        .filter(|&pid| cmdline(pid).is_some_and(|c| c.contains(needle)))
        .collect()
}

/// Live processes (not zombies) whose command line contains `needle`.
pub fn alive_with_cmdline(needle: &str) -> Vec<i32> {
    with_cmdline(needle)
        .into_iter()
        .filter(|&p| alive(p))
        .collect()
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let args = procfs::args(pid)?;
    Some(
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// SIGKILLs every process whose command line names `dir` or whose working
/// directory lies under it: local agents, shims and job processes of a test.
pub fn kill_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    for _ in 0..3 {
        let mut found = false;
        for pid in procfs::other_pids() {
            let by_cmd = cmdline(pid).is_some_and(|c| c.contains(&needle));
            let by_cwd = procfs::cwd(pid).is_some_and(|p| p.starts_with(dir));
            if by_cmd || by_cwd {
                found = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The uid of user `name` (from /etc/passwd).
pub fn uid_of(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
        })
}
