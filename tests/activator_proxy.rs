//! Activator data path through real sockets: routing, probes, throttling, cold start,
//! retries, streaming, gRPC over h2c, websockets, malformed input.
#![allow(clippy::unwrap_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use kactivator::cli::Mode;
use support::{
    app::{TestApp, admin_get, metric_value, start, wait_metric},
    backend::{self, echo_proto},
    wait,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(req: Request<Full<Bytes>>) -> Reply {
    let resp = tokio::time::timeout(WAIT, client().request(req))
        .await
        .expect("response in time")
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(format!("http://{}{path}", app.http()));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::default()).unwrap()).await
}

fn host(h: &str) -> [(&'static str, String); 1] {
    [("host", h.to_string())]
}

async fn get_host(app: &TestApp, path: &str, h: &str) -> Reply {
    let [(k, v)] = host(h);
    get(app, path, &[(k, &v)]).await
}

/// POSTs a streamed body to the echo backend's `/stream` through revision `stream`, sends
/// `one`, and returns the open request-body sender and the response body after `one` came back.
async fn stream_one(
    app: &TestApp,
) -> (
    tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>,
    hyper::body::Incoming,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = Request::post(format!("http://{}/stream", app.http()))
        .header("host", "stream.default")
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    let streaming: Client<HttpConnector, _> = Client::builder(TokioExecutor::new()).build_http();
    tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(WAIT, streaming.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "one");
    (tx, body)
}

fn revision(name: &str, extra: &str, endpoints: &[SocketAddr]) -> String {
    let eps: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    format!(
        "  - name: {name}\n    endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

fn config(activator: &str, revisions: &[String]) -> String {
    let period = if activator.contains("probe_period") {
        ""
    } else {
        "  probe_period: 20ms\n"
    };
    format!(
        "discovery: static\nshutdown:\n  grace_period: 5s\nactivator:\n  probe_style: tcp\n{period}{activator}revisions:\n{}",
        revisions.concat()
    )
}

async fn metrics(app: &TestApp) -> String {
    admin_get(app, "/metrics").await.1
}

fn queued(rev: &str) -> String {
    format!(
        "kn_revision_request_queued{{k8s_namespace_name=\"default\",kn_revision_name=\"{rev}\"}}"
    )
}

#[tokio::test]
async fn routes_by_headers_and_hosts_and_rewrites_headers() {
    let echo = backend::http_echo().await;
    let app = start(
        Mode::Activator,
        &config(
            "",
            &[revision(
                "hello",
                "    hosts: [Api.Example.com]\n",
                &[echo.addr],
            )],
        ),
    )
    .await;

    let r = get(
        &app,
        "/x?y=1",
        &[
            ("knative-serving-revision", "hello"),
            ("knative-serving-namespace", "default"),
            ("host", "anything.example"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("k-proxy-request: activator"), "{}", r.body);
    assert!(
        r.body.contains("k-original-host: anything.example"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("host: {}", echo.addr)),
        "{}",
        r.body
    );
    assert!(!r.body.contains("knative-serving-"), "{}", r.body);
    assert!(!r.body.contains("x-hop"), "{}", r.body);
    assert!(r.body.contains("path: /x"), "{}", r.body);

    for h in [
        "hello.default.svc.cluster.local",
        "hello.default.svc.cluster.local:8012",
        "hello.default.svc",
        "hello.default",
        "API.example.com:8080",
    ] {
        let r = get_host(&app, "/", h).await;
        assert_eq!(r.status, 200, "{h}: {}", r.body);
        assert!(
            r.body.contains(&format!("k-original-host: {h}")),
            "{}",
            r.body
        );
    }

    for h in [
        "nope.default.svc.cluster.local",
        "hello.other",
        "www.example.com",
    ] {
        assert_eq!(get_host(&app, "/", h).await.status, 404, "{h}");
    }
    let r = get(
        &app,
        "/",
        &[
            ("knative-serving-revision", "nope"),
            ("knative-serving-namespace", "default"),
        ],
    )
    .await;
    assert_eq!(r.status, 404);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn network_and_kubelet_probes_are_answered_by_the_activator() {
    let app = start(Mode::Activator, &config("", &[])).await;
    let r = get(&app, "/", &[("k-network-probe", "activator")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "activator"));
    let r = get(
        &app,
        "/",
        &[("k-network-probe", "probe"), ("k-network-hash", "h1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["k-network-hash"], "h1");
    assert_eq!(
        get(&app, "/", &[("k-network-probe", "probe")]).await.status,
        400
    );
    assert_eq!(
        get(&app, "/", &[("k-network-probe", "queue")]).await.status,
        400
    );
    assert_eq!(
        get(&app, "/", &[("user-agent", "kube-probe/1.31")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&app, "/", &[("k-kubelet-probe", "1")]).await.status,
        200
    );
    app.drain().start_draining();
    assert_eq!(
        get(&app, "/", &[("user-agent", "kube-probe/1.31")])
            .await
            .status,
        500
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn full_queue_and_queue_timeout_answer_503_with_retry_after_and_leavers_count_499() {
    let app = start(
        Mode::Activator,
        &config(
            "  queue_depth: 1\n  queue_timeout: 1500ms\n",
            &[revision("cold", "", &[])],
        ),
    )
    .await;
    let first = tokio::spawn({
        let addr = app.http();
        async move {
            let req = Request::get(format!("http://{addr}/"))
                .header("host", "cold.default")
                .body(Full::default())
                .unwrap();
            send(req).await
        }
    });
    wait_metric(&app, &queued("cold"), |v| v == 1.0).await;
    let r = get_host(&app, "/", "cold.default").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "pending request queue full");
    assert!(r.headers.contains_key("retry-after"));
    let r = first.await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));
    let m = metrics(&app).await;
    assert!(m.contains("reason=\"queue_full\""), "{m}");
    assert!(m.contains("reason=\"queue_timeout\""), "{m}");

    // A client that leaves while queued: the queue empties and 499 is counted.
    let leaver = tokio::spawn({
        let addr = app.http();
        async move {
            let req = Request::get(format!("http://{addr}/"))
                .header("host", "cold.default")
                .body(Full::default())
                .unwrap();
            send(req).await
        }
    });
    wait_metric(&app, &queued("cold"), |v| v == 1.0).await;
    leaver.abort();
    wait_metric(&app, &queued("cold"), |v| v == 0.0).await;
    let m = metrics(&app).await;
    assert!(m.contains("code=\"499\""), "{m}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_revision_protocol_decides_the_upstream_version() {
    let echo = backend::http_echo().await;
    let app = start(
        Mode::Activator,
        &config(
            "",
            &[
                revision("auto", "", &[echo.addr]),
                revision("one", "    protocol: http1\n", &[echo.addr]),
                revision("two", "    protocol: h2c\n", &[echo.addr]),
            ],
        ),
    )
    .await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let version_seen = |body: String| {
        body.lines()
            .find_map(|l| l.strip_prefix("version: ").map(str::to_owned))
            .unwrap_or(body)
    };
    for (rev, http2_client, expected) in [
        ("auto", false, "HTTP/1.1"),
        ("auto", true, "HTTP/2.0"),
        ("one", true, "HTTP/1.1"),
        ("two", false, "HTTP/2.0"),
    ] {
        let req = Request::get(format!("http://{}/", app.http()))
            .header("knative-serving-namespace", "default")
            .header("knative-serving-revision", rev)
            .body(Full::default())
            .unwrap();
        let resp = if http2_client {
            tokio::time::timeout(WAIT, h2.request(req))
                .await
                .unwrap()
                .unwrap()
        } else {
            tokio::time::timeout(WAIT, client().request(req))
                .await
                .unwrap()
                .unwrap()
        };
        assert_eq!(resp.status(), 200, "{rev}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen = version_seen(String::from_utf8_lossy(&body).into_owned());
        assert_eq!(
            seen, expected,
            "revision {rev}, HTTP/2 client: {http2_client}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn revision_timeout_answers_504() {
    let echo = backend::http_echo().await;
    let app = start(
        Mode::Activator,
        &config(
            "",
            &[revision("slow", "    timeout: 300ms\n", &[echo.addr])],
        ),
    )
    .await;
    let r = get_host(&app, "/slow?ms=3000", "slow.default").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "activator request timeout");
    let r = get_host(&app, "/slow?ms=10", "slow.default").await;
    assert_eq!(r.status, 200);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn revision_timeout_cuts_a_response_still_streaming_at_the_deadline() {
    let echo = backend::http_echo().await;
    let app = start(
        Mode::Activator,
        &config(
            "",
            &[revision("stream", "    timeout: 400ms\n", &[echo.addr])],
        ),
    )
    .await;
    // The pod answers at once and keeps streaming for as long as the request body is open.
    let (tx, mut body) = stream_one(&app).await;
    // No more data: at the deadline the activator cuts the stream instead of holding it open.
    let cut = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("the stream is cut");
    assert!(matches!(cut, Some(Err(_))), "{cut:?}");
    drop(tx);
    wait_metric(&app, "kactivator_requests_total{k8s_namespace_name=\"default\",kn_revision_name=\"stream\",code=\"504\"}", |v| v == 1.0).await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn cold_start_is_released_by_a_config_edit_in_arrival_order() {
    let echo = backend::http_echo().await;
    let app = start(
        Mode::Activator,
        &config(
            "",
            &[revision("fifo", "    container_concurrency: 1\n", &[])],
        ),
    )
    .await;
    let mut waiters = Vec::new();
    for i in 0..3 {
        let addr = app.http();
        waiters.push(tokio::spawn(async move {
            let req = Request::get(format!("http://{addr}/slow?ms=20"))
                .header("host", "fifo.default")
                .header("x-seq", i.to_string())
                .body(Full::default())
                .unwrap();
            send(req).await
        }));
        wait_metric(&app, &queued("fifo"), |v| v == f64::from(i + 1)).await;
    }
    app.write_config(&config(
        "",
        &[revision(
            "fifo",
            "    container_concurrency: 1\n",
            &[echo.addr],
        )],
    ));
    for w in waiters {
        let r = w.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let ms: u64 = r.headers["x-kactivator-cold-start"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms < 10_000, "{ms}");
    }
    assert_eq!(*echo.seqs.lock(), vec!["0", "1", "2"]);
    let m = metrics(&app).await;
    assert!(m.contains("kactivator_cold_start_seconds_count{k8s_namespace_name=\"default\",kn_revision_name=\"fifo\"} 3"), "{m}");

    // Warm now: no cold-start header.
    let r = get_host(&app, "/", "fifo.default").await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-kactivator-cold-start"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dead_endpoint_is_ejected_and_the_request_retried_on_a_live_one() {
    let dead = backend::http_echo().await;
    let live = backend::http_echo().await;
    // Probes of healthy endpoints are 10 s apart: the dead one stays "healthy" until a
    // refused connect ejects it.
    let app = start(
        Mode::Activator,
        &config(
            "  probe_period: 10s\n",
            &[revision(
                "two",
                "    container_concurrency: 10\n",
                &[dead.addr, live.addr],
            )],
        ),
    )
    .await;
    let (mut seen_dead, mut seen_live) = (false, false);
    for _ in 0..50 {
        let r = get_host(&app, "/", "two.default").await;
        assert_eq!(r.status, 200);
        seen_dead |= r.body.contains(&format!("port: {}", dead.addr.port()));
        seen_live |= r.body.contains(&format!("port: {}", live.addr.port()));
        if seen_dead && seen_live {
            break;
        }
    }
    assert!(
        seen_dead && seen_live,
        "both endpoints serve before the kill"
    );
    dead.stop();
    // Its port refuses once its tasks are gone, and with them its end of every connection.
    wait::until("the dead pod's port to refuse", async || {
        tokio::net::TcpStream::connect(dead.addr).await.is_err()
    })
    .await;
    let before = live.hits();
    for _ in 0..4 {
        let r = get_host(&app, "/", "two.default").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains(&format!("port: {}", live.addr.port())));
    }
    assert_eq!(live.hits(), before + 4);
    let m = metrics(&app).await;
    let retries = metric_value(
        &m,
        "kactivator_retries_total{k8s_namespace_name=\"default\",kn_revision_name=\"two\"}",
    );
    assert!(retries.is_some_and(|r| r >= 1.0), "{m}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn post_bodies_stream_both_ways_and_are_never_replayed() {
    let echo = backend::http_echo().await;
    let rude = backend::rude().await;
    let app = start(
        Mode::Activator,
        &config(
            "",
            &[
                revision("stream", "", &[echo.addr]),
                revision("rude", "", &[rude.addr]),
            ],
        ),
    )
    .await;

    // Streaming: the first chunk comes back before the second is sent.
    let (tx, mut body) = stream_one(&app).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
        .await
        .unwrap();
    let second = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "two");
    drop(tx);
    assert!(
        tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap()
            .is_none()
    );

    // A pod that read the body and died: 502, and the body went out exactly once.
    let req = Request::post(format!("http://{}/", app.http()))
        .header("host", "rude.default")
        .body(Full::new(Bytes::from(vec![b'x'; 64 * 1024])))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(rude.hits(), 1);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_pass_through_over_h2c() {
    use echo_proto::{EchoRequest, echo_client::EchoClient};
    let grpc = backend::grpc_echo().await;
    let app = start(
        Mode::Activator,
        &config("", &[revision("grpc", "", &[grpc.addr])]),
    )
    .await;
    let h2c = app.addrs.h2c.unwrap();
    for addr in [app.http(), h2c] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .origin("http://grpc.default.svc.cluster.local".parse().unwrap())
            .connect()
            .await
            .unwrap();
        let mut client = EchoClient::new(channel);
        let reply = tokio::time::timeout(
            WAIT,
            client.unary(EchoRequest {
                message: "hi".into(),
                count: 0,
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.into_inner().message, "hi via activator");

        let mut stream = client
            .server_stream(EchoRequest {
                message: "tick".into(),
                count: 5,
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(item) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            got.push(item.unwrap().message);
        }
        assert_eq!(got, (0..5).map(|i| format!("tick {i}")).collect::<Vec<_>>());
    }
    // Unknown revision over gRPC: the h2 status reaches the client as an error.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{h2c}"))
        .unwrap()
        .origin("http://nope.default.svc.cluster.local".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let err = EchoClient::new(channel)
        .unary(EchoRequest::default())
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    use tokio_tungstenite::tungstenite::Message;
    let ws = backend::websocket_echo().await;
    let app = start(
        Mode::Activator,
        &config("", &[revision("ws", "", &[ws.addr])]),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(app.http()).await.unwrap();
    let (mut socket, resp) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async("ws://ws.default.svc.cluster.local/chat", stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "again"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
    assert_eq!(ws.hits(), 1);
    app.shutdown().await.unwrap();
}

/// Sends raw bytes and returns the status line's code.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_4xx_and_serving_goes_on() {
    let echo = backend::http_echo().await;
    let app = start(
        Mode::Activator,
        &config(
            "  max_header_bytes: 2048\n",
            &[revision("hello", "", &[echo.addr])],
        ),
    )
    .await;
    assert_eq!(raw(app.http(), b"GARBAGE\r\n\r\n").await, 400);
    assert_eq!(
        raw(
            app.http(),
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"
        )
        .await,
        400
    );
    // Over the configured limit but within hyper's buffer: checked by the handler.
    let big = "x".repeat(3000);
    let r = get(&app, "/", &[("host", "hello.default"), ("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    // Over hyper's buffer: answered by the connection itself.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: hello.default\r\nX-Huge: {}\r\n\r\n",
        "y".repeat(64 * 1024)
    );
    assert_eq!(raw(app.http(), huge.as_bytes()).await, 431);
    let r = get_host(&app, "/", "hello.default").await;
    assert_eq!(r.status, 200);
    app.shutdown().await.unwrap();
}
