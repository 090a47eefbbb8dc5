//! The scaling decision for one revision: observed concurrency → desired pod count.
//!
//! Stats are summed into 1 s buckets (so the reports of several activators add up, as in
//! Knative's collector) and averaged over a *stable window* of 6 s. Knative uses 60 s; on one
//! machine, processes start in milliseconds and a demo should react within seconds, so a
//! shorter window trades some flapping resistance for responsiveness. Desired =
//! ⌈average / target⌉, bounded by `min_scale`/`max_scale`. A revision keeps at least one pod
//! until it has seen no traffic for `scale_to_zero_after`; at zero, any stat with concurrency
//! scales to one at once (the poke), without waiting for the next tick.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use crate::config::RevisionConfig;

/// Length of the averaging window.
pub const STABLE_WINDOW: Duration = Duration::from_secs(6);
/// Bucket granularity: the activators' report period.
const BUCKET: Duration = Duration::from_secs(1);

/// The bounds a decision respects (from `revisions[]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleBounds {
    pub min_scale: u32,
    pub max_scale: u32,
    pub target: f64,
    pub scale_to_zero_after: Duration,
}

impl From<&RevisionConfig> for ScaleBounds {
    fn from(r: &RevisionConfig) -> Self {
        Self {
            min_scale: r.min_scale,
            max_scale: r.max_scale.max(1),
            target: if r.target > 0.0 { r.target } else { 1.0 },
            scale_to_zero_after: r.scale_to_zero_after,
        }
    }
}

/// One revision's observed load and current decision.
#[derive(Debug)]
pub struct Scaler {
    origin: Instant,
    /// (bucket index since `origin`, summed concurrency), oldest first.
    buckets: VecDeque<(u64, f64)>,
    last_active: Option<Instant>,
    desired: u32,
}

// === impl Scaler ===

impl Scaler {
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            buckets: VecDeque::new(),
            last_active: None,
            desired: 0,
        }
    }

    /// The current decision.
    pub fn desired(&self) -> u32 {
        self.desired
    }

    /// Records one received stat. Returns `true` when it must be acted upon at once:
    /// concurrency at scale zero (Knative's `Poke`).
    pub fn record(&mut self, now: Instant, concurrency: f64, request_count: f64) -> bool {
        let index = self.index(now);
        match self.buckets.back_mut() {
            Some((i, sum)) if *i == index => *sum += concurrency,
            _ => self.buckets.push_back((index, concurrency)),
        }
        self.trim(index);
        if concurrency > 0.0 || request_count > 0.0 {
            self.last_active = Some(now);
        }
        self.desired == 0 && concurrency > 0.0
    }

    /// Average concurrency over the stable window, counting only the time since the first
    /// bucket in the window (a fresh burst is not diluted by the seconds before it).
    pub fn average(&self, now: Instant) -> f64 {
        let index = self.index(now);
        let span = STABLE_WINDOW.as_secs();
        let live = self
            .buckets
            .iter()
            .filter(|(i, _)| index.saturating_sub(*i) < span);
        let (mut sum, mut first) = (0.0, None);
        for (i, s) in live {
            sum += s;
            first.get_or_insert(*i);
        }
        match first {
            Some(first) => sum / (index - first + 1) as f64,
            None => 0.0,
        }
    }

    /// Recomputes the decision.
    pub fn decide(&mut self, now: Instant, bounds: ScaleBounds) -> u32 {
        self.trim(self.index(now));
        let idle = self
            .last_active
            .is_none_or(|at| now.duration_since(at) >= bounds.scale_to_zero_after);
        let min = bounds.min_scale.min(bounds.max_scale);
        self.desired = if idle {
            min
        } else {
            let wanted = (self.average(now) / bounds.target).ceil();
            // `as` saturates: an absurd average still ends at max_scale.
            (wanted as u32).clamp(min.max(1), bounds.max_scale)
        };
        self.desired
    }

    fn index(&self, now: Instant) -> u64 {
        (now.duration_since(self.origin).as_millis() / BUCKET.as_millis()) as u64
    }

    fn trim(&mut self, index: u64) {
        let span = STABLE_WINDOW.as_secs();
        while self
            .buckets
            .front()
            .is_some_and(|(i, _)| index.saturating_sub(*i) >= span)
        {
            self.buckets.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(min: u32, max: u32, target: f64, idle_secs: u64) -> ScaleBounds {
        ScaleBounds {
            min_scale: min,
            max_scale: max,
            target,
            scale_to_zero_after: Duration::from_secs(idle_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn poke_at_zero_asks_for_an_immediate_scale_to_one() {
        let t0 = Instant::now();
        let mut s = Scaler::new(t0);
        assert_eq!(s.decide(t0, bounds(0, 3, 10.0, 30)), 0);
        assert!(s.record(t0, 1.0, 1.0), "a poke at zero acts at once");
        assert_eq!(s.decide(t0, bounds(0, 3, 10.0, 30)), 1);
        assert!(!s.record(t0, 1.0, 1.0), "not at zero any more");
        assert!(
            !Scaler::new(t0).record(t0, 0.0, 0.0),
            "a zero stat is no poke"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_concurrency_scales_up_to_max() {
        let t0 = Instant::now();
        let mut s = Scaler::new(t0);
        let b = bounds(0, 3, 10.0, 30);
        for sec in 0..6 {
            s.record(t0 + Duration::from_secs(sec), 25.0, 25.0);
        }
        assert_eq!(s.decide(t0 + Duration::from_secs(5), b), 3);
        // Two activators reporting 20 each: they add up to 40 → 4, capped at 3.
        let mut s = Scaler::new(t0);
        s.record(t0, 20.0, 1.0);
        s.record(t0, 20.0, 1.0);
        assert_eq!(s.average(t0), 40.0);
        assert_eq!(s.decide(t0, bounds(0, 10, 10.0, 30)), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn window_average_forgets_old_buckets() {
        let t0 = Instant::now();
        let mut s = Scaler::new(t0);
        s.record(t0, 12.0, 1.0);
        s.record(t0 + Duration::from_secs(1), 0.0, 0.0);
        s.record(t0 + Duration::from_secs(2), 0.0, 0.0);
        assert_eq!(s.average(t0 + Duration::from_secs(2)), 4.0);
        assert_eq!(s.average(t0 + STABLE_WINDOW + Duration::from_secs(1)), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_one_pod_until_idle_for_scale_to_zero_after_then_min_scale() {
        let t0 = Instant::now();
        let mut s = Scaler::new(t0);
        let b = bounds(0, 3, 10.0, 30);
        s.record(t0, 1.0, 1.0);
        assert_eq!(
            s.decide(t0 + Duration::from_secs(20), b),
            1,
            "no traffic but not idle yet"
        );
        assert_eq!(s.decide(t0 + Duration::from_secs(30), b), 0);
        assert_eq!(
            s.decide(t0 + Duration::from_secs(30), bounds(2, 3, 10.0, 30)),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn min_scale_holds_without_any_traffic() {
        let t0 = Instant::now();
        assert_eq!(Scaler::new(t0).decide(t0, bounds(1, 3, 10.0, 30)), 1);
    }
}
