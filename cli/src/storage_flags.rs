//! az's storage flags (`--afs-name`, `--bfs-name`, `--nfs`, `--use-auto-storage`
//! and their mount paths) turned into mount volumes, added to the lists a config
//! file gave, as az did. Pure: the account key is passed in.

use bai_proto::v1 as pb;

use crate::args::StorageArgs;
use crate::error::CliError;

pub const DEFAULT_AFS_MOUNT_PATH: &str = "afs";
pub const DEFAULT_BFS_MOUNT_PATH: &str = "bfs";
pub const DEFAULT_NFS_MOUNT_PATH: &str = "nfs";

/// The File share URL az built: `https://<account>.file.core.windows.net/<share>`.
pub fn azure_file_url(account: &str, share: &str) -> String {
    format!("https://{account}.file.core.windows.net/{share}")
}

fn account<'a>(flag: &str, flags: &'a StorageArgs) -> Result<&'a str, CliError> {
    flags
        .storage_account_name
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            CliError::usage(format!(
                "{flag}: needs a storage account: give --storage-account-name or set AZURE_BATCHAI_STORAGE_ACCOUNT"
            ))
        })
}

fn credentials(flag: &str, key: Option<&str>) -> Result<pb::AzureStorageCredentialsInfo, CliError> {
    match key.filter(|k| !k.is_empty()) {
        Some(k) => Ok(pb::AzureStorageCredentialsInfo {
            account_key: k.to_string(),
            account_key_secret_reference: None,
        }),
        None => Err(CliError::usage(format!(
            "{flag}: needs the storage account's key: set AZURE_BATCHAI_STORAGE_KEY (or give --storage-account-key)"
        ))),
    }
}

fn non_empty(flag: &str, value: &str) -> Result<(), CliError> {
    if value.trim().is_empty() {
        return Err(CliError::usage(format!("{flag}: must not be empty")));
    }
    Ok(())
}

/// A warning when the account key came on the command line (where other
/// users can read it) rather than from AZURE_BATCHAI_STORAGE_KEY.
pub fn key_on_command_line_warning(
    flags: &StorageArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<&'static str> {
    let key = flags.storage_account_key.as_ref()?;
    (env("AZURE_BATCHAI_STORAGE_KEY").as_deref() != Some(key.expose())).then_some(
        "warning: --storage-account-key on the command line is visible to other users; \
         prefer the AZURE_BATCHAI_STORAGE_KEY environment variable",
    )
}

