//! Looking at and cleaning up processes through /proc, so a test can check that
//! a job's whole process tree is gone and leave nothing running behind it.

use std::path::Path;

/// Pids of processes whose command line contains `needle`.
pub fn with_cmdline(needle: &str) -> Vec<i32> {
    all()
        .into_iter()
        .filter(|&pid| cmdline(pid).is_some_and(|c| c.contains(needle)))
        .collect()
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Whether `pid` is alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // state is the field after the parenthesised command name
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

fn all() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process whose command line names `dir` or whose working
/// directory lies under it: local agents, shims and job processes of a test.
pub fn kill_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    for _ in 0..3 {
        let mut found = false;
        for pid in all() {
            let by_cmd = cmdline(pid).is_some_and(|c| c.contains(&needle));
            let by_cwd =
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|p| p.starts_with(dir));
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
