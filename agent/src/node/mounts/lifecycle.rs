//! A made mount's life: [`check`] its health, [`unmount`] it, [`adopt`] an earlier agent's.

use super::command::tail;
use super::record::{Mounted, load, remove_record};
use super::{MountError, mountinfo};
use bai_common::procfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a mount still serves its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// It no longer works, and why.
    Lost(String),
}

/// How long [`check`] waits for the mount point to answer.
const STAT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks `mounted`: its mount point is still in `/proc/self/mountinfo`, its FUSE daemon
/// (if any) still runs, and listing it answers (a dead FUSE daemon's mount answers
/// ENOTCONN, "Transport endpoint is not connected").
pub fn check(mounted: &Mounted) -> Health {
    let mp = &mounted.mount_point;
    match mountinfo::find(mp) {
        Ok(Some(_)) => {}
        Ok(None) => return Health::Lost(format!("{} is no longer mounted", mp.display())),
        Err(e) => return Health::Lost(format!("cannot read /proc/self/mountinfo: {e}")),
    }
    if let Some(pid) = mounted.pid
        && !daemon_alive(pid, mp)
    {
        let mut reason = format!("its {} daemon (pid {pid}) has exited", mounted.driver);
        if let Some(log) = mounted
            .files
            .iter()
            .find(|f| f.to_string_lossy().ends_with(".log"))
        {
            let last = tail(&std::fs::read_to_string(log).unwrap_or_default(), 3);
            if !last.is_empty() {
                reason.push_str(&format!("; its log ends: {last}"));
            }
        }
        return Health::Lost(reason);
    }
    // On a thread: a hung network file system can block a stat for minutes.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = mp.clone();
    let spawned = std::thread::Builder::new()
        .name("mount-check".into())
        .spawn(move || {
            // Opening the directory asks the file system itself: a stat of the mount root
            // can be answered from cached attributes even after its FUSE daemon died.
            let answer =
                std::fs::read_dir(&path).and_then(|mut d| d.next().transpose().map(|_| ()));
            let _ = tx.send(answer);
        });
    if spawned.is_err() {
        return Health::Ok;
    }
    match rx.recv_timeout(STAT_TIMEOUT) {
        Ok(Ok(())) => Health::Ok,
        Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::ENOTCONN) => Health::Lost(format!(
            "{}: transport endpoint is not connected",
            mp.display()
        )),
        Ok(Err(e)) => Health::Lost(format!("{}: {e}", mp.display())),
        Err(_) => Health::Lost(format!(
            "{} did not answer within {STAT_TIMEOUT:?}",
            mp.display()
        )),
    }
}

/// Whether `pid` is still the daemon serving `mount_point` (not a process that reused the pid).
fn daemon_alive(pid: i32, mount_point: &Path) -> bool {
    procfs::alive(pid)
        && procfs::args(pid).is_some_and(|args| args.iter().any(|a| Path::new(a) == mount_point))
}

/// Unmounts `mounted` (lazily if it is busy or its daemon is dead), stops its FUSE daemon and
/// removes its private files. Idempotent: what is already undone is skipped.
pub fn unmount(mounted: &Mounted) -> Result<(), MountError> {
    let mp = &mounted.mount_point;
    let mounted_now = |mp: &Path| {
        mountinfo::find(mp).map_err(|source| MountError::Io {
            action: "read /proc/self/mountinfo for",
            path: mp.to_path_buf(),
            source,
        })
    };
    if mounted_now(mp)?.is_some() {
        let attempts: &[(&str, &[&str])] = if mounted.is_fuse() {
            &[
                ("fusermount3", &["-u"]),
                ("umount", &[]),
                ("fusermount3", &["-uz"]),
                ("umount", &["-l"]),
            ]
        } else {
            &[("umount", &[]), ("umount", &["-l"])]
        };
        let mut output = String::new();
        for (program, flags) in attempts {
            match Command::new(program)
                .args(*flags)
                .arg(mp)
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => break,
                Ok(out) => output = tail(&String::from_utf8_lossy(&out.stderr), 3),
                Err(e) => output = format!("cannot run {program}: {e}"),
            }
        }
        if mounted_now(mp)?.is_some() {
            return Err(MountError::StillMounted {
                mount_point: mp.clone(),
                output,
            });
        }
    }
    if let Some(pid) = mounted.pid {
        stop_daemon(pid, mp);
    }
    for file in &mounted.files {
        remove_path(file);
    }
    tracing::info!(mount_point = %mp.display(), driver = %mounted.driver, "unmounted");
    Ok(())
}

/// How long a FUSE daemon may take to finish its uploads after the unmount: a job's last
/// checkpoint may be large and the link slow, and what is cut short is lost.
const UPLOAD_GRACE: Duration = Duration::from_secs(120);

/// Waits for a FUSE daemon to leave after its unmount (rclone exits by itself once its
/// uploads are done), then asks it with SIGTERM and finally SIGKILL.
fn stop_daemon(pid: i32, mount_point: &Path) {
    let gone = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while daemon_alive(pid, mount_point) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    if gone(UPLOAD_GRACE) {
        return;
    }
    tracing::warn!(pid, mount_point = %mount_point.display(), "the FUSE daemon did not finish its uploads in time: stopping it");
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    if !gone(Duration::from_secs(5)) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Removes a file or a directory tree; absent is fine.
pub(crate) fn remove_path(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a mount's private file");
    }
}

/// Takes over the mounts recorded in `records_dir` by an earlier agent: each healthy one is
/// kept as it is (and must not be mounted again); each lost one is cleared (lazy unmount,
/// daemon stopped, private files and its record removed) so it can be mounted afresh.
pub fn adopt(records_dir: &Path) -> io::Result<Vec<(Mounted, Health)>> {
    let mut out = Vec::new();
    for mounted in load(records_dir)? {
        let health = check(&mounted);
        if let Health::Lost(reason) = &health {
            tracing::warn!(mount_point = %mounted.mount_point.display(), %reason, "clearing a lost mount");
            if let Err(e) = unmount(&mounted) {
                tracing::warn!(mount_point = %mounted.mount_point.display(), error = %e, "cannot clear a lost mount");
            } else {
                remove_record(records_dir, &mounted)?;
            }
        }
        out.push((mounted, health));
    }
    Ok(out)
}
