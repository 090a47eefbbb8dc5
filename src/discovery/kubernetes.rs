//! `discovery: kubernetes`: revisions, their pods and this activator's subset, watched from the
//! Kubernetes API exactly where Knative's activator reads them.
//!
//! Three watches (list + watch, relisting after `410 Gone`, backing off on errors), both
//! cluster-wide or in `kubernetes.namespace`, and nothing that Knative's activator ClusterRole
//! does not grant (revisions, endpoints: get/list/watch):
//! - `serving.knative.dev/v1` Revisions → the revisions table (containerConcurrency, timeouts,
//!   protocol), with `revisions[]` entries of the config file overriding per revision;
//! - core/v1 Endpoints of each revision's Services → its *private* ones give the pods (ready and
//!   not-ready addresses, all probed before use), its *public* ones the activators in its path,
//!   from which this replica's index (`POD_IP`) and the activator count follow;
//! - core/v1 private Services → their cluster IPs, dialled instead of the pods with
//!   `kubernetes.mesh: enabled` (Knative's cluster-IP mode).
//!
//! In adapter mode a fourth watch reads Knative's networking Ingresses (KIngress, see
//! [`super::kingress`]) into the route table the adapter's ext_authz and Mixer CHECK read.
//!
//! One task owns every table here and publishes snapshots; the data path never calls the API.
//! Until every watch has listed once, `/readyz` fails; afterwards an unreachable or refusing
//! API server keeps the last known state in force (and is counted).

mod objects;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use futures_util::{FutureExt as _, Stream, StreamExt as _, stream::BoxStream};
use k8s_openapi::api::core::v1::{Endpoints as KubeEndpoints, Service};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

pub(super) use self::objects::key_of;
use self::objects::{Addresses, ClusterIp, KnativeRevision, ServiceType};
use super::{
    Discovered,
    kingress::{Ingresses, KIngress, Routes},
};
use crate::{
    admin::SyncGate,
    config::{Config, MeshMode, Protocol, SharedConfig},
    endpoints::{EndpointMap, Endpoints},
    metrics,
    revision::RevisionKey,
    revisions::{self, ClusterRoute, RevisionMap, RevisionSpec, Revisions, Subset},
};

/// Events taken from a watch before the tables are republished: a relist of thousands of
/// objects publishes once, not once per object.
const BATCH: usize = 4096;

/// Starts the watches; the tables are published on the returned receivers until `shutdown`.
///
/// `pod_ip` is this activator's address (`POD_IP`), for subsetting; `ingresses` adds the
/// KIngress watch (adapter mode: the activator's ClusterRole does not grant it); `synced` is
/// released once every watch has listed.
pub fn spawn(
    config: watch::Receiver<SharedConfig>,
    client: Client,
    pod_ip: Option<IpAddr>,
    ingresses: bool,
    synced: SyncGate,
    shutdown: CancellationToken,
) -> Discovered {
    let cfg = config.borrow().clone();
    let (revisions_tx, revisions) = watch::channel(Arc::new(revisions::from_config(&cfg)));
    let (endpoints_tx, endpoints) = watch::channel(Endpoints::default());
    let (routes_tx, routes) = watch::channel(Routes::default());
    let namespace = cfg.kubernetes.namespace.clone();
    metrics::set_kubernetes_synced(false);
    let resources: &[&'static str] = if ingresses {
        &["revisions", "endpoints", "services", "ingresses"]
    } else {
        &["revisions", "endpoints", "services"]
    };
    for resource in resources {
        ::metrics::counter!(metrics::KUBERNETES_WATCH_ERRORS, "resource" => *resource).absolute(0);
    }
    let source = Source {
        state: State {
            pod_ip,
            ..State::default()
        },
        revisions_tx,
        endpoints_tx,
        ingresses: ingresses.then(|| (Ingresses::default(), routes_tx)),
    };
    info!(
        namespace = namespace.as_deref().unwrap_or("(all)"),
        pod_ip = ?pod_ip,
        ingresses,
        "Watching Knative Revisions and Endpoints"
    );
    tokio::spawn(
        source
            .run(config, client, namespace, synced, shutdown)
            .instrument(tracing::info_span!("kubernetes_discovery")),
    );
    Discovered {
        revisions,
        endpoints,
        routes,
    }
}

