//! Knative drop-in: the real binary finds Revisions and their Endpoints in a fake API server through `$KUBECONFIG`, with no `revisions[]`.
//!
//! The first tests check the fake API server itself against kube's own client (paging, label
//! selectors, watches, bookmarks, 410, 403, an unreachable server), so that what the binary is
//! tested against behaves as the real API server does.
#![allow(clippy::unwrap_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints};
use kube::{
    Api,
    api::{ListParams, WatchEvent, WatchParams},
    core::DynamicObject,
    runtime::watcher,
};
use support::{
    apiserver::{
        FakeApiServer, Protocol, Requirement, config_map, parse_selector, private_endpoints,
        public_endpoints, revision,
    },
    autoscaler::FakeAutoscaler,
    backend::{QueueProxy, queue_proxies},
    binary::{Running, start_activator_env},
    cluster::Cluster,
    wait,
};
use tokio::{task::JoinHandle, time::Instant};

const WAIT: Duration = Duration::from_secs(15);
const NS: &str = "apps";
/// The selector kactivator's Endpoints watch sends (existence terms).
const ENDPOINTS_SELECTOR: &str =
    "serving.knative.dev/revision,networking.internal.knative.dev/serviceType";

fn revisions_api(api: &FakeApiServer, ns: Option<&str>) -> Api<DynamicObject> {
    let resource = kube::api::ApiResource {
        group: "serving.knative.dev".into(),
        version: "v1".into(),
        api_version: "serving.knative.dev/v1".into(),
        kind: "Revision".into(),
        plural: "revisions".into(),
    };
    match ns {
        Some(ns) => Api::namespaced_with(api.client(), ns, &resource),
        None => Api::all_with(api.client(), &resource),
    }
}

// --- The fake API server itself -----------------------------------------------------------

