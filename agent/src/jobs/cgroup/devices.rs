//! Which NVIDIA device nodes a job may open.
//!
//! NVIDIA's driver gives each GPU the character device `195:N`
//! (`/dev/nvidiaN`, N its minor number) and shares control devices among
//! all of them: `/dev/nvidiactl` (195:255), `/dev/nvidia-modeset` (195:254),
//! `/dev/nvidia-uvm` and `/dev/nvidia-uvm-tools` (a major the kernel hands
//! out at load time, named `nvidia-uvm` in `/proc/devices`) and
//! `/dev/nvidia-caps/*` (`nvidia-caps`). A job needs the control devices to
//! use any GPU, so only the GPU nodes are confined: the job's cgroup denies
//! every GPU minor of the node that is not the job's (a deny list, so the
//! job keeps every other device it had: FUSE, InfiniBand, ...).
//!
//! The contract for `LaunchRecord::gpu_minors` (filled by the agent from its
//! GPU inventory: UUID → minor number):
//! - `None`: the agent does not know the job's GPUs (no inventory yet):
//!   nothing is denied;
//! - `Some(minors)`: the job may open exactly these GPUs; every other GPU
//!   of the node (`/dev/nvidia<digits>` found at agent start) is denied. An
//!   empty list on a node with GPUs denies them all; on a node without GPUs
//!   it denies nothing.

use super::parse;
use std::path::Path;

/// NVIDIA's character major for GPUs and `nvidiactl`.
pub const NVIDIA_MAJOR: u32 = 195;
/// `/dev/nvidiactl`'s minor.
pub const NVIDIACTL_MINOR: u32 = 255;
/// `/dev/nvidia-modeset`'s minor.
pub const NVIDIA_MODESET_MINOR: u32 = 254;

/// A device cgroup rule: a character device, `minor` `None` for all of a major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharDevice {
    pub major: u32,
    pub minor: Option<u32>,
}

impl CharDevice {
    /// The v1 `devices.allow`/`devices.deny` entry for read, write and mknod.
    pub fn v1_rule(self) -> String {
        match self.minor {
            Some(m) => format!("c {}:{m} rwm", self.major),
            None => format!("c {}:* rwm", self.major),
        }
    }
}

/// The devices of the NVIDIA driver on this node, found at agent start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NvidiaDevices {
    /// Minors of the node's GPU device nodes (`/dev/nvidia<digits>`), sorted.
    pub gpu_minors: Vec<u32>,
    /// `nvidia-uvm`'s major (dynamic), when the module is loaded.
    pub uvm_major: Option<u32>,
    /// `nvidia-caps`'s major (dynamic), when present.
    pub caps_major: Option<u32>,
}

impl NvidiaDevices {
    /// Reads `dev_dir` (normally `/dev`) for GPU nodes and `/proc/devices`
    /// text for the dynamic majors.
    pub fn detect(dev_dir: &Path, proc_devices: &str) -> Self {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let mut gpu_minors: Vec<u32> = std::fs::read_dir(dev_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("nvidia"))
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter_map(|e| {
                let m = std::fs::metadata(e.path()).ok()?;
                let rdev = m.rdev();
                (m.file_type().is_char_device()
                    && nix::sys::stat::major(rdev) == u64::from(NVIDIA_MAJOR))
                .then(|| u32::try_from(nix::sys::stat::minor(rdev)).ok())
                .flatten()
            })
            .filter(|&m| m < NVIDIA_MODESET_MINOR)
            .collect();
        gpu_minors.sort_unstable();
        gpu_minors.dedup();
        Self {
            gpu_minors,
            uvm_major: parse::char_major(proc_devices, "nvidia-uvm"),
            caps_major: parse::char_major(proc_devices, "nvidia-caps"),
        }
    }

