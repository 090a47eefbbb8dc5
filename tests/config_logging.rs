//! The log level followed from Knative's `config-logging` ConfigMap through a tiny fake API
//! server (ConfigMap list and watch only, on 127.0.0.1:0).
#![allow(clippy::unwrap_used)]

use std::{collections::VecDeque, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, Uri, header},
    response::Response,
    routing::get,
};
use futures_util::StreamExt as _;
use kactivator::telemetry::{
    Level,
    config_logging::{Error, Update, follow},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Fake {
    /// Answers to the next list requests; when empty, a list of `items`.
    lists: VecDeque<(StatusCode, Value)>,
    items: Vec<Value>,
    /// The first watch streams what is sent here; later watches stay open and silent.
    events: Option<mpsc::UnboundedReceiver<Value>>,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

async fn configmaps(State(fake): State<Shared>, uri: Uri) -> Response {
    let mut fake = fake.lock();
    fake.requests.push(uri.to_string());
    let query = uri.query().unwrap_or_default();
    if query.contains("watch=true") {
        let events = fake.events.take();
        let lines = match events {
            Some(rx) => UnboundedReceiverStream::new(rx)
                .map(|event| Ok::<_, Infallible>(Bytes::from(format!("{event}\n"))))
                .boxed(),
            None => futures_util::stream::pending().boxed(),
        };
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(lines))
            .unwrap();
    }
    let (status, body) = fake.lists.pop_front().unwrap_or_else(|| {
        let list = json!({
            "apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "10"},
            "items": fake.items,
        });
        (StatusCode::OK, list)
    });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn serve(fake: Shared) -> SocketAddr {
    let app = Router::new()
        .route(
            "/api/v1/namespaces/knative-serving/configmaps",
            get(configmaps),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn config_map(version: u32, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-logging", "namespace": "knative-serving",
                     "resourceVersion": version.to_string()},
        "data": data,
    })
}

/// Starts following and returns the updates as they come.
fn start(addr: SocketAddr) -> mpsc::UnboundedReceiver<Update> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        follow(client(addr), "knative-serving", "config-logging", |u| {
            let _ = tx.send(u);
        })
        .await;
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Update>) -> Update {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an update in time")
        .expect("follower running")
}

#[tokio::test]
async fn the_level_follows_the_config_map_live() {
    let (events, rx) = mpsc::unbounded_channel();
    let fake = Shared::default();
    {
        let mut f = fake.lock();
        f.items = vec![config_map(10, json!({"loglevel.activator": "debug"}))];
        f.events = Some(rx);
    }
    let addr = serve(fake.clone()).await;
    let mut updates = start(addr);
    assert_eq!(next(&mut updates).await, Update::Level(Level::Debug));
    // An operator removes the activator's key: the zap config's level applies.
    let zap = json!({"zap-logger-config": "{\"level\": \"warn\", \"encoding\": \"json\"}"});
    events
        .send(json!({"type": "MODIFIED", "object": config_map(11, zap)}))
        .unwrap();
    assert_eq!(next(&mut updates).await, Update::Level(Level::Warn));
    let bad = json!({"loglevel.activator": "loud"});
    events
        .send(json!({"type": "MODIFIED", "object": config_map(12, bad)}))
        .unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Invalid(Error::BadLevel("loud".into()))
    );
    events
        .send(json!({"type": "DELETED", "object": config_map(13, json!({}))}))
        .unwrap();
    assert_eq!(next(&mut updates).await, Update::Missing);
    // Only the one ConfigMap is read.
    let requests = fake.lock().requests.clone();
    assert!(
        requests
            .iter()
            .all(|r| r.contains("fieldSelector=metadata.name%3Dconfig-logging")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_denied_read_is_reported_and_retried_and_a_missing_map_is_said_so() {
    let fake = Shared::default();
    let denied = json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "configmaps is forbidden: User \"system:serviceaccount:knative-serving:activator\" cannot list resource \"configmaps\"",
    });
    fake.lock().lists.push_back((StatusCode::FORBIDDEN, denied));
    let addr = serve(fake.clone()).await;
    let mut updates = start(addr);
    match next(&mut updates).await {
        Update::Unreadable(error) => assert!(error.contains("forbidden"), "{error}"),
        other => panic!("expected Unreadable, got {other:?}"),
    }
    // Retried with backoff; the list now succeeds with no ConfigMap.
    assert_eq!(next(&mut updates).await, Update::Missing);
    assert!(fake.lock().requests.len() >= 2);
}
