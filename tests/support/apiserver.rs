//! A fake Kubernetes API server on 127.0.0.1:0: paged lists, watches and GETs of Knative Revisions and Ingresses (KIngress), core Endpoints, ConfigMaps and EndpointSlices.
//!
//! Requests look like kube-runtime's list-then-watch. `GET <collection>?labelSelector=..&limit=500`
//! answers one page with the list's `resourceVersion` and a `continue` token when more items
//! follow; `?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=T` streams JSON
//! lines (`{"type":"ADDED","object":{..}}`), first replaying logged events newer than N, then live
//! ones, with a BOOKMARK every [`FakeApiServer::set_bookmark_interval`] when asked for. One
//! resource version counter serves every kind, as etcd's revision does, so a re-watch after a
//! dropped stream resumes without losing events.
//!
//! A watch from a compacted resource version gets, like the real API server (its watch cache
//! answers "once we have passed authn/authz/admission" with an ERROR event, not an HTTP error),
//! `200` and one `ERROR` event carrying a `410 Expired` Status; [`FakeApiServer::set_gone_as_http`]
//! answers `410` on the request instead. A list continued with a token older than the compaction
//! gets HTTP `410` (what the real server answers for an expired `continue`).

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::SocketAddr,
    ops::Bound,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{broadcast, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// The kinds served, by `(apiVersion, plural)`; anything else is `404 NotFound`.
const RESOURCES: &[Resource] = &[
    Resource {
        api_version: "serving.knative.dev/v1",
        plural: "revisions",
        kind: "Revision",
    },
    Resource {
        api_version: "v1",
        plural: "endpoints",
        kind: "Endpoints",
    },
    Resource {
        api_version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
    },
    // The lead's discovery also lists and watches private Services (cluster IPs for
    // `kubernetes.mesh: enabled`); readiness waits for that list too.
    Resource {
        api_version: "v1",
        plural: "services",
        kind: "Service",
    },
    Resource {
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
    },
    // Knative's networking Ingress (KIngress), watched by the adapter.
    Resource {
        api_version: "networking.internal.knative.dev/v1alpha1",
        plural: "ingresses",
        kind: "Ingress",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub api_version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

impl Resource {
    fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.api_version == api_version && r.kind == kind)
    }

    fn by_plural(api_version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.api_version == api_version && r.plural == plural)
    }
}

/// Most events the log keeps; older ones are compacted away (as etcd and the watch cache do), so
/// that a long bench cannot grow the fake without bound.
const LOG_CAPACITY: usize = 200_000;
/// Most request log entries kept.
const REQUEST_LOG_CAPACITY: usize = 100_000;
/// Watches end after at most this long whatever `timeoutSeconds` says.
const MAX_WATCH: Duration = Duration::from_secs(1800);

/// One request as received: method, path and query (as sent), and the status answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub uri: String,
    pub status: u16,
}

pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Shared>,
    /// Cancelled to close the listener and every connection (see [`FakeApiServer::set_down`]).
    serving: Mutex<Option<CancellationToken>>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

