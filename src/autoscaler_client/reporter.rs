//! Per-revision concurrency accounting for the activator (Knative's concurrency reporter).
//!
//! The first request of a revision without state pokes the autoscaler at once, inside
//! [`ConcurrencyReporter::track`], before the request is queued. Every second one batch
//! carries each active revision's time-weighted average concurrency (queued + in flight) and
//! arrival count, minus the poke so that it is not counted twice. A revision whose average was
//! zero is reported once more and then forgotten, unless a request still references it.
//!
//! The hot path loads a read-mostly snapshot of the revision map (no global lock) and takes
//! only that revision's own lock for a few arithmetic operations.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AutoscalerClient, Stat};
use crate::{metrics as m, revision::RevisionKey};

/// Knative's `reportInterval`.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Per-revision concurrency accounting for the activator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConcurrencyReporter {
    tracker: Arc<Tracker>,
    client: AutoscalerClient,
}

/// Held from a request's arrival to its completion; dropping it records the departure.
#[derive(Debug)]
pub struct RequestGuard {
    state: Arc<RevisionState>,
    poked: bool,
}

// === impl ConcurrencyReporter ===

impl ConcurrencyReporter {
    /// Starts the 1 s report loop; it runs until `exit` is cancelled.
    pub fn spawn(client: AutoscalerClient, exit: CancellationToken) -> Self {
        let reporter = Self {
            tracker: Arc::new(Tracker::default()),
            client,
        };
        tokio::spawn(reporter.clone().run(exit));
        reporter
    }

    /// Records a request's arrival (call it before queueing); the first request of a revision
    /// without state pokes the autoscaler at once. Dropping the guard records its departure.
    pub fn track(&self, key: &RevisionKey) -> RequestGuard {
        let (state, first) = self.tracker.arrive(key, Instant::now());
        if first {
            self.client.poke(key);
        }
        RequestGuard {
            state,
            poked: first,
        }
    }

    async fn run(self, exit: CancellationToken) {
        let mut tick = tokio::time::interval_at(Instant::now() + REPORT_INTERVAL, REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = exit.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stats = self.tracker.report(Instant::now());
            for s in &stats {
                metrics::gauge!(
                    m::REVISION_REQUEST_CONCURRENCY,
                    m::LABEL_NAMESPACE => s.key.namespace().to_owned(),
                    m::LABEL_REVISION => s.key.name().to_owned()
                )
                .set(s.average_concurrent_requests);
            }
            self.client.report(stats);
        }
    }
}

impl RequestGuard {
    /// Whether this request's arrival poked the autoscaler.
    pub fn poked(&self) -> bool {
        self.poked
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.state.depart(Instant::now());
    }
}

/// The revision map: a snapshot for readers, a lock only for the rare writers.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    map: ArcSwap<HashMap<RevisionKey, Arc<RevisionState>>>,
    writer: Mutex<()>,
}

// === impl Tracker ===

impl Tracker {
    /// Counts an arrival; `true` when it created the revision's state (time to poke).
    pub(crate) fn arrive(&self, key: &RevisionKey, now: Instant) -> (Arc<RevisionState>, bool) {
        if let Some(state) = self.map.load().get(key)
            && state.arrive(now)
        {
            return (state.clone(), false);
        }
        // Slow path: new revision, or one the report loop just forgot.
        let _writer = self.writer.lock();
        if let Some(state) = self.map.load().get(key)
            && state.arrive(now)
        {
            return (state.clone(), false);
        }
        let state = Arc::new(RevisionState::new(key.clone(), now));
        let arrived = state.arrive(now);
        debug_assert!(arrived, "a fresh state is live");
        let mut next = HashMap::clone(&self.map.load());
        next.insert(key.clone(), state.clone());
        self.map.store(Arc::new(next));
        (state, true)
    }

    /// One report per known revision; forgets revisions that were idle for a whole period.
    pub(crate) fn report(&self, now: Instant) -> Vec<Stat> {
        let snapshot = self.map.load_full();
        let mut stats = Vec::with_capacity(snapshot.len());
        let mut forget = Vec::new();
        for state in snapshot.values() {
            let (stat, forgotten) = state.report(now);
            stats.push(stat);
            if forgotten {
                forget.push(state.key.clone());
            }
        }
        if !forget.is_empty() {
            let _writer = self.writer.lock();
            let mut next = HashMap::clone(&self.map.load());
            for key in &forget {
                // Only remove the state we retired, not one a racing arrival just created.
                if next.get(key).is_some_and(|s| s.is_retired()) {
                    next.remove(key);
                }
            }
            self.map.store(Arc::new(next));
        }
        stats.sort_by(|a, b| a.key.cmp(&b.key));
        stats
    }
}

/// One revision's figures.
#[derive(Debug)]
pub(crate) struct RevisionState {
    key: RevisionKey,
    stats: Mutex<RequestStats>,
}

/// Knative's `RequestStats` plus the reporter's poke bookkeeping.
#[derive(Debug)]
struct RequestStats {
    /// Requests queued or in flight now.
    concurrency: f64,
    /// ∫ concurrency dt over the window, in request·seconds.
    computed: f64,
    seconds_in_use: f64,
    last_change: Instant,
    /// Arrivals in the window.
    request_count: f64,
    /// 1 until the first report after the poke, which subtracts it.
    first_request: f64,
    /// Set when the report loop forgets the revision; arrivals then go to a new state.
    retired: bool,
}

impl RequestStats {
    fn compute(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        if dt > 0.0 {
            self.seconds_in_use += dt;
            self.computed += self.concurrency * dt;
            self.last_change = now;
        }
    }
}

// === impl RevisionState ===

impl RevisionState {
    fn new(key: RevisionKey, now: Instant) -> Self {
        Self {
            key,
            stats: Mutex::new(RequestStats {
                concurrency: 0.0,
                computed: 0.0,
                seconds_in_use: 0.0,
                last_change: now,
                request_count: 0.0,
                first_request: 1.0,
                retired: false,
            }),
        }
    }

    /// Counts an arrival unless the state was retired (then the caller makes a new one).
    fn arrive(&self, now: Instant) -> bool {
        let mut s = self.stats.lock();
        if s.retired {
            return false;
        }
        s.compute(now);
        s.concurrency += 1.0;
        s.request_count += 1.0;
        true
    }

    fn depart(&self, now: Instant) {
        let mut s = self.stats.lock();
        s.compute(now);
        s.concurrency = (s.concurrency - 1.0).max(0.0);
    }

    fn is_retired(&self) -> bool {
        self.stats.lock().retired
    }

    /// The period's stat (poke subtracted) and whether the revision is now forgotten.
    fn report(&self, now: Instant) -> (Stat, bool) {
        let mut s = self.stats.lock();
        s.compute(now);
        let average = if s.seconds_in_use > 0.0 {
            s.computed / s.seconds_in_use
        } else {
            0.0
        };
        let stat = Stat {
            key: self.key.clone(),
            average_concurrent_requests: (average - s.first_request).max(0.0),
            // Knative does not clamp this one: a lone poke reports 0, never less.
            request_count: (s.request_count - s.first_request).max(0.0),
        };
        s.first_request = 0.0;
        s.computed = 0.0;
        s.seconds_in_use = 0.0;
        s.request_count = 0.0;
        // Forget only when idle for the whole period and nothing references it now.
        let forget = average == 0.0 && s.concurrency == 0.0;
        if forget {
            s.retired = true;
        }
        (stat, forget)
    }
}

#[cfg(test)]
mod tests;