/// The writer of both tables.
struct Source {
    state: State,
    revisions_tx: watch::Sender<Revisions>,
    endpoints_tx: watch::Sender<Endpoints>,
    /// The KIngress objects and the route table's sender, when watched.
    ingresses: Option<(Ingresses, watch::Sender<Routes>)>,
}

impl Source {
    async fn run(
        mut self,
        mut config: watch::Receiver<SharedConfig>,
        client: Client,
        namespace: Option<String>,
        synced: SyncGate,
        shutdown: CancellationToken,
    ) {
        let (revs_api, eps_api, svc_api, ing_api): (
            Api<KnativeRevision>,
            Api<KubeEndpoints>,
            Api<Service>,
            Api<KIngress>,
        ) = match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };
        let mut revs = watcher(revs_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut eps = watcher(
            eps_api,
            watcher::Config::default().labels(objects::ENDPOINTS_SELECTOR),
        )
        .default_backoff()
        .boxed();
        // Private Services give each revision's cluster IP, for `kubernetes.mesh: enabled`.
        let mut svcs = watcher(
            svc_api,
            watcher::Config::default().labels(objects::ENDPOINTS_SELECTOR),
        )
        .default_backoff()
        .boxed();
        let mut ings: BoxStream<'static, _> = if self.ingresses.is_some() {
            watcher(ing_api, watcher::Config::default())
                .default_backoff()
                .boxed()
        } else {
            futures_util::stream::pending().boxed()
        };
        let mut cfg = config.borrow_and_update().clone();
        let mut synced = Some(synced);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    cfg = config.borrow_and_update().clone();
                    self.state.mark_all();
                }
                Some(event) = revs.next() => self.state.on_revision(event),
                Some(event) = eps.next() => self.state.on_endpoints(event),
                Some(event) = svcs.next() => self.state.on_service(event),
                Some(event) = ings.next() => self.on_ingress(event),
            }
            take_ready(&mut revs, |e| self.state.on_revision(e));
            take_ready(&mut eps, |e| self.state.on_endpoints(e));
            take_ready(&mut svcs, |e| self.state.on_service(e));
            take_ready(&mut ings, |e| self.on_ingress(e));
            let ingresses_listed = self.ingresses.as_ref().is_none_or(|(i, _)| i.listed());
            if !self.state.listed() || !ingresses_listed {
                continue;
            }
            self.publish(&cfg);
            if let Some(gate) = synced.take() {
                info!(
                    revisions = self.state.revisions.len(),
                    "Kubernetes discovery synced"
                );
                metrics::set_kubernetes_synced(true);
                gate.release();
            }
        }
    }

    fn on_ingress(&mut self, event: Result<watcher::Event<KIngress>, watcher::Error>) {
        if let Some((ingresses, _)) = &mut self.ingresses {
            ingresses.on_event(event);
        }
    }

    /// Recomputes what changed and publishes every table, each only if it changed.
    fn publish(&mut self, cfg: &Config) {
        if let Some((ingresses, tx)) = &mut self.ingresses
            && let Some(table) = ingresses.rebuild()
        {
            tx.send_replace(table);
        }
        let (revs_changed, eps_changed) = self.state.recompute(cfg);
        // `recompute` compared per revision already: no whole-table comparison here.
        if revs_changed {
            let next = Arc::new(self.state.revisions.clone());
            self.revisions_tx.send_replace(next);
        }
        if eps_changed {
            let next = Arc::new(self.state.endpoints.clone());
            self.endpoints_tx.send_replace(next);
        }
    }
}