struct Inner {
    resource_version: u64,
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(&'static str, String, String), Arc<Value>>,
    log: std::collections::VecDeque<Arc<Event>>,
    /// Watches from a resource version older than this are expired (see [`FakeApiServer::compact`]).
    compacted: u64,
    gone_as_http: bool,
    /// Requests still to be answered 403 Forbidden (see [`FakeApiServer::forbid_next`]).
    forbidden_next: usize,
    /// Plurals answered 403 until allowed again (see [`FakeApiServer::forbid`]).
    forbidden: BTreeSet<String>,
    bookmark_interval: Duration,
    requests: std::collections::VecDeque<Logged>,
    /// Cancelled (and replaced) to end every open watch stream.
    watches: CancellationToken,
}

struct Event {
    resource_version: u64,
    plural: &'static str,
    namespace: String,
    object: Arc<Value>,
    /// The watch line, serialised once for every watcher.
    line: Bytes,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Serves on `addr` (a fixed port when a test must restart it on the same address).
    pub async fn start_on(addr: &str) -> Self {
        let (events, _) = broadcast::channel(4096);
        let state = Arc::new(Shared {
            inner: Mutex::new(Inner {
                resource_version: 100,
                objects: BTreeMap::new(),
                log: std::collections::VecDeque::new(),
                compacted: 0,
                gone_as_http: false,
                forbidden_next: 0,
                forbidden: BTreeSet::new(),
                bookmark_interval: Duration::from_secs(1),
                requests: std::collections::VecDeque::new(),
                watches: CancellationToken::new(),
            }),
            events,
        });
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = serve(listener, state.clone());
        Self {
            addr,
            state,
            serving: Mutex::new(Some(serving)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file's text whose current context points at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]
users: [{{name: fake, user: {{}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]
current-context: fake
",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `dir/kubeconfig` and returns its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig()).unwrap();
        path
    }

    /// A client whose cluster URL is this server (plain HTTP, no credentials).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces an object (ADDED or MODIFIED), keyed by its kind, namespace and name.
    /// Returns the resource version it got.
    pub fn apply(&self, mut object: Value) -> u64 {
        let resource = resource_of(&object);
        let (namespace, name) = key_of(&object);
        let mut inner = self.state.inner.lock();
        inner.resource_version += 1;
        let rv = inner.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        let key = (resource.plural, namespace.clone(), name);
        let kind = match inner.objects.insert(key, object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        self.log(&mut inner, resource.plural, namespace, kind, object);
        rv
    }

    /// Applies many objects, one event each (a bench's initial population).
    pub fn apply_all(&self, objects: impl IntoIterator<Item = Value>) {
        for o in objects {
            self.apply(o);
        }
    }

    /// Deletes an object of `kind` (`Revision`, `Endpoints`, `ConfigMap`, `EndpointSlice`)
    /// (DELETED); unknown objects are ignored.
    pub fn delete_kind(&self, kind: &str, namespace: &str, name: &str) {
        let resource = RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("fake apiserver: unknown kind {kind}"));
        let mut inner = self.state.inner.lock();
        let key = (resource.plural, namespace.to_owned(), name.to_owned());
        let Some(object) = inner.objects.remove(&key) else {
            return;
        };
        inner.resource_version += 1;
        let mut object = (*object).clone();
        object["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
        self.log(
            &mut inner,
            resource.plural,
            namespace.into(),
            "DELETED",
            Arc::new(object),
        );
    }

    /// Deletes an EndpointSlice (what the first version of this fake served).
    pub fn delete(&self, namespace: &str, name: &str) {
        self.delete_kind("EndpointSlice", namespace, name);
    }

    /// The stored object of `kind`, if any.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = RESOURCES.iter().find(|r| r.kind == kind)?;
        let inner = self.state.inner.lock();
        let key = (resource.plural, namespace.to_owned(), name.to_owned());
        inner.objects.get(&key).map(|o| (**o).clone())
    }

    fn log(
        &self,
        inner: &mut Inner,
        plural: &'static str,
        namespace: String,
        kind: &'static str,
        object: Arc<Value>,
    ) {
        let mut line = json!({"type": kind, "object": &*object}).to_string();
        line.push('\n');
        let event = Arc::new(Event {
            resource_version: inner.resource_version,
            plural,
            namespace,
            object,
            line: Bytes::from(line),
        });
        inner.log.push_back(event.clone());
        while inner.log.len() > LOG_CAPACITY {
            if let Some(old) = inner.log.pop_front() {
                inner.compacted = old.resource_version;
            }
        }
        // No receiver just means no watch is open; the log replays it later.
        let _ = self.state.events.send(event);
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.state.inner.lock().resource_version
    }

    /// Ends every open watch stream (as an API server restart or a load balancer timeout does).
    pub fn drop_watches(&self) {
        let mut inner = self.state.inner.lock();
        inner.watches.cancel();
        inner.watches = CancellationToken::new();
    }

    /// Forgets the event log, as etcd compaction does: a re-watch from an older resource version
    /// is expired (an ERROR event with code 410, or HTTP 410 with [`Self::set_gone_as_http`]) and
    /// the client must list again.
    pub fn compact(&self) {
        let mut inner = self.state.inner.lock();
        inner.log.clear();
        inner.compacted = inner.resource_version;
    }

    /// Expired watches get HTTP 410 on the request rather than a `200` with an ERROR event.
    pub fn set_gone_as_http(&self, on: bool) {
        self.state.inner.lock().gone_as_http = on;
    }

    /// Answers the next `n` requests `403 Forbidden`, as a missing RBAC binding does.
    pub fn forbid_next(&self, n: usize) {
        self.state.inner.lock().forbidden_next = n;
    }

    /// Answers every request for `plural` (`revisions`, `endpoints`, ...) `403 Forbidden` until
    /// [`Self::allow`].
    pub fn forbid(&self, plural: &str) {
        self.state.inner.lock().forbidden.insert(plural.to_owned());
    }

    pub fn allow(&self, plural: &str) {
        self.state.inner.lock().forbidden.remove(plural);
    }

    /// How often a watch that asked for bookmarks gets one (1 s by default).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.state.inner.lock().bookmark_interval = every;
    }

    /// `true`: the listener is closed and every connection dropped (connections are refused, as
    /// with an unreachable API server); `false`: serving again on the same address.
    pub async fn set_down(&self, down: bool) {
        if down {
            if let Some(serving) = self.serving.lock().take() {
                serving.cancel();
            }
            self.drop_watches();
            return;
        }
        if self.serving.lock().is_some() {
            return;
        }
        // The old listener may take a moment to be released by its task.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("fake apiserver: cannot bind {} again: {e}", self.addr),
            }
        };
        *self.serving.lock() = Some(serve(listener, self.state.clone()));
    }

    /// Every request received so far.
    pub fn request_log(&self) -> Vec<Logged> {
        self.state.inner.lock().requests.iter().cloned().collect()
    }

    /// Every request URI (path and query) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .inner
            .lock()
            .requests
            .iter()
            .map(|r| r.uri.clone())
            .collect()
    }

    /// List requests received so far.
    pub fn list_requests(&self) -> Vec<String> {
        let mut r = self.requests();
        r.retain(|u| !is_watch_uri(u));
        r
    }

    /// Watch requests received so far.
    pub fn watch_requests(&self) -> Vec<String> {
        let mut r = self.requests();
        r.retain(|u| is_watch_uri(u));
        r
    }

    /// Waits until at least `n` watch requests arrived (bounded: panics after 10 s).
    pub async fn wait_watches(&self, n: usize) {
        self.wait_requests(&format!("{n} watches"), |r| {
            r.iter().filter(|l| is_watch_uri(&l.uri)).count() >= n
        })
        .await;
    }

    /// Waits (bounded: panics after 10 s) until `cond` holds for the request log.
    pub async fn wait_requests(&self, what: &str, mut cond: impl FnMut(&[Logged]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.request_log();
            if cond(&log) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fake apiserver: never saw {what}: {:?}",
                log.iter().map(|l| &l.uri).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        if let Some(serving) = self.serving.lock().take() {
            serving.cancel();
        }
    }
}

fn is_watch_uri(uri: &str) -> bool {
    uri.contains("watch=true") || uri.contains("watch=1")
}

/// Accepts on `listener` until the returned token is cancelled, which also ends every connection.
fn serve(listener: TcpListener, state: Arc<Shared>) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = token.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let state = state.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    stop
}

type Body = BoxBody<Bytes, Infallible>;

fn handle(state: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().to_string();
    let method = req.method().clone();
    let response = route(state, &method, req.uri());
    let mut inner = state.inner.lock();
    inner.requests.push_back(Logged {
        method: method.to_string(),
        uri,
        status: response.status().as_u16(),
    });
    while inner.requests.len() > REQUEST_LOG_CAPACITY {
        inner.requests.pop_front();
    }
    response
}

/// What a request path names.
struct Target {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        _ => return None,
    };
    Some(Target {
        resource: Resource::by_plural(&api_version, plural)?,
        namespace: namespace.map(decode),
        name: name.map(decode),
    })
}

fn route(state: &Arc<Shared>, method: &Method, uri: &http::Uri) -> Response<Body> {
    let query = parse_query(uri.query().unwrap_or_default());
    {
        let mut inner = state.inner.lock();
        if inner.forbidden_next > 0 {
            inner.forbidden_next -= 1;
            return forbidden(uri.path());
        }
    }
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "read-only fake",
        );
    }
    let Some(target) = parse_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("fake apiserver: no route {uri}"),
        );
    };
    if state
        .inner
        .lock()
        .forbidden
        .contains(target.resource.plural)
    {
        return forbidden(uri.path());
    }
    let filter = match Filter::new(&target, &query) {
        Ok(f) => f,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    if let Some(name) = &target.name {
        let inner = state.inner.lock();
        let ns = target.namespace.clone().unwrap_or_default();
        return match inner
            .objects
            .get(&(target.resource.plural, ns, name.clone()))
        {
            Some(o) => json_response(StatusCode::OK, o.to_string()),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", target.resource.plural),
            ),
        };
    }
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        watch(state, target.resource, filter, &query)
    } else {
        list(state, target.resource, &filter, &query)
    }
}

