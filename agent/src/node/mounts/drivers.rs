//! Which program mounts each kind of storage on this node: detected, or set in the config.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How an Azure Files share is mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileShareDriver {
    /// The kernel's SMB client (`mount -t cifs`, cifs-utils).
    Cifs,
    /// `rclone mount` of an SMB remote, over FUSE.
    Rclone,
}

/// How an Azure Blob container is mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobDriver {
    Blobfuse2,
    /// `rclone mount` of an azureblob remote, over FUSE.
    Rclone,
}

impl FileShareDriver {
    pub fn name(self) -> &'static str {
        match self {
            FileShareDriver::Cifs => "cifs",
            FileShareDriver::Rclone => "rclone",
        }
    }
}

impl BlobDriver {
    pub fn name(self) -> &'static str {
        match self {
            BlobDriver::Blobfuse2 => "blobfuse2",
            BlobDriver::Rclone => "rclone",
        }
    }
}

/// A driver name in the config that is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} driver {name:?} (known: {known})")]
pub struct UnknownDriver {
    pub kind: &'static str,
    pub name: String,
    pub known: &'static str,
}

/// The drivers of this node; `None` where nothing can mount that kind (mounting it then
/// fails naming what to install).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drivers {
    pub file_share: Option<FileShareDriver>,
    pub blob: Option<BlobDriver>,
}

impl Drivers {
    /// What this machine has: cifs when `mount.cifs` exists and the kernel has (or can load)
    /// cifs, else rclone when installed; blobfuse2 when installed, else rclone.
    pub fn detect() -> Drivers {
        Drivers::choose(|p| find_program(p).is_some(), || kernel_supports("cifs"))
    }

    /// The detection rule over a program lookup and a kernel probe.
    pub fn choose(
        has_program: impl Fn(&str) -> bool,
        kernel_cifs: impl FnOnce() -> bool,
    ) -> Drivers {
        let rclone = has_program("rclone");
        let file_share = if has_program("mount.cifs") && kernel_cifs() {
            Some(FileShareDriver::Cifs)
        } else {
            rclone.then_some(FileShareDriver::Rclone)
        };
        let blob = if has_program("blobfuse2") {
            Some(BlobDriver::Blobfuse2)
        } else {
            rclone.then_some(BlobDriver::Rclone)
        };
        Drivers { file_share, blob }
    }

    /// These drivers with the config's choices applied: `None`, `""` or `"auto"` keeps the
    /// detected one; a name sets it (without checking it is installed: a mount then fails
    /// saying what is missing).
    pub fn with_overrides(
        mut self,
        file_share: Option<&str>,
        blob: Option<&str>,
    ) -> Result<Drivers, UnknownDriver> {
        match file_share.unwrap_or("auto") {
            "" | "auto" => {}
            "cifs" => self.file_share = Some(FileShareDriver::Cifs),
            "rclone" => self.file_share = Some(FileShareDriver::Rclone),
            other => {
                return Err(UnknownDriver {
                    kind: "file share",
                    name: other.to_owned(),
                    known: "auto, cifs, rclone",
                });
            }
        }
        match blob.unwrap_or("auto") {
            "" | "auto" => {}
            "blobfuse2" => self.blob = Some(BlobDriver::Blobfuse2),
            "rclone" => self.blob = Some(BlobDriver::Rclone),
            other => {
                return Err(UnknownDriver {
                    kind: "blob",
                    name: other.to_owned(),
                    known: "auto, blobfuse2, rclone",
                });
            }
        }
        Ok(self)
    }

    /// The names for the node's report: `("cifs" | "rclone" | "none", "blobfuse2" | "rclone" | "none")`.
    pub fn names(&self) -> (&'static str, &'static str) {
        (
            self.file_share.map_or("none", FileShareDriver::name),
            self.blob.map_or("none", BlobDriver::name),
        )
    }
}

/// Where `program` is: the first executable match on `PATH`, then /usr/sbin and /sbin
/// (`mount.cifs` lives in /sbin, which a service's `PATH` may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Whether the kernel has the file system `fs` (listed in /proc/filesystems) or can load
/// its module (`modprobe -n` succeeds).
pub fn kernel_supports(fs: &str) -> bool {
    let listed =
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|text| filesystems_list(&text, fs));
    listed
        || find_program("modprobe").is_some_and(|modprobe| {
            Command::new(modprobe)
                .args(["-n", fs])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

fn filesystems_list(text: &str, fs: &str) -> bool {
    text.lines()
        .any(|line| line.split_whitespace().last() == Some(fs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_prefers_the_kernel_and_blobfuse2_then_rclone() {
        let with = |programs: &'static [&'static str], cifs: bool| {
            Drivers::choose(|p| programs.contains(&p), || cifs)
        };
        let all = &["mount.cifs", "blobfuse2", "rclone"];
        assert_eq!(
            with(all, true),
            Drivers {
                file_share: Some(FileShareDriver::Cifs),
                blob: Some(BlobDriver::Blobfuse2)
            }
        );
        // This machine: cifs-utils but no kernel module, no blobfuse2.
        assert_eq!(
            with(&["mount.cifs", "rclone"], false),
            Drivers {
                file_share: Some(FileShareDriver::Rclone),
                blob: Some(BlobDriver::Rclone)
            }
        );
        assert_eq!(with(&[], true), Drivers::default());
        assert_eq!(with(&[], true).names(), ("none", "none"));
    }

    #[test]
    fn overrides_set_or_keep_and_refuse_unknown_names() {
        let d = Drivers::default()
            .with_overrides(Some("cifs"), Some("auto"))
            .unwrap();
        assert_eq!(d.names(), ("cifs", "none"));
        let d = d.with_overrides(None, Some("blobfuse2")).unwrap();
        assert_eq!(d.names(), ("cifs", "blobfuse2"));
        let err = d.with_overrides(Some("smbfs"), None).unwrap_err();
        assert!(err.to_string().contains("smbfs"), "{err}");
    }

    #[test]
    fn proc_filesystems_lines() {
        let text = "nodev\tsysfs\n\text4\nnodev\tfuse\n\tfuseblk\n";
        assert!(filesystems_list(text, "fuse"));
        assert!(filesystems_list(text, "ext4"));
        assert!(!filesystems_list(text, "cifs"));
        assert!(kernel_supports("fuse") || !Path::new("/dev/fuse").exists());
    }
}
