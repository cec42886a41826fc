//! Atomic file replacement: write a temporary file beside the target, rename it over the target.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How [`write_atomic_with`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of a newly created file (before the umask).
    pub mode: u32,
    /// Fsync the file before the rename and the directory after it, so the new contents
    /// survive a power loss. Without it the replacement is still atomic for readers.
    pub durable: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            mode: 0o644,
            durable: true,
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably (mode 0644 before the umask).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, WriteOptions::default())
}

/// Replaces `path` with `bytes` atomically: readers see the old file or the new one, never a
/// part. The temporary file is `<path>.tmp`; it is removed again if the write fails.
pub fn write_atomic_with(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = write_then_rename(&tmp, path, bytes, opts);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(opts.mode)
        .open(tmp)?;
    f.write_all(bytes)?;
    if opts.durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(tmp, path)?;
    if opts.durable {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Fsyncs directory `dir`, making a rename or a new entry in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record.json");
        write_atomic(&path, b"a much longer first version").expect("first");
        write_atomic(&path, b"second").expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec!["record.json"]);
    }

    #[test]
    fn honours_the_mode_and_the_volatile_variant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let opts = WriteOptions {
            mode: 0o600,
            durable: false,
        };
        write_atomic_with(&path, b"x", opts).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"x");
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty directory stands where the file would go: the rename fails.
        let path = dir.path().join("target");
        std::fs::create_dir_all(path.join("inner")).expect("mkdir");
        assert!(write_atomic(&path, b"new").is_err());
        assert!(path.join("inner").is_dir());
        assert!(!dir.path().join("target.tmp").exists());
    }

    #[test]
    fn a_bare_file_name_syncs_the_current_directory() {
        assert_eq!(parent(Path::new("x")), Path::new("."));
        assert_eq!(parent(Path::new("/a/x")), Path::new("/a"));
    }
}
