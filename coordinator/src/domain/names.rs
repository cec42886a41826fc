//! Resource name rules (the Batch AI rule lives in `bai_common::names`, shared with the CLI
//! and the agent) and environment variable names.

pub use bai_common::names::check_name;

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
    fn env_names() {
        assert!(check_env_name("_A1").is_ok());
        assert!(check_env_name("PATH").is_ok());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("1A").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("A B").is_err());
    }
}