fn list(
    state: &Arc<Shared>,
    resource: &'static Resource,
    filter: &Filter,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(0)) => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return status(StatusCode::BAD_REQUEST, "BadRequest", "bad limit"),
    };
    let inner = state.inner.lock();
    // A continue token names the list's resource version and the last key returned.
    let (list_rv, start) = match query.get("continue").filter(|c| !c.is_empty()) {
        None => (inner.resource_version, None),
        Some(token) => {
            let Some((rv, key)) = token
                .split_once(':')
                .and_then(|(rv, key)| Some((rv.parse::<u64>().ok()?, key.split_once('/')?)))
            else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "malformed continue");
            };
            if rv < inner.compacted {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            }
            (rv, Some((key.0.to_owned(), key.1.to_owned())))
        }
    };
    let plural = resource.plural;
    let lower = match &start {
        Some((ns, name)) => Bound::Excluded((plural, ns.clone(), name.clone())),
        None => Bound::Included((plural, String::new(), String::new())),
    };
    let mut page = Vec::new();
    let mut last = None;
    let mut more = false;
    for ((p, ns, name), object) in inner.objects.range((lower, Bound::Unbounded)) {
        if *p != plural {
            break;
        }
        if !filter.matches(ns, object) {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(object.clone());
        last = Some((ns.clone(), name.clone()));
    }
    drop(inner);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some((ns, name)) = last {
        metadata["continue"] = json!(format!("{list_rv}:{ns}/{name}"));
    }
    // Serialised by hand: the objects are shared, not cloned into a new Value.
    let mut body = format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{}List\",\"metadata\":{metadata},\"items\":[",
        resource.api_version, resource.kind
    );
    for (i, o) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&o.to_string());
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

