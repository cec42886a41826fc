//! The agent's one reader of `/proc`: process ids, command lines, session and
//! process-group ids, and environment lookups. Every function reads a few
//! small files and is blocking: call it off the async runtime.

use std::path::Path;

/// Pids of every process in `/proc`.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

/// The NUL-separated command line of `pid` (empty when it is gone).
pub fn cmdline(pid: i32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// Process-group and session id of `pid`, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub pgid: i32,
    pub sid: i32,
}

/// `pid`'s group and session, or `None` when it is gone.
pub fn ids(pid: i32) -> Option<Ids> {
    parse_ids(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `pid (comm) state ppid pgrp session ...`; `comm` may hold spaces
/// and parentheses, so fields are counted after its last `)`.
fn parse_ids(stat: &str) -> Option<Ids> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace().skip(2);
    let pgid = f.next()?.parse().ok()?;
    let sid = f.next()?.parse().ok()?;
    Some(Ids { pgid, sid })
}

/// Whether `pid`'s environment holds exactly the entry `marker` (`NAME=value`).
pub fn environ_has(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
}

/// Whether a NUL-separated command line is `... shim <job_dir>`.
pub fn is_shim_of(cmdline: &[u8], job_dir: &Path) -> bool {
    let dir = job_dir.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w[0] == b"shim" && w[1] == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let s = "42 (a b) c)) S 1 40 39 0 -1 4194560 ...";
        assert_eq!(parse_ids(s), Some(Ids { pgid: 40, sid: 39 }));
        assert_eq!(parse_ids("garbage"), None);
        let me = std::process::id() as i32;
        let mine = ids(me).unwrap();
        assert_eq!(mine.sid, nix::unistd::getsid(None).unwrap().as_raw());
        assert!(pids().any(|p| p == me));
    }

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
}
