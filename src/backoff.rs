//! Waiting between attempts at something that keeps failing (a store that
//! answers 503 SlowDown, or not at all): each failure in a row doubles the
//! wait, up to a cap, and each wait is drawn between half and all of it,
//! so followers that failed together do not retry together.

use std::time::Duration;

/// The waits of one thing that is retried.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits of `base` after the first failure, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// It worked: the next failure waits `base` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// It failed (again): how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let full = self
            .base
            .saturating_mul(1 << (self.failures - 1).min(20))
            .min(self.cap);
        full.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_reset_on_success() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let mut b = Backoff::new(base, cap);
        let mut full = base;
        for _ in 0..10 {
            let wait = b.failed();
            assert!(wait >= full / 2 && wait <= full, "{wait:?} for {full:?}");
            full = (full * 2).min(cap);
        }
        assert_eq!(b.failures(), 10);
        // Never past the cap, however long it fails.
        for _ in 0..100 {
            assert!(b.failed() <= cap);
        }
        b.succeeded();
        assert!(b.failed() <= base);
        // Not every wait is the same: the jitter spreads them.
        let mut waits: Vec<Duration> = (0..20).map(|_| Backoff::new(base, cap).failed()).collect();
        waits.dedup();
        assert!(waits.len() > 1, "{waits:?}");
    }
}