fn watch(
    state: &Arc<Shared>,
    resource: &'static Resource,
    filter: Filter,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "bad resourceVersion"),
        },
    };
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(MAX_WATCH, |t| Duration::from_secs(t).min(MAX_WATCH));
    let inner = state.inner.lock();
    if let Some(since) = since
        && since < inner.compacted
    {
        let message = format!("too old resource version: {since} ({})", inner.compacted);
        if inner.gone_as_http {
            return status(StatusCode::GONE, "Expired", &message);
        }
        let gone = json!({"type": "ERROR", "object": {
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Expired", "code": 410,
        }});
        return json_response(StatusCode::OK, format!("{gone}\n"));
    }
    // Replay and subscription under one lock: nothing falls between them.
    let replay: Vec<Bytes> = match since {
        Some(since) => inner
            .log
            .iter()
            .filter(|e| e.resource_version > since && e.plural == resource.plural)
            .filter(|e| filter.matches(&e.namespace, &e.object))
            .map(|e| e.line.clone())
            .collect(),
        // No resource version: the current state as ADDED events, then changes.
        None => inner
            .objects
            .iter()
            .filter(|((p, ns, _), o)| *p == resource.plural && filter.matches(ns, o))
            .map(|(_, o)| {
                let mut line = json!({"type": "ADDED", "object": &**o}).to_string();
                line.push('\n');
                Bytes::from(line)
            })
            .collect(),
    };
    let mut live = state.events.subscribe();
    let end = inner.watches.clone();
    let every = inner.bookmark_interval;
    let mut seen = inner.resource_version;
    drop(inner);

    // Small: a watcher that does not read holds the sender back rather than the fake's memory.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let deadline = Instant::now() + timeout;
        for line in replay {
            if end.is_cancelled() || tx.send(Ok(Frame::data(line))).await.is_err() {
                return;
            }
        }
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            let line = tokio::select! {
                // An ended watch sends nothing more, even events already waiting.
                biased;
                _ = end.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    // `seen`: every event up to it went out (or did not match), so a re-watch
                    // from the bookmark misses nothing.
                    let mut line = json!({"type": "BOOKMARK", "object": {
                        "apiVersion": resource.api_version, "kind": resource.kind,
                        "metadata": {"resourceVersion": seen.to_string()},
                    }})
                    .to_string();
                    line.push('\n');
                    Bytes::from(line)
                }
                event = live.recv() => match event {
                    Ok(e) => {
                        seen = seen.max(e.resource_version);
                        if e.plural != resource.plural || !filter.matches(&e.namespace, &e.object) {
                            continue;
                        }
                        e.line.clone()
                    }
                    // A lagging watcher's stream ends, as a real one gets an error and re-watches.
                    Err(_) => return,
                },
            };
            if tx.send(Ok(Frame::data(line))).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn json_response(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A `Status` object as the API server sends with an error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, body.to_string())
}

