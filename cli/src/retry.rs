//! Backoff for reconnecting dropped streams: short waits that grow while no
//! progress is made, and a limit after which the coordinator counts as gone.

use std::time::Duration;

use tokio::time::Instant;

const MIN_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long a stream may make no progress before the CLI gives up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    since: Instant,
    limit: Duration,
}

impl Backoff {
    pub fn new(limit: Duration) -> Self {
        Backoff {
            delay: MIN_DELAY,
            since: Instant::now(),
            limit,
        }
    }

    /// Data arrived: the next failure starts over with a short wait.
    pub fn progress(&mut self) {
        self.delay = MIN_DELAY;
        self.since = Instant::now();
    }

    /// Waits before the next try; `false` once no progress was made for the limit.
    pub async fn wait(&mut self) -> bool {
        if self.since.elapsed() >= self.limit {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_limit_without_progress() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let start = Instant::now();
        let mut tries = 0;
        while b.wait().await {
            tries += 1;
        }
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert!((3..10).contains(&tries), "{tries} tries");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_resets_the_delay_and_the_clock() {
        let mut b = Backoff::new(Duration::from_secs(10));
        for _ in 0..5 {
            assert!(b.wait().await);
        }
        b.progress();
        let t = Instant::now();
        assert!(b.wait().await);
        assert_eq!(t.elapsed(), MIN_DELAY);
    }
}
