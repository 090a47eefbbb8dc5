//! Backends: probes discovered endpoints and publishes the *healthy* table; passive ejection.
//!
//! One writer task owns the healthy table. Each discovered endpoint gets a prober task that
//! reports to the writer; an endpoint gets traffic only after a probe passed. Healthy endpoints
//! keep being probed (more slowly) so that a dead pod leaves even if discovery lags. Probes are
//! sent in the revision's protocol; for `auto`, each probe learns (again) what the pod speaks,
//! published with the healthy table as [`Pods`].

mod probe;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{
    config::SharedConfig,
    endpoints::{EndpointMap, Endpoints, Pod, PodMap, Pods, Speaks},
    revision::RevisionKey,
    revisions::Revisions,
};

/// Healthy endpoints are re-probed at least this far apart: enough to notice a dead pod
/// quickly without doubling the traffic a busy pod sees.
const HEALTHY_REPROBE: Duration = Duration::from_secs(1);

/// Ejections waiting for the writer; beyond it an ejection is dropped (the next probe catches it).
const EJECT_QUEUE: usize = 1024;

/// Handle to the prober task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backends {
    healthy: watch::Receiver<Endpoints>,
    pods: watch::Receiver<Pods>,
    eject: mpsc::Sender<(RevisionKey, SocketAddr)>,
}

impl Backends {
    /// Starts probing; runs until `exit` is cancelled.
    pub fn spawn(
        config: watch::Receiver<SharedConfig>,
        revisions: watch::Receiver<Revisions>,
        discovered: watch::Receiver<Endpoints>,
        exit: CancellationToken,
    ) -> Self {
        let (healthy_tx, healthy) = watch::channel(Endpoints::default());
        let (pods_tx, pods) = watch::channel(Pods::default());
        let (eject, eject_rx) = mpsc::channel(EJECT_QUEUE);
        let (results_tx, results_rx) = mpsc::channel(EJECT_QUEUE);
        let writer = Writer {
            config,
            revisions,
            discovered,
            healthy: healthy_tx,
            pods: pods_tx,
            results_tx,
            probers: HashMap::new(),
            exit,
        };
        // Detached: it stops on `exit`, and its probers stop with it.
        tokio::spawn(writer.run(results_rx, eject_rx));
        Self {
            healthy,
            pods,
            eject,
        }
    }

    /// Endpoints that passed a probe and were not ejected since.
    pub fn healthy(&self) -> watch::Receiver<Endpoints> {
        self.healthy.clone()
    }

    /// The healthy table with what each pod speaks; published just before [`Self::healthy`],
    /// by the same writer.
    pub fn pods(&self) -> watch::Receiver<Pods> {
        self.pods.clone()
    }

    /// Passive ejection: `addr` refused a connection; keep it out until a probe passes.
    ///
    /// Never blocks; the writer removes the endpoint within a scheduling round.
    pub fn eject(&self, key: &RevisionKey, addr: SocketAddr) {
        let _ = self.eject.try_send((key.clone(), addr));
    }
}

/// One probe outcome, tagged with the ejection epoch it started in.
#[derive(Debug)]
struct ProbeResult {
    key: RevisionKey,
    addr: SocketAddr,
    epoch: u64,
    /// `None`: the probe failed.
    speaks: Option<Speaks>,
}

#[derive(Debug)]
struct Prober {
    /// `Some` while healthy: what the last passing probe found the pod to speak.
    healthy: Option<Speaks>,
    /// Bumped on ejection: a probe that started earlier cannot bring the endpoint back.
    epoch: Arc<AtomicU64>,
    /// Asks the prober to probe now rather than at its next tick.
    kick: Arc<Notify>,
    stop: CancellationToken,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
struct Writer {
    config: watch::Receiver<SharedConfig>,
    revisions: watch::Receiver<Revisions>,
    discovered: watch::Receiver<Endpoints>,
    healthy: watch::Sender<Endpoints>,
    pods: watch::Sender<Pods>,
    results_tx: mpsc::Sender<ProbeResult>,
    probers: HashMap<(RevisionKey, SocketAddr), Prober>,
    exit: CancellationToken,
}

impl Writer {
    async fn run(
        mut self,
        mut results: mpsc::Receiver<ProbeResult>,
        mut ejections: mpsc::Receiver<(RevisionKey, SocketAddr)>,
    ) {
        let current = self.discovered.borrow_and_update().clone();
        self.reconcile(&current);
        loop {
            tokio::select! {
                biased;
                () = self.exit.cancelled() => return,
                changed = self.discovered.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = self.discovered.borrow_and_update().clone();
                    self.reconcile(&current);
                }
                Some((key, addr)) = ejections.recv() => self.eject(key, addr),
                Some(r) = results.recv() => self.record(r),
            }
            self.publish();
        }
    }