fn forbidden(path: &str) -> Response<Body> {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{path} is forbidden: User \"system:serviceaccount:knative-serving:activator\" cannot list or watch it"
        ),
    )
}

/// What a list or watch selects: namespace, label selector, field selector.
struct Filter {
    namespace: Option<String>,
    labels: Vec<Requirement>,
    /// `metadata.name` / `metadata.namespace` equalities.
    fields: Vec<(String, String)>,
}

impl Filter {
    fn new(target: &Target, query: &BTreeMap<String, String>) -> Result<Self, String> {
        let labels = match query.get("labelSelector") {
            Some(s) => parse_selector(s)?,
            None => Vec::new(),
        };
        let mut fields = Vec::new();
        if let Some(s) = query.get("fieldSelector") {
            for term in s.split(',').filter(|t| !t.is_empty()) {
                let (k, v) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .ok_or_else(|| format!("unsupported field selector {term:?}"))?;
                if k != "metadata.name" && k != "metadata.namespace" {
                    return Err(format!("field label not supported: {k}"));
                }
                fields.push((k.to_owned(), v.to_owned()));
            }
        }
        Ok(Self {
            namespace: target.namespace.clone(),
            labels,
            fields,
        })
    }

    fn matches(&self, namespace: &str, object: &Value) -> bool {
        if self.namespace.as_deref().is_some_and(|n| n != namespace) {
            return false;
        }
        let labels = &object["metadata"]["labels"];
        self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|(k, v)| {
                let field = k.trim_start_matches("metadata.");
                object["metadata"][field].as_str() == Some(v)
            })
    }
}

