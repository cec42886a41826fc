//! The agent's one way to replace a file: write a temporary file beside it,
//! then rename it over the target, so a reader sees the old file or the whole
//! new one, never a torn one. A durable write also fsyncs the file before the
//! rename and the directory after it, so the new name survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Whether a replacement must survive a power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// File and directory fsynced: the record is there after a crash.
    Durable,
    /// Atomic for readers only (a crash may lose it, never tear it).
    Volatile,
}

/// Replaces `path` with `bytes` (created with `mode`).
pub fn write(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if durability == Durability::Durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durability == Durability::Durable {
        // Without this the rename itself may not survive a power loss.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_with_their_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        for (d, text) in [(Durability::Durable, "one"), (Durability::Volatile, "two")] {
            write(&p, text.as_bytes(), 0o600, d).unwrap();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        }
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("r.tmp").exists());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/r");
        assert!(write(&p, b"x", 0o644, Durability::Durable).is_err());
    }
}
