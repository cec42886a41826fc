//! What the bench learns about processes from /proc (read through
//! `bai_common::procfs`; what only the bench needs stays here): CPU time and resident
//! memory of one pid, which pids belong to a benchmark run (their command line
//! or working directory names its temporary directory), killing those, and
//! raising this process's open-file limit so thousands of sessions fit.

use anyhow::{Context, Result, anyhow};
use bai_common::procfs;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// One reading of a process's CPU time and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// utime + stime of the process itself, in seconds.
    pub cpu_s: f64,
    /// cutime + cstime: CPU of children it has waited for (an agent's jobs), in seconds.
    pub children_cpu_s: f64,
    /// VmRSS in MiB.
    pub rss_mb: f64,
    /// VmHWM (peak resident set) in MiB.
    pub rss_peak_mb: f64,
}

impl Sample {
    /// CPU seconds of the process and its reaped children together.
    pub fn total_cpu_s(&self) -> f64 {
        self.cpu_s + self.children_cpu_s
    }
}

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
fn ticks_per_s() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Reads /proc/<pid>/stat and /proc/<pid>/status.
pub fn sample(pid: i32) -> Result<Sample> {
    let stat = procfs::stat(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let hz = ticks_per_s();
    Ok(Sample {
        cpu_s: (stat.utime + stat.stime) as f64 / hz,
        children_cpu_s: (stat.cutime + stat.cstime) as f64 / hz,
        rss_mb: status_kb(&status, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
        rss_peak_mb: status_kb(&status, "VmHWM:").unwrap_or(0) as f64 / 1024.0,
    })
}

/// A "Name:   123 kB" line of /proc/<pid>/status, in kB.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// On-CPU nanoseconds of each thread of `pid`, from
/// /proc/<pid>/task/*/schedstat (nanosecond resolution, where /proc/<pid>/stat
/// counts 10 ms ticks).
pub fn thread_cpu_ns(pid: i32) -> Result<HashMap<i32, u64>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = HashMap::new();
    for e in std::fs::read_dir(&dir)
        .with_context(|| format!("read {dir}"))?
        .flatten()
    {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        // A thread may exit between listing and reading.
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat"))
            && let Some(ns) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            out.insert(tid, ns);
        }
    }
    Ok(out)
}

/// CPU seconds between two [`thread_cpu_ns`] readings: threads present at
/// the end count from their earlier value, or from zero if they are new.
/// (Threads that exited in between are missed.)
pub fn thread_cpu_delta_s(before: &HashMap<i32, u64>, after: &HashMap<i32, u64>) -> f64 {
    after
        .iter()
        .map(|(tid, &ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 1e9
}

/// CPU of this process (the bench itself) in seconds.
pub fn self_cpu_s() -> f64 {
    sample(std::process::id() as i32)
        .map(|s| s.cpu_s)
        .unwrap_or(0.0)
}

/// argv of `pid`.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    Some(
        procfs::args(pid)?
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    )
}

/// Pids of processes whose command line mentions `dir` or whose working
/// directory lies under it.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy();
    procfs::other_pids()
        .filter(|&pid| {
            let by_cmd =
                cmdline(pid).is_some_and(|c| c.iter().any(|a| a.contains(needle.as_ref())));
            let by_cwd = procfs::cwd(pid).is_some_and(|p| p.starts_with(dir));
            by_cmd || by_cwd
        })
        .collect()
}

/// Pids under `dir` (see [`pids_under`]) whose program name is `exe_name`.
///
/// The executable link is checked besides argv[0]: for a moment after
/// exec the kernel has switched the image but not yet published argv, so
/// `/proc/PID/cmdline` reads empty.
pub fn pids_of_program_under(dir: &Path, exe_name: &str) -> Vec<i32> {
    let is_named = |path: &str| Path::new(path).file_name().is_some_and(|n| n == exe_name);
    pids_under(dir)
        .into_iter()
        .filter(|&pid| {
            let by_exe = procfs::exe(pid).is_some_and(|p| is_named(&p.to_string_lossy()));
            let by_argv0 = cmdline(pid)
                .and_then(|c| c.first().cloned())
                .is_some_and(|argv0| is_named(&argv0));
            by_exe || by_argv0
        })
        .collect()
}

pub use procfs::alive;

/// SIGTERM, then SIGKILL after `grace`, every process left under `dir`.
/// Returns how many it found.
pub fn kill_under(dir: &Path, grace: Duration) -> usize {
    let first = pids_under(dir);
    for &pid in &first {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && first.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        let left: Vec<i32> = pids_under(dir).into_iter().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    first.len()
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; children started
/// afterwards (the coordinator) inherit it. Returns the new soft limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_kilobytes() {
        let status = "Name:\tbai\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kb(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn thread_cpu_counts_work_done_between_readings() {
        let me = std::process::id() as i32;
        let before = thread_cpu_ns(me).expect("schedstat");
        // Spin until the readings show 50 ms of CPU (a reader that never sees
        // work fails by the deadline): on a loaded machine 50 ms of wall time
        // may give this thread much less.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        while thread_cpu_delta_s(&before, &thread_cpu_ns(me).expect("schedstat")) < 0.05 {
            assert!(
                std::time::Instant::now() < deadline,
                "no CPU time seen in 30 s"
            );
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        assert!(x > 0);
        let after = thread_cpu_ns(me).expect("schedstat");
        let d = thread_cpu_delta_s(&before, &after);
        assert!((0.03..5.0).contains(&d), "{d}");
        assert_eq!(thread_cpu_delta_s(&after, &after), 0.0);
    }

    #[test]
    fn own_process_has_memory_and_is_alive() {
        let s = sample(std::process::id() as i32).expect("sample self");
        assert!(s.rss_mb > 0.0, "{s:?}");
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn processes_under_a_directory_are_found_and_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert!(pids_under(dir.path()).contains(&pid));
        assert_eq!(pids_of_program_under(dir.path(), "sleep"), vec![pid]);
        assert!(pids_of_program_under(dir.path(), "bai-agent").is_empty());
        assert_eq!(kill_under(dir.path(), Duration::from_secs(2)), 1);
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
