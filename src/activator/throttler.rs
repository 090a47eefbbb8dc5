//! The throttler: the routing table (rebuilt on config change) and, per revision, the
//! breaker and endpoint trackers (updated on every healthy-endpoint change).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::{ArcSwap, Guard};
use http::{HeaderMap, Uri};
use tokio::sync::watch;

use super::{
    breaker::{Breaker, UNLIMITED},
    lb::{Balancer, Tracker},
    revision,
    stats::RevisionStats,
};
use crate::{
    config::{Config, ProbeStyle, Protocol, SharedConfig},
    endpoints::{PodMap, Pods},
    revision::RevisionKey,
};

/// Hot-reloadable settings every request reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) queue_depth: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) max_header_bytes: usize,
    /// How long a client connection may go with no request in flight and no complete head.
    pub(crate) idle_timeout: Duration,
}

/// One revision's live state; the same `Arc` survives config reloads.
#[derive(Debug)]
pub(crate) struct Revision {
    pub(crate) key: RevisionKey,
    pub(crate) breaker: Arc<Breaker>,
    /// Healthy endpoints, sorted by address.
    pub(crate) trackers: ArcSwap<Vec<Arc<Tracker>>>,
    pub(crate) balancer: Balancer,
    pub(crate) stats: RevisionStats,
    /// Every healthy pod speaks HTTP/1.1, as last known (kept while the revision has none, so
    /// that a cold start goes as the last one did); until a pod is known, whether probes assume
    /// it (`tcp`). Lets the fast path (HTTP/1.1 upstream only) take an `auto` revision.
    http1_everywhere: AtomicBool,
}

impl Revision {
    /// Whether HTTP/1.1 reaches every pod of the revision (see `http1_everywhere`).
    pub(crate) fn http1_everywhere(&self) -> bool {
        self.http1_everywhere.load(Ordering::Relaxed)
    }
}

/// A configured revision as a request sees it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) rev: Arc<Revision>,
    pub(crate) container_concurrency: u32,
    pub(crate) timeout: Duration,
    pub(crate) protocol: Protocol,
}

/// The lookup index of one config generation.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) settings: Settings,
    cluster_domain: Box<str>,
    /// namespace → name → route; nested so that lookups by `&str` allocate nothing.
    names: HashMap<Box<str>, HashMap<Box<str>, Route>>,
    hosts: HashMap<Box<str>, Route>,
}

impl Table {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&Route> {
        self.names.get(namespace)?.get(name)
    }

    /// The revision a request is for: headers, else a Service host, else a configured host.
    pub(crate) fn route(&self, headers: &HeaderMap, uri: &Uri) -> Option<&Route> {
        self.lookup(
            revision::from_headers(headers),
            revision::host(headers, uri).as_deref(),
        )
    }

    /// `route` from its inputs: the `(namespace, name)` of the Knative headers, and the host
    /// (lowercase, without port).
    pub(crate) fn lookup(&self, names: Option<(&str, &str)>, host: Option<&str>) -> Option<&Route> {
        if let Some((namespace, name)) = names {
            return self.get(namespace, name);
        }
        let host = host?;
        if let Some((namespace, name)) = revision::from_service_host(host, &self.cluster_domain)
            && let Some(route) = self.get(namespace, name)
        {
            return Some(route);
        }
        self.hosts.get(host)
    }
}

/// Owner of the table; one writer task, lock-free readers.
#[derive(Debug)]
pub(crate) struct Throttler {
    table: ArcSwap<Table>,
}

impl Throttler {
    /// Builds the table from the current config and endpoints, then keeps it current until
    /// either channel closes (at process exit, after the drain).
    pub(crate) fn spawn(
        mut config: watch::Receiver<SharedConfig>,
        mut healthy: watch::Receiver<Pods>,
    ) -> Arc<Self> {
        let mut writer = Writer::default();
        let cfg = config.borrow_and_update().clone();
        let eps = healthy.borrow_and_update().clone();
        let table = writer.rebuild(&cfg);
        writer.apply(&eps);
        let this = Arc::new(Self {
            table: ArcSwap::from_pointee(table),
        });
        let throttler = this.clone();
        // Detached: it ends when the config or endpoint publisher goes away.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = config.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let cfg = config.borrow_and_update().clone();
                        let table = writer.rebuild(&cfg);
                        // Routes first, then capacity: a request admitted by new capacity
                        // must find the endpoints it was admitted for.
                        throttler.table.store(Arc::new(table));
                        writer.apply(&healthy.borrow().clone());
                    }
                    changed = healthy.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let eps = healthy.borrow_and_update().clone();
                        writer.apply(&eps);
                    }
                }
            }
        });
        this
    }

    /// The table in force.
    pub(crate) fn load(&self) -> Guard<Arc<Table>> {
        self.table.load()
    }
}

