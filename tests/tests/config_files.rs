//! The documented config files in systemd/ are accepted by the daemons, and a
//! typo in one is refused with exit code 2 (so systemd does not restart-loop).

use anyhow::Result;
use bai_tests::{bin, procs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn systemd_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name)
}

/// Runs `cmd` for up to `secs`; `Some(code)` if it exited by then.
fn exits_within(mut cmd: Command, secs: u64) -> Result<Option<i32>> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st.code().unwrap_or(-1)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(None)
}

#[test]
fn documented_config_files_are_accepted_and_typos_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("coordinator");
    let mut coord = Command::new(bin("bai-coordinator"));
    coord
        .arg("--config")
        .arg(systemd_file("coordinator.toml"))
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state);
    assert_eq!(
        exits_within(coord, 2)?,
        None,
        "bai-coordinator refused systemd/coordinator.toml"
    );
    assert!(
        state.join("coordinator.addr").exists(),
        "the coordinator never served"
    );

    let mut agent = Command::new(bin("bai-agent"));
    agent
        .arg("--config")
        .arg(systemd_file("agent.toml"))
        .args(["--coordinator", "http://127.0.0.1:9", "--state-dir"])
        .arg(dir.path().join("agent"));
    assert_eq!(
        exits_within(agent, 2)?,
        None,
        "bai-agent refused systemd/agent.toml"
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "lissten = \"127.0.0.1:0\"\n")?;
    let mut coord = Command::new(bin("bai-coordinator"));
    coord
        .arg("--config")
        .arg(&typo)
        .arg("--state-dir")
        .arg(&state);
    assert_eq!(exits_within(coord, 10)?, Some(2));
    let mut agent = Command::new(bin("bai-agent"));
    agent
        .arg("--config")
        .arg(&typo)
        .args(["--workspace", "w", "--cluster", "c", "--state-dir"])
        .arg(dir.path().join("agent"));
    assert_eq!(exits_within(agent, 10)?, Some(2));
    procs::kill_under(dir.path());
    Ok(())
}