/// Adds the volumes the flags ask for to `mounts` (the config file's, if
/// any). `key` is the storage account's key. Returns `None` when there were
/// neither mounts nor flags, so that no empty `mountVolumes` is sent.
pub fn add_volumes(
    flags: &StorageArgs,
    key: Option<&str>,
    mounts: Option<pb::MountVolumes>,
) -> Result<Option<pb::MountVolumes>, CliError> {
    let wanted = flags.afs_name.is_some()
        || flags.bfs_name.is_some()
        || flags.nfs.is_some()
        || flags.use_auto_storage;
    if !wanted {
        return Ok(mounts);
    }
    let mut m = mounts.unwrap_or_default();
    if let Some(share) = &flags.afs_name {
        non_empty("--afs-name", share)?;
        let account = account("--afs-name", flags)?;
        let path = flags
            .afs_mount_path
            .as_deref()
            .unwrap_or(DEFAULT_AFS_MOUNT_PATH);
        non_empty("--afs-mount-path", path)?;
        m.azure_file_shares.push(pb::AzureFileShareReference {
            account_name: account.to_string(),
            azure_file_url: azure_file_url(account, share),
            credentials: Some(credentials("--afs-name", key)?),
            relative_mount_path: path.to_string(),
            file_mode: String::new(),
            directory_mode: String::new(),
        });
    }
    if let Some(container) = &flags.bfs_name {
        non_empty("--bfs-name", container)?;
        let account = account("--bfs-name", flags)?;
        let path = flags
            .bfs_mount_path
            .as_deref()
            .unwrap_or(DEFAULT_BFS_MOUNT_PATH);
        non_empty("--bfs-mount-path", path)?;
        m.azure_blob_file_systems
            .push(pb::AzureBlobFileSystemReference {
                account_name: account.to_string(),
                container_name: container.clone(),
                credentials: Some(credentials("--bfs-name", key)?),
                relative_mount_path: path.to_string(),
                mount_options: String::new(),
            });
    }
    if let Some(server) = &flags.nfs {
        non_empty("--nfs", server)?;
        let path = flags
            .nfs_mount_path
            .as_deref()
            .unwrap_or(DEFAULT_NFS_MOUNT_PATH);
        non_empty("--nfs-mount-path", path)?;
        m.file_servers.push(pb::FileServerReference {
            file_server: Some(pb::ResourceId { id: server.clone() }),
            source_directory: String::new(),
            relative_mount_path: path.to_string(),
            mount_options: String::new(),
        });
    }
    if flags.use_auto_storage {
        m.use_auto_storage = true;
    }
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> StorageArgs {
        StorageArgs {
            storage_account_name: Some("store".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_key_from_the_command_line_is_warned_about() {
        let f = StorageArgs {
            storage_account_key: Some(crate::args::Secret::new("k")),
            ..flags()
        };
        let from_env = |k: &str| (k == "AZURE_BATCHAI_STORAGE_KEY").then(|| "k".to_string());
        assert_eq!(key_on_command_line_warning(&f, &from_env), None);
        assert!(key_on_command_line_warning(&f, &|_| None).is_some());
        assert_eq!(key_on_command_line_warning(&flags(), &|_| None), None);
    }

    #[test]
    fn no_flags_leave_the_files_mounts_alone() {
        assert_eq!(add_volumes(&flags(), Some("k"), None).unwrap(), None);
        let file = pb::MountVolumes {
            use_auto_storage: false,
            ..Default::default()
        };
        assert_eq!(
            add_volumes(&flags(), None, Some(file.clone())).unwrap(),
            Some(file)
        );
    }

    #[test]
    fn each_flag_adds_a_volume_with_az_defaults() {
        let f = StorageArgs {
            afs_name: Some("share1".into()),
            bfs_name: Some("container1".into()),
            nfs: Some("10.0.0.4".into()),
            ..flags()
        };
        let m = add_volumes(&f, Some("k3y"), None).unwrap().unwrap();
        let afs = &m.azure_file_shares[0];
        assert_eq!(
            (
                afs.account_name.as_str(),
                afs.azure_file_url.as_str(),
                afs.relative_mount_path.as_str(),
                afs.credentials.as_ref().unwrap().account_key.as_str()
            ),
            (
                "store",
                "https://store.file.core.windows.net/share1",
                "afs",
                "k3y"
            )
        );
        let bfs = &m.azure_blob_file_systems[0];
        assert_eq!(
            (
                bfs.account_name.as_str(),
                bfs.container_name.as_str(),
                bfs.relative_mount_path.as_str(),
                bfs.credentials.as_ref().unwrap().account_key.as_str()
            ),
            ("store", "container1", "bfs", "k3y")
        );
        let nfs = &m.file_servers[0];
        assert_eq!(nfs.file_server.as_ref().unwrap().id, "10.0.0.4");
        assert_eq!(nfs.relative_mount_path, "nfs");
        assert!(!m.use_auto_storage);
    }

    #[test]
    fn flags_add_to_the_files_lists_with_their_mount_paths() {
        let file = pb::MountVolumes {
            azure_file_shares: vec![pb::AzureFileShareReference {
                relative_mount_path: "fromfile".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let f = StorageArgs {
            afs_name: Some("s".into()),
            afs_mount_path: Some("data".into()),
            nfs: Some("nfs.local".into()),
            nfs_mount_path: Some("shared".into()),
            use_auto_storage: true,
            ..flags()
        };
        let m = add_volumes(&f, Some("k"), Some(file)).unwrap().unwrap();
        let paths: Vec<_> = m
            .azure_file_shares
            .iter()
            .map(|a| a.relative_mount_path.as_str())
            .collect();
        assert_eq!(paths, ["fromfile", "data"]);
        assert_eq!(m.file_servers[0].relative_mount_path, "shared");
        assert!(m.use_auto_storage);
    }

    #[test]
    fn an_account_or_key_that_is_missing_is_named() {
        let f = StorageArgs {
            bfs_name: Some("c".into()),
            ..Default::default()
        };
        let e = add_volumes(&f, Some("k"), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("--bfs-name: needs a storage account"),
            "{e}"
        );
        let f = StorageArgs {
            afs_name: Some("s".into()),
            ..flags()
        };
        let e = add_volumes(&f, None, None).unwrap_err();
        assert!(e.to_string().contains("AZURE_BATCHAI_STORAGE_KEY"), "{e}");
        // --use-auto-storage and --nfs need no account.
        let f = StorageArgs {
            nfs: Some("h".into()),
            use_auto_storage: true,
            ..Default::default()
        };
        assert!(add_volumes(&f, None, None).is_ok());
        let f = StorageArgs {
            nfs: Some(" ".into()),
            ..Default::default()
        };
        assert!(add_volumes(&f, None, None).is_err());
    }
}
