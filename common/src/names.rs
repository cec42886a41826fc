//! The Batch AI resource-name rule (`^[-\w_]+$`, 1–64 characters, `\w` being ASCII letters,
//! digits and underscore here), for workspaces, clusters, jobs, experiments, file servers and
//! node ids.

/// Longest resource name.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` follows the rule; [`check_name`] says which part it breaks.
pub fn is_name(name: &str) -> bool {
    check_name(name).is_ok()
}

/// Why a name is not valid; the text is the rule broken, e.g. "must be at most 64 characters".
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("must be at most 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("must contain only letters, digits, '-' and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("a").is_ok());
        assert!(check_name("job-1_x").is_ok());
        assert!(is_name(&"x".repeat(64)));
        assert_eq!(check_name(""), Err("must not be empty"));
        assert_eq!(
            check_name(&"x".repeat(65)),
            Err("must be at most 64 characters")
        );
        for bad in ["a b", "a/b", "a.b", "é", "a$"] {
            assert!(!is_name(bad), "{bad}");
            assert_eq!(
                check_name(bad),
                Err("must contain only letters, digits, '-' and '_'")
            );
        }
    }
}
