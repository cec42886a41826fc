//! Exponential backoff with jitter for reconnecting to the coordinator.
//!
//! Each delay is drawn uniformly from `[d/2, d]` where `d` doubles from
//! `initial` up to `max`, so a fleet of agents restarted together does not
//! reconnect in lockstep, yet no delay is ever shorter than half the nominal one.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The next delay to wait, using `unit` (a number in `[0, 1)`) as the
    /// random draw. Pure, for tests.
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let nominal = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The next delay, with a random draw.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(random_unit())
    }

    /// Starts again from the initial delay (after a successful registration).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A random number in `[0, 1)` from the standard library's per-instance
/// random hasher keys (good enough for jitter, no extra dependency).
fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let upper: Vec<_> = (0..10).map(|_| b.next_with(1.0).as_millis()).collect();
        assert_eq!(
            upper,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(b.next_with(0.0), Duration::from_millis(50));
        assert_eq!(b.next_with(0.5), Duration::from_millis(150));
        for _ in 0..10 {
            b.next_delay();
        }
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(10),
                "{d:?}"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_with(1.0);
        }
        b.reset();
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
    }

    #[test]
    fn random_draws_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..50).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|u| (u - draws[0]).abs() > 1e-9));
    }
}
