//! Mounts the kernel makes, through a program that exits: `mount -t cifs`, `mount -t nfs`,
//! and unmanaged mount commands run by bash.

use super::command::{CommandLine, Runner, tail};
use super::secret::{Secret, redact};
use super::volume::FileUrl;
use super::{MountError, Private, Started};
use std::path::Path;

/// Batch AI's cifs options around the credentials file; `port=` only when overridden.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cifs_command(
    url: &FileUrl,
    mount_point: &Path,
    credentials: &Path,
    (uid, gid): (u32, u32),
    file_mode: u32,
    dir_mode: u32,
) -> CommandLine {
    let mut options = format!(
        "vers=3.0,credentials={},uid={uid},gid={gid},file_mode={file_mode:04o},dir_mode={dir_mode:04o},serverino",
        credentials.display()
    );
    if let Some(port) = url.port {
        options.push_str(&format!(",port={port}"));
    }
    CommandLine::new("mount")
        .arg("-t")
        .arg("cifs")
        .arg(format!("//{}/{}", url.host, url.path))
        .arg(mount_point)
        .arg("-o")
        .arg(options)
}

/// The cifs credentials file (mount.cifs's `credentials=` format).
pub(crate) fn cifs_credentials(account: &str, key: &Secret) -> Vec<u8> {
    format!("username={account}\npassword={}\n", key.expose()).into_bytes()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn mount_cifs(
    runner: &dyn Runner,
    private: &Private,
    url: &FileUrl,
    account: &str,
    key: &Secret,
    mount_point: &Path,
    owner: (u32, u32),
    modes: (u32, u32),
) -> Result<Started, MountError> {
    let credentials = private.write_secret("cifs-credentials", &cifs_credentials(account, key))?;
    let cmd = cifs_command(url, mount_point, &credentials, owner, modes.0, modes.1);
    run(runner, &cmd, mount_point, &[key])?;
    Ok(Started {
        driver: "cifs",
        pid: None,
        files: vec![credentials],
    })
}

pub(crate) fn nfs_command(
    server: &str,
    source_directory: &str,
    mount_point: &Path,
    options: &str,
) -> CommandLine {
    let source = if source_directory.is_empty() {
        "/"
    } else {
        source_directory
    };
    let mut cmd = CommandLine::new("mount").arg("-t").arg("nfs");
    if !options.trim().is_empty() {
        cmd = cmd.arg("-o").arg(options.trim());
    }
    cmd.arg(format!("{server}:{source}")).arg(mount_point)
}

pub(crate) fn mount_nfs(
    runner: &dyn Runner,
    server: &str,
    source_directory: &str,
    options: &str,
    mount_point: &Path,
) -> Result<Started, MountError> {
    let host_ok = !server.is_empty()
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !host_ok {
        return Err(MountError::Invalid {
            field: "file_server",
            reason: format!("{server:?} is not a host name or address"),
        });
    }
    if !source_directory.is_empty() && !source_directory.starts_with('/') {
        return Err(MountError::Invalid {
            field: "source_directory",
            reason: format!("{source_directory:?} is not an absolute path"),
        });
    }
    if options.trim().contains(char::is_whitespace) {
        return Err(MountError::Invalid {
            field: "mount_options",
            reason: format!("{options:?} holds spaces (nfs options are comma-separated)"),
        });
    }
    let cmd = nfs_command(server, source_directory, mount_point, options);
    run(runner, &cmd, mount_point, &[])?;
    Ok(Started {
        driver: "nfs",
        pid: None,
        files: Vec::new(),
    })
}

/// Batch AI appended the mount point to the command and ran it in a shell.
pub(crate) fn unmanaged_command(mount_command: &str, mount_point: &Path) -> CommandLine {
    let quoted = format!("'{}'", mount_point.to_string_lossy().replace('\'', r"'\''"));
    CommandLine::new("bash")
        .arg("-c")
        .arg(format!("{} {quoted}", mount_command.trim_end()))
}

pub(crate) fn mount_unmanaged(
    runner: &dyn Runner,
    mount_command: &str,
    mount_point: &Path,
) -> Result<Started, MountError> {
    if mount_command.trim().is_empty() {
        return Err(MountError::Invalid {
            field: "mount_command",
            reason: "is empty".into(),
        });
    }
    run(
        runner,
        &unmanaged_command(mount_command, mount_point),
        mount_point,
        &[],
    )?;
    Ok(Started {
        driver: "unmanaged",
        pid: None,
        files: Vec::new(),
    })
}

/// Runs a mounting command; a failure quotes its exit and the tail of its output (with
/// `secrets` scrubbed, though none should be there).
pub(crate) fn run(
    runner: &dyn Runner,
    cmd: &CommandLine,
    mount_point: &Path,
    secrets: &[&Secret],
) -> Result<(), MountError> {
    let out = runner.run(cmd).map_err(|source| MountError::Spawn {
        program: cmd.program.clone(),
        source,
    })?;
    if out.success {
        // A command that exits 0 without mounting (an unmanaged `true`, a helper that
        // forked and failed) would otherwise fail silently, later, in the job.
        let mounted = !runner.mounts_for_real()
            || super::mountinfo::find(mount_point).is_ok_and(|m| m.is_some());
        if mounted {
            return Ok(());
        }
        return Err(MountError::Command {
            program: cmd.program.clone(),
            mount_point: mount_point.to_path_buf(),
            status: "exit 0, but nothing is mounted there".into(),
            output: redact(&tail(&format!("{}{}", out.stdout, out.stderr), 10), secrets),
        });
    }
    let output = tail(&format!("{}{}", out.stdout, out.stderr), 10);
    Err(MountError::Command {
        program: cmd.program.clone(),
        mount_point: mount_point.to_path_buf(),
        status: out
            .code
            .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}")),
        output: redact(&output, secrets),
    })
}