/// Everything the watches have told, and the tables derived from it.
#[derive(Default)]
struct State {
    pod_ip: Option<IpAddr>,
    /// Revisions as the API has them (no config overrides, no subset).
    api: HashMap<RevisionKey, Arc<RevisionSpec>>,
    /// Private Endpoints: the pods, ready and not.
    private: HashMap<RevisionKey, Addresses>,
    /// Public Endpoints: ready addresses only.
    public: HashMap<RevisionKey, Addresses>,
    /// Private Services' cluster IPs.
    services: HashMap<RevisionKey, ClusterIp>,
    /// This activator's place per revision. Kept when it drops out of a revision's public
    /// Endpoints, as Knative keeps it, until the revision goes.
    subsets: HashMap<RevisionKey, Subset>,
    /// A relist in progress, per watch: applied whole at `InitDone`.
    relist_revisions: Option<HashMap<RevisionKey, Arc<RevisionSpec>>>,
    relist_endpoints: Option<(
        HashMap<RevisionKey, Addresses>,
        HashMap<RevisionKey, Addresses>,
    )>,
    relist_services: Option<HashMap<RevisionKey, ClusterIp>>,
    revisions_listed: bool,
    endpoints_listed: bool,
    services_listed: bool,
    /// Revisions whose derived entries must be recomputed; `all` after a config change.
    dirty: HashSet<RevisionKey>,
    all_dirty: bool,
    /// The published tables, kept to update in place.
    revisions: RevisionMap,
    endpoints: EndpointMap,
}

impl State {
    fn listed(&self) -> bool {
        self.revisions_listed && self.endpoints_listed && self.services_listed
    }

    fn mark_all(&mut self) {
        self.all_dirty = true;
    }

    fn on_revision(&mut self, event: Result<watcher::Event<KnativeRevision>, watcher::Error>) {
        let event = match event {
            Ok(e) => e,
            Err(error) => return watch_failed("revisions", &error),
        };
        let spec = |r: &KnativeRevision| {
            let key = objects::key_of(&r.metadata)?;
            Some((key.clone(), Arc::new(objects::spec_of(key, &r.spec))))
        };
        match event {
            watcher::Event::Init => self.relist_revisions = Some(HashMap::new()),
            watcher::Event::InitApply(r) => {
                if let (Some(buf), Some((key, spec))) = (self.relist_revisions.as_mut(), spec(&r)) {
                    buf.insert(key, spec);
                }
            }
            watcher::Event::InitDone => {
                if let Some(buf) = self.relist_revisions.take() {
                    swap_in(&mut self.api, buf, &mut self.dirty);
                }
                self.revisions_listed = true;
            }
            watcher::Event::Apply(r) => {
                if let Some((key, spec)) = spec(&r) {
                    // An unchanged spec (a status update) keeps its `Arc`: nothing downstream moves.
                    if self.api.get(&key).is_none_or(|old| **old != *spec) {
                        self.api.insert(key.clone(), spec);
                        self.dirty.insert(key);
                    }
                }
            }
            watcher::Event::Delete(r) => {
                if let Some(key) = objects::key_of(&r.metadata) {
                    debug!(revision = %key, "Revision deleted");
                    self.api.remove(&key);
                    self.dirty.insert(key);
                }
            }
        }
    }

