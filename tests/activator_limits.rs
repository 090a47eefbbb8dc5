//! Bounded client connections over real sockets: the idle timeout on both listeners and both
//! HTTP paths, the connection limit, and the drain (`Connection: close`, GOAWAY, the admin
//! port answering until exit).
#![allow(clippy::unwrap_used)]

mod support;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use kactivator::cli::Mode;
use nix::sys::signal;
use support::{
    app::{TestApp, start},
    backend::{self, Backend},
    binary::{self, try_get},
    h2::{self, RawH2},
    wait,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

const WAIT: Duration = Duration::from_secs(10);
/// `activator.idle_timeout` in these tests.
const IDLE: Duration = Duration::from_millis(300);
/// A connection due to close at the idle timeout has closed by then: the timeout, the
/// server's bounded wait for a GOAWAY to be acknowledged (1 s), and slack for a busy machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(4);
const HOST: &str = "app.default";

fn config(activator: &str, endpoint: SocketAddr) -> String {
    format!(
        "discovery: static\nshutdown:\n  grace_period: 5s\nactivator:\n  probe_style: tcp\n  probe_period: 20ms\n{activator}revisions:\n  - name: app\n    endpoints: [{endpoint}]\n"
    )
}

async fn app_with(echo: &Backend, activator: &str) -> TestApp {
    start(Mode::Activator, &config(activator, echo.addr)).await
}

async fn idle_app(echo: &Backend) -> TestApp {
    app_with(echo, &format!("  idle_timeout: {}ms\n", IDLE.as_millis())).await
}

/// Reads until the server closes the connection; what it sent, and how long that took.
/// Panics if it is still open after `CLOSED_WITHIN`.
async fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout_at(start + CLOSED_WITHIN, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still open after {CLOSED_WITHIN:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            });
        match read {
            Ok(0) | Err(_) => return (got, start.elapsed()),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn http1_partial_heads_and_idle_keep_alive_connections_close_at_the_idle_timeout() {
    let echo = backend::http_echo().await;
    let app = idle_app(&echo).await;

    // The fast path: a head that never completes.
    let mut s = TcpStream::connect(app.http()).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes())
        .await
        .unwrap();
    let (got, took) = read_until_closed(&mut s).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= IDLE - Duration::from_millis(50),
        "closed early: {took:?}"
    );

    // The fast path: a kept-alive connection after its response.
    let mut s = TcpStream::connect(app.http()).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // The hyper path (a chunked request body goes there): kept alive after its response,
    // then a partial head.
    let mut s = TcpStream::connect(app.http()).await.unwrap();
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (got, _) = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("body-bytes: 3"), "{text}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn http2_connections_without_a_request_close_at_the_idle_timeout() {
    let echo = backend::http_echo().await;
    let app = idle_app(&echo).await;
    let h2c = app.addrs.h2c.unwrap();

    for addr in [app.http(), h2c] {
        let mut c = RawH2::connect(addr).await;
        c.send(h2::PREFACE).await;
        assert!(
            c.closed_within(CLOSED_WITHIN).await.is_some(),
            "{addr}: the preface alone held the connection open"
        );

        let mut c = RawH2::connect(addr).await;
        c.handshake().await;
        let frames = c
            .closed_within(CLOSED_WITHIN)
            .await
            .unwrap_or_else(|| panic!("{addr}: preface + SETTINGS held the connection open"));
        assert!(
            h2::has_goaway(&frames),
            "{addr}: closed without GOAWAY: {frames:?}"
        );
    }

    // The h2c port, nothing sent at all.
    let mut s = TcpStream::connect(h2c).await.unwrap();
    let (_, took) = read_until_closed(&mut s).await;
    assert!(
        took >= IDLE - Duration::from_millis(50),
        "closed early: {took:?}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_http2_connection_whose_request_finished_closes_at_the_idle_timeout() {
    let echo = backend::http_echo().await;
    let app = idle_app(&echo).await;
    for addr in [app.http(), app.addrs.h2c.unwrap()] {
        let mut c = RawH2::connect(addr).await;
        c.handshake().await;
        c.get(1, HOST, "/").await;
        let frames = c.until_end_of(1, WAIT).await;
        assert!(
            frames
                .iter()
                .any(|f| f.kind == h2::HEADERS && f.stream == 1)
        );
        let start = Instant::now();
        let frames = c
            .closed_within(CLOSED_WITHIN)
            .await
            .unwrap_or_else(|| panic!("{addr}: idle HTTP/2 connection held open"));
        assert!(h2::has_goaway(&frames), "{addr}: {frames:?}");
        assert!(start.elapsed() >= IDLE - Duration::from_millis(50));
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_long_streaming_exchange_is_not_cut_by_the_idle_timeout() {
    let echo = backend::http_echo().await;
    let app = idle_app(&echo).await;
    let h2c = app.addrs.h2c.unwrap();
    // HTTP/2 on both listeners, and HTTP/1.1 with a chunked body (the hyper path).
    for (addr, http2) in [(app.http(), true), (h2c, true), (app.http(), false)] {
        let client: Client<HttpConnector, _> = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let req = Request::post(format!("http://{addr}/stream"))
            .header("host", HOST)
            .body(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"0"))))
            .await
            .unwrap();
        let resp = tokio::time::timeout(WAIT, client.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        // Chunks a third of the idle timeout apart, for four idle timeouts.
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < 4 * IDLE {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{addr} (h2: {http2}): stream cut after {i} chunks"))
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), i.to_string());
            tokio::time::sleep(IDLE / 3).await;
            i += 1;
            tx.send(Ok(Frame::data(Bytes::from(i.to_string()))))
                .await
                .unwrap();
        }
        drop(tx);
        let last = tokio::time::timeout(WAIT, body.frame()).await.unwrap();
        assert_eq!(last.unwrap().unwrap().into_data().unwrap(), i.to_string());
    }
    app.shutdown().await.unwrap();
}

