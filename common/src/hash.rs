//! FNV-1a, 64 bits: stable across Rust versions and platforms, unlike
//! `DefaultHasher`, for names and ids derived from other names. Not for secrets.

/// The FNV-1a 64-bit offset basis: the hash of no bytes.
pub const FNV1A64_EMPTY: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues hash `h` over `bytes` (hashing a concatenation piece by piece).
pub fn fnv1a64_update(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_update(FNV1A64_EMPTY, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_pieces() {
        assert_eq!(fnv1a64(b""), FNV1A64_EMPTY);
        assert_eq!(format!("{:016x}", fnv1a64(b"a")), "af63dc4c8601ec8c");
        assert_eq!(fnv1a64_update(fnv1a64(b"ab"), b"c"), fnv1a64(b"abc"));
    }
}