    fn on_endpoints(&mut self, event: Result<watcher::Event<KubeEndpoints>, watcher::Error>) {
        let event = match event {
            Ok(e) => e,
            Err(error) => return watch_failed("endpoints", &error),
        };
        match event {
            watcher::Event::Init => {
                self.relist_endpoints = Some((HashMap::new(), HashMap::new()));
            }
            watcher::Event::InitApply(eps) => {
                if let (Some((private, public)), Some((key, kind))) = (
                    self.relist_endpoints.as_mut(),
                    objects::classify(&eps.metadata),
                ) {
                    match kind {
                        ServiceType::Private => private.insert(key, Addresses::of(&eps, true)),
                        ServiceType::Public => public.insert(key, Addresses::of(&eps, false)),
                    };
                }
            }
            watcher::Event::InitDone => {
                if let Some((private, public)) = self.relist_endpoints.take() {
                    swap_in(&mut self.private, private, &mut self.dirty);
                    swap_in(&mut self.public, public, &mut self.dirty);
                }
                self.endpoints_listed = true;
            }
            watcher::Event::Apply(eps) => {
                let Some((key, kind)) = objects::classify(&eps.metadata) else {
                    return;
                };
                let map = match kind {
                    ServiceType::Private => &mut self.private,
                    ServiceType::Public => &mut self.public,
                };
                let next = Addresses::of(&eps, kind == ServiceType::Private);
                if map.get(&key) != Some(&next) {
                    map.insert(key.clone(), next);
                    self.dirty.insert(key);
                }
            }
            watcher::Event::Delete(eps) => {
                if let Some((key, kind)) = objects::classify(&eps.metadata) {
                    match kind {
                        ServiceType::Private => self.private.remove(&key),
                        ServiceType::Public => self.public.remove(&key),
                    };
                    self.dirty.insert(key);
                }
            }
        }
    }

