//! The activator's part of the status document: per revision, read from the throttler's table and the backends' snapshots.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering};

use tokio::{sync::watch, time::Instant};

use super::{breaker::UNLIMITED, throttler::Throttler};
use crate::{
    endpoints::{Endpoints, Pods, Speaks},
    status::{
        self, ActivatorStatus, ColdStartStatus, Document, MAX_PODS, PodStatus, RevisionStatus,
    },
};

/// Reads the live tables; holds no lock and takes none the data path takes (the cold-start
/// ring's lock is shared only with the cold starts themselves).
#[derive(Debug)]
pub(crate) struct ActivatorSource {
    pub(crate) throttler: Arc<Throttler>,
    pub(crate) discovered: watch::Receiver<Endpoints>,
    pub(crate) healthy: watch::Receiver<Pods>,
}

impl status::Source for ActivatorSource {
    fn fill(&self, doc: &mut Document) {
        let table = self.throttler.load();
        let discovered = self.discovered.borrow().clone();
        let healthy = self.healthy.borrow().clone();
        let now = Instant::now();
        let routes: Vec<_> = table.routes().collect();
        let total = routes.len();
        let (routes, truncated) = status::first_revisions(routes, |r| &r.rev.key);
        let revisions = routes
            .into_iter()
            .map(|route| {
                let rev = &route.rev;
                let trackers = rev.trackers.load();
                let ready = healthy.get(&rev.key).map_or(&[][..], |p| &p[..]);
                let found = discovered.get(&rev.key).map_or(&[][..], |a| &a[..]);
                // Discovered addresses, plus healthy ones discovery no longer lists (until the
                // next probe round drops them), in address order.
                let mut addrs: Vec<SocketAddr> = found.to_vec();
                addrs.extend(ready.iter().map(|p| p.addr));
                addrs.sort_unstable();
                addrs.dedup();
                let pods_truncated = addrs.len().saturating_sub(MAX_PODS);
                let pods = addrs
                    .into_iter()
                    .take(MAX_PODS)
                    .map(|addr| {
                        let probed = ready.iter().find(|p| p.addr == addr);
                        let tracker = trackers.iter().find(|t| t.addr == addr);
                        PodStatus {
                            address: addr.to_string(),
                            state: if probed.is_some() {
                                "healthy"
                            } else {
                                "probing"
                            },
                            protocols: probed.map(|p| protocols(p.speaks)).unwrap_or_default(),
                            in_use: tracker.is_some(),
                            in_flight: tracker.map_or(0, |t| t.in_flight()),
                        }
                    })
                    .collect();
                let capacity = rev.breaker.capacity();
                RevisionStatus {
                    namespace: rev.key.namespace().to_owned(),
                    name: rev.key.name().to_owned(),
                    container_concurrency: route.container_concurrency,
                    capacity: (capacity < UNLIMITED).then_some(capacity),
                    in_flight: trackers.iter().map(|t| t.in_flight()).sum(),
                    queued: rev.breaker.waiting(),
                    ready_pods: ready.len(),
                    pods,
                    pods_truncated,
                    cold_starts_total: rev.cold_starts.total(),
                    recent_cold_starts: rev
                        .cold_starts
                        .recent()
                        .into_iter()
                        .map(|c| ColdStartStatus {
                            seconds_ago: status::seconds(now.saturating_duration_since(c.at)),
                            duration_ms: (c.held.as_secs_f64() * 1e6).round() / 1e3,
                        })
                        .collect(),
                    pokes: rev.pokes.load(Ordering::Relaxed),
                }
            })
            .collect();
        doc.activator = Some(ActivatorStatus {
            revisions_total: total,
            revisions_truncated: truncated,
            revisions,
        });
    }
}

fn protocols(s: Speaks) -> Vec<&'static str> {
    let mut v = Vec::with_capacity(2);
    if s.http1 {
        v.push("http1");
    }
    if s.h2c {
        v.push("h2c");
    }
    v
}
