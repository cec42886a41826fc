//! Small arithmetic the scenarios share: percentiles of samples, the stream
//! scenario's byte pattern, and the 64-bit checksum that proves the streamed
//! bytes, the stored file and the expected bytes are the same.

/// The `p`-th percentile (0..=100) by nearest rank; `None` for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Rounds to three decimals for the JSON line.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The line the stream job repeats. Its length (63 bytes with the newline) is
/// odd, so a lost, doubled or swapped chunk of any power-of-two size shifts the
/// pattern and is caught by the byte comparison, not only by the length.
pub const LINE: &str = "bai stream benchmark 0123456789 abcdefghijklmnopqrstuvwxyz ABC";

/// The shell command writing exactly `bytes` bytes of the repeated [`LINE`].
pub fn pattern_command(bytes: u64) -> String {
    format!("yes '{LINE}' | head -c {bytes}")
}

/// The pattern's bytes: [`LINE`] and a newline, repeated.
fn line_bytes() -> Vec<u8> {
    let mut l = LINE.as_bytes().to_vec();
    l.push(b'\n');
    l
}

/// Checks bytes against the pattern at their offset, and hashes them.
#[derive(Clone, Debug)]
pub struct PatternCheck {
    line: Vec<u8>,
    /// Bytes seen so far.
    pub len: u64,
    /// Offset of the first byte that differed from the pattern.
    pub first_mismatch: Option<u64>,
    pub hash: Hasher,
}

impl Default for PatternCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl PatternCheck {
    pub fn new() -> Self {
        Self {
            line: line_bytes(),
            len: 0,
            first_mismatch: None,
            hash: Hasher::new(),
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        self.hash.update(data);
        while !data.is_empty() {
            let at = (self.len % self.line.len() as u64) as usize;
            let n = data.len().min(self.line.len() - at);
            if self.first_mismatch.is_none() && data[..n] != self.line[at..at + n] {
                let i = data[..n]
                    .iter()
                    .zip(&self.line[at..])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.len + i as u64);
            }
            self.len += n as u64;
            data = &data[n..];
        }
    }
}

/// The checksum of `bytes` bytes of the pattern, as the job should produce them.
pub fn pattern_hash(bytes: u64) -> u64 {
    let line = line_bytes();
    let block: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 4096)
        .collect();
    let mut h = Hasher::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    h.finish()
}

/// A fast, streaming, non-cryptographic 64-bit checksum over 8-byte words
/// (multiply-rotate per word, the tail padded with its length). Feeding the
/// same bytes in any split gives the same value.
#[derive(Clone, Debug)]
pub struct Hasher {
    state: u64,
    tail: [u8; 8],
    tail_len: usize,
    total: u64,
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Self {
            state: 0x243f_6a88_85a3_08d3,
            tail: [0; 8],
            tail_len: 0,
            total: 0,
        }
    }

    fn word(&mut self, w: u64) {
        self.state = (self.state ^ w).wrapping_mul(K).rotate_left(29);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.tail_len > 0 {
            let n = data.len().min(8 - self.tail_len);
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    pub fn finish(&self) -> u64 {
        let mut h = self.clone();
        let mut last = [0u8; 8];
        last[..h.tail_len].copy_from_slice(&h.tail[..h.tail_len]);
        h.word(u64::from_le_bytes(last));
        h.word(h.total);
        h.state ^ (h.state >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(100.0));
        assert_eq!(percentile(&v, 99.0), Some(198.0));
        assert_eq!(percentile(&v, 100.0), Some(200.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn hash_ignores_how_bytes_are_split_but_not_their_order_or_length() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Hasher::new();
        whole.update(&data);
        let mut parts = Hasher::new();
        for c in data.chunks(13) {
            parts.update(c);
        }
        assert_eq!(whole.finish(), parts.finish());
        let mut swapped = data.clone();
        swapped.swap(10, 500);
        let mut h = Hasher::new();
        h.update(&swapped);
        assert_ne!(whole.finish(), h.finish());
        let mut zero_padded = Hasher::new();
        zero_padded.update(&data);
        zero_padded.update(&[0]);
        assert_ne!(whole.finish(), zero_padded.finish());
    }

    #[test]
    fn pattern_check_matches_what_the_shell_command_writes() {
        let bytes = 100_003u64;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(pattern_command(bytes))
            .output()
            .expect("run bash");
        assert_eq!(out.stdout.len() as u64, bytes);
        let mut check = PatternCheck::new();
        for c in out.stdout.chunks(4096) {
            check.update(c);
        }
        assert_eq!(check.first_mismatch, None);
        assert_eq!(check.len, bytes);
        assert_eq!(check.hash.finish(), pattern_hash(bytes));
    }

    #[test]
    fn pattern_check_catches_a_dropped_chunk() {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(pattern_command(1 << 20))
            .output()
            .expect("run bash");
        let mut check = PatternCheck::new();
        check.update(&out.stdout[..65536]);
        check.update(&out.stdout[131072..]);
        assert_eq!(check.first_mismatch.map(|o| o >= 65536), Some(true));
    }
}
