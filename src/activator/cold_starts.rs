//! The recent cold starts of one revision, for the status page: a fixed ring, written once per cold start.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::Instant;

/// Cold starts kept per revision (older ones are overwritten).
pub(crate) const RECENT: usize = 20;

/// One request held for a cold start: when it was let through and how long it was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColdStart {
    pub(crate) at: Instant,
    pub(crate) held: Duration,
}

/// A ring of the last [`RECENT`] cold starts and a total count. The lock is taken once per
/// cold start (never by a warm request) and by the status page; it is never held across an
/// `.await`, and the ring is a fixed array: recording allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct ColdStarts {
    total: AtomicU64,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    slots: [Option<ColdStart>; RECENT],
    next: usize,
}

impl ColdStarts {
    pub(crate) fn record(&self, at: Instant, held: Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut ring = self.ring.lock();
        let i = ring.next;
        ring.slots[i] = Some(ColdStart { at, held });
        ring.next = (i + 1) % RECENT;
    }

    /// Cold starts recorded since the revision appeared.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The kept cold starts, newest first.
    pub(crate) fn recent(&self) -> Vec<ColdStart> {
        let ring = self.ring.lock();
        (0..RECENT)
            .filter_map(|k| ring.slots[(ring.next + RECENT - 1 - k) % RECENT])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_first_and_forgets_beyond_the_ring() {
        let c = ColdStarts::default();
        assert!(c.recent().is_empty());
        let t0 = Instant::now();
        for i in 0..(RECENT as u64 + 5) {
            c.record(t0 + Duration::from_secs(i), Duration::from_millis(i));
        }
        let recent = c.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].held, Duration::from_millis(RECENT as u64 + 4));
        assert_eq!(recent[RECENT - 1].held, Duration::from_millis(5));
        assert_eq!(c.total(), RECENT as u64 + 5);
    }
}
