//! Sizes as docker and podman write them (`--shm-size 2g`): a positive
//! number with an optional binary unit b, k, m, g or t, either case, an
//! optional trailing `b` (`2g`, `512m`, `1gb`, `65536`).

/// The size `s` in bytes; the error says the rule.
pub fn parse_size(s: &str) -> Result<u64, &'static str> {
    const WHY: &str =
        "must be a positive size: a number and an optional unit b, k, m, g or t (e.g. 2g)";
    let lower = s.trim().to_ascii_lowercase();
    let digits = lower.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = lower.split_at(digits);
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        _ => return Err(WHY),
    };
    let n: u64 = n.parse().map_err(|_| WHY)?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(WHY),
        Some(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_the_runtimes_write_them() {
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1tb"), Ok(1 << 40));
        assert_eq!(parse_size(" 65536 "), Ok(65536));
        for bad in ["", "0", "-1", "1.5g", "2x", "g", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
