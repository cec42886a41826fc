//! Reading `/proc/self/mountinfo`: which paths are mount points, with which file system.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// `ext4`, `cifs`, `fuse.rclone`, …
    pub fs_type: String,
    pub source: String,
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount on `path` (the last one listed), if `path` is a mount point.
pub fn find(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Parses mountinfo text: field 5 is the mount point (octal-escaped), then after the ` - `
/// separator come the file system type and the source.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_owned();
            let source = unescape(right.next().unwrap_or(""))
                .to_string_lossy()
                .into_owned();
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type,
                source,
            })
        })
        .collect()
}

/// Undoes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| {
            b.get(j)
                .filter(|c| (b'0'..=b'7').contains(c))
                .map(|c| c - b'0')
        };
        if b[i] == b'\\'
            && let (Some(x), Some(y), Some(z)) = (octal(i + 1), octal(i + 2), octal(i + 3))
        {
            out.push(x.wrapping_mul(64).wrapping_add(y * 8).wrapping_add(z));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_mount_points_and_types() {
        let text = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /state/mounts/my\\040dir rw,nosuid - fuse.rclone bai:share rw,user_id=0\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, Path::new("/state/mounts/my dir"));
        assert_eq!(m[1].fs_type, "fuse.rclone");
        assert_eq!(m[1].source, "bai:share");
    }

    #[test]
    fn the_root_is_mounted() {
        assert!(find(Path::new("/")).unwrap().is_some());
        assert!(find(Path::new("/no/such/mount")).unwrap().is_none());
    }
}
