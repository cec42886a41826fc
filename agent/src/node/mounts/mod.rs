//! The node's mounts: Azure Files shares, Blob containers, NFS exports and unmanaged file
//! systems, each mounted under a mount root (`$AZ_BATCHAI_MOUNT_ROOT` for a cluster's,
//! `$AZ_BATCHAI_JOB_MOUNT_ROOT` for a job's). A plain blocking API: callers run it on the
//! blocking pool.
//!
//! - [`mount`] makes one [`Volume`] at `root/<relative_mount_path>` with the node's
//!   [`Drivers`] and returns a [`Mounted`] record (no secrets in it); [`save`]/[`load`] keep
//!   records in a directory.
//! - [`check`] says whether a mount still works ([`Health`]); [`adopt`] takes over an earlier
//!   agent's mounts after a restart, keeping the healthy ones and clearing the lost ones;
//!   [`unmount`] undoes one, idempotently.
//!
//! Drivers: `mount -t cifs` (credentials in a 0600 file) or `rclone mount` of an SMB remote
//! for File shares; blobfuse2 (a 0600 config) or `rclone mount` of an azureblob remote for
//! Blob containers; `mount -t nfs`; `bash -c "<mountCommand> <mount point>"`. Programs that
//! mount and exit go through the [`Runner`] seam; rclone is started directly and waited for
//! in `/proc/self/mountinfo`. Keys are written only to 0600 files in the private directory
//! (or a child's stdin): never argv, environment, log lines, errors or Debug output.

mod blobfuse;
mod command;
mod drivers;
mod kernel;
mod lifecycle;
pub mod mountinfo;
mod rclone;
mod record;
mod secret;
mod volume;

#[cfg(test)]
mod tests;

pub use command::{CommandLine, RunOutput, Runner, SystemRunner};
pub use drivers::{
    BlobDriver, Drivers, FileShareDriver, UnknownDriver, find_program, kernel_supports,
};
pub use lifecycle::{Health, adopt, check, unmount};
pub use record::{Mounted, load, remove_record, save};
pub use secret::Secret;
pub use volume::{Volume, VolumeKind, mount_point};

use bai_common::fs::{WriteOptions, write_atomic_with};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where storage is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// The Blob service URL with `{account}` for the account name; Azure's by default,
    /// `http://127.0.0.1:10000/{account}` for Azurite.
    pub blob: String,
    /// `host:port` replacing the host and port of every `azure_file_url` (a Samba stand-in).
    pub file: Option<String>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            blob: "https://{account}.blob.core.windows.net".into(),
            file: None,
        }
    }
}

impl Endpoints {
    /// The Blob service URL of `account`.
    pub fn blob_url(&self, account: &str) -> String {
        self.blob.replace("{account}", account)
    }
}

/// What every mount on this node shares.
#[derive(Clone)]
pub struct MountContext {
    pub drivers: Drivers,
    pub endpoints: Endpoints,
    /// Owner of the mounted files (the admin user's uid and gid); `None`: root.
    pub owner: Option<(u32, u32)>,
    /// Where credentials, configs, caches and FUSE logs go (`<state>/node/mount-secrets`);
    /// created 0700.
    pub private_dir: PathBuf,
    /// Runs `mount`, `bash -c` and `blobfuse2 mount`.
    pub runner: Arc<dyn Runner>,
    /// How long a FUSE daemon may take to mount.
    pub ready_timeout: Duration,
}

