//! Flag groups that several commands flatten in: the storage flags of
//! `cluster create` and `job create`, the ssh flags of `node exec`, and
//! `Secret`, the type of flag values that must never be printed.

use std::path::PathBuf;

use clap::Args;

/// A value that must never be printed: Debug shows only that it is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// az's storage flags, shared by `cluster create` (they go into
/// `nodeSetup.mountVolumes`) and `job create` (`mountVolumes`); each adds a
/// volume to the lists of the config file.
#[derive(Args, Debug, Clone, Default)]
pub struct StorageArgs {
    /// Storage account for --afs-name / --bfs-name and for
    /// <AZURE_BATCHAI_STORAGE_ACCOUNT> in the config file.
    #[arg(long = "storage-account-name", env = "AZURE_BATCHAI_STORAGE_ACCOUNT")]
    pub storage_account_name: Option<String>,
    /// The storage account's key (for --afs-name / --bfs-name and
    /// <AZURE_BATCHAI_STORAGE_KEY>). Visible to other users on the command
    /// line: prefer the AZURE_BATCHAI_STORAGE_KEY environment variable.
    #[arg(
        long = "storage-account-key",
        env = "AZURE_BATCHAI_STORAGE_KEY",
        hide_env_values = true
    )]
    pub storage_account_key: Option<Secret>,
    /// Azure File share to mount (https://<account>.file.core.windows.net/<share>).
    #[arg(long = "afs-name")]
    pub afs_name: Option<String>,
    /// Where the File share is mounted, relative to the mount root [default: afs].
    #[arg(long = "afs-mount-path", requires = "afs_name")]
    pub afs_mount_path: Option<String>,
    /// Azure Blob container to mount.
    #[arg(long = "bfs-name")]
    pub bfs_name: Option<String>,
    /// Where the Blob container is mounted, relative to the mount root [default: bfs].
    #[arg(long = "bfs-mount-path", requires = "bfs_name")]
    pub bfs_mount_path: Option<String>,
    /// NFS server to mount: its host name or IP address (bai has no Batch AI
    /// file-server resource; its export "/" is mounted).
    #[arg(long = "nfs", alias = "nfs-name", value_name = "ADDRESS")]
    pub nfs: Option<String>,
    /// Where the NFS export is mounted, relative to the mount root [default: nfs].
    #[arg(long = "nfs-mount-path", requires = "nfs")]
    pub nfs_mount_path: Option<String>,
    /// Mount the coordinator's auto-storage account: share "batchaishare" at
    /// "autoafs" and container "batchaicontainer" at "autobfs".
    #[arg(long = "use-auto-storage")]
    pub use_auto_storage: bool,
}

/// How `node exec` uses ssh. The user is the cluster's admin user; ssh asks
/// for a password itself when one is needed (never on a command line).
#[derive(Args, Debug, Clone, Default)]
pub struct SshArgs {
    /// Command line to run on the node (in `bash -ilc`); without it, an
    /// interactive shell, or with -L only the port forwarding.
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Option<String>,
    /// Forward a local port to host:port as seen from the node:
    /// LOCAL_PORT:HOST:PORT (repeatable).
    #[arg(short = 'L', long = "address", value_name = "LOCAL:HOST:PORT")]
    pub forwards: Vec<String>,
    /// Private key file for ssh (-i); default: ssh's own choice.
    #[arg(short = 'k', long = "ssh-private-key")]
    pub ssh_private_key: Option<PathBuf>,
}
