//! `Secret`: a write-only string (job secrets, storage keys, passwords).
//!
//! Its `Debug` prints a placeholder and it has no `Display`, so a secret cannot
//! reach a log line by accident. The value is read only through
//! [`Secret::expose`], which the agent-protocol edge calls to hand secrets to
//! the node that runs the job.

use serde::{Deserialize, Serialize};

/// A secret value. Serialized transparently (the store keeps it; the agent needs it).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call only where the secret must leave the process
    /// (the AssignJob message to the job's node).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        let printed = format!("{s:?} {:?}", Some(s.clone()));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn serializes_transparently() {
        let s = Secret::new("k");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"k\"");
        let back: Secret = serde_json::from_str("\"k\"").unwrap();
        assert_eq!(back, s);
    }
}
