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
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use imbl::ordmap::DiffItem;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{
    config::SharedConfig,
    endpoints::{EndpointMap, Endpoints, Pod, PodMap, Pods, Speaks},
    revision::{KeyMap, RevisionKey},
    revisions::Revisions,
};

/// Healthy endpoints are re-probed at least this far apart: enough to notice a dead pod
/// quickly without doubling the traffic a busy pod sees.
const HEALTHY_REPROBE: Duration = Duration::from_secs(1);

/// Ejections waiting for the writer; beyond it an ejection is dropped (the next probe catches it).
const EJECT_QUEUE: usize = 1024;

/// Probe results waiting for the writer (probers wait when it is full).
const RESULT_QUEUE: usize = 4096;

/// Probes in flight at once, across all pods: bounds sockets and CPU when thousands of pods
/// appear together (a relist of a large cluster).
const MAX_CONCURRENT_PROBES: usize = 256;

/// Failing pods are re-probed at this total rate at most: with up to 400 failing (pods
/// starting) each is probed every `probe_period`, as Knative does; 20,000 pods refusing
/// connections cost 2,000 probes/s, not 100,000.
const FAILING_PROBES_PER_SECOND: u64 = 2_000;

/// Healthy pods are re-probed at this total rate at most; with few pods each is re-probed
/// every `HEALTHY_REPROBE`, with 20,000 every 40 s (refused connections eject a dead pod
/// sooner, and discovery removes it when Kubernetes does).
const HEALTHY_PROBES_PER_SECOND: u64 = 500;

/// Handle to the prober task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backends {
    /// What discovery found (probed or not), for the status page.
    discovered: watch::Receiver<Endpoints>,
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
        let (results_tx, results_rx) = mpsc::channel(RESULT_QUEUE);
        let writer = Writer {
            config,
            revisions,
            discovered: discovered.clone(),
            healthy: healthy_tx,
            pods: pods_tx,
            results_tx,
            probers: KeyMap::default(),
            reconciled: Endpoints::default(),
            count: 0,
            dirty: HashSet::new(),
            pod_map: PodMap::default(),
            healthy_map: EndpointMap::default(),
            pacing: Arc::new(Pacing::new()),
            exit,
        };
        // Detached: it stops on `exit`, and its probers stop with it.
        tokio::spawn(writer.run(results_rx, eject_rx));
        Self {
            discovered,
            healthy,
            pods,
            eject,
        }
    }

    /// Every discovered endpoint, healthy or still being probed.
    pub fn discovered(&self) -> watch::Receiver<Endpoints> {
        self.discovered.clone()
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
    /// Per revision, per discovered address.
    probers: KeyMap<HashMap<SocketAddr, Prober>>,
    /// The discovered table last reconciled: a revision whose entry is the same `Arc` is
    /// skipped, so an update of one revision costs one revision's work.
    reconciled: Endpoints,
    /// Probers in `probers`, all revisions together.
    count: usize,
    /// Revisions whose healthy pods may have changed since the last publish.
    dirty: HashSet<RevisionKey>,
    /// The published tables, kept to update in place.
    pod_map: PodMap,
    healthy_map: EndpointMap,
    pacing: Arc<Pacing>,
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
            // Whatever else is already queued joins this publish: thousands of probe results
            // (a relist, a mass start) publish a handful of times, not thousands.
            while let Ok((key, addr)) = ejections.try_recv() {
                self.eject(key, addr);
            }
            for _ in 0..RESULT_QUEUE {
                match results.try_recv() {
                    Ok(r) => self.record(r),
                    Err(_) => break,
                }
            }
            self.publish();
        }
    }

    /// Starts probers for new endpoints and stops those of vanished ones, for the revisions
    /// whose discovered entry changed (`diff` skips what two snapshots share).
    fn reconcile(&mut self, discovered: &Endpoints) {
        let old = std::mem::replace(&mut self.reconciled, Arc::clone(discovered));
        for change in old.diff(discovered) {
            match change {
                DiffItem::Remove(key, _) => {
                    // Dropping a prober stops its task.
                    if let Some(gone) = self.probers.remove(key) {
                        self.count -= gone.len();
                    }
                    self.dirty.insert(key.clone());
                }
                DiffItem::Add(key, addrs)
                | DiffItem::Update {
                    new: (key, addrs), ..
                } => {
                    self.sync_probers(key, addrs);
                }
            }
        }
        self.pacing.probers.store(self.count, Ordering::Relaxed);
    }

    /// Makes `key`'s probers exactly one per address of `addrs`.
    fn sync_probers(&mut self, key: &RevisionKey, addrs: &[SocketAddr]) {
        let probers = self.probers.entry(key.clone()).or_default();
        let before = probers.len();
        probers.retain(|addr, _| addrs.contains(addr));
        for addr in addrs {
            if probers.contains_key(addr) {
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
                *addr,
                Inputs {
                    config: self.config.clone(),
                    revisions: self.revisions.clone(),
                    pacing: self.pacing.clone(),
                },
                self.results_tx.clone(),
                prober.epoch.clone(),
                prober.kick.clone(),
                prober.stop.clone(),
            ));
            probers.insert(*addr, prober);
        }
        self.count = self.count - before + probers.len();
        self.dirty.insert(key.clone());
    }

    fn eject(&mut self, key: RevisionKey, addr: SocketAddr) {
        if let Some(p) = self.probers.get_mut(&key).and_then(|m| m.get_mut(&addr)) {
            p.epoch.fetch_add(1, Ordering::AcqRel);
            if p.healthy.is_some() {
                info!(revision = %key, %addr, "Endpoint ejected after a refused connection");
                self.dirty.insert(key);
            }
            p.healthy = None;
            p.kick.notify_one();
        }
    }

    fn record(&mut self, r: ProbeResult) {
        let Some(p) = self
            .probers
            .get_mut(&r.key)
            .and_then(|m| m.get_mut(&r.addr))
        else {
            return;
        };
        if r.epoch != p.epoch.load(Ordering::Acquire) {
            return;
        }
        if p.healthy != r.speaks {
            debug!(revision = %r.key, addr = %r.addr, speaks = ?r.speaks, "Endpoint health changed");
            p.healthy = r.speaks;
            self.dirty.insert(r.key);
        }
    }

    /// Publishes the healthy table when it changed: with protocols first, then addresses
    /// only, so that a reader of either never sees an older table after a newer one of the
    /// other. Only the revisions marked dirty are rebuilt; the others keep their `Arc`.
    fn publish(&mut self) {
        let mut changed = false;
        for key in std::mem::take(&mut self.dirty) {
            let mut pods: Vec<Pod> = self
                .probers
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|(addr, p)| {
                    p.healthy.map(|speaks| Pod {
                        addr: *addr,
                        speaks,
                    })
                })
                .collect();
            // Sorted, so that "first available" and equality checks are stable.
            pods.sort_unstable_by_key(|p| p.addr);
            if pods.is_empty() {
                if self.pod_map.remove(&key).is_some() {
                    self.healthy_map.remove(&key);
                    changed = true;
                }
                continue;
            }
            if self.pod_map.get(&key).is_some_and(|old| **old == *pods) {
                continue;
            }
            self.healthy_map
                .insert(key.clone(), pods.iter().map(|p| p.addr).collect());
            self.pod_map.insert(key, Arc::from(pods));
            changed = true;
        }
        if changed {
            self.pods.send_replace(Arc::new(self.pod_map.clone()));
            self.healthy
                .send_replace(Arc::new(self.healthy_map.clone()));
        }
    }
}

