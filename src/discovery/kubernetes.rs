//! `discovery: kubernetes`: revision endpoints read from the EndpointSlices of each revision's
//! private Service (`<name><service_suffix>`), as Knative's activator tracks pods.
//!
//! One watcher per namespace, selecting `kubernetes.io/service-name in (<services>)`. Per namespace
//! rather than per revision because kube's client speaks HTTP/1.1 to the API server, so every watch
//! holds a connection: a namespace of a hundred revisions costs one, not a hundred. When the revision
//! list of a namespace changes, a watcher with the new selector is started and the old one keeps
//! feeding the table until the new one has listed, so that re-planning never blanks live revisions.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures_util::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::{debug, warn};

use crate::{
    config::{Config, SharedConfig},
    endpoints::{EndpointMap, Endpoints},
};

/// The label the EndpointSlice controller puts on every slice of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Watches the EndpointSlices of every configured revision and publishes the discovered table.
///
/// The revision list, `kubernetes.service_suffix` and `kubernetes.port_name` are re-read on every
/// config change. The table holds, per revision, the addresses of endpoints whose `ready` condition
/// is not false, with the port named `port_name` (or the slice's only port); it is published only
/// when it changes. Errors from the API server are logged and retried with backoff; the last
/// listed state stays in force meanwhile. Everything stops when `shutdown` is cancelled.
pub fn spawn(
    config: watch::Receiver<SharedConfig>,
    client: Client,
    shutdown: CancellationToken,
) -> watch::Receiver<Endpoints> {
    let (tx, rx) = watch::channel(Endpoints::default());
    tokio::spawn(run(config, client, tx, shutdown));
    rx
}

async fn run(
    mut config: watch::Receiver<SharedConfig>,
    client: Client,
    tx: watch::Sender<Endpoints>,
    shutdown: CancellationToken,
) {
    // Capacity 1: a pending wake-up already means "recompute", so extra ones are dropped.
    let (wake_tx, mut wake_rx) = mpsc::channel(1);
    let mut watchers = Watchers {
        client,
        wake: wake_tx,
        namespaces: HashMap::new(),
    };
    let mut cfg = config.borrow_and_update().clone();
    watchers.plan(&cfg);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                cfg = config.borrow_and_update().clone();
                watchers.plan(&cfg);
            }
            Some(()) = wake_rx.recv() => {}
        }
        watchers.promote_ready();
        let next = Arc::new(watchers.table(&cfg));
        tx.send_if_modified(|cur| {
            if **cur == *next {
                false
            } else {
                debug!(revisions = next.len(), "Discovered endpoints changed");
                *cur = next;
                true
            }
        });
    }
}

/// The namespace watchers; owned by the one task that publishes the table.
struct Watchers {
    client: Client,
    wake: mpsc::Sender<()>,
    namespaces: HashMap<String, Namespace>,
}

struct Namespace {
    /// The watcher whose store feeds the table.
    current: SliceWatch,
    /// A watcher with a newer selector, listing; replaces `current` once it has listed.
    next: Option<SliceWatch>,
}

impl Namespace {
    fn planned(&self) -> &BTreeSet<String> {
        &self.next.as_ref().unwrap_or(&self.current).services
    }
}

/// One running watcher: its selector's services, its reflector store, its task.
struct SliceWatch {
    services: BTreeSet<String>,
    store: Store<EndpointSlice>,
    _task: AbortOnDropHandle<()>,
}

impl SliceWatch {
    fn start(
        client: Client,
        namespace: &str,
        services: BTreeSet<String>,
        wake: mpsc::Sender<()>,
    ) -> Self {
        let selector = selector(&services);
        debug!(namespace, %selector, "Watching EndpointSlices");
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().labels(&selector)).default_backoff(),
        );
        let namespace = namespace.to_owned();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    // A (re)list is buffered by the reflector until InitDone: nothing visible yet.
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => {
                        let _ = wake.try_send(());
                    }
                    Err(error) => {
                        warn!(%error, namespace, "EndpointSlice watch failed; retrying");
                    }
                }
            }
        });
        Self {
            services,
            store,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// Whether the first list has been applied to the store.
    fn is_ready(&self) -> bool {
        matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(())))
    }
}