    fn on_service(&mut self, event: Result<watcher::Event<Service>, watcher::Error>) {
        let event = match event {
            Ok(e) => e,
            Err(error) => return watch_failed("services", &error),
        };
        let entry = |svc: &Service| Some((objects::private_service(svc)?, ClusterIp::of(svc)?));
        match event {
            watcher::Event::Init => self.relist_services = Some(HashMap::new()),
            watcher::Event::InitApply(svc) => {
                if let (Some(buf), Some((key, ip))) = (self.relist_services.as_mut(), entry(&svc)) {
                    buf.insert(key, ip);
                }
            }
            watcher::Event::InitDone => {
                if let Some(buf) = self.relist_services.take() {
                    swap_in(&mut self.services, buf, &mut self.dirty);
                }
                self.services_listed = true;
            }
            watcher::Event::Apply(svc) => {
                if let Some(key) = objects::private_service(&svc) {
                    let next = ClusterIp::of(&svc);
                    if self.services.get(&key) != next.as_ref() {
                        match next {
                            Some(ip) => self.services.insert(key.clone(), ip),
                            None => self.services.remove(&key),
                        };
                        self.dirty.insert(key);
                    }
                }
            }
            watcher::Event::Delete(svc) => {
                if let Some(key) = objects::private_service(&svc) {
                    self.services.remove(&key);
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// Brings the published tables up to date for every dirty revision; returns which changed.
    fn recompute(&mut self, cfg: &Config) -> (bool, bool) {
        let keys: Vec<RevisionKey> = if std::mem::take(&mut self.all_dirty) {
            self.dirty.clear();
            let mut all: HashSet<RevisionKey> = self.api.keys().cloned().collect();
            all.extend(self.revisions.keys().cloned());
            all.extend(self.private.keys().cloned());
            all.extend(self.public.keys().cloned());
            all.extend(cfg.revisions.iter().map(|r| r.key()));
            all.into_iter().collect()
        } else {
            self.dirty.drain().collect()
        };
        let (mut revs_changed, mut eps_changed) = (false, false);
        for key in keys {
            let spec = self.spec(cfg, &key);
            let addrs = spec.as_ref().map(|s| self.pods(cfg, s)).unwrap_or_default();
            match spec {
                Some(spec) => {
                    if self.revisions.get(&key).is_none_or(|old| **old != spec) {
                        self.revisions.insert(key.clone(), Arc::new(spec));
                        revs_changed = true;
                    }
                }
                None => {
                    if self.revisions.remove(&key).is_some() {
                        revs_changed = true;
                    }
                    self.subsets.remove(&key);
                }
            }
            if addrs.is_empty() {
                eps_changed |= self.endpoints.remove(&key).is_some();
            } else if self.endpoints.get(&key).is_none_or(|old| **old != *addrs) {
                self.endpoints.insert(key, Arc::from(addrs));
                eps_changed = true;
            }
        }
        (revs_changed, eps_changed)
    }

    /// A revision's settings: its `revisions[]` entry if the config has one, else the API's;
    /// with this activator's subset.
    fn spec(&mut self, cfg: &Config, key: &RevisionKey) -> Option<RevisionSpec> {
        let mut spec = match cfg.revision(key) {
            Some(r) => RevisionSpec::from_config(r),
            None => (**self.api.get(key)?).clone(),
        };
        let port = port_name(cfg, spec.protocol, true);
        if let (Some(own), Some(public)) = (self.pod_ip, self.public.get(key)) {
            let ips = public.ips(port);
            if let Some(index) = objects::index_of(&ips, own) {
                let subset = Subset {
                    index,
                    count: ips.len(),
                };
                if self.subsets.insert(key.clone(), subset) != Some(subset) {
                    info!(revision = %key, index, count = ips.len(), "Activator index changed");
                }
            }
        }
        spec.activators = self.subsets.get(key).copied();
        if cfg.kubernetes.mesh == MeshMode::Enabled {
            let port = port_name(cfg, spec.protocol, true);
            spec.cluster_ip = self
                .services
                .get(key)
                .and_then(|svc| svc.socket(port))
                .map(|addr| ClusterRoute {
                    addr,
                    backends: self.private.get(key).map_or(0, |p| p.ips(port).len()),
                });
        }
        Some(spec)
    }

    /// The pods of a revision: its private Endpoints' addresses on the port of its protocol.
    /// In cluster-IP mode, the cluster IP while a pod is ready behind it.
    fn pods(&self, cfg: &Config, spec: &RevisionSpec) -> Vec<std::net::SocketAddr> {
        if let Some(cluster) = spec.cluster_ip {
            return if cluster.backends > 0 {
                vec![cluster.addr]
            } else {
                Vec::new()
            };
        }
        let Some(private) = self.private.get(&spec.key) else {
            return Vec::new();
        };
        let pods = private.sockets(port_name(cfg, spec.protocol, false));
        if pods.is_empty() && spec.protocol == Protocol::Auto {
            return private.sockets(objects::PORT_H2C);
        }
        if pods.is_empty() && !private.is_empty() {
            debug!(revision = %spec.key, "Private Endpoints list no port for the revision's protocol");
        }
        pods
    }
}

/// Applies the events a watch has ready now, up to [`BATCH`], without waiting.
fn take_ready<S: Stream + Unpin>(stream: &mut S, mut apply: impl FnMut(S::Item)) {
    for _ in 0..BATCH {
        match stream.next().now_or_never() {
            Some(Some(event)) => apply(event),
            _ => break,
        }
    }
}

/// Replaces `current` with a completed relist, marking every key either side knows dirty.
pub(super) fn swap_in<K: Eq + std::hash::Hash + Clone, V>(
    current: &mut HashMap<K, V>,
    relisted: HashMap<K, V>,
    dirty: &mut HashSet<K>,
) {
    let old = std::mem::replace(current, relisted);
    dirty.extend(old.into_keys());
    dirty.extend(current.keys().cloned());
}

/// The Service port name for `protocol`: `http2` for h2c, else `kubernetes.port_name`
/// (`http`, Knative's). `public` Endpoints always use Knative's names.
fn port_name(cfg: &Config, protocol: Protocol, public: bool) -> &str {
    match protocol {
        Protocol::H2c => objects::PORT_H2C,
        _ if public => objects::PORT_HTTP1,
        _ => &cfg.kubernetes.port_name,
    }
}

pub(super) fn watch_failed(resource: &'static str, error: &watcher::Error) {
    metrics::count_kubernetes_error(resource);
    warn!(%error, resource, "Kubernetes watch failed; retrying with backoff (last known state stays in force)");
}

#[cfg(test)]
mod tests;