/// Keeps probing bounded however many pods there are: at most `MAX_CONCURRENT_PROBES` at a
/// time, and healthy pods re-probed no faster than `HEALTHY_PROBES_PER_SECOND` in total.
#[derive(Debug)]
struct Pacing {
    slots: Semaphore,
    probers: AtomicUsize,
    /// Probers whose last probe failed.
    failing: AtomicUsize,
}

impl Pacing {
    fn new() -> Self {
        Self {
            slots: Semaphore::new(MAX_CONCURRENT_PROBES),
            probers: AtomicUsize::new(0),
            failing: AtomicUsize::new(0),
        }
    }

    /// How long a pod waits for its next probe: `probe_period` while it fails (stretched
    /// when thousands fail at once), at least `HEALTHY_REPROBE` once healthy (stretched to keep
    /// the total rate bounded); ±20 % jitter, so that pods probed together drift apart
    /// instead of re-probing in waves.
    fn interval(&self, healthy: bool, probe_period: Duration) -> Duration {
        let (n, rate, floor) = if healthy {
            (
                self.probers.load(Ordering::Relaxed),
                HEALTHY_PROBES_PER_SECOND,
                probe_period.max(HEALTHY_REPROBE),
            )
        } else {
            (
                self.failing.load(Ordering::Relaxed),
                FAILING_PROBES_PER_SECOND,
                probe_period,
            )
        };
        let spread = Duration::from_millis((n as u64).saturating_mul(1000) / rate);
        floor.max(spread).mul_f64(rand::random_range(0.8..1.2))
    }
}

/// Counts a prober among the failing ones while it is, including when it stops.
struct Failing<'a> {
    pacing: &'a Pacing,
    now: bool,
}

impl Failing<'_> {
    fn set(&mut self, failing: bool) {
        if failing != self.now {
            if failing {
                self.pacing.failing.fetch_add(1, Ordering::Relaxed);
            } else {
                self.pacing.failing.fetch_sub(1, Ordering::Relaxed);
            }
            self.now = failing;
        }
    }
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// What a prober reads before each probe: the probe settings, the revision's protocol, the
/// shared pacing.
struct Inputs {
    config: watch::Receiver<SharedConfig>,
    revisions: watch::Receiver<Revisions>,
    pacing: Arc<Pacing>,
}

async fn probe_loop(
    key: RevisionKey,
    addr: SocketAddr,
    Inputs {
        config,
        revisions,
        pacing,
    }: Inputs,
    results: mpsc::Sender<ProbeResult>,
    epoch: Arc<AtomicU64>,
    kick: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut failing = Failing {
        pacing: &pacing,
        now: false,
    };
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
        let speaks = tokio::select! {
            () = stop.cancelled() => return,
            speaks = async {
                // The semaphore is never closed.
                let _slot = pacing.slots.acquire().await.ok();
                // Boxed, and only once a slot is held: the probe's state (a connection,
                // buffers) exists for at most `MAX_CONCURRENT_PROBES` probes at a time, so
                // 20,000 probers waiting for their turn stay small.
                Box::pin(probe::probe(
                    cfg.probe_style(),
                    protocol,
                    addr,
                    &a.probe_path,
                    a.probe_timeout,
                    known,
                ))
                .await
            } => speaks,
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
        failing.set(!ok);
        let wait = pacing.interval(ok, a.probe_period);
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
