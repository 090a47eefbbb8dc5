//! A revision's `response_start_timeout` and `idle_timeout` (Knative's
//! `responseStartTimeoutSeconds` / `idleTimeoutSeconds`) on both HTTP paths: the HTTP/1.1 fast
//! path (a raw HTTP/1.1 client) and hyper's (an h2c client), in front of raw scripted pods.
#![allow(clippy::unwrap_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use kactivator::cli::Mode;
use support::{
    app::{TestApp, start, wait_metric},
    backend,
    wire::{Backend, Conn, HOST, WAIT},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// Every revision's total timeout: far above what any test waits for.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A pod header: only the fast path relays names with their case.
const POD_HEADER: &str = "X-Pod-Case: 1";
const MESSAGE: &str = "activator request timeout";

#[derive(Debug, Clone, Copy)]
enum Via {
    /// HTTP/1.1 to the HTTP port: the fast path.
    Fast,
    /// h2c with prior knowledge to the HTTP port: hyper's path (the pod still gets HTTP/1.1).
    H2c,
}

/// What a client saw of one request.
#[derive(Debug)]
struct Outcome {
    status: u16,
    /// The body's data (lossy UTF-8: every body here is text).
    body: String,
    /// The body ended as its framing says, rather than being cut.
    whole: bool,
    /// From sending the request to the end of the response (or its cut).
    took: Duration,
    /// The pod's header arrived with its case (the fast path relayed it).
    kept_case: bool,
}

/// An activator in front of `backend` with one revision `name` (host [`HOST`], HTTP/1.1
/// pods, TCP probes), `TIMEOUT` and the given extra lines (each `    key: value\n`). The
/// metrics recorder is one per test process: each test names its own revision.
async fn app(pod: SocketAddr, name: &str, extra: &str) -> TestApp {
    let config = format!(
        "discovery: static\nshutdown:\n  grace_period: 2s\nactivator:\n  probe_style: tcp\n  \
         probe_period: 20ms\nrevisions:\n  - name: {name}\n    hosts: [{HOST}]\n    \
         endpoints: [{pod}]\n    protocol: http1\n    timeout: {}s\n{extra}",
        TIMEOUT.as_secs()
    );
    start(Mode::Activator, &config).await
}

async fn fetch(app: &TestApp, name: &str, via: Via) -> Outcome {
    match via {
        Via::Fast => fetch_http1(app).await,
        Via::H2c => fetch_h2c(app, name).await,
    }
}

/// One GET with `Connection: close`, read until the activator closes the connection.
async fn fetch_http1(app: &TestApp) -> Outcome {
    let mut s = TcpStream::connect(app.http()).await.unwrap();
    let sent = Instant::now();
    s.write_all(format!("GET /t HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // A reset (a cut body) ends the response like a close.
        match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            Ok(_) => break,
            Err(_) => panic!("the activator neither finished nor cut the response in time"),
        }
    }
    let took = sent.elapsed();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let (body, whole) = if lower.contains("transfer-encoding: chunked") {
        dechunk(body.as_bytes())
    } else {
        let len = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok());
        (body.as_bytes().to_vec(), len == Some(body.len()))
    };
    Outcome {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        whole,
        took,
        kept_case: head.contains(POD_HEADER),
    }
}

/// The data of a chunked body, and whether its last chunk arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (data, false);
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else {
            return (data, false);
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return (data, raw.starts_with(b"\r\n"));
        }
        if raw.len() < size + 2 {
            data.extend_from_slice(&raw[..size.min(raw.len())]);
            return (data, false);
        }
        data.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// One GET over h2c with prior knowledge, routed by the Knative headers.
