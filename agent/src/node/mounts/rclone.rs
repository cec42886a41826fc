//! `rclone mount` over FUSE, for File shares (SMB remote) where the kernel has no cifs and
//! for Blob containers (azureblob remote) where blobfuse2 is absent. The credentials go in a
//! 0600 config file in the private directory, never in argv or the environment; rclone runs
//! in a session of its own, so it outlives the agent, and mount() returns once the kernel
//! lists the mount.

use super::drivers::find_program;
use super::mountinfo;
use super::secret::{Secret, redact};
use super::volume::FileUrl;
use super::{MountError, Private, Started};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The remote's name inside each config file (one remote per file).
const REMOTE: &str = "bai";

/// rclone 1.60's SMB encoding minus `Dot` and `RightPeriod`: with those, every upload to a
/// share's root also creates a stray directory named U+FF0E (fixed in later rclone).
const SMB_ENCODING: &str =
    "Slash,BackSlash,LtGt,DoubleQuote,Colon,Question,Asterisk,Pipe,Ctl,RightSpace,InvalidUtf8";

/// Azure's public blob endpoint, rclone's default.
const AZURE_BLOB_SUFFIX: &str = "blob.core.windows.net";

/// The config of an SMB remote; `obscured` is the password as `rclone obscure` printed it.
pub(crate) fn smb_config(url: &FileUrl, user: &str, obscured: &Secret) -> String {
    format!(
        "[{REMOTE}]\ntype = smb\nhost = {}\nport = {}\nuser = {user}\npass = {}\nencoding = {SMB_ENCODING}\n",
        url.host,
        url.port.unwrap_or(445),
        obscured.expose()
    )
}

/// The config of an azureblob remote. `endpoint` is the agent's blob endpoint template:
/// `https://{account}.<suffix>` is Azure's form (rclone 1.60 takes only the suffix);
/// anything else is a path-style emulator URL (Azurite), which rclone reaches with
/// `use_emulator` and the expanded URL as `endpoint` (1.60 then signs with the emulator's
/// well-known account, so there only `devstoreaccount1` works).
pub(crate) fn blob_config(account: &str, key: &Secret, endpoint: &str) -> String {
    let mut text = format!(
        "[{REMOTE}]\ntype = azureblob\naccount = {account}\nkey = {}\n",
        key.expose()
    );
    match endpoint.strip_prefix("https://{account}.") {
        Some(suffix) => {
            let suffix = suffix.trim_end_matches('/');
            if suffix != AZURE_BLOB_SUFFIX {
                text.push_str(&format!("endpoint = {suffix}\n"));
            }
        }
        None => text.push_str(&format!(
            "use_emulator = true\nendpoint = {}\n",
            endpoint.replace("{account}", account)
        )),
    }
    text
}

/// How a mount is set up, apart from the remote.
pub(crate) struct Options<'a> {
    pub config: &'a Path,
    pub cache_dir: &'a Path,
    pub log: &'a Path,
    pub owner: (u32, u32),
    pub file_perms: u32,
    pub dir_perms: u32,
}

/// `rclone mount` arguments (after the program): writes cached locally and uploaded at once
/// on close, ownership and permissions as the volume asks (no umask), `--allow-other` so a
/// non-root owner can use a mount root made.
pub(crate) fn mount_args(remote: &str, mount_point: &Path, o: &Options) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "mount".into(),
        format!("{REMOTE}:{remote}").into(),
        mount_point.into(),
        "--config".into(),
        o.config.into(),
        "--vfs-cache-mode".into(),
        "writes".into(),
        "--vfs-write-back".into(),
        "0s".into(),
        "--dir-cache-time".into(),
        "10s".into(),
        "--cache-dir".into(),
        o.cache_dir.into(),
        "--log-file".into(),
        o.log.into(),
        "--log-level".into(),
        "INFO".into(),
        "--uid".into(),
        o.owner.0.to_string().into(),
        "--gid".into(),
        o.owner.1.to_string().into(),
        "--umask".into(),
        "0".into(),
        "--file-perms".into(),
        format!("{:04o}", o.file_perms).into(),
        "--dir-perms".into(),
        format!("{:04o}", o.dir_perms).into(),
    ];
    if o.owner.0 != 0 {
        args.push("--allow-other".into());
    }
    args
}

