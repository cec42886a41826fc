//! Mount tests: real rclone mounts against real Samba and Azurite, a real bind mount, and the
//! exact commands and files of the drivers this machine cannot run (cifs, NFS, blobfuse2).
//! Tests needing root, FUSE, rclone, smbd or Azurite skip outside CI and fail in CI.

mod commands;
mod real;

use super::*;
use bai_common::standins::{self, require_root};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

pub(super) use bai_common::standins::azurite::ACCOUNT as AZURITE_ACCOUNT;
pub(super) use bai_common::standins::azurite::KEY as AZURITE_KEY;

pub(super) struct Dirs {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub private: PathBuf,
    pub records: PathBuf,
}

impl Drop for Dirs {
    /// A failed test leaves no mount behind: whatever is still mounted under its
    /// directory is unmounted lazily (a FUSE daemon then exits by itself).
    fn drop(&mut self) {
        let left: Vec<PathBuf> = mountinfo::mounts()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|mp| mp.starts_with(self.tmp.path()))
            .collect();
        for mp in left.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(mp).status();
        }
    }
}

pub(super) fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("mounts");
    std::fs::create_dir(&root).expect("root");
    Dirs {
        root,
        private: tmp.path().join("node/mount-secrets"),
        records: tmp.path().join("node/mounts"),
        tmp,
    }
}

pub(super) fn context(
    drivers: Drivers,
    endpoints: Endpoints,
    private: &Path,
    runner: Arc<dyn Runner>,
) -> MountContext {
    MountContext {
        runner,
        ..MountContext::new(drivers, endpoints, None, private.to_path_buf())
    }
}

pub(super) fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

pub(super) fn share_volume(account: &str, key: &str, rel: &str) -> Volume {
    Volume::AzureFileShare {
        account_name: account.into(),
        azure_file_url: format!(
            "https://{account}.file.core.windows.net/{}",
            standins::samba::SHARE
        ),
        account_key: Secret::new(key),
        relative_mount_path: rel.into(),
        file_mode: "0640".into(),
        directory_mode: "0750".into(),
    }
}

pub(super) fn blob_volume(container: &str, rel: &str) -> Volume {
    Volume::AzureBlob {
        account_name: AZURITE_ACCOUNT.into(),
        container_name: container.into(),
        account_key: Secret::new(AZURITE_KEY),
        relative_mount_path: rel.into(),
        mount_options: "-o allow_other".into(),
    }
}

pub(super) fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

pub(super) fn environ(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Root, /dev/fuse, fusermount3 and rclone, or the reason the test cannot run.
pub(super) fn fuse_ready() -> bool {
    standins::require_rclone_fuse()
}
