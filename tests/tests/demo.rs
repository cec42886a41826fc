//! README's first command: `bai demo` runs the main job on the embedded
//! default (a local coordinator with a local one-node cluster), streams its
//! output to the terminal, exits with the job's code and leaves nothing running.

use anyhow::Result;
use bai_tests::{bin, procs};
use std::process::Command;
use std::time::Duration;

fn state_dir_of(stderr: &str) -> Option<String> {
    let at = stderr.find("(state dir ")? + "(state dir ".len();
    Some(stderr[at..].split(')').next()?.to_string())
}

#[test]
fn demo_streams_the_job_and_cleans_up() -> Result<()> {
    let out = Command::new(bin("bai"))
        .arg("demo")
        .env_remove("BAI_COORDINATOR")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stdout}\n{stderr}");
    assert!(stdout.contains("Hello from bai"), "{stdout}");
    assert!(
        stdout.contains("AZ_BATCHAI_JOB_TEMP="),
        "the job sees Batch AI variables: {stdout}"
    );
    assert!(stdout.contains("countdown 1\ndone"), "{stdout}");
    assert!(stderr.contains("succeeded"), "{stderr}");

    let state = state_dir_of(&stderr).expect("the demo names its state dir");
    // The coordinator and its agent are stopping as the demo exits: wait for
    // them to be gone (a generous bound; processes left behind stay).
    let gone = bai_tests::wait_until(
        Duration::from_secs(20),
        "the demo's processes to exit",
        || procs::alive_with_cmdline(&state).is_empty(),
    );
    let left = procs::alive_with_cmdline(&state);
    procs::kill_under(std::path::Path::new(&state));
    let _ = std::fs::remove_dir_all(&state);
    assert!(
        gone.is_ok() && left.is_empty(),
        "processes left behind: {left:?}"
    );
    Ok(())
}

#[test]
fn demo_exits_with_the_jobs_exit_code() -> Result<()> {
    let out = Command::new(bin("bai"))
        .args(["demo", "--command-line", "echo failing on purpose; exit 3"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("failing on purpose"));
    if let Some(state) = state_dir_of(&stderr) {
        procs::kill_under(std::path::Path::new(&state));
        let _ = std::fs::remove_dir_all(&state);
    }
    Ok(())
}
