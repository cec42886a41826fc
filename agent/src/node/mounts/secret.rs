//! A storage key or password: readable only through [`Secret::expose`], `<redacted>` in Debug,
//! no Display, no serde.

use std::fmt;

/// A secret string. Compare, clone and expose it deliberately; it prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must write it (a 0600 file, a child's stdin).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `text` with every occurrence of any non-empty secret replaced by `<redacted>`: for tool
/// output (stderr, a log tail) that goes into an error message.
pub(crate) fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.expose(), "<redacted>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redact_removes_every_occurrence() {
        let s = Secret::new("k3y");
        let empty = Secret::default();
        assert_eq!(
            redact("a k3y b k3y", &[&s, &empty]),
            "a <redacted> b <redacted>"
        );
    }
}
