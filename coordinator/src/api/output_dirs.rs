//! A job's output directories (`outputDirectories`), listed and streamed
//! where the coordinator can read them: a directory whose path is absolute
//! once the job's segment is added (`<path_prefix>/<segment>/<path_suffix>`,
//! no node variable such as `$AZ_BATCHAI_JOB_MOUNT_ROOT` in it) and that
//! exists on the coordinator's machine — a share mounted on the nodes and on
//! the coordinator at the same path, or this machine in local mode. One on a
//! node's own mount is refused with `FailedPrecondition`, saying so.
//!
//! Nothing outside the directory is served: `..` is refused, and a path
//! (or the directory itself) that resolves, through symlinks the job made,
//! outside it (or outside its prefix) is not found.

use crate::domain::paging::{Page, PageRequest};
use crate::domain::validate::Invalid;
use crate::domain::{Job, Millis};
use crate::error::Error;
use std::path::{Path, PathBuf};

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub length: u64,
    pub modified: Millis,
}

/// The output directory `id` of `job` on this machine, if it has one
/// (`Ok(None)`: no such directory id).
pub fn root(job: &Job, id: &str) -> Result<Option<(PathBuf, PathBuf)>, Error> {
    let Some(d) = job.spec.output_directories.iter().find(|d| d.id == id) else {
        return Ok(None);
    };
    let var = format!("AZ_BATCHAI_OUTPUT_{id}");
    let path = crate::domain::env::system_env(job)
        .into_iter()
        .find(|v| v.name == var)
        .map(|v| v.value)
        .unwrap_or_default();
    if path.contains('$') || !path.starts_with('/') {
        return Err(Error::FailedPrecondition(format!(
            "output directory {id:?} is {path}, on the job's nodes, which the coordinator cannot read; an output directory whose path_prefix is an absolute path the coordinator also has (a share mounted at the same path) can be listed"
        )));
    }
    Ok(Some((PathBuf::from(path), PathBuf::from(&d.path_prefix))))
}

/// `sub` (a relative path: empty or "." for the directory itself) inside
/// `root`, resolved, with the resolved root; not found if it does not exist
/// or leads outside.
fn resolve(
    root: &Path,
    prefix: &Path,
    sub: &str,
    what: &'static str,
) -> Result<(PathBuf, PathBuf), Error> {
    let sub = sub.trim_matches('/');
    if sub.split('/').any(|p| p == "..") {
        return Err(Invalid::new(what, "must not contain '..'").into());
    }
    let missing = || Error::not_found(what, sub.to_string());
    let (Ok(root), Ok(prefix)) = (root.canonicalize(), prefix.canonicalize()) else {
        return Err(Error::not_found(
            "output directory",
            format!(
                "{} (not on the coordinator's machine, or not made yet)",
                root.display()
            ),
        ));
    };
    if !root.starts_with(&prefix) {
        return Err(missing());
    }
    let target = if sub.is_empty() || sub == "." {
        root.clone()
    } else {
        root.join(sub).canonicalize().map_err(|_| missing())?
    };
    if !target.starts_with(&root) {
        return Err(missing());
    }
    Ok((root, target))
}

