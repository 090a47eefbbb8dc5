//! The local autoscaler's part of the status document: each revision runner publishes its scaler's decision and pods here.

use std::{net::SocketAddr, sync::Arc};

use tokio::{sync::watch, time::Instant};

use crate::{
    revision::{RevisionKey, SharedKeyMap},
    status::{self, AutoscalerStatus, Decision, Document, ScaledPod, ScaledRevision},
};

/// One runner's view, as it last published it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RunnerView {
    pub(super) min_scale: u32,
    pub(super) max_scale: u32,
    pub(super) desired: u32,
    /// The last change of `desired`: (from, to, average concurrency, when).
    pub(super) decision: Option<(u32, u32, f64, Instant)>,
    pub(super) pods: Vec<PodView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodView {
    pub(super) id: u64,
    pub(super) pid: Option<u32>,
    /// Set once the pod accepts connections.
    pub(super) ready: Option<SocketAddr>,
}

/// Revision → its runner's view. Each runner writes only its own entry.
pub(super) type ScaleTable = SharedKeyMap<Arc<RunnerView>>;

/// Publishes `view` for `key` (`None`: the runner ended), only when it changed.
pub(super) fn publish(
    table: &watch::Sender<ScaleTable>,
    key: &RevisionKey,
    view: Option<RunnerView>,
) {
    table.send_if_modified(|cur| match view {
        Some(v) if cur.get(key).is_some_and(|old| **old == v) => false,
        Some(v) => {
            cur.insert(key.clone(), Arc::new(v));
            true
        }
        None => cur.remove(key).is_some(),
    });
}

/// Reads the runners' table.
#[derive(Debug)]
pub(super) struct ScaleSource(pub(super) watch::Receiver<ScaleTable>);

impl status::Source for ScaleSource {
    fn fill(&self, doc: &mut Document) {
        let table = self.0.borrow().clone();
        let now = Instant::now();
        let total = table.len();
        // Ordered by key already: the first ones are the first in order.
        let revisions = table
            .iter()
            .take(status::MAX_REVISIONS)
            .map(|(key, v)| ScaledRevision {
                namespace: key.namespace().to_owned(),
                name: key.name().to_owned(),
                min_scale: v.min_scale,
                max_scale: v.max_scale,
                desired: v.desired,
                actual: v.pods.len(),
                ready: v.pods.iter().filter(|p| p.ready.is_some()).count(),
                last_decision: v.decision.map(|(from, to, average, at)| Decision {
                    from,
                    to,
                    average_concurrency: (average * 1000.0).round() / 1000.0,
                    seconds_ago: status::seconds(now.saturating_duration_since(at)),
                }),
                pods: v
                    .pods
                    .iter()
                    .take(status::MAX_PODS)
                    .map(|p| ScaledPod {
                        id: p.id,
                        state: if p.ready.is_some() {
                            "ready"
                        } else {
                            "starting"
                        },
                        pid: p.pid,
                        port: p.ready.map(|a| a.port()),
                    })
                    .collect(),
            })
            .collect();
        doc.autoscaler = Some(AutoscalerStatus {
            revisions_total: total,
            revisions_truncated: total.saturating_sub(status::MAX_REVISIONS),
            revisions,
        });
    }
}
