//! The status document behind the admin port's `/status.json` and `/` page, filled by each mode from snapshots it already keeps.
//!
//! The document is built only when asked for: every field is read from a table, an atomic or
//! a `watch` snapshot the data path keeps anyway, so serving traffic pays nothing for the page.
//! Field by field it is documented in `docs/status.md`; scripts may rely on it (`schema` is
//! bumped when a field changes meaning or goes away; new fields may appear at any time).

use std::{fmt, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::time::Instant;

/// Bumped when a field changes meaning or is removed.
pub const SCHEMA: u32 = 1;
/// Revisions listed per section: the first ones by `namespace/name`; the rest are counted in
/// `revisions_truncated`. Bounds the document (and the page) with tens of thousands of them.
pub const MAX_REVISIONS: usize = 500;
/// Pods listed per revision; the rest are counted in `pods_truncated`.
pub const MAX_PODS: usize = 100;

/// One mode's contribution to the document.
pub trait Source: Send + Sync + fmt::Debug {
    fn fill(&self, doc: &mut Document);
}

/// Builds the document from the mode's sources.
#[derive(Debug, Clone)]
pub struct Status {
    mode: &'static str,
    started: Instant,
    sources: Vec<Arc<dyn Source>>,
}

impl Status {
    pub fn new(mode: &'static str) -> Self {
        Self {
            mode,
            started: Instant::now(),
            sources: Vec::new(),
        }
    }

    pub fn add(&mut self, source: Arc<dyn Source>) {
        self.sources.push(source);
    }

    /// The document as of now.
    pub fn document(&self) -> Document {
        let mut doc = Document {
            schema: SCHEMA,
            version: env!("CARGO_PKG_VERSION"),
            mode: self.mode,
            uptime_seconds: seconds(self.started.elapsed()),
            autoscaler_link: None,
            activator: None,
            adapter: None,
            autoscaler: None,
        };
        for s in &self.sources {
            s.fill(&mut doc);
        }
        doc
    }
}

/// The whole `/status.json` document. Sections of other modes are `null`.
#[derive(Debug, Serialize)]
pub struct Document {
    pub schema: u32,
    pub version: &'static str,
    /// `activator`, `adapter` or `autoscaler`.
    pub mode: &'static str,
    pub uptime_seconds: f64,
    /// The stats websocket (activator and adapter modes).
    pub autoscaler_link: Option<LinkStatus>,
    pub activator: Option<ActivatorStatus>,
    pub adapter: Option<AdapterStatus>,
    /// The local autoscaler (autoscaler mode, or embedded when no autoscaler URL is set).
    pub autoscaler: Option<AutoscalerStatus>,
}

#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub url: String,
    /// `connected`, `connecting` (never connected yet) or `reconnecting`.
    pub state: &'static str,
    /// How long the link has been in this state.
    pub for_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ActivatorStatus {
    pub revisions_total: usize,
    pub revisions_truncated: usize,
    pub revisions: Vec<RevisionStatus>,
}

#[derive(Debug, Serialize)]
pub struct RevisionStatus {
    pub namespace: String,
    pub name: String,
    /// 0 = unlimited.
    pub container_concurrency: u32,
    /// Requests holding capacity may exceed it briefly after capacity shrinks; `null` = unlimited.
    pub capacity: Option<usize>,
    /// Requests being proxied to a pod.
    pub in_flight: usize,
    /// Requests waiting for capacity.
    pub queued: usize,
    /// Pods that passed a probe.
    pub ready_pods: usize,
    pub pods: Vec<PodStatus>,
    pub pods_truncated: usize,
    /// Requests held for a cold start since the revision appeared.
    pub cold_starts_total: u64,
    /// The last ones, newest first.
    pub recent_cold_starts: Vec<ColdStartStatus>,
    /// Scale-from-zero pokes its requests sent to the autoscaler.
    pub pokes: u64,
}

#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub address: String,
    /// `healthy` (passed its probe) or `probing` (discovered, not passed yet or failing).
    pub state: &'static str,
    /// What the last probe found it speaks (`http1`, `h2c`); empty while probing.
    pub protocols: Vec<&'static str>,
    /// This activator sends it requests (it is in this activator's subset).
    pub in_use: bool,
    pub in_flight: usize,
}

#[derive(Debug, Serialize)]
pub struct ColdStartStatus {
    pub seconds_ago: f64,
    /// How long the request was held before it went to a pod.
    pub duration_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct AdapterStatus {
    /// Calls that held (`hold_until_ready`) and have not returned yet.
    pub holds_in_progress: usize,
    pub holds_total: u64,
    pub holds_expired: u64,
    /// Poke decisions since start, by result.
    pub pokes_forwarded: u64,
    pub pokes_coalesced: u64,
    pub pokes_overflow: u64,
    /// Revisions poked within the last poke interval (the coalescer's table).
    pub revisions_total: usize,
    pub revisions_truncated: usize,
    pub revisions: Vec<PokedRevision>,
}

#[derive(Debug, Serialize)]
pub struct PokedRevision {
    pub namespace: String,
    pub name: String,
    pub last_poke_seconds_ago: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct AutoscalerStatus {
    pub revisions_total: usize,
    pub revisions_truncated: usize,
    pub revisions: Vec<ScaledRevision>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaledRevision {
    pub namespace: String,
    pub name: String,
    pub min_scale: u32,
    pub max_scale: u32,
    /// Pods the scaler wants.
    pub desired: u32,
    /// Pods running (started or ready).
    pub actual: usize,
    pub ready: usize,
    pub last_decision: Option<Decision>,
    pub pods: Vec<ScaledPod>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    /// Average concurrency over the stable window when it was taken.
    pub average_concurrency: f64,
    pub seconds_ago: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaledPod {
    pub id: u64,
    /// `starting` (process started, port not open yet) or `ready`.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub port: Option<u16>,
}

/// Seconds with millisecond precision (keeps the document short).
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Keeps the first [`MAX_REVISIONS`] of `items` in `key` order; returns them and how many were
/// left out.
pub fn first_revisions<T, K: Ord>(mut items: Vec<T>, key: impl Fn(&T) -> K) -> (Vec<T>, usize) {
    let left_out = items.len().saturating_sub(MAX_REVISIONS);
    if left_out > 0 {
        items.select_nth_unstable_by(MAX_REVISIONS, |a, b| key(a).cmp(&key(b)));
        items.truncate(MAX_REVISIONS);
    }
    items.sort_unstable_by_key(&key);
    (items, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_revisions_in_order_and_counts_the_rest() {
        let items: Vec<u32> = (0..(MAX_REVISIONS as u32 + 7)).rev().collect();
        let (kept, left_out) = first_revisions(items, |i| *i);
        assert_eq!(left_out, 7);
        assert_eq!(kept.len(), MAX_REVISIONS);
        assert_eq!(kept[0], 0);
        assert_eq!(kept[MAX_REVISIONS - 1], MAX_REVISIONS as u32 - 1);
        let (few, none) = first_revisions(vec![3, 1, 2], |i| *i);
        assert_eq!((few, none), (vec![1, 2, 3], 0));
    }
}