/// One term of a label selector.
#[derive(Debug, PartialEq)]
pub enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Self::Exists(k) => get(k).is_some(),
            Self::NotExists(k) => get(k).is_none(),
            Self::Equals(k, v) => get(k) == Some(v),
            // As in Kubernetes: `k!=v` also selects objects without the label.
            Self::NotEquals(k, v) => get(k) != Some(v),
            Self::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Self::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        }
    }
}

/// Parses `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma = AND.
pub fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced )")?,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced ( in {s:?}"));
    }
    terms.push(&s[start..]);
    let mut out = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let bad = || format!("unsupported label selector term {term:?}");
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let requirement = if let Some(k) = term.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_owned())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            Requirement::NotIn(k.trim().to_owned(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            Requirement::In(k.trim().to_owned(), set(rest)?)
        } else if let Some((k, v)) = term.split_once("!=") {
            Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            Requirement::Exists(term.to_owned())
        } else {
            return Err(bad());
        };
        out.push(requirement);
    }
    Ok(out)
}

/// `a=b&c=d` with `+` and `%XX` decoded (what kube's form_urlencoded serializer produces).
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent- and `+`-decoding; malformed escapes are kept as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok()) =>
            {
                out.push(b);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn resource_of(object: &Value) -> &'static Resource {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    Resource::by_kind(api_version, kind)
        .unwrap_or_else(|| panic!("fake apiserver: unsupported {api_version} {kind}"))
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap().to_owned(),
        meta["name"].as_str().unwrap().to_owned(),
    )
}

// --- Knative object builders -------------------------------------------------------------

/// What a revision's user container port says it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Port named `http1` (Knative's default).
    Http1,
    /// Port named `h2c`.
    H2c,
}

/// The `metadata.uid` the builders give revision `name` of `namespace` (deterministic, so that
/// Endpoints built apart carry the matching `serving.knative.dev/revisionUID`).
pub fn revision_uid(namespace: &str, name: &str) -> String {
    // Not a real UUID's shape, but a stable, unique string is all a uid is to a client.
    format!("uid-{namespace}-{name}")
}

/// A `serving.knative.dev/v1` Revision as Knative's controller leaves it: containerConcurrency
/// `cc` (0 = unlimited), timeoutSeconds 300, one user container whose port is named after
/// `protocol`.
pub fn revision(namespace: &str, name: &str, cc: u32, protocol: Protocol) -> Value {
    let port_name = match protocol {
        Protocol::Http1 => "http1",
        Protocol::H2c => "h2c",
    };
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": revision_uid(namespace, name),
            "generation": 1,
            "labels": {
                "serving.knative.dev/configuration": name.rsplit_once('-').map_or(name, |(c, _)| c),
                "serving.knative.dev/service": name.rsplit_once('-').map_or(name, |(c, _)| c),
            },
        },
        "spec": {
            "containerConcurrency": cc,
            "timeoutSeconds": 300,
            "containers": [{
                "image": "ghcr.io/knative/helloworld-go:latest",
                "ports": [{"name": port_name, "containerPort": 8080}],
            }],
        },
    })
}

fn endpoints(
    namespace: &str,
    name: &str,
    revision: &str,
    service_type: &str,
    ready: &[&str],
    not_ready: &[&str],
    ports: Value,
) -> Value {
    let addresses = |ips: &[&str]| -> Value { ips.iter().map(|ip| json!({"ip": ip})).collect() };
    let mut subset = json!({"ports": ports});
    if !ready.is_empty() {
        subset["addresses"] = addresses(ready);
    }
    if !not_ready.is_empty() {
        subset["notReadyAddresses"] = addresses(not_ready);
    }
    // An Endpoints with no address has no subset at all, as the endpoints controller writes it.
    let subsets = if ready.is_empty() && not_ready.is_empty() {
        json!([])
    } else {
        json!([subset])
    };
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "serving.knative.dev/revision": revision,
                "serving.knative.dev/revisionUID": revision_uid(namespace, revision),
                "networking.internal.knative.dev/serviceType": service_type,
                "app": revision,
            },
        },
        "subsets": subsets,
    })
}