impl MountContext {
    /// A context that runs programs for real and gives FUSE daemons 30 s.
    pub fn new(
        drivers: Drivers,
        endpoints: Endpoints,
        owner: Option<(u32, u32)>,
        private_dir: PathBuf,
    ) -> MountContext {
        MountContext {
            drivers,
            endpoints,
            owner,
            private_dir,
            runner: Arc::new(SystemRunner),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a mount or unmount failed. Messages name the field, path or program, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot mount {kind} on this node: {hint}")]
    NoDriver {
        kind: &'static str,
        hint: &'static str,
    },
    #[error("{path} is already a mount point")]
    AlreadyMounted { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} failed for {mount_point} ({status}): {output}")]
    Command {
        program: String,
        mount_point: PathBuf,
        status: String,
        output: String,
    },
    #[error("{program} did not mount {mount_point}: {reason}; its log ends: {log}")]
    Daemon {
        program: String,
        mount_point: PathBuf,
        reason: String,
        log: String,
    },
    #[error("{mount_point} is still mounted: {output}")]
    StillMounted {
        mount_point: PathBuf,
        output: String,
    },
}

/// What a driver made.
pub(crate) struct Started {
    pub driver: &'static str,
    pub pid: Option<i32>,
    pub files: Vec<PathBuf>,
}

/// The private files of one mount: `<private dir>/<id>.<suffix>`.
pub(crate) struct Private {
    dir: PathBuf,
    id: String,
}

impl Private {
    fn create(dir: &Path, mount_point: &Path) -> Result<Private, MountError> {
        let io_err = |source| MountError::Io {
            action: "create the private directory",
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        Ok(Private {
            dir: dir.to_path_buf(),
            id: record::id_for(mount_point),
        })
    }

    pub(crate) fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.id))
    }

    /// Writes a file only root may read (0600, atomic and durable).
    pub(crate) fn write_secret(&self, suffix: &str, bytes: &[u8]) -> Result<PathBuf, MountError> {
        let path = self.path(suffix);
        write_atomic_with(
            &path,
            bytes,
            WriteOptions {
                mode: 0o600,
                durable: true,
            },
        )
        .map_err(|source| MountError::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    pub(crate) fn create_dir(&self, suffix: &str) -> Result<PathBuf, MountError> {
        let path = self.path(suffix);
        std::fs::create_dir_all(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)))
            .map_err(|source| MountError::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// Removes every private file of this mount (after a failed mount).
    fn remove_all(&self) {
        let prefix = format!("{}.", self.id);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                lifecycle::remove_path(&entry.path());
            }
        }
    }
}

/// Mounts `volume` at `root/<relative_mount_path>` (directories created; a path escaping
/// `root`, lexically or through a symlink, is refused).
pub fn mount(volume: &Volume, root: &Path, ctx: &MountContext) -> Result<Mounted, MountError> {
    let already = |path: &Path| {
        let found = mountinfo::find(path).map_err(|source| MountError::Io {
            action: "read /proc/self/mountinfo for",
            path: path.to_path_buf(),
            source,
        })?;
        match found {
            Some(_) => Err(MountError::AlreadyMounted {
                path: path.to_path_buf(),
            }),
            None => Ok(()),
        }
    };
    // Before touching the path: a dead FUSE mount there answers every access with ENOTCONN.
    already(&volume::mount_point(root, volume.relative_mount_path())?)?;
    let mount_point = prepare_mount_point(root, volume.relative_mount_path())?;
    already(&mount_point)?;
    let private = Private::create(&ctx.private_dir, &mount_point)?;
    let result = mount_with(volume, &mount_point, &private, ctx);
    match result {
        Ok(started) => {
            tracing::info!(
                mount_point = %mount_point.display(),
                kind = volume.kind().name(),
                driver = started.driver,
                pid = started.pid,
                "mounted"
            );
            Ok(Mounted {
                kind: volume.kind(),
                mount_point,
                driver: started.driver.to_owned(),
                pid: started.pid,
                digest: volume.digest(),
                files: started.files,
            })
        }
        Err(e) => {
            private.remove_all();
            Err(e)
        }
    }
}

