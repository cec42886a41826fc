//! A malformed `[gpu]` configuration stops the real `bai-agent` binary with
//! exit status 2 and a message naming the key, before it connects anywhere.
#![allow(clippy::unwrap_used)]

use std::process::Output;

fn run(dir: &std::path::Path, args: &[&str], file: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bai-agent"));
    cmd.args(["--workspace", "w", "--cluster", "c1", "--state-dir"])
        .arg(dir.join("state"))
        // Nothing listens here: a configuration that passed would retry for ever.
        .args(["--coordinator", "http://127.0.0.1:9"])
        .args(args)
        .env_remove("BAI_COORDINATOR");
    if let Some(text) = file {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    cmd.output().unwrap()
}

#[test]
fn malformed_gpu_configuration_exits_with_status_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (args, file, key) in [
        (&[][..], Some("[gpu]\nfake_count = 0\n"), "gpu.fake_count"),
        (&[], Some("[gpu]\nfake_count = 65\n"), "gpu.fake_count"),
        (
            &[],
            Some("[gpu]\nfake_memory_mib = 0\n"),
            "gpu.fake_memory_mib",
        ),
        (&[], Some("[gpu]\nbackend = \"cuda\"\n"), "gpu.backend"),
        (&[], Some("[gpu]\nfake_gpus = 2\n"), "fake_gpus"),
        (
            &[],
            Some("[gpu]\nfake_utilization = 150\n"),
            "gpu.fake_utilization",
        ),
        (&["--fake-gpus", "0"], None, "fake-gpus"),
        (&["--fake-gpus", "100"], None, "fake-gpus"),
        (
            &["--fake-gpus", "2", "--gpu-backend", "none"],
            None,
            "fake-gpus",
        ),
        (&["--gpu-backend", "cuda"], None, "--gpu-backend"),
    ] {
        let out = run(dir.path(), args, file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {file:?}: {stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
    let help = run(dir.path(), &["--help"], None);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--fake-gpus <N>") && text.contains("--gpu-backend"),
        "{text}"
    );
}
