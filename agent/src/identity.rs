//! The node's identity: `--node-id`, or the id kept in `<state-dir>/node-id`,
//! generated once from the hostname and a short random suffix.

use bai_common::fs::write_atomic;
use bai_common::names::is_name;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write node id file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "node id file {path} holds {value:?}, which is not 1 to 64 characters of letters, digits, '_' or '-'"
    )]
    Invalid { path: String, value: String },
}

/// Returns the configured node id, else the stored one, else generates and
/// stores a new one (atomically, so a crash never leaves a half-written id).
pub fn load_or_create(
    state_dir: &Path,
    configured: Option<&str>,
    hostname: &str,
) -> Result<String, IdentityError> {
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let path = state_dir.join("node-id");
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if is_name(id) {
                Ok(id.to_owned())
            } else {
                Err(IdentityError::Invalid {
                    path: path.display().to_string(),
                    value: id.to_owned(),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = generate(hostname, &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let text = format!("{id}\n");
            write_atomic(&path, text.as_bytes()).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// `<sanitized hostname>-<suffix>`, at most 64 characters of `[-\w]`.
pub fn generate(hostname: &str, suffix: &str) -> String {
    let mut host: String = hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if host.is_empty() {
        host.push_str("node");
    }
    host.truncate(64 - 1 - suffix.len().min(32));
    format!("{host}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid() {
        assert_eq!(
            generate("gpu-vm01.example.org", "ab12cd34"),
            "gpu-vm01-ab12cd34"
        );
        assert_eq!(generate("", "ab12cd34"), "node-ab12cd34");
        assert_eq!(generate("weird host!", "x"), "weird-host--x");
        let long = generate(&"h".repeat(200), "ab12cd34");
        assert!(is_name(&long), "{long}");
    }

    #[test]
    fn generated_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), None, "host").unwrap();
        let b = load_or_create(dir.path(), None, "other").unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("host-"));
        assert_eq!(
            load_or_create(dir.path(), Some("given"), "host").unwrap(),
            "given"
        );
    }

    #[test]
    fn corrupt_id_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node-id"), "not valid/id\n").unwrap();
        assert!(matches!(
            load_or_create(dir.path(), None, "h"),
            Err(IdentityError::Invalid { .. })
        ));
    }
}
