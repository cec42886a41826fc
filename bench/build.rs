//! Stamps the build with the repository's short commit id (`BAI_BENCH_GIT`), so
//! every JSON line says which code it measured. `BAI_GIT_REV` in the build
//! environment overrides it (builds from a tarball); without git it is "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BAI_GIT_REV");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    // Rebuild when HEAD moves (a checkout or a commit on the current branch).
    // Ask git where they are: in a worktree `.git` is a file and HEAD lives
    // under the main repository's `.git/worktrees/<name>/`.
    for p in ["HEAD", "logs/HEAD"] {
        let path = Command::new("git")
            .args(["rev-parse", "--path-format=absolute", "--git-path", p])
            .current_dir(&dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| format!("../.git/{p}"));
        if std::path::Path::new(&dir).join(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let rev = std::env::var("BAI_GIT_REV")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&dir)
                .output()
                .ok()?;
            let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (out.status.success() && !s.is_empty()).then_some(s)
        });
    println!(
        "cargo:rustc-env=BAI_BENCH_GIT={}",
        rev.unwrap_or_else(|| "unknown".into())
    );
}
