//! The poke path: revision key → coalescer → the selected autoscaler client.

use std::{sync::Arc, time::Duration};

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
    coalescer: Coalescer<(u16, RevisionKey)>,
}

impl Default for Pokes {
    fn default() -> Self {
        Self {
            coalescer: Coalescer::new(MAX_KEYS),
        }
    }
}

impl Pokes {
    /// Pokes `key` at `target` unless it was poked less than `interval` ago. Never blocks.
    pub(crate) fn poke(&self, target: &Target, key: &RevisionKey, interval: Duration) -> Decision {
        let decision = self
            .coalescer
            .offer(&(target.id, key.clone()), Instant::now(), interval);
        if decision == Decision::Send {
            // The client counts what becomes of it (`sent`, `deferred`, `dropped`).
            target.sink.poke(key);
        } else {
            ::metrics::counter!(metrics::POKES, "result" => decision.as_str()).increment(1);
        }
        decision
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
