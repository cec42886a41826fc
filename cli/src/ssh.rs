//! The system `ssh` client, as `az batchai cluster node exec` used SSH: the
//! command line built by a pure function (`ssh_argv`), then bai becomes ssh
//! (`exec_ssh`); and `--generate-ssh-keys`' key pair (`ssh-keygen`).
//! No password ever goes on a command line: ssh asks for one itself.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::CliError;

/// Where and as whom to log in (Batch AI's RemoteLoginInformation plus the
/// cluster's admin user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
}

/// What to do there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshRequest {
    /// Run this command line in `bash -ilc` (az's --exec).
    pub exec: Option<String>,
    /// `-L` forwards, LOCAL_PORT:HOST:PORT.
    pub forwards: Vec<String>,
    /// `-i`.
    pub private_key: Option<PathBuf>,
}

/// The port used when a node reports none.
pub const DEFAULT_PORT: u16 = 22;

/// Quotes `s` for a POSIX shell: one word, taken literally.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Checks `-L LOCAL_PORT:HOST:PORT` (a bind address may come first, as ssh allows).
pub fn check_forward(spec: &str) -> Result<(), CliError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let ports_ok = |local: &str, remote: &str| {
        local.parse::<u16>().is_ok_and(|p| p > 0) && remote.parse::<u16>().is_ok_and(|p| p > 0)
    };
    let ok = match parts.as_slice() {
        [local, host, remote] => !host.is_empty() && ports_ok(local, remote),
        [bind, local, host, remote] => {
            !bind.is_empty() && !host.is_empty() && ports_ok(local, remote)
        }
        _ => false,
    };
    if ok && !spec.starts_with('-') {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "-L: {spec:?} is not LOCAL_PORT:HOST:PORT (e.g. 8888:localhost:8888)"
        )))
    }
}

/// The argv (without the program) of the ssh call that does `req` on `target`:
/// `-p PORT [-i KEY] [-L F]... [-N] -- USER@HOST [bash -ilc 'CMD']`.
/// With forwards and no command, ssh only forwards (`-N`) until interrupted;
/// with neither, it opens an interactive login shell.
pub fn ssh_argv(target: &SshTarget, req: &SshRequest) -> Result<Vec<OsString>, CliError> {
    if target.user.is_empty() || target.user.starts_with('-') || target.user.contains('@') {
        return Err(CliError::usage(format!(
            "the cluster's admin user name {:?} cannot be used with ssh",
            target.user
        )));
    }
    if target.host.is_empty() || target.host.starts_with('-') {
        return Err(CliError::usage(format!(
            "the node's address {:?} cannot be used with ssh",
            target.host
        )));
    }
    let mut argv: Vec<OsString> = vec!["-p".into(), target.port.to_string().into()];
    if let Some(key) = &req.private_key {
        argv.push("-i".into());
        argv.push(key.clone().into_os_string());
    }
    for f in &req.forwards {
        check_forward(f)?;
        argv.push("-L".into());
        argv.push(f.into());
    }
    if req.exec.is_none() && !req.forwards.is_empty() {
        argv.push("-N".into());
    }
    argv.push("--".into());
    argv.push(format!("{}@{}", target.user, target.host).into());
    if let Some(cmd) = &req.exec {
        argv.push(format!("bash -ilc {}", shell_quote(cmd)).into());
    }
    Ok(argv)
}

/// Replaces this process with `ssh` from PATH (as `exec ssh ...` in a
/// shell): the terminal, signals (Ctrl-C) and the exit code are ssh's own, and
/// no bai process is left to orphan it. Returns only when ssh cannot be run.
pub fn exec_ssh(argv: &[OsString]) -> CliError {
    use std::os::unix::process::CommandExt;
    let e = Command::new("ssh").args(argv).exec();
    CliError::Io(format!(
        "cannot run ssh (is the OpenSSH client installed and on PATH?): {e}"
    ))
}

