//! az's `--use-auto-storage`: the coordinator's own storage account, mounted
//! as share [`SHARE`] at [`SHARE_PATH`] and container [`CONTAINER`] at
//! [`CONTAINER_PATH`], next to the request's own volumes.
//!
//! A stored spec keeps the flag, never the expanded volumes: they are built
//! when a node is sent its setup or a job ([`expand`]), so the key never
//! lands in the database and a key rotated in the configuration is what
//! the next node or job gets. Pure: the account comes in as a value.

use super::Secret;
use super::spec::{AzureBlobFileSystem, AzureFileShare, MountVolumes, StorageCredentials};
use super::validate::Invalid;

/// The Azure Files share Batch AI's auto-storage mounted.
pub const SHARE: &str = "batchaishare";
/// Where the share is mounted, under the mount root.
pub const SHARE_PATH: &str = "autoafs";
/// The blob container Batch AI's auto-storage mounted.
pub const CONTAINER: &str = "batchaicontainer";
/// Where the container is mounted, under the mount root.
pub const CONTAINER_PATH: &str = "autobfs";

/// The storage account named in the coordinator's `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoStorageAccount {
    pub account: String,
    pub key: Secret,
}

/// The share's URL, in Azure's form (a node's file endpoint may redirect it).
pub fn file_url(account: &str) -> String {
    format!("https://{account}.file.core.windows.net/{SHARE}")
}

/// Whether `m` asks for the auto-storage volumes.
pub fn wanted(m: Option<&MountVolumes>) -> bool {
    m.is_some_and(|m| m.use_auto_storage)
}

/// Refuses `use_auto_storage` under `field` (a `…mount_volumes` path) when
/// this coordinator has no auto-storage account.
pub fn check_configured(
    field: &str,
    m: Option<&MountVolumes>,
    account: Option<&AutoStorageAccount>,
) -> Result<(), Invalid> {
    if wanted(m) && account.is_none() {
        return Err(Invalid::new(
            format!("{field}.use_auto_storage"),
            "this coordinator has no auto-storage account configured ([storage] auto_storage_account)",
        ));
    }
    Ok(())
}

/// Whether `relative_mount_path` lies on one of the auto-storage mount
/// points (is one, or is under one); the one it hits.
pub fn reserved_path(relative_mount_path: &str) -> Option<&'static str> {
    let first = relative_mount_path.split('/').next().unwrap_or_default();
    [SHARE_PATH, CONTAINER_PATH]
        .into_iter()
        .find(|p| *p == first)
}

/// `m` with the auto-storage share and container added after the request's
/// own volumes and the flag cleared, when it asks for them and `account` is
/// known. Without an account the flag stays set, so what is sent says what
/// is missing (the agent refuses an unexpanded flag by name).
pub fn expand(m: &MountVolumes, account: Option<&AutoStorageAccount>) -> MountVolumes {
    let mut out = m.clone();
    let Some(a) = account.filter(|_| m.use_auto_storage) else {
        return out;
    };
    let credentials = StorageCredentials {
        account_key: a.key.clone(),
    };
    out.azure_file_shares.push(AzureFileShare {
        account_name: a.account.clone(),
        azure_file_url: file_url(&a.account),
        credentials: credentials.clone(),
        relative_mount_path: SHARE_PATH.into(),
        file_mode: "0777".into(),
        directory_mode: "0777".into(),
    });
    out.azure_blob_file_systems.push(AzureBlobFileSystem {
        account_name: a.account.clone(),
        container_name: CONTAINER.into(),
        credentials,
        relative_mount_path: CONTAINER_PATH.into(),
        mount_options: String::new(),
    });
    out.use_auto_storage = false;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::UnmanagedFileSystem;

    fn account() -> AutoStorageAccount {
        AutoStorageAccount {
            account: "autoacct".into(),
            key: Secret::new("a2V5"),
        }
    }

    fn asking() -> MountVolumes {
        MountVolumes {
            unmanaged_file_systems: vec![UnmanagedFileSystem {
                mount_command: "mount --bind /srv".into(),
                relative_mount_path: "local".into(),
            }],
            use_auto_storage: true,
            ..MountVolumes::default()
        }
    }

    #[test]
    fn expansion_adds_the_share_and_the_container_after_the_requests_volumes() {
        let m = expand(&asking(), Some(&account()));
        assert!(!m.use_auto_storage);
        assert_eq!(m.unmanaged_file_systems, asking().unmanaged_file_systems);
        let [share] = m.azure_file_shares.as_slice() else {
            panic!("{m:?}")
        };
        assert_eq!(share.account_name, "autoacct");
        assert_eq!(
            share.azure_file_url,
            "https://autoacct.file.core.windows.net/batchaishare"
        );
        assert_eq!(share.relative_mount_path, "autoafs");
        assert_eq!(share.credentials.account_key.expose(), "a2V5");
        let [blob] = m.azure_blob_file_systems.as_slice() else {
            panic!("{m:?}")
        };
        assert_eq!(
            (
                blob.account_name.as_str(),
                blob.container_name.as_str(),
                blob.relative_mount_path.as_str()
            ),
            ("autoacct", "batchaicontainer", "autobfs")
        );
        assert_eq!(blob.credentials.account_key.expose(), "a2V5");
    }

    #[test]
    fn nothing_is_added_unless_asked_and_an_unknown_account_keeps_the_flag() {
        let mut plain = asking();
        plain.use_auto_storage = false;
        assert_eq!(expand(&plain, Some(&account())), plain);
        assert_eq!(expand(&asking(), None), asking());
    }

    #[test]
    fn the_flag_needs_a_configured_account() {
        let f = "job.mount_volumes";
        let e = check_configured(f, Some(&asking()), None).unwrap_err();
        assert_eq!(e.field, "job.mount_volumes.use_auto_storage");
        check_configured(f, Some(&asking()), Some(&account())).unwrap();
        check_configured(f, None, None).unwrap();
    }

    #[test]
    fn reserved_paths_are_the_mount_points_and_what_lies_under_them() {
        assert_eq!(reserved_path("autoafs"), Some("autoafs"));
        assert_eq!(reserved_path("autobfs/logs"), Some("autobfs"));
        assert_eq!(reserved_path("autoafs2"), None);
        assert_eq!(reserved_path("data/autoafs"), None);
    }
}
