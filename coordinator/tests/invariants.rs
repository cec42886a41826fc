//! ARCHITECTURE.md's invariants 1 and 8, checked on the sources: a new module
//! that names prost types, or builds a `tonic::Status` itself, fails here.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as (path relative to `src/`, text).
fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            out.push((rel, text));
        }
    }
}

fn coordinator_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    sources(&root, &root, &mut out);
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

/// `file:line: text` for each line of the files that contains one of `needles`.
fn hits<'a>(
    files: &'a [(String, String)],
    needles: &'a [&'a str],
) -> impl Iterator<Item = (&'a str, String)> + 'a {
    files.iter().flat_map(move |(file, text)| {
        text.lines()
            .enumerate()
            .filter(|(_, line)| needles.iter().any(|n| line.contains(n)))
            .map(move |(i, line)| (file.as_str(), format!("{file}:{}: {}", i + 1, line.trim())))
    })
}

/// Invariant 8: one mapping to `tonic::Status`. Everything else returns a
/// typed `Error` and goes through `error::to_status` (which logs internal
/// errors), so no status is built where an internal error would go unlogged.
#[test]
fn statuses_are_built_only_in_the_error_module() {
    let files = coordinator_sources();
    let all: Vec<(&str, String)> = hits(&files, &["Status::"]).collect();
    assert!(
        all.iter().any(|(f, _)| *f == "error.rs"),
        "the scan must see error.rs's mapping"
    );
    let outside: Vec<&String> = all
        .iter()
        .filter(|(f, _)| *f != "error.rs")
        .map(|(_, l)| l)
        .collect();
    assert!(
        outside.is_empty(),
        "build statuses with error::to_status, not directly:\n{}",
        outside
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The modules allowed to name prost types: the convert modules, the
/// modules that implement a generated service trait (they take requests and
/// hand back responses, converting with `convert`), and `lib.rs`, which
/// serves those services.
fn may_name_prost(file: &str) -> bool {
    file.starts_with("api/convert/")
        || matches!(
            file,
            "agent/convert.rs"
                | "agent/mod.rs"
                | "api/workspace.rs"
                | "api/experiment.rs"
                | "api/cluster.rs"
                | "api/job.rs"
                | "lib.rs"
        )
}

/// Invariant 1: protocol types stop at the edge.
#[test]
fn prost_types_stop_at_the_edge() {
    let files = coordinator_sources();
    let all: Vec<(&str, String)> = hits(&files, &["bai_proto", "prost_types", "prost::"]).collect();
    assert!(
        all.iter().any(|(f, _)| *f == "agent/convert.rs"),
        "the scan must see the agent's conversions"
    );
    let outside: Vec<&String> = all
        .iter()
        .filter(|(f, _)| !may_name_prost(f))
        .map(|(_, l)| l)
        .collect();
    assert!(
        outside.is_empty(),
        "only the convert modules and the service modules name prost types:\n{}",
        outside
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