/// `--generate-ssh-keys`: makes sure `<home>/.ssh/id_rsa` and `id_rsa.pub`
/// exist, creating them with `ssh-keygen -q -N '' -t rsa -b 2048` as az did
/// when neither does; returns the public key's path.
pub fn ensure_key_pair(home: &Path) -> Result<PathBuf, CliError> {
    let dir = home.join(".ssh");
    let private = dir.join("id_rsa");
    let public = dir.join("id_rsa.pub");
    if public.is_file() {
        return Ok(public);
    }
    if private.exists() {
        return Err(CliError::usage(format!(
            "--generate-ssh-keys: {} exists without {}; make it with `ssh-keygen -y -f {} > {}`",
            private.display(),
            public.display(),
            private.display(),
            public.display()
        )));
    }
    create_private_dir(&dir)?;
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "rsa", "-b", "2048", "-f"])
        .arg(&private)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            CliError::Io(format!(
                "--generate-ssh-keys: cannot run ssh-keygen (is OpenSSH installed?): {e}"
            ))
        })?;
    if !out.status.success() || !public.is_file() {
        return Err(CliError::Io(format!(
            "--generate-ssh-keys: ssh-keygen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    eprintln!(
        "bai: generated an SSH key pair: {} and {}",
        private.display(),
        public.display()
    );
    Ok(public)
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            CliError::Io(format!(
                "--generate-ssh-keys: cannot create {}: {e}",
                dir.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            user: "admin".into(),
            host: "10.0.0.5".into(),
            port: 50022,
        }
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn exec_runs_the_command_in_a_login_bash() {
        let argv = ssh_argv(
            &target(),
            &SshRequest {
                exec: Some("nvidia-smi && echo 'it''s ok'".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            strings(argv),
            [
                "-p",
                "50022",
                "--",
                "admin@10.0.0.5",
                r"bash -ilc 'nvidia-smi && echo '\''it'\'''\''s ok'\'''"
            ]
        );
    }

    #[test]
    fn forwards_and_key_and_forward_only() {
        let argv = ssh_argv(
            &target(),
            &SshRequest {
                exec: None,
                forwards: vec!["8888:localhost:8888".into(), "127.0.0.1:6006:h:6006".into()],
                private_key: Some("/k/id".into()),
            },
        )
        .unwrap();
        assert_eq!(
            strings(argv),
            [
                "-p",
                "50022",
                "-i",
                "/k/id",
                "-L",
                "8888:localhost:8888",
                "-L",
                "127.0.0.1:6006:h:6006",
                "-N",
                "--",
                "admin@10.0.0.5"
            ]
        );
        let shell = ssh_argv(&target(), &SshRequest::default()).unwrap();
        assert_eq!(strings(shell), ["-p", "50022", "--", "admin@10.0.0.5"]);
    }

    #[test]
    fn bad_forwards_and_names_are_usage_errors() {
        for bad in [
            "8888",
            "x:h:1",
            "1:h:0",
            ":h:1",
            "1::2",
            "-oProxyCommand=x:h:1",
        ] {
            let e = check_forward(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().starts_with("-L: "), "{e}");
        }
        let mut t = target();
        t.user = "-oProxyCommand=evil".into();
        assert!(ssh_argv(&t, &SshRequest::default()).is_err());
        let mut t = target();
        t.host = String::new();
        assert!(ssh_argv(&t, &SshRequest::default()).is_err());
    }

    #[test]
    fn quoting_is_literal_for_sh() {
        let cmd = r#"echo "$HOME" 'x' `id` \ ;"#;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(cmd)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), cmd);
    }

    #[test]
    fn generate_keys_makes_a_pair_once() {
        if std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "ssh-keygen is missing in CI"
            );
            eprintln!("skipped: ssh-keygen is not installed");
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let public = ensure_key_pair(home.path()).unwrap();
        assert_eq!(public, home.path().join(".ssh/id_rsa.pub"));
        let key = std::fs::read_to_string(&public).unwrap();
        assert!(key.starts_with("ssh-rsa "), "{key}");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.path().join(".ssh")), 0o700);
        assert_eq!(mode(&home.path().join(".ssh/id_rsa")), 0o600);
        // A second call keeps the pair.
        ensure_key_pair(home.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&public).unwrap(), key);
        // A private key without its public half is not overwritten.
        std::fs::remove_file(&public).unwrap();
        let e = ensure_key_pair(home.path()).unwrap_err();
        assert!(e.to_string().contains("exists without"), "{e}");
    }
}
