//! [`Mounted`], the record of a made mount, and its files in a records directory.

use super::volume::{VolumeKind, fnv1a64};
use bai_common::fs::{WriteOptions, write_atomic_with};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A mount this agent made: enough to check it, adopt it after a restart and undo it. It
/// holds no secret (the credentials live in `files`, which unmount removes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mounted {
    pub kind: VolumeKind,
    /// Absolute, symlinks resolved.
    pub mount_point: PathBuf,
    /// `cifs`, `rclone`, `blobfuse2`, `nfs` or `unmanaged`.
    pub driver: String,
    /// The FUSE daemon serving it, if any (rclone, blobfuse2).
    pub pid: Option<i32>,
    /// [`super::Volume::digest`] of the volume mounted.
    pub digest: String,
    /// Private files and directories (credentials, config, cache, log) to remove on unmount.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

impl Mounted {
    /// Whether a FUSE daemon serves it.
    pub fn is_fuse(&self) -> bool {
        matches!(self.driver.as_str(), "rclone" | "blobfuse2")
    }

    /// The record's file name: one record per mount point.
    pub fn record_name(&self) -> String {
        format!("{}.json", id_for(&self.mount_point))
    }
}

/// A short stable name for a mount point, for its record and its private files.
pub(crate) fn id_for(mount_point: &Path) -> String {
    format!("{:016x}", fnv1a64(mount_point.as_os_str().as_bytes()))
}

/// Writes `mounted`'s record into `dir` (created if missing) atomically and durably.
pub fn save(dir: &Path, mounted: &Mounted) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(mounted).map_err(io::Error::other)?;
    write_atomic_with(
        &dir.join(mounted.record_name()),
        &json,
        WriteOptions {
            mode: 0o600,
            durable: true,
        },
    )
}

/// Every record in `dir` (none when it does not exist), sorted by mount point. A record
/// that cannot be parsed is skipped with a warning: it names no mount this agent can undo.
pub fn load(dir: &Path) -> io::Result<Vec<Mounted>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&path).map(|b| serde_json::from_slice::<Mounted>(&b)) {
            Ok(Ok(m)) => out.push(m),
            Ok(Err(e)) => {
                tracing::warn!(record = %path.display(), error = %e, "skipping an unreadable mount record")
            }
            Err(e) => {
                tracing::warn!(record = %path.display(), error = %e, "skipping an unreadable mount record")
            }
        }
    }
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    Ok(out)
}

/// Removes `mounted`'s record from `dir`; no error when it is already gone.
pub fn remove_record(dir: &Path, mounted: &Mounted) -> io::Result<()> {
    match std::fs::remove_file(dir.join(mounted.record_name())) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(mp: &str) -> Mounted {
        Mounted {
            kind: VolumeKind::AzureBlob,
            mount_point: PathBuf::from(mp),
            driver: "rclone".into(),
            pid: Some(42),
            digest: "fnv1a64:0".into(),
            files: vec![PathBuf::from("/p/x.rclone.conf")],
        }
    }

    #[test]
    fn records_round_trip_one_per_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        assert!(load(&records).unwrap().is_empty());
        save(&records, &record("/m/b")).unwrap();
        save(&records, &record("/m/a")).unwrap();
        let mut again = record("/m/a");
        again.pid = Some(43);
        save(&records, &again).unwrap();
        std::fs::write(records.join("junk.json"), b"{").unwrap();
        let loaded = load(&records).unwrap();
        assert_eq!(loaded, vec![again.clone(), record("/m/b")]);
        let mode = std::fs::metadata(records.join(again.record_name()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        remove_record(&records, &again).unwrap();
        remove_record(&records, &again).unwrap();
        assert_eq!(load(&records).unwrap(), vec![record("/m/b")]);
    }

    #[test]
    fn the_record_is_plain_json() {
        let json = serde_json::to_value(record("/m/a")).unwrap();
        assert_eq!(json["kind"], "azure_blob");
        assert_eq!(json["driver"], "rclone");
        assert_eq!(json["pid"], 42);
    }
}