#[test]
fn label_selectors_parse_every_form_kube_sends() {
    use Requirement::*;
    let parsed =
        parse_selector("a=1,b==2,c!=3,d in (x, y),e notin (z),f,!g,app.kubernetes.io/name")
            .unwrap();
    assert_eq!(
        parsed,
        vec![
            Equals("a".into(), "1".into()),
            Equals("b".into(), "2".into()),
            NotEquals("c".into(), "3".into()),
            In("d".into(), vec!["x".into(), "y".into()]),
            NotIn("e".into(), vec!["z".into()]),
            Exists("f".into()),
            NotExists("g".into()),
            Exists("app.kubernetes.io/name".into()),
        ]
    );
    for bad in ["a in (x", "a)", "a in x", "a b"] {
        assert!(parse_selector(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn the_fake_pages_lists_and_filters_by_namespace_and_labels() {
    let api = FakeApiServer::start().await;
    for i in 0..7 {
        let ns = if i % 2 == 0 { "a" } else { "b" };
        api.apply(revision(ns, &format!("r{i}"), 1, Protocol::Http1));
        api.apply(private_endpoints(
            ns,
            &format!("r{i}"),
            &[],
            &[],
            "http",
            8012,
        ));
        api.apply(public_endpoints(ns, &format!("r{i}"), &["10.0.0.1"]));
    }
    // An Endpoints of a plain Service: no Knative labels.
    let mut plain = private_endpoints("a", "x", &["10.9.9.9"], &[], "http", 80);
    plain["metadata"]["labels"] = serde_json::json!({"app": "x"});
    plain["metadata"]["name"] = "x".into();
    api.apply(plain);

    let endpoints: Api<Endpoints> = Api::all(api.client());
    let lp = ListParams::default().labels(ENDPOINTS_SELECTOR).limit(4);
    let first = endpoints.list(&lp).await.unwrap();
    assert_eq!(first.items.len(), 4);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|e| e.metadata.name.clone().unwrap())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let page = endpoints
            .list(&lp.clone().continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        names.extend(page.items.iter().map(|e| e.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    assert_eq!(names.len(), 14, "{names:?}");
    assert!(!names.contains(&"x".to_owned()));

    let private = endpoints
        .list(&ListParams::default().labels(
            "networking.internal.knative.dev/serviceType=Private,serving.knative.dev/revision in (r1,r3)",
        ))
        .await
        .unwrap();
    let got: Vec<_> = private
        .items
        .iter()
        .map(|e| e.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(got, ["r1-private", "r3-private"]);

    let in_b: Api<Endpoints> = Api::namespaced(api.client(), "b");
    let got = in_b
        .list(&ListParams::default().labels("!app,serving.knative.dev/revision"))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 0, "every Knative Endpoints has `app`");
    let got = in_b
        .list(&ListParams::default().labels("networking.internal.knative.dev/serviceType!=Public"))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 3);

    assert_eq!(
        revisions_api(&api, None)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        7
    );
    assert_eq!(
        revisions_api(&api, Some("a"))
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );

    api.apply(config_map(
        "knative-serving",
        "config-logging",
        &[("loglevel.activator", "info")],
    ));
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "knative-serving");
    let cm = cms.get("config-logging").await.unwrap();
    assert_eq!(cm.data.unwrap()["loglevel.activator"], "info");
    let missing = cms.get("config-observability").await.unwrap_err();
    assert!(
        matches!(missing, kube::Error::Api(ref s) if s.code == 404),
        "{missing:?}"
    );

    let bad = endpoints
        .list(&ListParams::default().labels("a in (x"))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, kube::Error::Api(ref s) if s.code == 400),
        "{bad:?}"
    );
}

#[tokio::test]
async fn kube_runtime_watchers_list_watch_relist_after_410_and_resume_after_drops() {
    let api = FakeApiServer::start().await;
    for i in 0..5 {
        api.apply(revision(NS, &format!("r{i}"), 1, Protocol::Http1));
    }
    let config = watcher::Config::default().page_size(2);
    let mut events = watcher(revisions_api(&api, None), config).boxed();
    let mut next_result = async || match tokio::time::timeout(WAIT, events.next()).await {
        Ok(event) => event.unwrap(),
        Err(_) => panic!("no watcher event; requests {:?}", api.request_log()),
    };
    let mut next = async || next_result().await.unwrap();
    let mut listed = 0;
    loop {
        match next().await {
            watcher::Event::Init => {}
            watcher::Event::InitApply(_) => listed += 1,
            watcher::Event::InitDone => break,
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(listed, 5);
    let lists = api.list_requests();
    assert_eq!(lists.len(), 3, "5 items in pages of 2: {lists:?}");
    assert!(lists[1].contains("continue="), "{lists:?}");

    api.apply(revision(NS, "r5", 1, Protocol::Http1));
    assert!(
        matches!(next().await, watcher::Event::Apply(o) if o.metadata.name.as_deref() == Some("r5"))
    );
    let watch = &api.watch_requests()[0];
    assert!(watch.contains("allowWatchBookmarks=true"), "{watch}");

    // A dropped watch resumes from the last resource version: the change made meanwhile arrives.
    api.drop_watches();
    api.delete_kind("Revision", NS, "r0");
    assert!(
        matches!(next().await, watcher::Event::Delete(o) if o.metadata.name.as_deref() == Some("r0"))
    );
    assert_eq!(api.list_requests().len(), 3, "no relist after a drop");

    // Compaction while the watcher is away and behind: its re-watch gets an in-stream 410 and it
    // relists.
    api.set_down(true).await;
    api.apply(revision(NS, "r6", 1, Protocol::Http1));
    api.compact();
    api.set_down(false).await;
    let mut errors = Vec::new();
    loop {
        match next_result().await {
            Ok(watcher::Event::Init) => break,
            Ok(e) => panic!("expected a relist, got {e:?}"),
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(errors.iter().any(|e| e.contains("Expired")), "{errors:?}");
    let mut relisted = Vec::new();
    loop {
        match next_result().await.unwrap() {
            watcher::Event::InitApply(o) => relisted.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(relisted, ["r1", "r2", "r3", "r4", "r5", "r6"]);
}

#[tokio::test]
async fn watches_get_bookmarks_and_expired_ones_a_410() {
    let api = FakeApiServer::start().await;
    api.set_bookmark_interval(Duration::from_millis(50));
    api.apply(revision(NS, "r0", 1, Protocol::Http1));
    let revisions = revisions_api(&api, Some(NS));
    let rv = api.resource_version().to_string();
    let wp = WatchParams::default().timeout(5);
    let mut stream = revisions.watch(&wp, &rv).await.unwrap().boxed();
    api.apply(revision(NS, "r1", 1, Protocol::Http1));
    let mut saw_bookmark = false;
    let mut saw_added = false;
    while !(saw_bookmark && saw_added) {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("r1"));
                saw_added = true;
            }
            WatchEvent::Bookmark(b) => {
                assert!(b.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse().unwrap());
                saw_bookmark = true;
            }
            e => panic!("{e:?}"),
        }
    }
    drop(stream);

    api.compact();
    let mut stream = revisions.watch(&wp, &rv).await.unwrap().boxed();
    match tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        e => panic!("{e:?}"),
    }
    api.set_gone_as_http(true);
    // kube reads the status of the request itself as an error.
    let Some(err) = revisions.watch(&wp, &rv).await.err() else {
        panic!("expected HTTP 410");
    };
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_fake_forbids_and_goes_down_on_demand() {
    let api = FakeApiServer::start().await;
    let revisions = revisions_api(&api, None);
    api.forbid("revisions");
    let err = revisions.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    let endpoints: Api<Endpoints> = Api::all(api.client());
    endpoints.list(&ListParams::default()).await.unwrap();
    api.allow("revisions");
    api.forbid_next(1);
    assert!(endpoints.list(&ListParams::default()).await.is_err());
    revisions.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        api.request_log()
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [403, 200, 403, 200]
    );

    api.set_down(true).await;
    let refused = tokio::net::TcpStream::connect(api.addr()).await;
    assert!(refused.is_err(), "the port should refuse");
    assert!(revisions.list(&ListParams::default()).await.is_err());
    api.set_down(false).await;
    revisions.list(&ListParams::default()).await.unwrap();
}

// --- The binary against the fake ------------------------------------------------------------

impl Cluster {
    /// The binary with `discovery: kubernetes`, no `revisions[]`, as activator `pod_ip`.
    fn activator(&self, pod_ip: &str) -> Running {
        let dir = self.dir.path().join(pod_ip);
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = self.api.write_kubeconfig(&dir);
        let yaml = format!(
            "discovery: kubernetes\nautoscaler:\n  url: {}\nactivator:\n  probe_period: 50ms\n",
            self.autoscaler.url()
        );
        start_activator_env(
            &dir,
            &yaml,
            None,
            &[
                ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                ("POD_IP", pod_ip),
                ("RUST_LOG", "info,kactivator=debug"),
            ],
        )
    }

    /// An activator whose `/readyz` answered 200 (first sync done).
    async fn ready_activator(&self, pod_ip: &str) -> Running {
        let a = self.activator(pod_ip);
        wait_ready(&a, self.dir.path()).await;
        a
    }
}

async fn readyz(a: &Running) -> Option<u16> {
    support::binary::try_get(a.ports.admin, "/readyz", Duration::from_secs(2))
        .await
        .map(|(s, _)| s)
}

async fn wait_ready(a: &Running, dir: &std::path::Path) {
    wait::until(
        format_args!("/readyz 200 (logs in {})", dir.display()),
        async || readyz(a).await == Some(200),
    )
    .await;
}

/// A GET routed by the `Knative-Serving-*` headers; `None` when the connection fails or takes
/// longer than `limit`. Returns (status, body).
async fn get(addr: SocketAddr, ns: &str, rev: &str, limit: Duration) -> Option<(u16, String)> {
    let head = format!(
        "GET /hello HTTP/1.1\r\nHost: {rev}.{ns}.svc.cluster.local\r\nKnative-Serving-Revision: {rev}\r\nKnative-Serving-Namespace: {ns}\r\nConnection: close\r\n\r\n"
    );
    support::binary::try_exchange(addr, &head, limit).await
}

fn spawn_get(a: &Running, ns: &str, rev: &str) -> JoinHandle<Option<(u16, String)>> {
    let (addr, ns, rev) = (a.ports.http, ns.to_owned(), rev.to_owned());
    tokio::spawn(async move { get(addr, &ns, &rev, Duration::from_secs(60)).await })
}

async fn finish(h: JoinHandle<Option<(u16, String)>>) -> (u16, String) {
    tokio::time::timeout(WAIT, h)
        .await
        .expect("request answered")
        .unwrap()
        .expect("a response")
}

/// Whether the autoscaler was poked for `ns/rev`.
fn poked(autoscaler: &FakeAutoscaler, ns: &str, rev: &str) -> bool {
    autoscaler.frames().iter().any(|f| {
        f.protobuf()
            .messages
            .iter()
            .any(|m| m.namespace == ns && m.name == rev)
    })
}

async fn metrics(a: &Running) -> String {
    support::binary::try_get(a.ports.admin, "/metrics", Duration::from_secs(2))
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// Requests of `revision` waiting in `a`'s queue.
async fn queued(a: &Running, revision: &str) -> f64 {
    let line = format!(
        "kn_revision_request_queued{{k8s_namespace_name=\"{NS}\",kn_revision_name=\"{revision}\"}}"
    );
    support::app::metric_value(&metrics(a).await, &line).unwrap_or(0.0)
}

#[tokio::test]
async fn a_revision_only_in_the_api_holds_its_request_until_a_probed_pod_is_published() {
    let c = Cluster::start().await;
    c.api.apply(revision(NS, "hello-00001", 0, Protocol::Http1));
    c.api
        .apply(private_endpoints(NS, "hello-00001", &[], &[], "http", 8012));
    c.api
        .apply(public_endpoints(NS, "hello-00001", &["127.0.0.1"]));
    let a = c.ready_activator("127.0.0.1").await;

    let watches = c.api.watch_requests();
    assert!(
        watches
            .iter()
            .any(|w| w.starts_with("/apis/serving.knative.dev/v1/revisions?")),
        "{watches:?}"
    );
    assert!(
        watches.iter().any(|w| w.starts_with("/api/v1/endpoints?")
            && w.contains("labelSelector=serving.knative.dev%2Frevision%2Cnetworking.internal.knative.dev%2FserviceType")),
        "{watches:?}"
    );

    let held = spawn_get(&a, NS, "hello-00001");
    wait::until("the autoscaler poked", async || {
        poked(&c.autoscaler, NS, "hello-00001")
    })
    .await;
    assert!(!held.is_finished());

    // The pod is published not ready and fails its probe: the request stays held.
    let pod = QueueProxy::start().await;
    pod.set_ready(false);
    let ip = pod.addr.ip().to_string();
    c.api.apply(private_endpoints(
        NS,
        "hello-00001",
        &[],
        &[&ip],
        "http",
        pod.addr.port(),
    ));
    wait::until("the pod probed", async || pod.probes() >= 2).await;
    assert!(!held.is_finished());
    assert_eq!(pod.hits(), 0);

    pod.set_ready(true);
    let (status, body) = finish(held).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("pod: {}", pod.addr)), "{body}");
    assert_eq!(pod.hits(), 1);
}

#[tokio::test]
async fn container_concurrency_1_admits_one_request_per_pod() {
    let c = Cluster::start().await;
    let (port, pods) = queue_proxies(&["127.0.0.11", "127.0.0.12"]).await;
    for p in &pods {
        p.hold(true);
    }
    c.api.apply(revision(NS, "cc1-00001", 1, Protocol::Http1));
    c.api.apply(private_endpoints(
        NS,
        "cc1-00001",
        &["127.0.0.11", "127.0.0.12"],
        &[],
        "http",
        port,
    ));
    c.api
        .apply(public_endpoints(NS, "cc1-00001", &["127.0.0.1"]));
    let a = c.ready_activator("127.0.0.1").await;

    let requests: Vec<_> = (0..4).map(|_| spawn_get(&a, NS, "cc1-00001")).collect();
    wait::until("one request in each pod", async || {
        pods.iter().all(|p| p.in_flight() == 1)
    })
    .await;
    // The other two wait in the activator's queue, not at the pods.
    wait::until("two requests queued", async || {
        queued(&a, "cc1-00001").await == 2.0
    })
    .await;
    assert_eq!(
        pods.iter().map(QueueProxy::in_flight).collect::<Vec<_>>(),
        [1, 1]
    );
    for p in &pods {
        p.hold(false);
    }
    for r in requests {
        assert_eq!(finish(r).await.0, 200);
    }
    assert_eq!(
        pods.iter()
            .map(QueueProxy::max_in_flight)
            .collect::<Vec<_>>(),
        [1, 1]
    );
    assert_eq!(pods.iter().map(QueueProxy::hits).sum::<usize>(), 4);
}

#[tokio::test]
async fn two_activators_split_four_pods_two_and_two() {
    let c = Cluster::start().await;
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"];
    let (port, pods) = queue_proxies(&ips).await;
    for p in &pods {
        p.hold(true);
    }
    c.api.apply(revision(NS, "split-00001", 1, Protocol::Http1));
    c.api.apply(private_endpoints(
        NS,
        "split-00001",
        &ips,
        &[],
        "http",
        port,
    ));
    c.api.apply(public_endpoints(
        NS,
        "split-00001",
        &["127.0.0.2", "127.0.0.1"],
    ));
    let first = c.ready_activator("127.0.0.1").await;
    let second = c.ready_activator("127.0.0.2").await;
    let in_flight = || pods.iter().map(QueueProxy::in_flight).collect::<Vec<_>>();

    // Activator 0 of 2 (127.0.0.1 sorts first) owns the first two pods by "ip:port": capacity
    // 1 × 2, so of four requests two reach its pods and two wait, none on the other pods.
    let mut requests: Vec<_> = (0..4)
        .map(|_| spawn_get(&first, NS, "split-00001"))
        .collect();
    wait::until("the first activator fills its pods", async || {
        in_flight() == [1, 1, 0, 0]
    })
    .await;
    wait::until("two requests queued in the first", async || {
        queued(&first, "split-00001").await == 2.0
    })
    .await;
    assert_eq!(in_flight(), [1, 1, 0, 0]);

    requests.extend((0..4).map(|_| spawn_get(&second, NS, "split-00001")));
    wait::until("the second activator fills its pods", async || {
        in_flight() == [1, 1, 1, 1]
    })
    .await;
    wait::until("two requests queued in the second", async || {
        queued(&second, "split-00001").await == 2.0
    })
    .await;
    assert_eq!(in_flight(), [1, 1, 1, 1]);

    for p in &pods {
        p.hold(false);
    }
    for r in requests {
        assert_eq!(finish(r).await.0, 200);
    }
    // Each activator's four requests went to its own two pods only, one at a time per pod (which
    // of the two took more depends on the load-balancing policy).
    let hits: Vec<usize> = pods.iter().map(QueueProxy::hits).collect();
    assert_eq!([hits[0] + hits[1], hits[2] + hits[3]], [4, 4], "{hits:?}");
    assert_eq!(
        pods.iter()
            .map(QueueProxy::max_in_flight)
            .collect::<Vec<_>>(),
        [1, 1, 1, 1]
    );
}

#[tokio::test]
async fn a_deleted_revision_ends_its_queued_requests_with_an_error() {
    let c = Cluster::start().await;
    c.api.apply(revision(NS, "gone-00001", 0, Protocol::Http1));
    c.api
        .apply(private_endpoints(NS, "gone-00001", &[], &[], "http", 8012));
    let a = c.ready_activator("127.0.0.1").await;

    let held = spawn_get(&a, NS, "gone-00001");
    wait::until("the autoscaler poked", async || {
        poked(&c.autoscaler, NS, "gone-00001")
    })
    .await;
    let deleted = Instant::now();
    c.api.delete_kind("Revision", NS, "gone-00001");
    let (status, body) = finish(held).await;
    // Far sooner than the revision's 300 s timeout, and not a gateway timeout.
    assert!(deleted.elapsed() < Duration::from_secs(5));
    assert!(
        (400..600).contains(&status) && status != 504 && status != 408,
        "{status} {body}"
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("revision deleted"), "{body}");
    // A new request for it is refused at once too.
    let (status, _) = get(a.ports.http, NS, "gone-00001", WAIT).await.unwrap();
    assert!((400..600).contains(&status) && status != 504);
}

#[tokio::test]
async fn expired_and_dropped_watches_recover() {
    let c = Cluster::start().await;
    c.api.apply(revision(NS, "w-00001", 0, Protocol::Http1));
    c.api
        .apply(private_endpoints(NS, "w-00001", &[], &[], "http", 8012));
    let a = c.ready_activator("127.0.0.1").await;
    let lists = c.api.list_requests().len();

    // Dropped watches: the binary watches again from where it was; a pod published afterwards
    // serves a held request.
    let watches = c.api.watch_requests().len();
    c.api.drop_watches();
    c.api.wait_watches(watches + 2).await;
    let pod = QueueProxy::start().await;
    let held = spawn_get(&a, NS, "w-00001");
    c.api.apply(private_endpoints(
        NS,
        "w-00001",
        &[&pod.addr.ip().to_string()],
        &[],
        "http",
        pod.addr.port(),
    ));
    assert_eq!(finish(held).await.0, 200);

    // Compaction: the re-watches get 410 and the binary lists again; a change made while the
    // log was lost (the pod replaced) is picked up from the new list.
    let pod2 = QueueProxy::start().await;
    c.api.set_down(true).await;
    c.api.apply(private_endpoints(
        NS,
        "w-00001",
        &[&pod2.addr.ip().to_string()],
        &[],
        "http",
        pod2.addr.port(),
    ));
    c.api.compact();
    drop(pod);
    c.api.set_down(false).await;
    c.api
        .wait_requests("a relist after 410", |log| {
            log.iter().filter(|r| !r.uri.contains("watch=true")).count() > lists
        })
        .await;
    let (status, body) = get(a.ports.http, NS, "w-00001", WAIT).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("pod: {}", pod2.addr)), "{body}");
}

#[tokio::test]
async fn a_403_before_the_first_sync_keeps_readyz_503_and_shows_in_metrics() {
    let c = Cluster::start().await;
    c.api.forbid("revisions");
    c.api.apply(revision(NS, "f-00001", 0, Protocol::Http1));
    let a = c.activator("127.0.0.1");
    c.api
        .wait_requests("a refused revisions request", |log| {
            log.iter().filter(|r| r.status == 403).count() >= 2
        })
        .await;
    assert_eq!(readyz(&a).await, Some(503));
    let m = metrics(&a).await;
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
    };
    assert!(value("kactivator_kubernetes_watch_errors_total{resource=\"revisions\"}") >= 1.0);
    assert_eq!(value("kactivator_kubernetes_synced"), 0.0);
    c.api.allow("revisions");
    wait_ready(&a, c.dir.path()).await;
    assert_eq!(
        metrics(&a)
            .await
            .lines()
            .find(|l| l.starts_with("kactivator_kubernetes_synced ")),
        Some("kactivator_kubernetes_synced 1")
    );
}

#[tokio::test]
async fn after_the_first_sync_an_unreachable_api_keeps_the_last_state() {
    let c = Cluster::start().await;
    let pod = QueueProxy::start().await;
    c.api.apply(revision(NS, "keep-00001", 0, Protocol::Http1));
    c.api.apply(private_endpoints(
        NS,
        "keep-00001",
        &[&pod.addr.ip().to_string()],
        &[],
        "http",
        pod.addr.port(),
    ));
    c.api
        .apply(public_endpoints(NS, "keep-00001", &["127.0.0.1"]));
    let a = c.ready_activator("127.0.0.1").await;
    assert_eq!(
        get(a.ports.http, NS, "keep-00001", WAIT).await.unwrap().0,
        200
    );

    c.api.set_down(true).await;
    // Served throughout a few seconds of the client's reconnect attempts.
    let until = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    while Instant::now() < until {
        let (status, body) = get(a.ports.http, NS, "keep-00001", WAIT).await.unwrap();
        assert_eq!(status, 200, "{body}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 10);
    assert_eq!(
        readyz(&a).await,
        Some(200),
        "an API outage is no reason to leave the Service"
    );
    assert_eq!(pod.hits(), served + 1);
}