#[derive(Debug, Default)]
struct Writer {
    /// Every configured revision with its container concurrency.
    revisions: HashMap<RevisionKey, (Arc<Revision>, u32)>,
}

impl Writer {
    fn rebuild(&mut self, cfg: &Config) -> Table {
        let mut next = HashMap::with_capacity(cfg.revisions.len());
        let mut names: HashMap<Box<str>, HashMap<Box<str>, Route>> = HashMap::new();
        let mut hosts = HashMap::new();
        // Nothing is learned by a TCP probe: HTTP/1.1 is assumed, as the fast path always did.
        let assumed_http1 = cfg.probe_style() == ProbeStyle::Tcp;
        for r in &cfg.revisions {
            let key = r.key();
            let rev = match self.revisions.get(&key) {
                Some((rev, _)) => rev.clone(),
                None => Arc::new(Revision {
                    key: key.clone(),
                    breaker: Arc::new(Breaker::new()),
                    trackers: ArcSwap::from_pointee(Vec::new()),
                    balancer: Balancer::default(),
                    stats: RevisionStats::new(&key),
                    http1_everywhere: AtomicBool::new(assumed_http1),
                }),
            };
            let route = Route {
                rev: rev.clone(),
                container_concurrency: r.container_concurrency,
                timeout: r.timeout,
                protocol: r.protocol,
            };
            for h in &r.hosts {
                hosts.insert(h.to_ascii_lowercase().into_boxed_str(), route.clone());
            }
            names
                .entry(r.namespace.as_str().into())
                .or_default()
                .insert(r.name.as_str().into(), route);
            next.insert(key, (rev, r.container_concurrency));
        }
        // A revision dropped from the config keeps no capacity; its waiters time out.
        for (key, (rev, _)) in &self.revisions {
            if !next.contains_key(key) {
                rev.breaker.set_capacity(0);
            }
        }
        self.revisions = next;
        let a = &cfg.activator;
        Table {
            settings: Settings {
                queue_depth: a.queue_depth,
                queue_timeout: a.queue_timeout,
                max_retries: a.max_retries,
                max_header_bytes: a.max_header_bytes,
                idle_timeout: a.idle_timeout,
            },
            cluster_domain: cfg.cluster_domain.to_ascii_lowercase().into_boxed_str(),
            names,
            hosts,
        }
    }

    /// Swaps in each revision's healthy endpoints (with what each speaks), then sets its
    /// capacity.
    fn apply(&self, healthy: &PodMap) {
        for (key, (rev, cc)) in &self.revisions {
            let pods = healthy.get(key).map_or(&[][..], |a| &a[..]);
            let old = rev.trackers.load();
            let same =
                old.len() == pods.len() && old.iter().zip(pods).all(|(t, p)| t.addr == p.addr);
            let trackers = if same {
                Arc::clone(&old)
            } else {
                Arc::new(
                    pods.iter()
                        .map(|p| {
                            // Keep the tracker (and its in-flight count) of a pod that stays.
                            old.iter()
                                .find(|t| t.addr == p.addr)
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Tracker::new(p.addr)))
                        })
                        .collect::<Vec<_>>(),
                )
            };
            // Before the store: a new tracker is never picked with a protocol not learned.
            for (t, p) in trackers.iter().zip(pods) {
                t.set_speaks(p.speaks);
            }
            if !pods.is_empty() {
                let everywhere = pods.iter().all(|p| p.speaks.http1);
                rev.http1_everywhere.store(everywhere, Ordering::Relaxed);
            }
            if !same {
                rev.trackers.store(trackers);
            }
            rev.breaker.set_capacity(capacity(*cc, pods.len()));
        }
    }
}

/// Revision-wide capacity: CC × endpoints; CC 0 is unlimited once one endpoint is healthy.
pub(crate) fn capacity(container_concurrency: u32, endpoints: usize) -> usize {
    match (container_concurrency, endpoints) {
        (_, 0) => 0,
        (0, _) => UNLIMITED,
        (cc, n) => (cc as usize).saturating_mul(n).min(UNLIMITED),
    }
}