    /// Starts probers for new endpoints and stops those of vanished ones.
    fn reconcile(&mut self, discovered: &EndpointMap) {
        let wanted: HashSet<(RevisionKey, SocketAddr)> = discovered
            .iter()
            .flat_map(|(k, addrs)| addrs.iter().map(move |a| (k.clone(), *a)))
            .collect();
        self.probers.retain(|id, _| wanted.contains(id));
        for (key, addr) in wanted {
            if self.probers.contains_key(&(key.clone(), addr)) {
                continue;
            }
            let prober = Prober {
                healthy: None,
                epoch: Arc::new(AtomicU64::new(0)),
                kick: Arc::new(Notify::new()),
                stop: self.exit.child_token(),
            };
            tokio::spawn(probe_loop(
                key.clone(),
                addr,
                Inputs {
                    config: self.config.clone(),
                    revisions: self.revisions.clone(),
                },
                self.results_tx.clone(),
                prober.epoch.clone(),
                prober.kick.clone(),
                prober.stop.clone(),
            ));
            self.probers.insert((key, addr), prober);
        }
    }

    fn eject(&mut self, key: RevisionKey, addr: SocketAddr) {
        if let Some(p) = self.probers.get_mut(&(key.clone(), addr)) {
            p.epoch.fetch_add(1, Ordering::AcqRel);
            if p.healthy.is_some() {
                info!(revision = %key, %addr, "Endpoint ejected after a refused connection");
            }
            p.healthy = None;
            p.kick.notify_one();
        }
    }

    fn record(&mut self, r: ProbeResult) {
        let Some(p) = self.probers.get_mut(&(r.key.clone(), r.addr)) else {
            return;
        };
        if r.epoch != p.epoch.load(Ordering::Acquire) {
            return;
        }
        if p.healthy != r.speaks {
            debug!(revision = %r.key, addr = %r.addr, speaks = ?r.speaks, "Endpoint health changed");
        }
        p.healthy = r.speaks;
    }

    /// Publishes the healthy table when it differs from the one published: with protocols
    /// first, then addresses only, so that a reader of either never sees an older table after
    /// a newer one of the other.
    fn publish(&self) {
        let mut map: HashMap<RevisionKey, Vec<Pod>> = HashMap::new();
        for ((key, addr), p) in &self.probers {
            if let Some(speaks) = p.healthy {
                map.entry(key.clone()).or_default().push(Pod {
                    addr: *addr,
                    speaks,
                });
            }
        }
        let pods: PodMap = map
            .into_iter()
            .map(|(k, mut v)| {
                // Sorted, so that "first available" and equality checks are stable.
                v.sort_unstable_by_key(|p| p.addr);
                (k, Arc::from(v))
            })
            .collect();
        let next: EndpointMap = pods
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|p| p.addr).collect()))
            .collect();
        self.pods.send_if_modified(|cur| {
            if **cur == pods {
                false
            } else {
                *cur = Arc::new(pods);
                true
            }
        });
        self.healthy.send_if_modified(|cur| {
            if **cur == next {
                false
            } else {
                *cur = Arc::new(next);
                true
            }
        });
    }
}

/// What a prober reads before each probe: the probe settings and the revision's protocol.
struct Inputs {
    config: watch::Receiver<SharedConfig>,
    revisions: watch::Receiver<Revisions>,
}

async fn probe_loop(
    key: RevisionKey,
    addr: SocketAddr,
    Inputs { config, revisions }: Inputs,
    results: mpsc::Sender<ProbeResult>,
    epoch: Arc<AtomicU64>,
    kick: Arc<Notify>,
    stop: CancellationToken,
) {
    // What the pod was learned to speak while it stays up (TCP probes learn once per start).
    let mut known: Option<Speaks> = None;
    let mut known_in = 0;
    loop {
        let cfg = config.borrow().clone();
        let started_in = epoch.load(Ordering::Acquire);
        if started_in != known_in {
            // Ejected since: it may be a new process, speaking something else.
            known = None;
        }
        let a = &cfg.activator;
        // Endpoints of an unknown revision (a stale discovery entry) are probed as `auto`.
        let protocol = revisions
            .borrow()
            .get(&key)
            .map(|r| r.protocol)
            .unwrap_or_default();
        let probe = probe::probe(
            cfg.probe_style(),
            protocol,
            addr,
            &a.probe_path,
            a.probe_timeout,
            known,
        );
        let speaks = tokio::select! {
            () = stop.cancelled() => return,
            speaks = probe => speaks,
        };
        let ok = speaks.is_some();
        (known, known_in) = (speaks, started_in);
        let result = ProbeResult {
            key: key.clone(),
            addr,
            epoch: started_in,
            speaks,
        };
        if results.send(result).await.is_err() {
            return;
        }
        let wait = if ok {
            a.probe_period.max(HEALTHY_REPROBE)
        } else {
            a.probe_period
        };
        drop(cfg);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = kick.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests;
