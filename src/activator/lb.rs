//! Load balancing over a revision's healthy endpoints, chosen by container concurrency.
//!
//! CC 0 → power of two choices by in-flight count; CC 1–3 → first available; CC > 3 →
//! round robin (Knative's `lb_policy.go`). In-flight counts are kept by RAII guards.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
};

use http::uri::Authority;
use rand::Rng as _;

use super::upstream::Pool;
use crate::endpoints::Speaks;

/// One endpoint of a revision, with the requests this activator has in flight to it.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) addr: SocketAddr,
    /// `ip:port`, prebuilt so that the upstream URI costs no formatting per request.
    pub(crate) authority: Authority,
    in_flight: AtomicUsize,
    /// [`Speaks`] bits, as last learned by a probe (re-learned on every probe).
    speaks: AtomicU8,
    /// Idle HTTP/1.1 connections of the fast path; closed with the tracker.
    pub(crate) pool: Pool,
}

impl Tracker {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let authority = Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid"));
        Self {
            addr,
            authority,
            in_flight: AtomicUsize::new(0),
            speaks: AtomicU8::new(Speaks::ANY.bits()),
            pool: Pool::default(),
        }
    }

    /// What the pod speaks, as far as its probes found.
    pub(crate) fn speaks(&self) -> Speaks {
        Speaks::from_bits(self.speaks.load(Ordering::Relaxed))
    }

    pub(crate) fn set_speaks(&self, speaks: Speaks) {
        self.speaks.store(speaks.bits(), Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes a slot if fewer than `limit` requests are in flight (`0` = no limit).
    fn reserve(self: &Arc<Self>, limit: usize) -> Option<InFlight> {
        if limit == 0 {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Some(InFlight(self.clone()));
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(self.clone()))
    }
}

/// A request in flight to one endpoint; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Tracker>);

impl InFlight {
    pub(crate) fn tracker(&self) -> &Tracker {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A way of choosing an endpoint.
pub(crate) trait Policy: Send + Sync {
    /// Picks an endpoint with room under `limit` in-flight requests (0 = no limit), avoiding
    /// `avoid` unless nothing else is there. `None` when every endpoint is full.
    fn pick(
        &self,
        targets: &[Arc<Tracker>],
        limit: usize,
        avoid: &[SocketAddr],
    ) -> Option<InFlight>;
}

/// Knative's `firstAvailableLBPolicy`: the first endpoint (in address order) with room.
#[derive(Debug, Default)]
pub(crate) struct FirstAvailable;

impl Policy for FirstAvailable {
    fn pick(
        &self,
        targets: &[Arc<Tracker>],
        limit: usize,
        avoid: &[SocketAddr],
    ) -> Option<InFlight> {
        preferring(targets, avoid, |t| t.iter().find_map(|t| t.reserve(limit)))
    }
}

/// Knative's round robin: scan from the last position for an endpoint with room.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(
        &self,
        targets: &[Arc<Tracker>],
        limit: usize,
        avoid: &[SocketAddr],
    ) -> Option<InFlight> {
        preferring(targets, avoid, |t| {
            let n = t.len();
            if n == 0 {
                return None;
            }
            let start = self.next.load(Ordering::Relaxed) % n;
            (0..n).find_map(|i| {
                let p = (start + i) % n;
                let got = t[p].reserve(limit)?;
                self.next.store(p + 1, Ordering::Relaxed);
                Some(got)
            })
        })
    }
}

/// Knative's `randomChoice2Policy`: of two random endpoints, the one with fewer in flight.
#[derive(Debug, Default)]
pub(crate) struct PowerOfTwoChoices;

impl Policy for PowerOfTwoChoices {
    fn pick(
        &self,
        targets: &[Arc<Tracker>],
        limit: usize,
        avoid: &[SocketAddr],
    ) -> Option<InFlight> {
        preferring(targets, avoid, |t| {
            let chosen = match t.len() {
                0 => return None,
                1 => &t[0],
                l => {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..l);
                    // Draw the second from the other l-1 indices.
                    let mut b = rng.random_range(0..l - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (wa, wb) = (t[a].in_flight(), t[b].in_flight());
                    if wa < wb || (wa == wb && rng.random_bool(0.5)) {
                        &t[a]
                    } else {
                        &t[b]
                    }
                }
            };
            chosen.reserve(limit)
        })
    }
}

/// Runs `pick` over the targets not in `avoid`, or over all of them when that leaves none.
fn preferring(
    targets: &[Arc<Tracker>],
    avoid: &[SocketAddr],
    pick: impl Fn(&[Arc<Tracker>]) -> Option<InFlight>,
) -> Option<InFlight> {
    if avoid.is_empty() {
        return pick(targets);
    }
    // Retries only: allocating here keeps the first attempt free of it.
    let others: Vec<Arc<Tracker>> = targets
        .iter()
        .filter(|t| !avoid.contains(&t.addr))
        .cloned()
        .collect();
    if others.is_empty() {
        pick(targets)
    } else {
        pick(&others)
    }
}

/// The three policies of a revision; the one in force follows its container concurrency.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    first: FirstAvailable,
    round_robin: RoundRobin,
    p2c: PowerOfTwoChoices,
}

impl Balancer {
    pub(crate) fn policy(&self, container_concurrency: u32) -> &dyn Policy {
        match container_concurrency {
            0 => &self.p2c,
            1..=3 => &self.first,
            _ => &self.round_robin,
        }
    }
}

#[cfg(test)]
mod tests;
