//! A job's own mounts (`mountVolumes` of the job) at
//! `$AZ_BATCHAI_JOB_MOUNT_ROOT/<relativeMountPath>`: made before the job
//! starts, removed once its exit is known and again (idempotently) when it is
//! released. Blocking: callers run these on the blocking pool.
//!
//! Each mount is recorded in `<job dir>/mounts/` before the next is made, so
//! an agent that restarts finds them all: a running job's mounts are left as
//! they are (the job uses them), an ended job's are removed when its exit is
//! read. A mount that fails undoes the ones made before it: a job starts with
//! all of its mounts or not at all.

use super::layout::JobPaths;
use crate::model::JobError;
use crate::node::admin_user::RunAs;
use crate::node::mounts::{self, MountContext, Volume};
use tracing::warn;

/// The error code of a job whose mounts could not be made.
pub const JOB_MOUNT_FAILED: &str = "JobMountFailed";

/// Mounts `volumes` under the job's mount root, owned by `run_as` (root
/// when `None`), and returns the execution log lines that say what was made.
pub fn mount_all(
    ctx: &MountContext,
    volumes: &[Volume],
    paths: &JobPaths,
    run_as: Option<&RunAs>,
) -> Result<Vec<String>, JobError> {
    let mut ctx = ctx.clone();
    ctx.owner = run_as.map(|u| (u.uid, u.gid));
    ctx.private_dir = paths.mount_private.clone();
    let mut lines = Vec::with_capacity(volumes.len());
    for v in volumes {
        let made = mounts::mount(v, &paths.mount_root, &ctx).and_then(|m| {
            mounts::save(&paths.mounts, &m)
                .map_err(|source| mounts::MountError::Io {
                    action: "record the mount",
                    path: paths.mounts.clone(),
                    source,
                })
                .map(|()| m)
        });
        match made {
            Ok(m) => lines.push(format!(
                "mounted {} at $AZ_BATCHAI_JOB_MOUNT_ROOT/{} ({})",
                v.kind().name(),
                v.relative_mount_path(),
                m.driver
            )),
            Err(e) => {
                let undone = unmount_all(paths);
                let mut message = format!(
                    "cannot mount {} at $AZ_BATCHAI_JOB_MOUNT_ROOT/{}: {e}",
                    v.kind().name(),
                    v.relative_mount_path()
                );
                if let Err(u) = undone {
                    message.push_str(&format!("; and undoing the job's other mounts failed: {u}"));
                }
                return Err(JobError::new(JOB_MOUNT_FAILED, message));
            }
        }
    }
    Ok(lines)
}

/// Whether the job has recorded mounts (cheap: one directory lookup).
pub fn has_mounts(paths: &JobPaths) -> bool {
    paths.mounts.exists()
}

/// Removes every recorded mount of the job and its record; idempotent. A
/// mount that cannot be removed keeps its record (so a later call tries
/// again) and is reported.
pub fn unmount_all(paths: &JobPaths) -> Result<(), String> {
    let records = mounts::load(&paths.mounts)
        .map_err(|e| format!("cannot read {}: {e}", paths.mounts.display()))?;
    let root = paths.mount_root.canonicalize().ok();
    let mut failed = Vec::new();
    for m in records {
        match mounts::unmount(&m) {
            Ok(()) => {
                if let Err(e) = mounts::remove_record(&paths.mounts, &m) {
                    warn!(error = %e, "cannot remove a job mount's record");
                }
                remove_empty_dirs(&m.mount_point, root.as_deref());
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    if failed.is_empty() {
        for dir in [&paths.mounts, &paths.mount_private] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    warn!(error = %e, dir = %dir.display(), "cannot remove");
                }
                _ => {}
            }
        }
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Removes `dir` and its parents below `root` while they are empty (the
/// mount points of a job's mounts). Only `rmdir`: nothing that holds a file
/// is ever removed.
fn remove_empty_dirs(dir: &std::path::Path, root: Option<&std::path::Path>) {
    let Some(root) = root else { return };
    let mut at = Some(dir);
    while let Some(d) = at {
        if !d.starts_with(root) || d == root || std::fs::remove_dir(d).is_err() {
            break;
        }
        at = d.parent();
    }
}
