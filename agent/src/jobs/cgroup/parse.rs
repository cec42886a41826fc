//! Pure parsers for the kernel files the cgroup code reads: a process's
//! cgroup membership (`/proc/<pid>/cgroup`), the character-device majors the
//! drivers registered (`/proc/devices`), and the `key value` files of
//! cgroup v2 (`cpu.stat`, `cgroup.events`).

use std::path::PathBuf;

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controller-list:path`.
/// The v2 (unified) line is `0::/path`; a v1 line names its controllers
/// (`4:memory:/x`, `3:cpu,cpuacct:/`, `9:name=systemd:/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    /// Absolute within its hierarchy (`/` for the root).
    pub path: PathBuf,
}

/// Parses `/proc/<pid>/cgroup`; malformed lines are skipped.
pub fn proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(Membership {
                hierarchy,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// The path of the v1 hierarchy that holds `controller`.
pub fn v1_path<'a>(members: &'a [Membership], controller: &str) -> Option<&'a PathBuf> {
    members
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == controller))
        .map(|m| &m.path)
}

/// The path in the unified (v2) hierarchy.
pub fn v2_path(members: &[Membership]) -> Option<&PathBuf> {
    members
        .iter()
        .find(|m| m.hierarchy == 0 && m.controllers.is_empty())
        .map(|m| &m.path)
}

/// The character-device major registered under `name` in `/proc/devices`
/// (the `Character devices:` section; block devices are not looked at).
pub fn char_major(proc_devices: &str, name: &str) -> Option<u32> {
    let mut in_char = false;
    for line in proc_devices.lines() {
        let line = line.trim();
        if line.ends_with(':') {
            in_char = line == "Character devices:";
            continue;
        }
        if !in_char {
            continue;
        }
        if let Some((major, dev)) = line.split_once(char::is_whitespace)
            && dev.trim() == name
        {
            return major.parse().ok();
        }
    }
    None
}

/// The value of `key` in a `key value` file (`cpu.stat`, `cgroup.events`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This development machine's own file: v1 controllers, one of them
    /// (memory) at a non-root path, plus the empty unified hierarchy.
    const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:/process_api/9368dad17d30b7d7947d1ded584d4695\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn reads_v1_memberships_per_controller() {
        let m = proc_cgroup(HYBRID);
        assert_eq!(m.len(), 10);
        assert_eq!(
            v1_path(&m, "memory").unwrap(),
            &PathBuf::from("/process_api/9368dad17d30b7d7947d1ded584d4695")
        );
        assert_eq!(v1_path(&m, "freezer").unwrap(), &PathBuf::from("/"));
        assert_eq!(v1_path(&m, "cpuacct").unwrap(), &PathBuf::from("/"));
        // name=systemd is a named hierarchy, not a controller called systemd.
        assert!(v1_path(&m, "systemd").is_none());
        assert_eq!(v2_path(&m).unwrap(), &PathBuf::from("/"));
    }

    #[test]
    fn reads_co_mounted_controllers_and_a_pure_v2_host() {
        let m = proc_cgroup("3:cpu,cpuacct:/system.slice/bai-agent.service\n2:devices:/a:b\n");
        let want = PathBuf::from("/system.slice/bai-agent.service");
        assert_eq!(v1_path(&m, "cpuacct"), Some(&want));
        assert_eq!(v1_path(&m, "cpu"), Some(&want));
        // A colon in the path belongs to the path.
        assert_eq!(v1_path(&m, "devices"), Some(&PathBuf::from("/a:b")));
        assert!(v2_path(&m).is_none());
        let m = proc_cgroup("0::/system.slice/bai-agent.service\n");
        assert_eq!(v2_path(&m), Some(&want));
        assert!(v1_path(&m, "memory").is_none());
        assert!(proc_cgroup("garbage\n1:memory\nx:memory:/\n5:memory:relative\n").is_empty());
    }

    #[test]
    fn finds_character_majors_by_name() {
        let text = "Character devices:\n  1 mem\n  4 /dev/vc/0\n195 nvidia-frontend\n  195 nvidia\n 236 nvidia-nvswitch\n 508 nvidia-uvm\n 509 nvidia-caps\n\nBlock devices:\n  7 loop\n 508 nvidia-uvm-not-char\n";
        assert_eq!(char_major(text, "nvidia-uvm"), Some(508));
        assert_eq!(char_major(text, "nvidia-caps"), Some(509));
        assert_eq!(char_major(text, "nvidia-frontend"), Some(195));
        assert_eq!(char_major(text, "mem"), Some(1));
        assert_eq!(char_major(text, "loop"), None, "a block device");
        assert_eq!(char_major(text, "nvidia-uvm-not-char"), None);
        // This machine has no NVIDIA driver.
        let here = "Character devices:\n  1 mem\n  5 /dev/tty\n\nBlock devices:\n  7 loop\n";
        assert_eq!(char_major(here, "nvidia-uvm"), None);
    }

    #[test]
    fn reads_keyed_files() {
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(keyed(stat, "usage_usec"), Some(1_234_567));
        assert_eq!(keyed(stat, "user"), None);
        assert_eq!(keyed("populated 1\nfrozen 0\n", "frozen"), Some(0));
    }
}
