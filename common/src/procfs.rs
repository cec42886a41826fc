//! Reading processes from `/proc`. Every reader returns `None` (or `false`, or nothing) for a
//! process that is gone or unreadable: processes come and go between listing and reading.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Pids of every process in `/proc`, this one included.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

/// Pids of every process but this one.
pub fn other_pids() -> impl Iterator<Item = i32> {
    let me = std::process::id() as i32;
    pids().filter(move |&p| p != me)
}

/// The argument vector of `pid` (`/proc/<pid>/cmdline`). Empty for a kernel thread, a zombie,
/// or a process caught between exec and publishing its arguments.
pub fn args(pid: i32) -> Option<Vec<OsString>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| split_nul(&raw))
}

/// The environment of `pid` at exec (`/proc/<pid>/environ`), as `NAME=value` entries. Readable
/// only for processes of the same user (or by root).
pub fn environ(pid: i32) -> Option<Vec<OsString>> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .map(|raw| split_nul(&raw))
}

/// Whether `pid`'s environment holds exactly the entry `entry` (`NAME=value`).
pub fn has_env_entry(pid: i32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|raw| raw.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
}

/// The executable of `pid` (`/proc/<pid>/exe`), without the " (deleted)" the kernel appends
/// when the file was replaced or removed since.
pub fn exe(pid: i32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let mut bytes = link.into_os_string().into_vec();
    if let Some(n) = bytes.len().checked_sub(b" (deleted)".len())
        && bytes[n..] == *b" (deleted)"
    {
        bytes.truncate(n);
    }
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

/// The working directory of `pid` (`/proc/<pid>/cwd`).
pub fn cwd(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// What bai reads from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// User and system CPU time of the process, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// CPU time of the children it has waited for, in clock ticks.
    pub cutime: u64,
    pub cstime: u64,
}

impl Stat {
    /// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
    /// parentheses, so fields are counted from the last `)`.
    pub fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let int = |i: usize| f.get(i)?.parse::<i32>().ok();
        let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
        // f[0] is field 3 (state); utime is field 14.
        Some(Stat {
            state: f.first()?.chars().next()?,
            ppid: int(1)?,
            pgid: int(2)?,
            sid: int(3)?,
            utime: ticks(11)?,
            stime: ticks(12)?,
            cutime: ticks(13)?,
            cstime: ticks(14)?,
        })
    }

    /// Neither a zombie nor dead.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/<pid>/stat`, parsed.
pub fn stat(pid: i32) -> Option<Stat> {
    Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process group of `pid`.
pub fn pgid(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.pgid)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.is_running())
}

/// Resident memory of `pid` in bytes (`/proc/<pid>/statm`'s second field).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// Clock ticks per second, the unit of [`Stat`]'s CPU times.
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Live (not zombie) processes of process group `pgid`.
pub fn in_group(pgid: i32) -> Vec<i32> {
    pids()
        .filter(|&p| stat(p).is_some_and(|s| s.pgid == pgid && s.is_running()))
        .collect()
}

fn split_nul(raw: &[u8]) -> Vec<OsString> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "42 (a) b) S 1 40 41 0 -1 4194560 100 0 0 0 7 3 5 2 20 0 1 0 1 1 1";
        let s = Stat::parse(text).expect("parse");
        assert_eq!(
            s,
            Stat {
                state: 'S',
                ppid: 1,
                pgid: 40,
                sid: 41,
                utime: 7,
                stime: 3,
                cutime: 5,
                cstime: 2,
            }
        );
        assert!(s.is_running());
        assert_eq!(Stat::parse("42 (x) S 1"), None);
        assert!(
            !Stat::parse(&text.replace(" S ", " Z "))
                .expect("z")
                .is_running()
        );
    }

    #[test]
    fn arguments_keep_empty_ones_but_not_the_terminator() {
        assert_eq!(split_nul(b""), Vec::<OsString>::new());
        assert_eq!(split_nul(b"a\0\0b\0"), vec!["a", "", "b"]);
    }

    #[test]
    fn a_child_is_seen_with_its_arguments_environment_and_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .env("BAI_COMMON_TEST_MARK", "yes")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // The child may not have exec'd yet: wait until its argv is published.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while args(pid).is_none_or(|a| a.first().is_none_or(|a| a != "sleep")) {
            assert!(std::time::Instant::now() < deadline, "sleep never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(pids().any(|p| p == pid));
        assert!(other_pids().all(|p| p != std::process::id() as i32));
        assert_eq!(args(pid).expect("args"), vec!["sleep", "30"]);
        assert!(has_env_entry(pid, "BAI_COMMON_TEST_MARK=yes"));
        assert!(!has_env_entry(pid, "BAI_COMMON_TEST_MARK=no"));
        assert!(
            environ(pid)
                .expect("environ")
                .iter()
                .any(|e| e == "BAI_COMMON_TEST_MARK=yes")
        );
        assert!(exe(pid).is_some_and(|e| e.file_name().is_some_and(|n| n == "sleep")));
        let canon = dir.path().canonicalize().expect("canonicalize");
        assert_eq!(cwd(pid), Some(canon));
        let me = stat(std::process::id() as i32).expect("own stat");
        // The agent tells a job's processes by session: the field must be the real one.
        let sid = nix::unistd::getsid(None).expect("getsid").as_raw();
        assert_eq!(me.sid, sid);
        assert_eq!(stat(pid).map(|s| s.sid), Some(sid));
        assert_eq!(pgid(pid), Some(me.pgid));
        assert!(in_group(me.pgid).contains(&pid));
        assert!(alive(pid));
        child.kill().expect("kill");
        // Killed but not reaped: a zombie, not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while alive(pid) {
            assert!(std::time::Instant::now() < deadline, "sleep never died");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!in_group(me.pgid).contains(&pid));
        child.wait().expect("wait");
        assert_eq!(args(pid), None);
        assert_eq!(stat(pid), None);
    }
}