fn mount_with(
    volume: &Volume,
    mount_point: &Path,
    private: &Private,
    ctx: &MountContext,
) -> Result<Started, MountError> {
    let owner = ctx.owner.unwrap_or((0, 0));
    let runner = ctx.runner.as_ref();
    match volume {
        Volume::AzureFileShare {
            account_name,
            azure_file_url,
            account_key,
            file_mode,
            directory_mode,
            ..
        } => {
            volume::check_account(account_name)?;
            volume::check_key(account_key)?;
            let modes = (
                volume::parse_mode("file_mode", file_mode)?,
                volume::parse_mode("directory_mode", directory_mode)?,
            );
            let url = volume::FileUrl::parse(azure_file_url, ctx.endpoints.file.as_deref())?;
            match ctx.drivers.file_share {
                Some(FileShareDriver::Cifs) => kernel::mount_cifs(
                    runner,
                    private,
                    &url,
                    account_name,
                    account_key,
                    mount_point,
                    owner,
                    modes,
                ),
                Some(FileShareDriver::Rclone) => rclone::mount(
                    private,
                    rclone::Remote::Smb {
                        url: &url,
                        user: account_name,
                        key: account_key,
                    },
                    mount_point,
                    owner,
                    modes,
                    ctx.ready_timeout,
                ),
                None => Err(MountError::NoDriver {
                    kind: "an azure file share",
                    hint: "install cifs-utils (with a kernel that has cifs) or rclone",
                }),
            }
        }
        Volume::AzureBlob {
            account_name,
            container_name,
            account_key,
            mount_options,
            ..
        } => {
            volume::check_account(account_name)?;
            volume::check_container(container_name)?;
            volume::check_key(account_key)?;
            let endpoint = ctx.endpoints.blob_url(account_name);
            match ctx.drivers.blob {
                Some(BlobDriver::Blobfuse2) => blobfuse::mount(
                    runner,
                    private,
                    account_name,
                    account_key,
                    container_name,
                    &endpoint,
                    mount_options,
                    mount_point,
                    owner.0 != 0,
                ),
                Some(BlobDriver::Rclone) => rclone::mount(
                    private,
                    rclone::Remote::Blob {
                        account: account_name,
                        container: container_name,
                        key: account_key,
                        endpoint: &ctx.endpoints.blob,
                    },
                    mount_point,
                    owner,
                    (0o666, 0o777),
                    ctx.ready_timeout,
                ),
                None => Err(MountError::NoDriver {
                    kind: "an azure blob container",
                    hint: "install blobfuse2 or rclone (with fuse3)",
                }),
            }
        }
        Volume::Nfs {
            server,
            source_directory,
            mount_options,
            ..
        } => kernel::mount_nfs(runner, server, source_directory, mount_options, mount_point),
        Volume::Unmanaged { mount_command, .. } => {
            kernel::mount_unmanaged(runner, mount_command, mount_point)
        }
    }
}

/// Creates `root/relative` and returns it with symlinks resolved, refusing one that leaves
/// `root`.
fn prepare_mount_point(root: &Path, relative: &str) -> Result<PathBuf, MountError> {
    let lexical = volume::mount_point(root, relative)?;
    let io_err = |action, path: &Path, source| MountError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&lexical).map_err(|e| io_err("create the mount point", &lexical, e))?;
    let root = root
        .canonicalize()
        .map_err(|e| io_err("resolve the mount root", root, e))?;
    let resolved = lexical
        .canonicalize()
        .map_err(|e| io_err("resolve the mount point", &lexical, e))?;
    if !resolved.starts_with(&root) || resolved == root {
        return Err(MountError::Invalid {
            field: "relative_mount_path",
            reason: format!("{relative:?} leads out of the mount root through a symlink"),
        });
    }
    Ok(resolved)
}

/// The live daemon `program` whose argv names `mount_point` (blobfuse2 forks away from us).
pub(crate) fn daemon_for(mount_point: &Path, program: &str) -> Option<i32> {
    bai_common::procfs::pids().find(|&pid| {
        bai_common::procfs::args(pid).is_some_and(|args| {
            args.first()
                .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == program))
                && args.iter().any(|a| Path::new(a) == mount_point)
        }) && bai_common::procfs::alive(pid)
    })
}