async fn fetch_h2c(app: &TestApp, name: &str) -> Outcome {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(format!("http://{}/t", app.http()))
        .header("knative-serving-namespace", "default")
        .header("knative-serving-revision", name)
        .body(Empty::new())
        .unwrap();
    let sent = Instant::now();
    let mut resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("a response head in time")
        .unwrap();
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    let whole = loop {
        let frame = tokio::time::timeout(WAIT, resp.body_mut().frame())
            .await
            .expect("the activator neither finished nor cut the response in time");
        match frame {
            None => break true,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                }
            }
            // The stream was reset.
            Some(Err(_)) => break false,
        }
    };
    Outcome {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        whole,
        took: sent.elapsed(),
        kept_case: false,
    }
}

/// Waits until `kactivator_requests_total` counts `n` requests of revision `name` with `code`.
async fn wait_code(app: &TestApp, name: &str, code: u16, n: f64) {
    let line = format!(
        "kactivator_requests_total{{k8s_namespace_name=\"default\",kn_revision_name=\"{name}\",code=\"{code}\"}}"
    );
    wait_metric(app, &line, |v| v == n).await;
}

/// Reads requests and never answers.
async fn silent(mut c: Conn) {
    while c.next().await.is_some() {}
}

/// The head of a chunked 200.
fn chunked_head() -> String {
    format!("HTTP/1.1 200 OK\r\n{POD_HEADER}\r\nTransfer-Encoding: chunked\r\n\r\n")
}

/// Answers the head and a first chunk at once, then nothing more.
async fn stalls_after_the_head(mut c: Conn) {
    if c.next().await.is_some() && c.reply(format!("{}5\r\nhello\r\n", chunked_head())).await {
        std::future::pending::<()>().await;
    }
}

/// The body [`streams`] sends.
fn ticks() -> String {
    (0..8).map(|i| format!("tick-{i}")).collect()
}

/// Answers the head at once, then a chunk every 200 ms for 1.6 s.
async fn streams(mut c: Conn) {
    if c.next().await.is_none() || !c.reply(chunked_head()).await {
        return;
    }
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !c.reply(format!("6\r\ntick-{i}\r\n")).await {
            return;
        }
    }
    c.reply("0\r\n\r\n").await;
}

