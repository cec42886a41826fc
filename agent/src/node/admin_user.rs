//! The cluster's admin user (`userAccountSettings`), created on every node as
//! Batch AI did: a home directory and bash, the SSH key in
//! `~/.ssh/authorized_keys` (0600; bai owns the file and writes exactly the
//! cluster's key), the password set through `chpasswd` on stdin (never on a
//! command line) or no password at all, and passwordless sudo through
//! `/etc/sudoers.d/bai-<name>` (0440, checked with `visudo -cf` first).
//! Idempotent: an existing user is reused, never recreated. Blocking.

pub use super::mounts::Secret;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Who jobs run as.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The user to create.
#[derive(Clone, Debug)]
pub struct AdminUserSpec {
    pub name: String,
    pub ssh_public_key: Option<String>,
    pub password: Option<Secret>,
}

/// The lowest uid bai takes as an admin user (below are system accounts).
const FIRST_USER_UID: u32 = 1000;

/// The Linux user-name rule (as the coordinator checks it).
pub fn valid_name(n: &str) -> bool {
    let first = n
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    first
        && n.len() <= 32
        && n != "root"
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The user `name`, if it exists.
pub fn lookup(name: &str) -> Option<RunAs> {
    let u = nix::unistd::User::from_name(name).ok().flatten()?;
    Some(RunAs {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    })
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .map_err(|e| format!("{program}: cannot write its input: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates or updates the admin user.
pub fn ensure_admin_user(spec: &AdminUserSpec) -> Result<RunAs, String> {
    let name = &spec.name;
    if !valid_name(name) {
        return Err(format!("{name:?} is not a valid Linux user name"));
    }
    let user = match lookup(name) {
        Some(u) if u.uid < FIRST_USER_UID => {
            return Err(format!(
                "{name} is a system account (uid {}); choose another admin user name",
                u.uid
            ));
        }
        Some(u) => u,
        None => {
            run(
                Command::new("useradd")
                    .args(["--create-home", "--shell", "/bin/bash"])
                    .args(["--comment", "bai cluster admin user"])
                    .arg(name),
                None,
            )?;
            lookup(name).ok_or_else(|| format!("useradd made no user {name}"))?
        }
    };
    authorized_keys(&user, spec.ssh_public_key.as_deref())?;
    match &spec.password {
        Some(p) if !p.is_empty() => {
            let line = format!("{name}:{}\n", p.expose());
            run(&mut Command::new("chpasswd"), Some(line.as_bytes()))
                .map_err(|e| e.replace(p.expose(), "<redacted>"))?;
        }
        // No password: none can be used (key login still works).
        _ => run(Command::new("usermod").args(["-p", "*"]).arg(name), None)?,
    }
    sudoers(name)?;
    Ok(user)
}

fn chown(path: &Path, u: &RunAs) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
        .map_err(|e| format!("cannot chown {}: {e}", path.display()))
}

fn authorized_keys(u: &RunAs, key: Option<&str>) -> Result<(), String> {
    let ssh = u.home.join(".ssh");
    let file = ssh.join("authorized_keys");
    let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {e}", file.display()))
            }
            _ => Ok(()),
        };
    };
    std::fs::create_dir_all(&ssh).map_err(|e| format!("cannot create {}: {e}", ssh.display()))?;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot chmod {}: {e}", ssh.display()))?;
    chown(&ssh, u)?;
    let tmp = ssh.join(".authorized_keys.bai");
    std::fs::write(&tmp, format!("{key}\n"))
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    chown(&tmp, u)?;
    std::fs::rename(&tmp, &file).map_err(|e| format!("cannot replace {}: {e}", file.display()))
}

/// Passwordless sudo, where sudo is installed.
fn sudoers(name: &str) -> Result<(), String> {
    let dir = Path::new("/etc/sudoers.d");
    if !dir.is_dir() {
        tracing::info!("sudo is not installed: the admin user gets no sudo");
        return Ok(());
    }
    let file = dir.join(format!("bai-{name}"));
    let tmp = dir.join(format!(".bai-{name}.tmp"));
    std::fs::write(&tmp, format!("{name} ALL=(ALL) NOPASSWD:ALL\n"))
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o440)))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    if Path::new("/usr/sbin/visudo").exists()
        && let Err(e) = run(Command::new("/usr/sbin/visudo").arg("-cf").arg(&tmp), None)
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &file).map_err(|e| format!("cannot install {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_linux_rule() {
        for ok in ["admin", "_svc", "a-b_1", &"a".repeat(32)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "root", "Admin", "1abc", "a b", "a;b", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("userdel").arg("-rf").arg(&self.0).status();
            let _ = std::fs::remove_file(format!("/etc/sudoers.d/bai-{}", self.0));
        }
    }

    #[test]
    fn the_user_is_created_once_with_key_password_and_sudo() {
        if !bai_common::standins::require_root()
            || bai_common::standins::require_program("useradd").is_none()
        {
            return;
        }
        let name = format!("baitest{}", std::process::id() % 100_000);
        let _gone = Gone(name.clone());
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs8 test@bai";
        let spec = AdminUserSpec {
            name: name.clone(),
            ssh_public_key: Some(key.into()),
            password: Some(Secret::new("pa55-w0rd")),
        };
        let u = ensure_admin_user(&spec).unwrap();
        assert!(u.uid >= FIRST_USER_UID);
        let keys = u.home.join(".ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{key}\n"));
        let meta = std::fs::metadata(&keys).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), u.uid);
        let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
        let hash = shadow
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .and_then(|l| l.split(':').nth(1))
            .unwrap()
            .to_string();
        assert!(hash.starts_with('$'), "a password hash is set");
        assert!(!shadow.contains("pa55-w0rd"));
        // Again, with another key and no password: the same user, updated.
        let again = ensure_admin_user(&AdminUserSpec {
            ssh_public_key: Some("ssh-rsa AAAAB3NzaC1yc2E other@bai".into()),
            password: None,
            ..spec
        })
        .unwrap();
        assert_eq!(again, u);
        assert!(
            std::fs::read_to_string(&keys)
                .unwrap()
                .starts_with("ssh-rsa ")
        );
        if Path::new("/etc/sudoers.d").is_dir() {
            let s = std::fs::read_to_string(format!("/etc/sudoers.d/bai-{name}")).unwrap();
            assert_eq!(s, format!("{name} ALL=(ALL) NOPASSWD:ALL\n"));
        }
        let refused = ensure_admin_user(&AdminUserSpec {
            name: "daemon".into(),
            ssh_public_key: None,
            password: None,
        })
        .unwrap_err();
        assert!(refused.contains("system account"), "{refused}");
    }
}