    /// The GPU nodes a job given `allowed` must not open (see the module
    /// contract): none for `None`, else every node GPU not in `allowed`.
    pub fn denied(&self, allowed: Option<&[u32]>) -> Vec<CharDevice> {
        let Some(allowed) = allowed else {
            return Vec::new();
        };
        self.gpu_minors
            .iter()
            .filter(|m| !allowed.contains(m))
            .map(|&m| CharDevice {
                major: NVIDIA_MAJOR,
                minor: Some(m),
            })
            .collect()
    }

    /// The control devices every GPU job may open (for an allow-list
    /// confinement, such as a v2 device program, which must grant them).
    pub fn control(&self) -> Vec<CharDevice> {
        let mut v = vec![
            CharDevice {
                major: NVIDIA_MAJOR,
                minor: Some(NVIDIACTL_MINOR),
            },
            CharDevice {
                major: NVIDIA_MAJOR,
                minor: Some(NVIDIA_MODESET_MINOR),
            },
        ];
        v.extend(
            [self.uvm_major, self.caps_major]
                .into_iter()
                .flatten()
                .map(|major| CharDevice { major, minor: None }),
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(minors: &[u32]) -> NvidiaDevices {
        NvidiaDevices {
            gpu_minors: minors.to_vec(),
            uvm_major: Some(508),
            caps_major: None,
        }
    }

    #[test]
    fn a_job_is_denied_the_other_gpus_of_its_node() {
        let n = node(&[0, 1, 2, 3]);
        let rules: Vec<String> = n
            .denied(Some(&[1]))
            .into_iter()
            .map(CharDevice::v1_rule)
            .collect();
        assert_eq!(rules, ["c 195:0 rwm", "c 195:2 rwm", "c 195:3 rwm"]);
        assert_eq!(n.denied(Some(&[])).len(), 4, "a job given no GPU gets none");
        assert!(n.denied(None).is_empty(), "unknown GPUs: not confined");
        assert!(n.denied(Some(&[0, 1, 2, 3])).is_empty());
        // A node without GPUs denies nothing, whatever the job was given.
        assert!(node(&[]).denied(Some(&[])).is_empty());
        assert!(node(&[]).denied(Some(&[7])).is_empty());
    }

    #[test]
    fn control_devices_stay_open() {
        let rules: Vec<String> = node(&[0])
            .control()
            .into_iter()
            .map(CharDevice::v1_rule)
            .collect();
        assert_eq!(rules, ["c 195:255 rwm", "c 195:254 rwm", "c 508:* rwm"]);
        for denied in node(&[0, 1]).denied(Some(&[])) {
            assert!(denied.minor.is_some_and(|m| m < NVIDIA_MODESET_MINOR));
        }
    }

    #[test]
    fn finds_gpu_nodes_by_name_and_number() {
        let dir = tempfile::tempdir().unwrap();
        // Regular files are not devices; names must be nvidia<digits>.
        for name in ["nvidia0", "nvidiactl", "nvidia-uvm", "nvidiax1"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let n = NvidiaDevices::detect(dir.path(), "Character devices:\n 508 nvidia-uvm\n");
        assert!(n.gpu_minors.is_empty());
        assert_eq!(n.uvm_major, Some(508));
        assert_eq!(n.caps_major, None);
        let none = NvidiaDevices::detect(Path::new("/nonexistent"), "");
        assert_eq!(none, NvidiaDevices::default());
        // Real device nodes (mknod needs root) are found by their numbers.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping the mknod part: not root");
            return;
        }
        for (name, minor) in [("nvidia3", 3), ("nvidia1", 1), ("nvidia7", 255)] {
            let dev = nix::sys::stat::makedev(u64::from(NVIDIA_MAJOR), minor);
            nix::sys::stat::mknod(
                &dir.path().join(name),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                dev,
            )
            .unwrap();
        }
        let n = NvidiaDevices::detect(dir.path(), "");
        assert_eq!(
            n.gpu_minors,
            [1, 3],
            "195:255 is nvidiactl, whatever its name"
        );
    }
}
