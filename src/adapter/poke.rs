//! The poke path: revision key → coalescer → the selected autoscaler client.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::coalescer::{Coalescer, Decision};
use crate::{autoscaler_client::AutoscalerClient, metrics, revision::RevisionKey};

/// Most keys (target, revision) the coalescer tracks at once.
const MAX_KEYS: usize = 65_536;

/// Where pokes go. Implementations must not block: the gRPC call is waiting.
pub(crate) trait Sink: Send + Sync {
    fn poke(&self, key: &RevisionKey);
}

impl Sink for AutoscalerClient {
    fn poke(&self, key: &RevisionKey) {
        AutoscalerClient::poke(self, key);
    }
}

/// One autoscaler: a small id (part of the coalescing key) and its client.
#[derive(Clone)]
pub(crate) struct Target {
    id: u16,
    sink: Arc<dyn Sink>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("id", &self.id).finish()
    }
}

impl Target {
    pub(crate) fn new(id: u16, sink: Arc<dyn Sink>) -> Self {
        Self { id, sink }
    }

    #[cfg(test)]
    pub(crate) fn id(&self) -> u16 {
        self.id
    }
}

/// Coalesces pokes per (autoscaler, revision) and sends the survivors.
#[derive(Debug)]
pub(crate) struct Pokes {
    pub(crate) coalescer: Coalescer<(u16, RevisionKey)>,
    /// Decisions since start, by [`Decision`] (for the status page).
    counts: [AtomicU64; 3],
}

impl Default for Pokes {
    fn default() -> Self {
        Self {
            coalescer: Coalescer::new(MAX_KEYS),
            counts: Default::default(),
        }
    }
}

impl Pokes {
    /// Pokes `key` at `target` unless it was poked less than `interval` ago. Never blocks.
    pub(crate) fn poke(&self, target: &Target, key: &RevisionKey, interval: Duration) -> Decision {
        let decision = self
            .coalescer
            .offer(&(target.id, key.clone()), Instant::now(), interval);
        self.counts[decision as usize].fetch_add(1, Ordering::Relaxed);
        if decision == Decision::Send {
            // The client counts what becomes of it (`sent`, `deferred`, `dropped`).
            target.sink.poke(key);
        } else {
            ::metrics::counter!(metrics::POKES, "result" => decision.as_str()).increment(1);
        }
        decision
    }

    /// Decisions since start: (sent, coalesced, overflow).
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let n = |d: Decision| self.counts[d as usize].load(Ordering::Relaxed);
        (
            n(Decision::Send),
            n(Decision::Coalesced),
            n(Decision::Overflow),
        )
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<RevisionKey>>);

    impl Sink for Recorder {
        fn poke(&self, key: &RevisionKey) {
            self.0.lock().push(key.clone());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pokes_are_coalesced_per_target_and_revision() {
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let (ta, tb) = (Target::new(0, a.clone()), Target::new(1, b.clone()));
        let pokes = Pokes::default();
        let hello = RevisionKey::new("default", "hello");
        let other = RevisionKey::new("default", "other");
        let second = Duration::from_secs(1);
        for _ in 0..5_000 {
            pokes.poke(&ta, &hello, second);
            pokes.poke(&tb, &hello, second);
        }
        pokes.poke(&ta, &other, second);
        assert_eq!(*a.0.lock(), vec![hello.clone(), other]);
        assert_eq!(*b.0.lock(), vec![hello.clone()]);
        tokio::time::advance(second).await;
        assert_eq!(pokes.poke(&ta, &hello, second), Decision::Send);
        assert_eq!(a.0.lock().len(), 3);
    }
}
