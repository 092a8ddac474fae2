//! Jittered exponential back-off between reconnections to a control plane (Envoy's
//! `JitteredExponentialBackOffStrategy`, with `GrpcStream`'s 500 ms base and 30 s maximum).
//!
//! Attempt `n` waits a random time below `base × (2ⁿ − 1)`, capped at `max`: full jitter, so
//! many proxies losing the same control plane do not come back in step.

use std::time::Duration;

/// Envoy's `RETRY_INITIAL_DELAY_MS`.
pub(crate) const BASE_INTERVAL: Duration = Duration::from_millis(500);
/// Envoy's `RETRY_MAX_DELAY_MS`.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempt: 0 }
    }

    /// How long to wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1).min(32);
        let multiplier = (1u64 << self.attempt.min(32)).saturating_sub(1);
        let ceiling = self.base.saturating_mul(u32::try_from(multiplier).unwrap_or(u32::MAX)).min(self.max);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(fastrand::u64(0..ceiling_ms))
    }

    /// The stream worked: the next failure starts from the base again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_maximum() {
        let mut backoff = Backoff::new(BASE_INTERVAL, MAX_INTERVAL);
        assert!(backoff.next_delay() < Duration::from_millis(500));
        assert!(backoff.next_delay() < Duration::from_millis(1500));
        for _ in 0..40 {
            assert!(backoff.next_delay() < MAX_INTERVAL);
        }
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(500));
    }
}
