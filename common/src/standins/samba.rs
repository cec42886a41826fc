//! smbd on a free loopback port, serving one share as one user, every file of it (config,
//! passdb, locks, logs, the share) in a private temporary directory. The recipe of
//! `reference/standins.md` §3. Needs root (a Unix user backs the Samba user) and smbd.

use super::{free_port, tail, unique_name, wait_for_port, which};
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The share's name when [`Samba::start`] picks it.
pub const SHARE: &str = "share";

/// A running smbd. Dropping it stops smbd, waits for it and removes its user and files.
pub struct Samba {
    child: Child,
    /// The loopback port smbd listens on.
    pub port: u16,
    /// The Samba (and Unix) user allowed on the share.
    pub user: String,
    /// That user's password.
    pub password: String,
    /// The share's name.
    pub share: String,
    /// The directory the share serves, owned by [`Samba::user`].
    pub share_dir: PathBuf,
    // Dropped after `child` is stopped (fields drop in order): the user, then the files.
    _user: UserGuard,
    _dir: tempfile::TempDir,
}

/// A Unix user that exists while this lives.
struct UserGuard(String);

impl UserGuard {
    fn add(user: &str) -> io::Result<UserGuard> {
        run(Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", user]))?;
        Ok(UserGuard(user.to_owned()))
    }
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        // smbd's per-connection children run as the user and leave a moment after the main
        // smbd; userdel refuses a user that still has processes, so wait for them first.
        if let Some(uid) = uid_of(&self.0) {
            super::wait_until(Duration::from_secs(5), || !has_processes(uid));
        }
        let _ = Command::new("userdel")
            .arg("--force")
            .arg(&self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Samba {
    /// Starts smbd serving a fresh empty share to a fresh user with `password`. Fails when
    /// smbd, smbpasswd or useradd is missing or smbd does not listen within 10 s (with the
    /// tail of its output).
    pub fn start(password: &str) -> io::Result<Samba> {
        Samba::start_as(&unique_name("baismb"), SHARE, password)
    }

    /// Starts smbd serving share `share` to `user` (a storage account name, say) with
    /// `password` (its key). The Unix user is made for it and removed on drop, so it
    /// must not exist yet: an existing one is an error, never taken over.
    pub fn start_as(user: &str, share: &str, password: &str) -> io::Result<Samba> {
        Samba::start_shares(user, &[share], password)
    }

    /// As [`Samba::start_as`], serving each of `shares` (at least one) from its own
    /// directory ([`Samba::share_path`]); the first is [`Samba::share`].
    pub fn start_shares(user: &str, shares: &[&str], password: &str) -> io::Result<Samba> {
        let Some(&share) = shares.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no share"));
        };
        let smbd = which("smbd").ok_or_else(|| missing("smbd"))?;
        let smbpasswd = which("smbpasswd").ok_or_else(|| missing("smbpasswd"))?;
        if uid_of(user).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the user {user} exists already (left by a killed test? userdel it)"),
            ));
        }
        let dir = tempfile::Builder::new().prefix("bai-samba-").tempdir()?;
        let user = user.to_owned();
        let share_dir = dir.path().join("share");
        fs::create_dir(&share_dir)?;
        let mut served = vec![(share.to_owned(), share_dir.clone())];
        for &more in &shares[1..] {
            let path = dir.path().join("shares").join(more);
            fs::create_dir_all(&path)?;
            served.push((more.to_owned(), path));
        }
        for sub in ["private", "lock", "state", "cache", "pid", "log", "ncalrpc"] {
            fs::create_dir(dir.path().join(sub))?;
        }
        let guard = UserGuard::add(&user)?;
        for (_, path) in &served {
            run(Command::new("chown").arg(&user).arg(path))?;
        }
        // Three tries: another process may take the free port before smbd binds it.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let conf = dir.path().join("smb.conf");
            fs::write(&conf, config(dir.path(), &served, port, &user))?;
            set_password(&smbpasswd, &conf, &user, password)?;
            let out = dir.path().join("smbd.out");
            // Its own process group: smbd signals its whole group when it stops.
            let mut child = Command::new(&smbd)
                .args([
                    "--foreground",
                    "--no-process-group",
                    "--debug-stdout",
                    "-d",
                    "1",
                    "-s",
                ])
                .arg(&conf)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(fs::File::create(&out)?)
                .stderr(Stdio::from(fs::File::options().append(true).open(&out)?))
                .spawn()?;
            if wait_for_port(port, Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(None))
            }) {
                return Ok(Samba {
                    child,
                    port,
                    user,
                    password: password.to_owned(),
                    share: share.to_owned(),
                    share_dir,
                    _user: guard,
                    _dir: dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            last = tail(&out, 20);
        }
        Err(io::Error::other(format!("smbd did not listen: {last}")))
    }

    /// The directory share `name` serves (one [`Samba::start_shares`] was given).
    pub fn share_path(&self, name: &str) -> PathBuf {
        if name == self.share {
            self.share_dir.clone()
        } else {
            self._dir.path().join("shares").join(name)
        }
    }

    /// smbd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the main smbd then stops its forked children too.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The uid of `user`, from /etc/passwd.
fn uid_of(user: &str) -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next() == Some(user)).then(|| f.nth(1)?.parse().ok())?
    })
}

/// Whether a live process runs as `uid` (owns its /proc entry).
fn has_processes(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    crate::procfs::pids().any(|pid| {
        fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
            && crate::procfs::alive(pid)
    })
}

fn config(dir: &Path, shares: &[(String, PathBuf)], port: u16, user: &str) -> String {
    let d = dir.display();
    let mut conf = format!(
        "[global]
   server role = standalone server
   workgroup = WORKGROUP
   netbios name = BAISTANDIN
   interfaces = 127.0.0.1
   bind interfaces only = yes
   smb ports = {port}
   disable netbios = yes
   private dir = {d}/private
   lock directory = {d}/lock
   state directory = {d}/state
   cache directory = {d}/cache
   pid directory = {d}/pid
   ncalrpc dir = {d}/ncalrpc
   log file = {d}/log/log.%m
   passdb backend = tdbsam:{d}/private/passdb.tdb
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   map to guest = never
   server min protocol = SMB2_02
   usershare path =
"
    );
    for (share, path) in shares {
        conf.push_str(&format!(
            "
[{share}]
   path = {}
   read only = no
   valid users = {user}
",
            path.display()
        ));
    }
    conf
}

/// `smbpasswd -a -s`, the password on stdin (twice), never in argv.
fn set_password(smbpasswd: &Path, conf: &Path, user: &str, password: &str) -> io::Result<()> {
    let mut child = Command::new(smbpasswd)
        .arg("-c")
        .arg(conf)
        .args(["-a", "-s", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{password}\n{password}\n").as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "smbpasswd -a {user}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?}: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn missing(program: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{program} is not installed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbd_serves_the_share_on_loopback() {
        if !(crate::standins::require_root() && crate::standins::require_program("smbd").is_some())
        {
            return;
        }
        let samba = Samba::start("Pass-word1").expect("start smbd");
        assert!(std::net::TcpStream::connect(("127.0.0.1", samba.port)).is_ok());
        let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&samba.share_dir).unwrap());
        assert_ne!(owner, 0, "the share belongs to the Samba user");
        let (pid, user) = (samba.pid(), samba.user.clone());
        drop(samba);
        assert!(!crate::procfs::alive(pid as i32), "smbd stopped");
        let passwd = fs::read_to_string("/etc/passwd").unwrap();
        assert!(!passwd.lines().any(|l| l.starts_with(&format!("{user}:"))));
    }
}