/// A table built from `cfg` alone, for other modules' tests and the fuzzing shim.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn test_table(cfg: &Config) -> Table {
    Writer::default().rebuild(cfg)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::{HeaderValue, header};

    use super::*;
    use crate::endpoints::{Pod, Speaks};

    #[test]
    fn capacity_follows_container_concurrency_and_endpoints() {
        assert_eq!(capacity(0, 0), 0);
        assert_eq!(capacity(0, 1), UNLIMITED);
        assert_eq!(capacity(10, 0), 0);
        assert_eq!(capacity(10, 3), 30);
        assert_eq!(capacity(u32::MAX, 1 << 20), UNLIMITED);
    }

    #[tokio::test]
    async fn table_routes_by_headers_service_host_and_configured_host() {
        let cfg = Config::parse(
            "revisions:\n  - name: hello\n    namespace: prod\n    hosts: [Api.Example.com]\n    container_concurrency: 2\n",
        )
        .unwrap();
        let mut w = Writer::default();
        let t = w.rebuild(&cfg);
        let uri = Uri::from_static("/");
        let route = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            t.route(&h, &uri).map(|r| r.rev.key.to_string())
        };
        let want = Some("prod/hello".to_string());
        assert_eq!(
            route(&[
                ("knative-serving-revision", "hello"),
                ("knative-serving-namespace", "prod")
            ]),
            want
        );
        assert_eq!(route(&[("host", "hello.prod.svc.cluster.local:80")]), want);
        assert_eq!(route(&[("host", "API.example.com:8080")]), want);
        assert_eq!(route(&[("host", "other.prod.svc.cluster.local")]), None);
        assert_eq!(
            route(&[
                ("knative-serving-revision", "nope"),
                ("knative-serving-namespace", "prod"),
                (header::HOST.as_str(), "api.example.com")
            ]),
            None
        );

        // Endpoints set capacity; the Revision survives a reload.
        let rev = t
            .route(
                &{
                    let mut h = HeaderMap::new();
                    h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
                    h
                },
                &uri,
            )
            .unwrap()
            .rev
            .clone();
        let mut eps = PodMap::new();
        eps.insert(rev.key.clone(), Arc::from(vec![pod(1, Speaks::ANY)]));
        w.apply(&eps);
        assert_eq!(rev.breaker.capacity(), 2);
        assert_eq!(rev.trackers.load().len(), 1);
        let _t2 = w.rebuild(&cfg);
        assert!(Arc::ptr_eq(&w.revisions[&rev.key].0, &rev));
        w.apply(&PodMap::new());
        assert_eq!(rev.breaker.capacity(), 0);
    }

    fn pod(port: u16, speaks: Speaks) -> Pod {
        Pod {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            speaks,
        }
    }

    #[test]
    fn trackers_learn_what_each_pod_speaks_and_the_fast_path_flag_survives_zero_pods() {
        let cfg = Config::parse("discovery: static\nrevisions:\n  - name: hello\n").unwrap();
        let mut w = Writer::default();
        let t = w.rebuild(&cfg);
        let rev = t.get("default", "hello").unwrap().rev.clone();
        // HTTP probes learn: until a pod is known, HTTP/1.1 is not assumed.
        assert!(!rev.http1_everywhere());
        let apply = |pods: Vec<Pod>| {
            let mut m = PodMap::new();
            m.insert(rev.key.clone(), Arc::from(pods));
            w.apply(&m);
        };
        apply(vec![pod(1, Speaks::HTTP1), pod(2, Speaks::ANY)]);
        assert!(rev.http1_everywhere());
        let first = rev.trackers.load()[0].clone();
        // Re-learned on the same trackers (in-flight counts kept).
        apply(vec![pod(1, Speaks::H2C), pod(2, Speaks::ANY)]);
        assert!(Arc::ptr_eq(&first, &rev.trackers.load()[0]));
        assert_eq!(first.speaks(), Speaks::H2C);
        assert!(!rev.http1_everywhere());
        // A new tracker carries its pod's protocols from the start.
        apply(vec![pod(3, Speaks::HTTP1)]);
        assert_eq!(rev.trackers.load()[0].speaks(), Speaks::HTTP1);
        assert!(rev.http1_everywhere());
        // Scaled to zero: the last knowledge stays for the next cold start.
        w.apply(&PodMap::new());
        assert!(rev.http1_everywhere());

        // TCP probes learn nothing: HTTP/1.1 is assumed from the start.
        let tcp = Config::parse(
            "discovery: static\nactivator:\n  probe_style: tcp\nrevisions:\n  - name: hello\n",
        )
        .unwrap();
        let t = Writer::default().rebuild(&tcp);
        assert!(t.get("default", "hello").unwrap().rev.http1_everywhere());
    }
}