/// `rclone obscure -`, the secret on stdin: rclone wants SMB passwords obscured.
pub(crate) fn obscure(rclone: &Path, secret: &Secret) -> Result<Secret, MountError> {
    let spawn_err = |source| MountError::Spawn {
        program: "rclone obscure".into(),
        source,
    };
    let mut child = Command::new(rclone)
        .args(["obscure", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(secret.expose().as_bytes())
            .map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    let obscured = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || obscured.is_empty() {
        return Err(MountError::Command {
            program: "rclone obscure".into(),
            mount_point: PathBuf::new(),
            status: format!("{}", out.status),
            output: redact(String::from_utf8_lossy(&out.stderr).trim(), &[secret]),
        });
    }
    Ok(Secret::new(obscured))
}

/// Which remote a volume mounts, and its config text.
pub(crate) enum Remote<'a> {
    Smb {
        url: &'a FileUrl,
        user: &'a str,
        key: &'a Secret,
    },
    Blob {
        account: &'a str,
        container: &'a str,
        key: &'a Secret,
        endpoint: &'a str,
    },
}

pub(crate) fn mount(
    private: &Private,
    remote: Remote,
    mount_point: &Path,
    owner: (u32, u32),
    perms: (u32, u32),
    ready_timeout: Duration,
) -> Result<Started, MountError> {
    let rclone = find_program("rclone").ok_or(MountError::NoDriver {
        kind: "with rclone",
        hint: "rclone is not installed",
    })?;
    let (text, path, key) = match remote {
        Remote::Smb { url, user, key } => (
            smb_config(url, user, &obscure(&rclone, key)?),
            url.path.clone(),
            key,
        ),
        Remote::Blob {
            account,
            container,
            key,
            endpoint,
        } => (
            blob_config(account, key, endpoint),
            container.to_owned(),
            key,
        ),
    };
    let config = private.write_secret("rclone.conf", text.as_bytes())?;
    let cache_dir = private.create_dir("rclone-cache")?;
    let log = private.path("rclone.log");
    let files = vec![config.clone(), cache_dir.clone(), log.clone()];
    let options = Options {
        config: &config,
        cache_dir: &cache_dir,
        log: &log,
        owner,
        file_perms: perms.0,
        dir_perms: perms.1,
    };
    let pid = spawn_and_wait(
        &rclone,
        &mount_args(&path, mount_point, &options),
        mount_point,
        &log,
        key,
        ready_timeout,
    )?;
    Ok(Started {
        driver: "rclone",
        pid: Some(pid),
        files,
    })
}

/// Starts rclone through `setsid` (which execs in place, so the pid is rclone's) and waits
/// until `mount_point` is a FUSE mount, failing early with the log's tail if rclone exits.
fn spawn_and_wait(
    rclone: &Path,
    args: &[OsString],
    mount_point: &Path,
    log: &Path,
    key: &Secret,
    timeout: Duration,
) -> Result<i32, MountError> {
    let setsid = find_program("setsid").ok_or(MountError::NoDriver {
        kind: "with rclone",
        hint: "setsid (util-linux) is not installed",
    })?;
    let io_err = |action, source| MountError::Io {
        action,
        path: log.to_path_buf(),
        source,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_err("open the log", e))?;
    let err = out.try_clone().map_err(|e| io_err("open the log", e))?;
    // A clean environment: the daemon outlives the agent and must not inherit its
    // variables (an RCLONE_* one would change the mount).
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut child = Command::new(setsid)
        .arg(rclone)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| MountError::Spawn {
            program: "rclone mount".into(),
            source,
        })?;
    let pid = child.id() as i32;
    let failed = |reason: String| MountError::Daemon {
        program: "rclone".into(),
        mount_point: mount_point.to_path_buf(),
        reason,
        log: redact(&log_tail(log), &[key]),
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!("rclone exited ({status})")));
        }
        let mounted = mountinfo::find(mount_point)
            .map_err(|source| MountError::Io {
                action: "read /proc/self/mountinfo for",
                path: mount_point.to_path_buf(),
                source,
            })?
            .is_some_and(|m| m.fs_type.starts_with("fuse"));
        if mounted {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("not mounted within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reap it when it ends, so a dead daemon is gone rather than a zombie; whoever watches
    // it uses a pidfd, and `check` compares its argv, so a reused pid is not mistaken for it.
    let _ = std::thread::Builder::new()
        .name(format!("reap-rclone-{pid}"))
        .spawn(move || child.wait());
    Ok(pid)
}

/// The last lines of rclone's log, for an error.
pub(crate) fn log_tail(log: &Path) -> String {
    super::command::tail(&std::fs::read_to_string(log).unwrap_or_default(), 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smb_config_has_the_remote_and_the_encoding_workaround() {
        let url = FileUrl::parse(
            "https://acct.file.core.windows.net/data",
            Some("127.0.0.1:4450"),
        )
        .unwrap();
        let text = smb_config(&url, "acct", &Secret::new("OBSCURED"));
        assert_eq!(
            text,
            "[bai]\ntype = smb\nhost = 127.0.0.1\nport = 4450\nuser = acct\npass = OBSCURED\n\
             encoding = Slash,BackSlash,LtGt,DoubleQuote,Colon,Question,Asterisk,Pipe,Ctl,RightSpace,InvalidUtf8\n"
        );
    }

    #[test]
    fn blob_config_for_azure_other_clouds_and_azurite() {
        let key = Secret::new("KEY");
        assert_eq!(
            blob_config("acct", &key, "https://{account}.blob.core.windows.net"),
            "[bai]\ntype = azureblob\naccount = acct\nkey = KEY\n"
        );
        assert!(
            blob_config(
                "acct",
                &key,
                "https://{account}.blob.core.chinacloudapi.cn/"
            )
            .ends_with("endpoint = blob.core.chinacloudapi.cn\n")
        );
        assert!(
            blob_config("devstoreaccount1", &key, "http://127.0.0.1:10000/{account}").ends_with(
                "use_emulator = true\nendpoint = http://127.0.0.1:10000/devstoreaccount1\n"
            )
        );
    }

    #[test]
    fn mount_args_carry_modes_and_owner_but_no_secret() {
        let o = Options {
            config: Path::new("/p/x.rclone.conf"),
            cache_dir: Path::new("/p/x.cache"),
            log: Path::new("/p/x.log"),
            owner: (1000, 1001),
            file_perms: 0o640,
            dir_perms: 0o750,
        };
        let args: Vec<String> = mount_args("share/dir", Path::new("/m/afs"), &o)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.starts_with("mount bai:share/dir /m/afs --config /p/x.rclone.conf"),
            "{joined}"
        );
        for want in [
            "--uid 1000",
            "--gid 1001",
            "--file-perms 0640",
            "--dir-perms 0750",
            "--umask 0",
            "--vfs-cache-mode writes",
            "--vfs-write-back 0s",
        ] {
            assert!(joined.contains(want), "{want} in {joined}");
        }
        assert_eq!(args.last().map(String::as_str), Some("--allow-other"));
        let root = Options { owner: (0, 0), ..o };
        assert!(
            !mount_args("s", Path::new("/m"), &root).contains(&OsString::from("--allow-other"))
        );
    }

    #[test]
    fn obscure_takes_the_secret_on_stdin() {
        let Some(rclone) = find_program("rclone") else {
            bai_common::standins::require("rclone", false);
            return;
        };
        let obscured = obscure(&rclone, &Secret::new("SmbTestPass1")).unwrap();
        assert!(!obscured.is_empty());
        assert_ne!(obscured.expose(), "SmbTestPass1");
        // `--`: an obscured value may start with `-` (base64url), which
        // the command line would take for a flag (this failed 1 run in 64).
        let revealed = Command::new(&rclone)
            .args(["reveal", "--", obscured.expose()])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&revealed.stdout).trim(),
            "SmbTestPass1"
        );
    }
}