/// Answers the head after 600 ms, then one chunk 600 ms later.
async fn slow(mut c: Conn) {
    if c.next().await.is_none() {
        return;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    if !c.reply(chunked_head()).await {
        return;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.reply("4\r\nslow\r\n0\r\n\r\n").await;
}

/// A pod that never answers, under `timeout` (a revision setting of 300 ms): 504 at that
/// timeout, well before the total one.
async fn no_head_gets_504_at(timeout: &str, name: &str, via: Via) {
    let backend = Backend::start(silent).await;
    let app = app(backend.addr, name, &format!("    {timeout}: 300ms\n")).await;
    let o = fetch(&app, name, via).await;
    assert_eq!(o.status, 504, "{o:?}");
    assert_eq!(o.body, MESSAGE, "{o:?}");
    assert!(o.took >= Duration::from_millis(300), "{o:?}");
    assert!(o.took < TIMEOUT, "answered at the total timeout: {o:?}");
    wait_code(&app, name, 504, 1.0).await;
    app.shutdown().await.unwrap();
}

async fn a_stalled_body_is_cut_at_the_idle_timeout(name: &str, via: Via) {
    let backend = Backend::start(stalls_after_the_head).await;
    let app = app(backend.addr, name, "    idle_timeout: 400ms\n").await;
    let o = fetch(&app, name, via).await;
    assert_eq!(o.status, 200, "{o:?}");
    assert_eq!(o.kept_case, matches!(via, Via::Fast), "wrong path: {o:?}");
    assert_eq!(o.body, "hello", "{o:?}");
    assert!(!o.whole, "the body was not cut: {o:?}");
    assert!(o.took >= Duration::from_millis(400), "{o:?}");
    assert!(o.took < TIMEOUT, "cut at the total timeout: {o:?}");
    // Counted as Knative counts it: a timeout, not a client gone.
    wait_code(&app, name, 504, 1.0).await;
    app.shutdown().await.unwrap();
}

async fn a_stream_that_keeps_writing_is_not_cut(name: &str, via: Via) {
    let backend = Backend::start(streams).await;
    // Both shorter than the stream: neither may apply once writes keep coming.
    let app = app(
        backend.addr,
        name,
        "    response_start_timeout: 500ms\n    idle_timeout: 1s\n",
    )
    .await;
    let o = fetch(&app, name, via).await;
    assert_eq!(o.status, 200, "{o:?}");
    assert_eq!(o.kept_case, matches!(via, Via::Fast), "wrong path: {o:?}");
    assert_eq!(o.body, ticks(), "{o:?}");
    assert!(o.whole, "{o:?}");
    wait_code(&app, name, 200, 1.0).await;
    app.shutdown().await.unwrap();
}

async fn absent_settings_change_nothing(name: &str, via: Via) {
    let backend = Backend::start(slow).await;
    let app = app(backend.addr, name, "").await;
    let o = fetch(&app, name, via).await;
    assert_eq!(o.status, 200, "{o:?}");
    assert_eq!(o.body, "slow", "{o:?}");
    assert!(o.whole, "{o:?}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn fast_path_no_head_gets_504_at_the_response_start_timeout() {
    no_head_gets_504_at("response_start_timeout", "fast-start", Via::Fast).await;
}

#[tokio::test]
async fn h2c_no_head_gets_504_at_the_response_start_timeout() {
    no_head_gets_504_at("response_start_timeout", "h2c-start", Via::H2c).await;
}

#[tokio::test]
async fn fast_path_no_head_gets_504_at_the_idle_timeout() {
    no_head_gets_504_at("idle_timeout", "fast-idle-head", Via::Fast).await;
}

#[tokio::test]
async fn h2c_no_head_gets_504_at_the_idle_timeout() {
    no_head_gets_504_at("idle_timeout", "h2c-idle-head", Via::H2c).await;
}

#[tokio::test]
async fn fast_path_a_stalled_body_is_cut_at_the_idle_timeout() {
    a_stalled_body_is_cut_at_the_idle_timeout("fast-stall", Via::Fast).await;
}

#[tokio::test]
async fn h2c_a_stalled_body_is_cut_at_the_idle_timeout() {
    a_stalled_body_is_cut_at_the_idle_timeout("h2c-stall", Via::H2c).await;
}

#[tokio::test]
async fn fast_path_a_stream_that_keeps_writing_is_not_cut() {
    a_stream_that_keeps_writing_is_not_cut("fast-stream", Via::Fast).await;
}

#[tokio::test]
async fn h2c_a_stream_that_keeps_writing_is_not_cut() {
    a_stream_that_keeps_writing_is_not_cut("h2c-stream", Via::H2c).await;
}

#[tokio::test]
async fn fast_path_absent_settings_change_nothing() {
    absent_settings_change_nothing("fast-absent", Via::Fast).await;
}

#[tokio::test]
async fn h2c_absent_settings_change_nothing() {
    absent_settings_change_nothing("h2c-absent", Via::H2c).await;
}

/// A websocket leaves the timeouts once its `101` is out (Knative's hijacked connections leave
/// its timeout writer): a tunnel quiet for longer than both still carries messages.
#[tokio::test]
async fn an_upgraded_tunnel_is_not_cut_when_idle() {
    use tokio_tungstenite::tungstenite::Message;
    let ws = backend::websocket_echo().await;
    let app = app(
        ws.addr,
        "ws",
        "    response_start_timeout: 300ms\n    idle_timeout: 300ms\n",
    )
    .await;
    let stream = TcpStream::connect(app.http()).await.unwrap();
    let (mut socket, resp) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{HOST}/chat"), stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 101);
    for (i, text) in ["hello", "after a silence"].into_iter().enumerate() {
        if i > 0 {
            // The silence under test: longer than both timeouts, with margin.
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
    app.shutdown().await.unwrap();
}
