//! Azurite's Blob service on a free loopback port, in memory (standins.md §1),
//! with `rclone` against it (no mount, no config file) to read what a test
//! wrote. Stopped on drop.

use super::{free_port, wait_for_port};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Azurite's development account and its well-known key (public, documented by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start(program: &Path) -> std::io::Result<Azurite> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut child = Command::new(program)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ])
            .current_dir(dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let up = wait_for_port(port, Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(None))
        });
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "azurite-blob did not listen on {port}"
            )));
        }
        Ok(Azurite {
            child,
            port,
            _dir: dir,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Writes `data` to `container/path` (through rclone, as a user would).
    pub fn put(&self, container_path: &str, data: &[u8]) -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("blob");
        std::fs::write(&file, data)?;
        let out = self.rclone(&[
            "copyto",
            &file.display().to_string(),
            &format!(":azureblob:{container_path}"),
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "rclone copyto {container_path}: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// `rclone <args>` against it without a mount or a config file.
    pub fn rclone(&self, args: &[&str]) -> std::process::Output {
        Command::new("rclone")
            .args(args)
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_AZUREBLOB_USE_EMULATOR", "true")
            .env("RCLONE_AZUREBLOB_ENDPOINT", self.endpoint())
            .output()
            .expect("rclone")
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