/// The private Endpoints (`<rev>-private`) of a revision's pods: `ready` and `not_ready`
/// addresses, one port (`http` for HTTP/1.1 revisions, `http2` for h2c ones).
pub fn private_endpoints(
    namespace: &str,
    revision: &str,
    ready: &[&str],
    not_ready: &[&str],
    port_name: &str,
    port: u16,
) -> Value {
    endpoints(
        namespace,
        &format!("{revision}-private"),
        revision,
        "Private",
        ready,
        not_ready,
        json!([{"name": port_name, "port": port, "protocol": "TCP"}]),
    )
}

/// The public Endpoints (`<rev>`) in proxy mode: the activators' IPs on port `http` 8012.
pub fn public_endpoints(namespace: &str, revision: &str, activator_ips: &[&str]) -> Value {
    public_endpoints_on(namespace, revision, activator_ips, "http", 8012)
}

/// [`public_endpoints`] with another port (`http2` 8013 for an h2c revision).
pub fn public_endpoints_on(
    namespace: &str,
    revision: &str,
    activator_ips: &[&str],
    port_name: &str,
    port: u16,
) -> Value {
    endpoints(
        namespace,
        revision,
        revision,
        "Public",
        activator_ips,
        &[],
        json!([{"name": port_name, "port": port, "protocol": "TCP"}]),
    )
}

/// A core/v1 ConfigMap.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
}

/// An EndpointSlice of `service` in `namespace`: one port, endpoints given as (ip, ready).
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[(&str, Option<bool>)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| match ready {
            Some(r) => json!({"addresses": [ip], "conditions": {"ready": r}}),
            None => json!({"addresses": [ip]}),
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

/// One `http.paths[]` entry of a KIngress: an optional path regex, exact header matches, and
/// `(revision, percent)` splits in `namespace`.
pub struct KPath<'a> {
    pub path: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub splits: &'a [(&'a str, i64)],
}

/// A `networking.internal.knative.dev/v1alpha1` Ingress as Knative's route reconciler writes
/// it: one rule per `(hosts, visibility, paths)`, each split naming its revision's public
/// Service and appending the `Knative-Serving-Revision`/`-Namespace` headers.
pub fn kingress(namespace: &str, name: &str, rules: &[(&[&str], &str, &[KPath<'_>])]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|(hosts, visibility, paths)| {
            let paths: Vec<Value> = paths
                .iter()
                .map(|p| {
                    let splits: Vec<Value> = p
                        .splits
                        .iter()
                        .map(|(rev, percent)| {
                            json!({
                                "serviceNamespace": namespace,
                                "serviceName": rev,
                                "servicePort": 80,
                                "percent": percent,
                                "appendHeaders": {
                                    "Knative-Serving-Revision": rev,
                                    "Knative-Serving-Namespace": namespace,
                                },
                            })
                        })
                        .collect();
                    let headers: serde_json::Map<String, Value> = p
                        .headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), json!({"exact": v})))
                        .collect();
                    let mut path = json!({"splits": splits, "headers": headers});
                    if let Some(re) = p.path {
                        path["path"] = json!(re);
                    }
                    path
                })
                .collect();
            json!({"hosts": hosts, "visibility": visibility, "http": {"paths": paths}})
        })
        .collect();
    json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {"serving.knative.dev/route": name},
            "annotations": {"networking.knative.dev/ingress.class": "istio.ingress.networking.knative.dev"},
        },
        "spec": {"rules": rules, "httpOption": "Enabled"},
        "status": {"observedGeneration": 1},
    })
}