impl Watchers {
    /// Starts, replaces or stops watchers so that they select exactly the configured services.
    fn plan(&mut self, cfg: &Config) {
        let wanted = wanted_services(cfg);
        // Dropping a watcher aborts its task.
        self.namespaces.retain(|ns, _| wanted.contains_key(ns));
        for (ns, services) in wanted {
            match self.namespaces.get_mut(&ns) {
                None => {
                    let current =
                        SliceWatch::start(self.client.clone(), &ns, services, self.wake.clone());
                    self.namespaces.insert(
                        ns,
                        Namespace {
                            current,
                            next: None,
                        },
                    );
                }
                Some(n) if *n.planned() == services => {}
                // Planned back before the successor listed: the serving watcher already fits.
                Some(n) if n.current.services == services => n.next = None,
                Some(n) => {
                    let watch =
                        SliceWatch::start(self.client.clone(), &ns, services, self.wake.clone());
                    // Keep a listed store serving until its successor has listed; an unlisted
                    // one has nothing to serve.
                    if n.current.is_ready() {
                        n.next = Some(watch);
                    } else {
                        n.current = watch;
                        n.next = None;
                    }
                }
            }
        }
    }

    /// Lets every successor watcher that has listed take over from its predecessor.
    fn promote_ready(&mut self) {
        for n in self.namespaces.values_mut() {
            if n.next.as_ref().is_some_and(SliceWatch::is_ready)
                && let Some(next) = n.next.take()
            {
                n.current = next;
            }
        }
    }

    /// The discovered table for the configured revisions, from the serving stores.
    fn table(&self, cfg: &Config) -> EndpointMap {
        let k = &cfg.kubernetes;
        let mut by_service: HashMap<&str, BTreeMap<String, Vec<Arc<EndpointSlice>>>> =
            HashMap::new();
        for (ns, n) in &self.namespaces {
            let slices = by_service.entry(ns.as_str()).or_default();
            for slice in n.current.store.state() {
                if let Some(service) = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                {
                    slices
                        .entry(service.clone())
                        .or_default()
                        .push(slice.clone());
                }
            }
        }
        let mut map = EndpointMap::new();
        for r in &cfg.revisions {
            let service = format!("{}{}", r.name, k.service_suffix);
            let Some(slices) = by_service
                .get(r.namespace.as_str())
                .and_then(|s| s.get(&service))
            else {
                continue;
            };
            let addrs: BTreeSet<SocketAddr> = slices
                .iter()
                .flat_map(|s| ready_addresses(s, &k.port_name))
                .collect();
            if !addrs.is_empty() {
                map.insert(r.key(), addrs.into_iter().collect());
            }
        }
        map
    }
}

/// The services each namespace must watch: `<name><service_suffix>` of its revisions.
fn wanted_services(cfg: &Config) -> BTreeMap<String, BTreeSet<String>> {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &cfg.revisions {
        wanted
            .entry(r.namespace.clone())
            .or_default()
            .insert(format!("{}{}", r.name, cfg.kubernetes.service_suffix));
    }
    wanted
}

/// The label selector matching the slices of `services` (non-empty, sorted for a stable string).
fn selector(services: &BTreeSet<String>) -> String {
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    format!("{SERVICE_NAME_LABEL} in ({})", names.join(","))
}

/// Addresses of the endpoints in `slice` that are not known to be unready, with its `port_name`
/// port. FQDN slices and slices without a usable port contribute nothing.
fn ready_addresses(slice: &EndpointSlice, port_name: &str) -> Vec<SocketAddr> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Vec::new();
    }
    let Some(port) = slice_port(slice, port_name) else {
        debug!(
            slice = slice.metadata.name.as_deref().unwrap_or_default(),
            port_name, "EndpointSlice has no usable port"
        );
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        // Kubernetes: a nil `ready` is to be read as ready.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The port named `name`, else the only port of the slice.
fn slice_port(slice: &EndpointSlice, name: &str) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = match ports.iter().find(|p| p.name.as_deref() == Some(name)) {
        Some(p) => p,
        None => match ports {
            [only] => only,
            _ => return None,
        },
    };
    // An absent port number means "all ports": there is no single one to dial.
    u16::try_from(port.port?).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests;
