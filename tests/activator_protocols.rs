//! Probing and proxying follow each revision's protocol: h2c revisions are probed over h2c,
//! and `auto` learns what each pod speaks and sends every request in a protocol it accepts.
#![allow(clippy::unwrap_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use kactivator::cli::Mode;
use support::{
    app::{TestApp, start},
    backend::{self, echo_proto},
};

const WAIT: Duration = Duration::from_secs(10);

/// Static endpoints with the default probe style (`http` for static discovery).
fn config(revisions: &[(&str, &str, SocketAddr)]) -> String {
    let mut out = String::from(
        "discovery: static\nshutdown:\n  grace_period: 5s\nactivator:\n  probe_period: 20ms\nrevisions:\n",
    );
    for (name, extra, addr) in revisions {
        out.push_str(&format!(
            "  - name: {name}\n    endpoints: [{addr}]\n    timeout: 30s\n{extra}"
        ));
    }
    out
}

fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (`curl --http2-prior-knowledge`).
fn http2() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Reply {
    status: StatusCode,
    body: String,
}

impl Reply {
    /// A `name: value` line of the echo backend's answer.
    fn line(&self, name: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    app: &TestApp,
    rev: &str,
    req: http::request::Builder,
    body: &'static str,
) -> Reply {
    let req = req
        .uri(format!("http://{}/echo", app.http()))
        .header("knative-serving-namespace", "default")
        .header("knative-serving-revision", rev)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("answered before the test's deadline")
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(client: &Client<HttpConnector, Full<Bytes>>, app: &TestApp, rev: &str) -> Reply {
    send(client, app, rev, Request::get("/"), "").await
}

async fn unary(addr: SocketAddr, rev: &str) -> String {
    use echo_proto::{EchoRequest, echo_client::EchoClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin(
            format!("http://{rev}.default.svc.cluster.local")
                .parse()
                .unwrap(),
        )
        .connect()
        .await
        .unwrap();
    let mut client = EchoClient::new(channel);
    let call = client.unary(EchoRequest {
        message: "hi".into(),
        count: 0,
    });
    tokio::time::timeout(WAIT, call)
        .await
        .unwrap_or_else(|_| panic!("revision {rev}: no gRPC answer in time"))
        .unwrap()
        .into_inner()
        .message
}

#[tokio::test]
async fn h2c_only_grpc_pods_are_healthy_with_the_default_probe_and_serve_grpc() {
    let grpc = backend::grpc_echo().await;
    let app = start(
        Mode::Activator,
        &config(&[
            ("h2c", "    protocol: h2c\n", grpc.addr),
            ("auto", "    protocol: auto\n", grpc.addr),
            ("default", "", grpc.addr),
        ]),
    )
    .await;
    for rev in ["h2c", "auto", "default"] {
        for addr in [app.http(), app.addrs.h2c.unwrap()] {
            assert_eq!(unary(addr, rev).await, "hi via activator", "{rev}");
        }
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn http2_clients_reach_http1_only_apps_under_auto_with_a_valid_http1_request() {
    let app1 = backend::http1_echo().await;
    let app = start(Mode::Activator, &config(&[("web", "", app1.addr)])).await;
    let reply = send(
        &http2(),
        &app,
        "web",
        Request::post("/").header("te", "trailers"),
        "hello",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.line("version"), Some("HTTP/1.1"), "{}", reply.body);
    // The HTTP/1.1 request names the pod in Host and the client's authority in K-Original-Host.
    let host = app1.addr.to_string();
    assert_eq!(reply.line("host"), Some(host.as_str()), "{}", reply.body);
    let original = app.http().to_string();
    assert_eq!(
        reply.line("k-original-host"),
        Some(original.as_str()),
        "{}",
        reply.body
    );
    assert_eq!(reply.line("te"), Some("trailers"), "{}", reply.body);
    assert_eq!(reply.line("body-bytes"), Some("5"), "{}", reply.body);
    assert!(!reply.body.contains("\n:"), "{}", reply.body);
    // Plain HTTP/1.1 clients still go the fast path to it.
    let reply = get(&http1(), &app, "web").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.line("version"), Some("HTTP/1.1"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn http1_clients_reach_h2c_only_apps_under_auto() {
    let app2 = backend::h2c_echo().await;
    let app = start(Mode::Activator, &config(&[("grpcish", "", app2.addr)])).await;
    for _ in 0..3 {
        let reply = send(&http1(), &app, "grpcish", Request::post("/"), "hello").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.line("version"), Some("HTTP/2.0"), "{}", reply.body);
        assert_eq!(reply.line("body-bytes"), Some("5"), "{}", reply.body);
    }
    assert_eq!(app2.hits(), 3);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cold_start_of_an_auto_revision_reaches_an_h2c_only_pod_from_http1() {
    // The pod's address is known but nothing listens yet: the revision is at zero.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let app = start(Mode::Activator, &config(&[("late", "", addr)])).await;
    let client = http1();
    let waiting = {
        let app_addr = app.http();
        tokio::spawn(async move {
            let req = Request::get(format!("http://{app_addr}/"))
                .header("knative-serving-namespace", "default")
                .header("knative-serving-revision", "late")
                .body(Full::default())
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let pod = backend::h2c_echo_on(socket.listen(64).unwrap()).await;
    let (status, body) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("answered after the pod came up")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("version: HTTP/2.0"), "{body}");
    assert_eq!(pod.hits(), 1);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn auto_keeps_each_clients_version_when_the_pod_speaks_both() {
    let both = backend::http_echo().await;
    let app = start(Mode::Activator, &config(&[("both", "", both.addr)])).await;
    let reply = get(&http2(), &app, "both").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.line("version"), Some("HTTP/2.0"), "{}", reply.body);
    let reply = get(&http1(), &app, "both").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.line("version"), Some("HTTP/1.1"), "{}", reply.body);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_probes_learn_http1_only_pods_so_http2_clients_reach_them() {
    let app1 = backend::http1_echo().await;
    let yaml = config(&[("web", "", app1.addr)])
        .replace("activator:\n", "activator:\n  probe_style: tcp\n");
    let app = start(Mode::Activator, &yaml).await;
    let reply = get(&http2(), &app, "web").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.line("version"), Some("HTTP/1.1"), "{}", reply.body);
    // The preface the probe sent reached no app as a request.
    assert_eq!(app1.hits(), 1);
    app.shutdown().await.unwrap();
}

/// The README demo: `curl --http2-prior-knowledge` to the demo app (HTTP/1.1 only), started
/// by the local autoscaler on the first request.
#[tokio::test]
async fn the_demo_app_answers_an_http2_client_from_zero() {
    const BIN: &str = env!("CARGO_BIN_EXE_kactivator");
    let app = start(
        Mode::Activator,
        &format!(
            "discovery: local
revisions:
  - name: demo
    hosts: [demo.example.com]
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\"}}
"
        ),
    )
    .await;
    let req = Request::get(format!("http://{}/", app.http()))
        .header("host", "demo.example.com")
        .body(Full::default())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, http2().request(req))
        .await
        .expect("answered in time")
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body, "Hello from demo!\n");
    app.shutdown().await.unwrap();
}
