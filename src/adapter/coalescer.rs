//! Per-revision poke coalescing: at most one poke per revision per `poke_interval`.
//!
//! Shaped like kube-runtime's scheduler (a map of keys to their last emission), but leading
//! edge only: the first call for a key pokes at once, and calls inside the window that follows
//! are absorbed. No trailing poke is scheduled, because a poke is a level signal ("someone
//! wants this revision"), not a count: the call that opened the window already said it, and
//! traffic that goes on past the window pokes again on its first call there.

use std::{collections::HashMap, hash::Hash, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;

/// Smallest table size at which expired keys are swept.
const MIN_SWEEP: usize = 64;

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// First call for the key in this window: poke now.
    Send,
    /// A poke for the key went out less than an interval ago.
    Coalesced,
    /// The table is full of keys poked within the last interval; this one is not tracked
    /// and not poked (a flood of distinct revisions must not become a flood of frames).
    Overflow,
}

impl Decision {
    /// The `result` label of `kactivator_pokes_total` (a sent poke is counted by the
    /// autoscaler client, which knows whether it went out).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Send => "forwarded",
            Decision::Coalesced => "coalesced",
            Decision::Overflow => "overflow",
        }
    }
}

/// The coalescing table. Memory is bounded by `cap` keys; keys idle for an interval are
/// evicted by amortised sweeps. The hot path is one short lock and one hash lookup.
#[derive(Debug)]
pub(crate) struct Coalescer<K> {
    cap: usize,
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    /// Key → when its last poke was sent.
    last: HashMap<K, Instant>,
    /// Sweep when an insertion finds the table this large.
    sweep_at: usize,
    /// A full table is swept at most once per interval, so a key flood cannot turn every
    /// call into a scan.
    swept: Option<Instant>,
}

// === impl Coalescer ===

impl<K: Hash + Eq + Clone> Coalescer<K> {
    /// A table holding at most `cap` keys.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            cap,
            state: Mutex::new(State {
                last: HashMap::new(),
                sweep_at: MIN_SWEEP.min(cap),
                swept: None,
            }),
        }
    }

    /// Decides for one call at `now`; a `Send` records the poke as sent.
    pub(crate) fn offer(&self, key: &K, now: Instant, interval: Duration) -> Decision {
        let mut state = self.state.lock();
        if let Some(last) = state.last.get_mut(key) {
            if now.saturating_duration_since(*last) < interval {
                return Decision::Coalesced;
            }
            *last = now;
            return Decision::Send;
        }
        if state.last.len() >= state.sweep_at {
            let recently = state
                .swept
                .is_some_and(|at| now.saturating_duration_since(at) < interval);
            if state.last.len() < self.cap || !recently {
                state
                    .last
                    .retain(|_, last| now.saturating_duration_since(*last) < interval);
                state.swept = Some(now);
                // Doubling keeps the sweep cost amortised O(1) per insertion.
                state.sweep_at = (state.last.len() * 2).clamp(MIN_SWEEP.min(self.cap), self.cap);
            }
            if state.last.len() >= self.cap {
                return Decision::Overflow;
            }
        }
        state.last.insert(key.clone(), now);
        Decision::Send
    }

    /// The keys sent within the last `interval` (at most `max`, in no order) and how many
    /// there are; for the status page, which takes the lock once per request of its own.
    pub(crate) fn recent(
        &self,
        now: Instant,
        interval: Duration,
        max: usize,
    ) -> (Vec<(K, Instant)>, usize) {
        let state = self.state.lock();
        let mut total = 0;
        let mut keys = Vec::new();
        for (k, at) in &state.last {
            if now.saturating_duration_since(*at) < interval {
                total += 1;
                if keys.len() < max {
                    keys.push((k.clone(), *at));
                }
            }
        }
        (keys, total)
    }

    /// Keys tracked now (expired ones included until the next sweep).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().last.len()
    }
}

#[cfg(test)]
mod tests;