/// hyper adds the header itself once keep-alive is off (its graceful shutdown): a guard, so
/// that the connection handling around it keeps calling that shutdown at closing.
#[tokio::test]
async fn an_http1_response_on_the_hyper_path_finished_at_closing_says_connection_close() {
    let echo = backend::http_echo().await;
    let mut app = app_with(&echo, "").await;
    let mut s = TcpStream::connect(app.http()).await.unwrap();
    // A chunked body: hyper's path, kept alive.
    s.write_all(
        format!(
            "POST /slow?ms=500 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait::until("the request to reach the pod", async || echo.hits() == 1).await;
    // No drain delay: closing starts at once.
    app.signal();
    let (got, _) = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("slow"), "{text}");
}

/// A client that does not acknowledge the GOAWAY's PING (as a silent one would not) is still
/// closed, once nothing is in flight.
#[tokio::test]
async fn http2_connections_get_goaway_at_closing_and_their_streams_finish() {
    let echo = backend::http_echo().await;
    let mut app = app_with(&echo, "").await;
    let mut idle = Vec::new();
    let mut busy = Vec::new();
    for addr in [app.http(), app.addrs.h2c.unwrap()] {
        let mut c = RawH2::connect(addr).await;
        c.handshake().await;
        idle.push(c);
        let mut c = RawH2::connect(addr).await;
        c.handshake().await;
        c.get(1, HOST, "/slow?ms=500").await;
        busy.push(c);
    }
    wait::until("the requests to reach the pod", async || echo.hits() == 2).await;
    app.signal();
    for mut c in idle {
        let frames = c
            .closed_within(CLOSED_WITHIN)
            .await
            .expect("idle h2 closed");
        assert!(h2::has_goaway(&frames), "{frames:?}");
    }
    for mut c in busy {
        let frames = c.until_end_of(1, WAIT).await;
        assert!(
            h2::has_goaway(&frames),
            "GOAWAY before the response ends: {frames:?}"
        );
        let body: Vec<u8> = frames
            .iter()
            .filter(|f| f.kind == h2::DATA)
            .flat_map(|f| f.payload.clone())
            .collect();
        assert_eq!(body, b"slow");
        assert!(
            c.closed_within(CLOSED_WITHIN).await.is_some(),
            "closed after its stream"
        );
    }
}

/// With 128 descriptors the derived limit is the minimum, 16 per listener: 240 idle
/// connections to both listeners wait in the backlog instead of taking every descriptor, so
/// the admin port and requests on the held connections still work.
#[tokio::test]
async fn the_connection_limit_keeps_descriptors_for_the_admin_port() {
    let echo = backend::http_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "discovery: static\nactivator:\n  idle_timeout: 60s\n  probe_style: tcp\n  probe_period: 20ms\nrevisions:\n  - name: app\n    endpoints: [{}]\n",
        echo.addr
    );
    let mut bin = binary::start_activator(dir.path(), &yaml, Some(128));
    let ports = bin.ports;
    wait::until("readiness", async || {
        assert!(!bin.has_exited(), "the binary exited");
        try_get(ports.admin, "/readyz", WAIT).await.map(|r| r.0) == Some(200)
    })
    .await;

    // The first 16 on the HTTP listener will be served: one request proves it.
    let mut held = Vec::new();
    let mut first = TcpStream::connect(ports.http).await.unwrap();
    first
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, first.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    for addr in [ports.http, ports.h2c] {
        // Within the listen backlog (128), so that every connect completes at once.
        for _ in 0..120 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    for _ in 0..3 {
        let metrics = try_get(ports.admin, "/metrics", WAIT).await;
        assert_eq!(
            metrics.map(|r| r.0),
            Some(200),
            "/metrics with 240 held connections"
        );
        let health = try_get(ports.admin, "/healthz", WAIT).await;
        assert_eq!(
            health.map(|r| r.0),
            Some(200),
            "/healthz with 240 held connections"
        );
    }
    // The held connection still works.
    first
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // (The first response's body, then the second response.)
    let mut rest = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, first.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&chunk[..n]);
    }
    // One beyond the limit is served once the others go.
    let mut late = held.pop().unwrap();
    drop(held);
    drop(first);
    late.write_all(
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, late.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The real binary on SIGTERM: while a slow request finishes after the listeners have closed,
/// `/healthz` and `/metrics` keep answering (and `/readyz` says draining), until exit.
#[tokio::test]
async fn the_admin_port_answers_through_the_whole_drain_until_exit() {
    let echo = backend::http_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "discovery: static\nshutdown:\n  drain_delay: 300ms\n  grace_period: 10s\nactivator:\n  probe_style: tcp\n  probe_period: 20ms\nrevisions:\n  - name: app\n    endpoints: [{}]\n",
        echo.addr
    );
    let mut bin = binary::start_activator(dir.path(), &yaml, None);
    let ports = bin.ports;
    wait::until("readiness", async || {
        assert!(!bin.has_exited(), "the binary exited");
        try_get(ports.admin, "/readyz", WAIT).await.map(|r| r.0) == Some(200)
    })
    .await;
    let http = ports.http;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(http).await.unwrap();
        s.write_all(
            format!("GET /slow?ms=1500 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
        got
    });
    wait::until("the request to reach the pod", async || echo.hits() == 1).await;
    signal::kill(bin.pid(), signal::Signal::SIGTERM).unwrap();
    wait::until("readiness to fail", async || {
        try_get(ports.admin, "/readyz", WAIT).await.map(|r| r.0) == Some(503)
    })
    .await;

    // Until exit: every admin request answers, or the process is on its way out.
    let deadline = Instant::now() + WAIT;
    let mut after_close = 0;
    loop {
        let health = try_get(ports.admin, "/healthz", Duration::from_secs(2)).await;
        let metrics = try_get(ports.admin, "/metrics", Duration::from_secs(2)).await;
        let ready = try_get(ports.admin, "/readyz", Duration::from_secs(2)).await;
        let answered = matches!(health, Some((200, _)))
            && matches!(metrics, Some((200, ref m)) if m.contains("# TYPE"))
            && ready == Some((503, "draining".into()));
        if !answered {
            // Only the exit itself may stop the admin port.
            let exited = bin.exit_code(Duration::from_secs(2)).await;
            assert_eq!(exited, Some(0));
            break;
        }
        // The listeners are closed while the slow request finishes: the admin port answers
        // beyond the drain's closing step.
        if !slow.is_finished() && TcpStream::connect(http).await.is_err() {
            after_close += 1;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        after_close > 0,
        "no admin answer was seen after the listeners closed"
    );
    let got = slow.await.unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}
