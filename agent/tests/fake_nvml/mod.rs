//! Builds the fake `libnvidia-ml.so.1` (`fake_nvml.c` beside this file) with
//! `cc` into a directory, for the NVML backend's tests and the bench. Where
//! `cc` is missing the caller skips with the reason printed, except in CI
//! (`CI` set), where a missing compiler fails the run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C source (found from the agent's crate or any other of the
/// workspace's: the end-to-end tests include this module too).
pub fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fake_nvml/fake_nvml.c")
}

/// `dir/libnvidia-ml.so.1` built from the source with `defines` (`-D` flags
/// without the `-D`), or `None` (after printing why) where no C compiler is
/// found outside CI.
pub fn build(dir: &Path, defines: &[&str]) -> Option<PathBuf> {
    let out = dir.join("libnvidia-ml.so.1");
    let mut args: Vec<String> = defines.iter().map(|d| format!("-D{d}")).collect();
    args.push(source().display().to_string());
    compile(&out, &args)
}

/// `dir/libother.so`: a shared library that is not NVML (one unrelated symbol).
pub fn build_other(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("other.c");
    std::fs::write(&src, "int not_nvml(void) { return 0; }\n").expect("write other.c");
    compile(&dir.join("libother.so"), &[src.display().to_string()])
}

fn compile(out: &Path, args: &[String]) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
    ])
    .arg(out)
    .args(args);
    match cmd.output() {
        Ok(o) if o.status.success() => Some(out.to_owned()),
        Ok(o) => panic!(
            "{cc} could not build the fake NVML library: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var_os("CI").is_some() {
                panic!("no C compiler ({cc}) in CI: scripts/test-deps.sh installs gcc");
            }
            eprintln!("skipped: no C compiler ({cc}) to build the fake libnvidia-ml.so.1");
            None
        }
        Err(e) => panic!("cannot run {cc}: {e}"),
    }
}
