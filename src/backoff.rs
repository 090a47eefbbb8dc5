//! Jittered exponential backoff: the one rule behind every reconnect and restart loop.
//!
//! Users: the stats client's websocket (`autoscaler_client`), the endpoints feed
//! (`discovery::feed`) and the pod supervisor's restarts (`autoscaler::supervisor`).

use std::time::Duration;

use rand::Rng as _;

/// Largest share added at random to a delay, so that peers that failed together (every
/// activator losing one autoscaler) do not all retry in the same instant.
const JITTER: f64 = 0.5;

/// `base × factorⁿ`, capped at `cap`, then lengthened by up to 50 % at random (Kubernetes'
/// `wait.Backoff` with `Jitter: 0.5`, which Knative's websocket connections use). A wait is
/// therefore never shorter than the un-jittered delay and never longer than `1.5 × cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, factor: f64, cap: Duration) -> Self {
        Self { base, factor, cap }
    }

    /// The un-jittered delay before retry `attempt` (0: the first retry).
    pub fn nominal(&self, attempt: u32) -> Duration {
        // Past 64 steps every sane factor has long reached the cap; the clamp keeps powi finite.
        let exp = i32::try_from(attempt.min(64)).unwrap_or(64);
        let secs = self.base.as_secs_f64() * self.factor.powi(exp);
        if secs.is_finite() && secs < self.cap.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.cap
        }
    }

    /// The delay to wait before retry `attempt` (0: the first retry), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.nominal(attempt)
            .mul_f64(1.0 + rand::rng().random_range(0.0..JITTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(5));

    #[test]
    fn grows_is_capped_and_jitters_upwards_only() {
        assert_eq!(B.nominal(0), Duration::from_millis(100));
        assert_eq!(B.nominal(3), Duration::from_millis(800));
        assert_eq!(B.nominal(6), B.cap);
        assert_eq!(B.nominal(u32::MAX), B.cap);
        for attempt in [0, 3, 6, 1_000] {
            for _ in 0..100 {
                let d = B.delay(attempt);
                let n = B.nominal(attempt);
                assert!(d >= n && d < n.mul_f64(1.0 + JITTER), "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let first: std::collections::HashSet<Duration> = (0..50).map(|_| B.delay(0)).collect();
        assert!(first.len() > 10, "{first:?}");
    }
}