fn modified(m: &std::fs::Metadata) -> Millis {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A page of the entries of `sub` in the directory, in name order.
pub fn list(
    root: &Path,
    prefix: &Path,
    sub: &str,
    page: &PageRequest,
) -> Result<Page<DirEntry>, Error> {
    let (root, dir) = resolve(root, prefix, sub, "directory")?;
    let read = std::fs::read_dir(&dir).map_err(|_| Error::not_found("directory", sub))?;
    let mut entries: Vec<DirEntry> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if page
                .after
                .as_ref()
                .is_some_and(|a| name.as_str() <= a.as_str())
            {
                return None;
            }
            // What a symlink points at, as a stream would read it; one that
            // leads out of the directory is not listed.
            let target = e.path().canonicalize().ok()?;
            if !target.starts_with(&root) {
                return None;
            }
            let m = std::fs::metadata(&target).ok()?;
            Some(DirEntry {
                name,
                is_dir: m.is_dir(),
                length: if m.is_dir() { 0 } else { m.len() },
                modified: modified(&m),
            })
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.truncate(page.limit as usize + 1);
    Ok(Page::from_overfetch(entries, page.limit, |e| {
        e.name.clone()
    }))
}

/// The file at `path` in the directory, opened (a regular file only).
pub fn open(root: &Path, prefix: &Path, path: &str) -> Result<std::fs::File, Error> {
    let (_, file) = resolve(root, prefix, path, "file")?;
    if !file.is_file() {
        return Err(Error::not_found("file", path));
    }
    std::fs::File::open(&file).map_err(|_| Error::not_found("file", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::spec::OutputDirectory;

    fn job_with(prefix: &str) -> Job {
        let mut j = fixtures::job("w", "e", "j", "c");
        j.id = "u-1".into();
        j.spec.output_directories = vec![OutputDirectory {
            id: "OUT".into(),
            path_prefix: prefix.into(),
            path_suffix: "models".into(),
        }];
        j
    }

    #[test]
    fn a_directory_on_the_nodes_is_refused_and_an_absolute_one_found() {
        let j = job_with("$AZ_BATCHAI_JOB_MOUNT_ROOT/afs");
        let e = root(&j, "OUT").unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        assert!(root(&j, "NOPE").unwrap().is_none());
        let (r, p) = root(&job_with("/data"), "OUT").unwrap().unwrap();
        assert_eq!(
            r,
            Path::new("/data/workspaces/w/experiments/e/jobs/j/u-1/models")
        );
        assert_eq!(p, Path::new("/data"));
    }

    #[test]
    fn lists_in_pages_and_serves_nothing_outside() {
        let prefix = tempfile::tempdir().unwrap();
        let root = prefix.path().join("job/models");
        std::fs::create_dir_all(root.join("ckpt")).unwrap();
        for f in ["b.txt", "a.txt", "c.txt"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::write(root.join("ckpt/1.pt"), "12345").unwrap();
        let secret = tempfile::tempdir().unwrap();
        std::fs::write(secret.path().join("shadow"), "no").unwrap();
        std::os::unix::fs::symlink(secret.path().join("shadow"), root.join("z-link")).unwrap();

        let p = |n, t: &str| PageRequest {
            after: (!t.is_empty()).then(|| t.to_string()),
            ..PageRequest::new(n, "").unwrap()
        };
        let page = list(&root, prefix.path(), "", &p(2, "")).unwrap();
        let names: Vec<&str> = page.items.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(page.items[0].length, 5);
        let next = page.next_page_token.unwrap();
        let page = list(&root, prefix.path(), ".", &p(2, &next)).unwrap();
        let names: Vec<&str> = page.items.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["c.txt", "ckpt"], "the link out is not listed");
        assert_eq!(page.next_page_token, None);
        assert!(page.items[1].is_dir);
        let sub = list(&root, prefix.path(), "ckpt", &p(0, "")).unwrap();
        assert_eq!(sub.items[0].name, "1.pt");

        assert!(open(&root, prefix.path(), "ckpt/1.pt").is_ok());
        for bad in ["../x", "z-link", "ckpt", "missing"] {
            assert!(open(&root, prefix.path(), bad).is_err(), "{bad}");
        }
        assert!(list(&root, prefix.path(), "../..", &p(0, "")).is_err());
        // The directory itself swapped for a link out of its prefix.
        let other = tempfile::tempdir().unwrap();
        let swapped = prefix.path().join("job/swapped");
        std::os::unix::fs::symlink(other.path(), &swapped).unwrap();
        assert!(list(&swapped, prefix.path(), "", &p(0, "")).is_err());
    }
}
