//! A minimal Azurite (Blob service) for these tests, as `reference/standins.md` §1 starts it.

use super::AZURITE_ACCOUNT;
use bai_common::standins::{self, free_port};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(super) struct Azurite {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start(program: &Path) -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
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
            .spawn()
            .expect("start azurite-blob");
        let up = standins::wait_for_port(port, Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(None))
        });
        assert!(up, "azurite-blob listens on {port}");
        Azurite {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
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
