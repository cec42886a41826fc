//! Resource name rules (Batch AI: `^[-\w_]+$`, 1–64 characters; `\w` is ASCII
//! letters, digits and underscore here) and environment variable names.

/// Longest resource name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name is not valid; the text is the rule, e.g. "must be 1-64 characters".
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

/// Why an environment variable name is not valid (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn check_env_name(name: &str) -> Result<(), &'static str> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Err("must not be empty"),
        Some(b) if !(b.is_ascii_alphabetic() || b == b'_') => {
            return Err("must start with a letter or '_'");
        }
        Some(_) => {}
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("must contain only letters, digits and '_'");
    }
    if name.len() > 255 {
        return Err("must be at most 255 characters");
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
        assert!(check_name(&"x".repeat(64)).is_ok());
        assert_eq!(check_name(""), Err("must not be empty"));
        assert_eq!(
            check_name(&"x".repeat(65)),
            Err("must be at most 64 characters")
        );
        for bad in ["a b", "a/b", "a.b", "é", "a$"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        assert!(check_env_name("_A1").is_ok());
        assert!(check_env_name("PATH").is_ok());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("1A").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("A B").is_err());
    }
}
