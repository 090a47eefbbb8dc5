//! The throttler: the routing table (rebuilt when the config or the revisions change) and, per
//! revision, the breaker and endpoint trackers (updated on every healthy-endpoint change).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::{ArcSwap, Guard};
use http::{HeaderMap, Uri};
use imbl::ordmap::DiffItem;
use tokio::sync::watch;

use tracing::Instrument as _;

use super::{
    breaker::{Breaker, UNLIMITED},
    cold_starts::ColdStarts,
    lb::{Balancer, Tracker},
    revision,
    stats::RevisionStats,
    subset,
};
use crate::{
    config::{Config, ProbeStyle, Protocol, SharedConfig},
    endpoints::{Pod, PodMap, Pods},
    revision::{KeyMap, RevisionKey},
    revisions::{RevisionMap, RevisionSpec, Revisions},
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
    /// Recent cold starts, for the status page (written by `body::Completion::cold_start`).
    pub(crate) cold_starts: ColdStarts,
    /// Scale-from-zero pokes this revision's requests asked for (`body::Completion::track`).
    pub(crate) pokes: AtomicU64,
}

impl Revision {
    /// Whether HTTP/1.1 reaches every pod of the revision (see `http1_everywhere`).
    pub(crate) fn http1_everywhere(&self) -> bool {
        self.http1_everywhere.load(Ordering::Relaxed)
    }
}

/// A known revision as a request sees it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) rev: Arc<Revision>,
    pub(crate) container_concurrency: u32,
    pub(crate) timeout: Duration,
    pub(crate) response_start_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) protocol: Protocol,
}

/// The lookup index of one generation of config and revisions.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) settings: Settings,
    cluster_domain: Box<str>,
    /// namespace → name → route; nested so that lookups by `&str` allocate nothing.
    names: HashMap<Box<str>, HashMap<Box<str>, Route>>,
    hosts: HashMap<Box<str>, Route>,
}

impl Table {
    /// Every revision of this generation, in no particular order (the status page sorts).
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.names.values().flat_map(HashMap::values)
    }

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
    /// Builds the table from the current config, revisions and endpoints, then keeps it
    /// current until a channel closes (at process exit, after the drain).
    pub(crate) fn spawn(
        mut config: watch::Receiver<SharedConfig>,
        mut revisions: watch::Receiver<Revisions>,
        mut healthy: watch::Receiver<Pods>,
    ) -> Arc<Self> {
        let mut writer = Writer::default();
        let cfg = config.borrow_and_update().clone();
        let revs = revisions.borrow_and_update().clone();
        let eps = healthy.borrow_and_update().clone();
        let table = writer.rebuild(&cfg, &revs);
        writer.apply(&eps);
        let this = Arc::new(Self {
            table: ArcSwap::from_pointee(table),
        });
        let throttler = this.clone();
        let span = tracing::info_span!("throttler");
        // Detached: it ends when a publisher goes away.
        tokio::spawn(
            async move {
                let mut cfg = cfg;
                let mut revs = revs;
                loop {
                    tokio::select! {
                        changed = config.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            cfg = config.borrow_and_update().clone();
                        }
                        changed = revisions.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            revs = revisions.borrow_and_update().clone();
                        }
                        changed = healthy.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let eps = healthy.borrow_and_update().clone();
                            writer.apply(&eps);
                            continue;
                        }
                    }
                    let table = writer.rebuild(&cfg, &revs);
                    // Routes first, then capacity: a request admitted by new capacity
                    // must find the endpoints it was admitted for.
                    throttler.table.store(Arc::new(table));
                    writer.apply(&healthy.borrow().clone());
                }
            }
            .instrument(span),
        );
        this
    }

    /// The table in force.
    pub(crate) fn load(&self) -> Guard<Arc<Table>> {
        self.table.load()
    }
}

/// One revision as the writer last applied it.
#[derive(Debug)]
struct Entry {
    rev: Arc<Revision>,
    spec: Arc<RevisionSpec>,
}

