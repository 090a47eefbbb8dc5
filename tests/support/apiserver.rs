//! A fake Kubernetes API server on 127.0.0.1:0 serving EndpointSlice list and watch requests.
//!
//! Requests look like kube-runtime's list-then-watch: `GET .../endpointslices?labelSelector=..&limit=500`
//! answers a list with a `resourceVersion`; `?watch=true&resourceVersion=N&...` streams JSON lines
//! (`{"type":"ADDED","object":{..}}`), first replaying logged events newer than N, then live ones.
//! Every change gets the next resource version, so a re-watch after a dropped stream resumes
//! without losing events, as with a real API server.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::{StreamExt, stream};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Logged>,
}

#[derive(Default)]
struct Inner {
    resource_version: u64,
    /// (namespace, name) → object.
    objects: BTreeMap<(String, String), Value>,
    log: Vec<Logged>,
    /// Watches from a resource version older than this get `410 Gone` (see [`FakeApiServer::compact`]).
    compacted: u64,
    /// Requests still to be answered 403 Forbidden (see [`FakeApiServer::forbid_next`]).
    forbidden: usize,
    requests: Vec<String>,
    /// Cancelled (and replaced) to end every open watch stream.
    watches: CancellationToken,
}

#[derive(Clone)]
struct Logged {
    resource_version: u64,
    namespace: String,
    kind: &'static str,
    object: Value,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let state = Arc::new(Shared {
            inner: Mutex::new(Inner {
                resource_version: 100,
                ..Inner::default()
            }),
            events,
        });
        let app = Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(endpointslices),
            )
            .fallback(|uri: Uri| async move {
                (
                    StatusCode::NOT_FOUND,
                    format!("fake apiserver: no route {uri}"),
                )
            })
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .unwrap();
        });
        Self { addr, state, stop }
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

    /// A client whose cluster URL is this server (plain HTTP, no credentials).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces an object (ADDED or MODIFIED), keyed by its namespace and name.
    pub fn apply(&self, mut object: Value) {
        let mut inner = self.state.inner.lock();
        let key = key_of(&object);
        inner.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
        let kind = if inner.objects.insert(key.clone(), object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.log(&mut inner, key.0, kind, object);
    }

    /// Deletes an object (DELETED); unknown objects are ignored.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut inner = self.state.inner.lock();
        let Some(mut object) = inner.objects.remove(&(namespace.into(), name.into())) else {
            return;
        };
        inner.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
        self.log(&mut inner, namespace.into(), "DELETED", object);
    }

    fn log(&self, inner: &mut Inner, namespace: String, kind: &'static str, object: Value) {
        let logged = Logged {
            resource_version: inner.resource_version,
            namespace,
            kind,
            object,
        };
        inner.log.push(logged.clone());
        // No receiver just means no watch is open; the log replays it later.
        let _ = self.state.events.send(logged);
    }

    /// Ends every open watch stream (as an API server restart or a load balancer timeout does).
    pub fn drop_watches(&self) {
        let mut inner = self.state.inner.lock();
        inner.watches.cancel();
        inner.watches = CancellationToken::new();
    }

    /// Forgets the event log, as etcd compaction does: a re-watch from an older resource version
    /// gets a `410 Gone` ERROR event and the client must list again.
    pub fn compact(&self) {
        let mut inner = self.state.inner.lock();
        inner.log.clear();
        inner.compacted = inner.resource_version;
    }

    /// Answers the next `n` requests `403 Forbidden`, as a missing RBAC binding does.
    pub fn forbid_next(&self, n: usize) {
        self.state.inner.lock().forbidden = n;
    }

    /// List requests received so far.
    pub fn list_requests(&self) -> Vec<String> {
        let mut r = self.requests();
        r.retain(|u| !u.contains("watch=true"));
        r
    }

    /// Every request URI (path and query) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.inner.lock().requests.clone()
    }

    /// Watch requests received so far.
    pub fn watch_requests(&self) -> Vec<String> {
        let mut r = self.requests();
        r.retain(|u| u.contains("watch=true"));
        r
    }

    /// Waits until at least `n` watch requests arrived (bounded: panics after 10 s).
    pub async fn wait_watches(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.watch_requests().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} watches: {:?}", self.requests()));
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        self.stop.cancel();
    }
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap().to_owned(),
        meta["name"].as_str().unwrap().to_owned(),
    )
}

async fn endpointslices(
    State(state): State<Arc<Shared>>,
    Path(ns): Path<String>,
    uri: Uri,
) -> Response {
    let query = parse_query(uri.query().unwrap_or_default());
    let selector = query.get("labelSelector").map(|s| Selector::parse(s));
    let matches = move |namespace: &str, object: &Value| {
        namespace == ns && selector.as_ref().is_none_or(|s| s.matches(object))
    };
    let mut inner = state.inner.lock();
    inner.requests.push(uri.to_string());
    if inner.forbidden > 0 {
        inner.forbidden -= 1;
        let status = json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "endpointslices.discovery.k8s.io is forbidden",
            "reason": "Forbidden", "code": 403,
        });
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            status.to_string(),
        )
            .into_response();
    }
    if query.get("watch").map(String::as_str) != Some("true") {
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((namespace, _), o)| matches(namespace, o))
            .map(|(_, o)| o.clone())
            .collect();
        let list = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": inner.resource_version.to_string()},
            "items": items,
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            list.to_string(),
        )
            .into_response();
    }
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if since < inner.compacted {
        let gone = json!({"type": "ERROR", "object": {
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": format!("too old resource version: {since} ({})", inner.compacted),
            "reason": "Expired", "code": 410,
        }});
        return (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{gone}\n"),
        )
            .into_response();
    }
    // Replay and subscription under one lock: nothing falls between them.
    let replay: Vec<Logged> = inner
        .log
        .iter()
        .filter(|e| e.resource_version > since)
        .cloned()
        .collect();
    // A lagging watcher ends its stream, as a real one gets an error and re-watches.
    let live = stream::unfold(state.events.subscribe(), |mut rx| async move {
        rx.recv().await.ok().map(|e| (e, rx))
    });
    let end = inner.watches.clone();
    drop(inner);
    let lines = stream::iter(replay)
        .chain(live)
        .filter(move |e| std::future::ready(matches(&e.namespace, &e.object)))
        .map(|e| {
            let mut line = json!({"type": e.kind, "object": e.object}).to_string();
            line.push('\n');
            Ok::<_, Infallible>(Bytes::from(line))
        })
        .take_until(async move { end.cancelled_owned().await });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
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

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The two label selector forms kactivator sends: `key=value` and `key in (a,b)`.
enum Selector {
    Equals(String, String),
    In(String, Vec<String>),
}

impl Selector {
    fn parse(s: &str) -> Self {
        if let Some((key, rest)) = s.split_once(" in (") {
            let values = rest.trim_end_matches(')').split(',').map(str::to_owned);
            return Self::In(key.to_owned(), values.collect());
        }
        let (key, value) = s.split_once('=').expect("unsupported label selector");
        Self::Equals(key.to_owned(), value.to_owned())
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        match self {
            Self::Equals(k, v) => labels[k].as_str() == Some(v),
            Self::In(k, vs) => labels[k]
                .as_str()
                .is_some_and(|l| vs.iter().any(|v| v == l)),
        }
    }
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
