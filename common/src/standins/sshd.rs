//! A real OpenSSH server on a loopback port with its own host key and
//! configuration in a temporary directory (standins.md §4): users' own
//! `~/.ssh/authorized_keys`, password login allowed, PAM on. Stopped on drop.

use super::{free_port, wait_for_port};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Sshd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Makes an ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) -> io::Result<()> {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "bai-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()?
        .success();
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ssh-keygen {} failed",
            path.display()
        )))
    }
}

impl Sshd {
    pub fn start() -> io::Result<Sshd> {
        let dir = tempfile::Builder::new().prefix("bai-sshd").tempdir()?;
        let d = dir.path();
        keygen(&d.join("host_key"))?;
        let port = free_port()?;
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile .ssh/authorized_keys\nPubkeyAuthentication yes\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM yes\n\
                 PermitRootLogin no\nStrictModes yes\nAllowTcpForwarding yes\n",
                d = d.display()
            ),
        )?;
        // sshd's compiled-in privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let log = std::fs::File::create(d.join("sshd.log"))?;
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()?;
        let up = wait_for_port(port, Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(None))
        });
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "sshd did not listen: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            )));
        }
        Ok(Sshd { child, port, dir })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