#[derive(Debug)]
struct Writer {
    revisions: KeyMap<Entry>,
    /// The pods of a revision absent from the healthy table.
    none: Arc<[Pod]>,
    /// The healthy table last applied: the next one is compared with it (`diff`, which skips
    /// what the two share), so an update of one revision's pods visits that revision only.
    applied: PodMap,
    /// Revisions that are new or whose settings changed since the last apply.
    respec: Vec<RevisionKey>,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            revisions: KeyMap::default(),
            none: Arc::from(Vec::new()),
            applied: PodMap::default(),
            respec: Vec::new(),
        }
    }
}

impl Writer {
    fn rebuild(&mut self, cfg: &Config, revs: &RevisionMap) -> Table {
        let mut next = KeyMap::with_capacity_and_hasher(revs.len(), Default::default());
        let mut names: HashMap<Box<str>, HashMap<Box<str>, Route>> = HashMap::new();
        let mut hosts = HashMap::new();
        // Nothing is learned by a TCP probe: HTTP/1.1 is assumed, as the fast path always did.
        let assumed_http1 = cfg.probe_style() == ProbeStyle::Tcp;
        for (key, spec) in revs {
            let rev = match self.revisions.remove(key) {
                Some(e) => {
                    if !Arc::ptr_eq(&e.spec, spec) {
                        self.respec.push(key.clone());
                    }
                    e.rev
                }
                None => {
                    self.respec.push(key.clone());
                    Arc::new(Revision {
                        key: key.clone(),
                        breaker: Arc::new(Breaker::new()),
                        trackers: ArcSwap::from_pointee(Vec::new()),
                        balancer: Balancer::default(),
                        stats: RevisionStats::new(key),
                        http1_everywhere: AtomicBool::new(assumed_http1),
                        cold_starts: ColdStarts::default(),
                        pokes: AtomicU64::new(0),
                    })
                }
            };
            let route = Route {
                rev: rev.clone(),
                // Per destination: a cluster IP stands for every pod, the mesh balances.
                container_concurrency: if spec.cluster_ip.is_some() {
                    0
                } else {
                    spec.container_concurrency
                },
                timeout: spec.timeout,
                response_start_timeout: spec.response_start_timeout,
                idle_timeout: spec.idle_timeout,
                protocol: spec.protocol,
            };
            for h in &spec.hosts {
                hosts.insert(h.as_str().into(), route.clone());
            }
            names
                .entry(key.namespace().into())
                .or_default()
                .insert(key.name().into(), route);
            next.insert(
                key.clone(),
                Entry {
                    rev,
                    spec: spec.clone(),
                },
            );
        }
        // A revision that went away admits nothing more: its waiters are told at once.
        for e in self.revisions.values() {
            e.rev.breaker.set_capacity(0);
            e.rev.breaker.close();
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

    /// Swaps in the trackers (this activator's slice of the healthy pods, with what each
    /// speaks) and then the capacity of every revision whose pods or settings changed.
    fn apply(&mut self, healthy: &PodMap) {
        let mut keys = std::mem::take(&mut self.respec);
        keys.extend(self.applied.diff(healthy).map(|d| match d {
            DiffItem::Add(k, _) | DiffItem::Remove(k, _) | DiffItem::Update { new: (k, _), .. } => {
                k.clone()
            }
        }));
        keys.sort_unstable();
        keys.dedup();
        self.applied = healthy.clone();
        for key in keys {
            if let Some(e) = self.revisions.get(&key) {
                let pods = self.applied.get(&key).unwrap_or(&self.none);
                apply_one(&e.rev, &e.spec, pods);
            }
        }
    }
}

fn apply_one(rev: &Revision, spec: &RevisionSpec, pods: &[Pod]) {
    let cc = spec.container_concurrency;
    let cluster = spec
        .cluster_ip
        .filter(|c| pods.len() == 1 && pods[0].addr == c.addr);
    let mine: Vec<Pod> = if cluster.is_none() && spec.activators.is_some() && cc > 0 {
        let mut sorted = pods.to_vec();
        subset::sort_like_knative(&mut sorted, |p| p.addr);
        let mut mine: Vec<Pod> = subset::assign(sorted.len(), spec.activators, cc)
            .into_iter()
            .map(|i| sorted[i])
            .collect();
        // Sorted by address, as the healthy table is: "first available" stays stable.
        mine.sort_unstable_by_key(|p| p.addr);
        mine
    } else {
        pods.to_vec()
    };
    let old = rev.trackers.load();
    let same = old.len() == mine.len() && old.iter().zip(&mine).all(|(t, p)| t.addr == p.addr);
    let trackers = if same {
        Arc::clone(&old)
    } else {
        Arc::new(
            mine.iter()
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
    for (t, p) in trackers.iter().zip(&mine) {
        t.set_speaks(p.speaks);
    }
    if !mine.is_empty() {
        let everywhere = mine.iter().all(|p| p.speaks.http1);
        rev.http1_everywhere.store(everywhere, Ordering::Relaxed);
    }
    if !same {
        rev.trackers.store(trackers);
    }
    let capacity = match cluster {
        Some(c) => cluster_capacity(cc, c.backends, spec.activators.map_or(1, |a| a.count)),
        None => capacity(cc, mine.len()),
    };
    rev.breaker.set_capacity(capacity);
}

/// Knative's cluster-IP mode capacity: CC × ready pods shared among the activators, at least 1
/// while a pod is ready; unlimited for CC 0.
pub(crate) fn cluster_capacity(
    container_concurrency: u32,
    backends: usize,
    activators: usize,
) -> usize {
    match (container_concurrency, backends) {
        (_, 0) => 0,
        (0, _) => UNLIMITED,
        (cc, n) => ((cc as usize).saturating_mul(n) / activators.max(1)).clamp(1, UNLIMITED),
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
    Writer::default().rebuild(cfg, &crate::revisions::from_config(cfg))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::{HeaderValue, header};

    use super::*;
    use crate::{endpoints::Speaks, revisions::Subset};

    fn revs(cfg: &Config) -> RevisionMap {
        crate::revisions::from_config(cfg)
    }

    #[test]
    fn cluster_ip_capacity_is_shared_among_activators_as_knative_shares_it() {
        // Knative's worked cases: CC 10, 10 backends, 5 activators → 20; 200 activators → 1.
        assert_eq!(cluster_capacity(10, 10, 5), 20);
        assert_eq!(cluster_capacity(10, 10, 200), 1);
        assert_eq!(cluster_capacity(10, 0, 5), 0);
        assert_eq!(cluster_capacity(0, 3, 5), UNLIMITED);
        assert_eq!(cluster_capacity(10, 3, 0), 30);
    }

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
        let t = w.rebuild(&cfg, &revs(&cfg));
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
        let mut eps = PodMap::default();
        eps.insert(rev.key.clone(), Arc::from(vec![pod(1, Speaks::ANY)]));
        w.apply(&eps);
        assert_eq!(rev.breaker.capacity(), 2);
        assert_eq!(rev.trackers.load().len(), 1);
        let _t2 = w.rebuild(&cfg, &revs(&cfg));
        assert!(Arc::ptr_eq(&w.revisions[&rev.key].rev, &rev));
        w.apply(&PodMap::default());
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
        let t = w.rebuild(&cfg, &revs(&cfg));
        let rev = t.get("default", "hello").unwrap().rev.clone();
        // HTTP probes learn: until a pod is known, HTTP/1.1 is not assumed.
        assert!(!rev.http1_everywhere());
        let mut apply = |pods: Vec<Pod>| {
            let mut m = PodMap::default();
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
        w.apply(&PodMap::default());
        assert!(rev.http1_everywhere());

        // TCP probes learn nothing: HTTP/1.1 is assumed from the start.
        let tcp = Config::parse(
            "discovery: static\nactivator:\n  probe_style: tcp\nrevisions:\n  - name: hello\n",
        )
        .unwrap();
        let t = Writer::default().rebuild(&tcp, &revs(&tcp));
        assert!(t.get("default", "hello").unwrap().rev.http1_everywhere());
    }

    #[test]
    fn an_activator_uses_its_slice_and_capacity_follows_the_slice() {
        let cfg = Config::parse("discovery: static\n").unwrap();
        let key = RevisionKey::new("prod", "hello");
        let spec = |cc: u32, activators: Option<Subset>| {
            let mut m = RevisionMap::default();
            m.insert(
                key.clone(),
                Arc::new(RevisionSpec {
                    key: key.clone(),
                    hosts: Vec::new(),
                    container_concurrency: cc,
                    timeout: Duration::from_secs(300),
                    response_start_timeout: None,
                    idle_timeout: None,
                    protocol: Protocol::Http1,
                    activators,
                    cluster_ip: None,
                }),
            );
            m
        };
        let mut w = Writer::default();
        let t = w.rebuild(&cfg, &spec(1, Some(Subset { index: 1, count: 2 })));
        let rev = t.get("prod", "hello").unwrap().rev.clone();
        // Four pods whose address text sorts differently from their numeric order.
        let pods: Vec<Pod> = [(10, 1), (2, 1), (3, 1), (4, 1)]
            .iter()
            .map(|&(last, port)| Pod {
                addr: SocketAddr::from(([10, 0, 0, last], port)),
                speaks: Speaks::HTTP1,
            })
            .collect();
        let mut healthy = PodMap::default();
        healthy.insert(key.clone(), Arc::from(pods));
        w.apply(&healthy);
        // Text order: 10.0.0.10, 10.0.0.2, 10.0.0.3, 10.0.0.4 → index 1 of 2 takes the last two.
        let mine: Vec<String> = rev
            .trackers
            .load()
            .iter()
            .map(|t| t.addr.to_string())
            .collect();
        assert_eq!(mine, ["10.0.0.3:1", "10.0.0.4:1"]);
        assert_eq!(rev.breaker.capacity(), 2);
        // Unlimited concurrency is never sliced.
        let _ = w.rebuild(&cfg, &spec(0, Some(Subset { index: 1, count: 2 })));
        w.apply(&healthy);
        assert_eq!(rev.trackers.load().len(), 4);
        // No known index: every pod, CC × pods.
        let _ = w.rebuild(&cfg, &spec(3, None));
        w.apply(&healthy);
        assert_eq!(rev.trackers.load().len(), 4);
        assert_eq!(rev.breaker.capacity(), 12);

        // Cluster-IP mode: the one destination, CC × ready pods / activators, no per-pod limit.
        let vip = SocketAddr::from(([10, 96, 0, 5], 80));
        let mut mesh = spec(10, Some(Subset { index: 0, count: 5 }));
        if let Some(s) = mesh.get_mut(&key) {
            Arc::make_mut(s).cluster_ip = Some(crate::revisions::ClusterRoute {
                addr: vip,
                backends: 10,
            });
        }
        let t = w.rebuild(&cfg, &mesh);
        assert_eq!(t.get("prod", "hello").unwrap().container_concurrency, 0);
        let mut one = PodMap::default();
        one.insert(
            key.clone(),
            Arc::from(vec![Pod {
                addr: vip,
                speaks: Speaks::HTTP1,
            }]),
        );
        w.apply(&one);
        assert_eq!(rev.trackers.load().len(), 1);
        assert_eq!(rev.breaker.capacity(), 20);
    }

    #[tokio::test]
    async fn a_removed_revision_refuses_its_waiters_at_once() {
        let cfg = Config::parse("discovery: static\nrevisions:\n  - name: hello\n").unwrap();
        let mut w = Writer::default();
        let t = w.rebuild(&cfg, &revs(&cfg));
        let rev = t.get("default", "hello").unwrap().rev.clone();
        let waiter = tokio::spawn({
            let breaker = rev.breaker.clone();
            async move { breaker.acquire(10).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        let t = w.rebuild(&cfg, &RevisionMap::default());
        assert!(t.get("default", "hello").is_none());
        assert_eq!(
            waiter.await.unwrap(),
            Err(super::super::breaker::Refused::Gone)
        );
        // Back again: a fresh revision with a fresh queue.
        let t = w.rebuild(&cfg, &revs(&cfg));
        assert!(!Arc::ptr_eq(&t.get("default", "hello").unwrap().rev, &rev));
    }
}
