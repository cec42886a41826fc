//! ARCHITECTURE.md's invariant 1 for the CLI, checked on the sources: only
//! `client.rs` and `error.rs` touch the transport or decide what a gRPC
//! status means, so exit codes and retries follow one policy.

use std::path::{Path, PathBuf};

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

/// Whether `line` names `needle` as a path of its own (`Code::`, not `ExitCode::`).
fn names(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn only_the_client_reads_statuses_and_touches_the_transport() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let needles = ["Code::", "tonic::transport", "Status::"];
    let mut seen_client = false;
    let mut outside = Vec::new();
    for (file, text) in &files {
        for (i, line) in text.lines().enumerate() {
            if !needles.iter().any(|n| names(line, n)) {
                continue;
            }
            match file.as_str() {
                "client.rs" => seen_client = true,
                "error.rs" => {}
                _ => outside.push(format!("{file}:{}: {}", i + 1, line.trim())),
            }
        }
    }
    assert!(seen_client, "the scan must see client.rs's status checks");
    assert!(names("Err(s) if s.code() == Code::NotFound", "Code::"));
    assert!(!names("ExitCode::from(2)", "Code::"));
    assert!(
        outside.is_empty(),
        "decide what a status means in client.rs (Api::error, is_transient, is_not_found, ...):\n{}",
        outside.join("\n")
    );
}
