//! The activator's HTTP/1.1 proxying pinned at the byte level: raw client sockets in front,
//! raw scripted backends behind. Only behaviour every correct HTTP/1.1 reverse proxy has is
//! asserted (no header order, name casing, `date`, or framing where re-framing is allowed).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{
    wait,
    wire::{
        Backend, Conn, HOST, WAIT, app_with, connect, get, get_once, leaked_hop_by_hop, ok,
        pattern, stock,
    },
};
use tokio::time::Instant;

#[tokio::test]
async fn keep_alive_serves_sequential_requests_on_one_client_connection() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    for path in ["/one", "/two"] {
        c.send(get(path)).await.unwrap();
        let r = c.response("GET").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("GET {path}"));
    }
    assert_eq!(backend.lines(), ["GET /one", "GET /two"]);
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!("{}{}", get("/p1"), get("/p2")))
        .await
        .unwrap();
    for path in ["/p1", "/p2"] {
        let r = c.response("GET").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("GET {path}"));
    }
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_backend_sees_the_rewritten_request() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(
        "GET /a/b?c=d HTTP/1.1\r\n\
         Host: anything.example\r\n\
         Knative-Serving-Namespace: default\r\n\
         Knative-Serving-Revision: app\r\n\
         Connection: keep-alive, x-hop\r\n\
         X-Hop: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: x\r\n\
         X-E2e: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let r = c.response("GET").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let heads = backend.heads();
    let [h] = heads.as_slice() else {
        panic!("one request expected: {heads:?}");
    };
    let line: Vec<&str> = h.start.split(' ').collect();
    assert_eq!(line[..2], ["GET", "/a/b?c=d"], "{}", h.raw);
    assert_eq!(h.get("k-proxy-request"), Some("activator"), "{}", h.raw);
    assert_eq!(
        h.get("k-original-host"),
        Some("anything.example"),
        "{}",
        h.raw
    );
    assert_eq!(
        h.get("host"),
        Some(backend.addr.to_string().as_str()),
        "{}",
        h.raw
    );
    assert_eq!(h.get("x-e2e"), Some("1"), "{}", h.raw);
    for gone in ["knative-serving-namespace", "knative-serving-revision"] {
        assert_eq!(h.get(gone), None, "{}", h.raw);
    }
    let leaked = leaked_hop_by_hop(h, &["x-hop"]);
    assert!(leaked.is_empty(), "{leaked:?} in\n{}", h.raw);
    assert_eq!(h.all("host").count(), 1, "{}", h.raw);
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn content_length_request_bodies_arrive_intact() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!(
        "POST /small HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello"
    ))
    .await
    .unwrap();
    let r = c.response("POST").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));

    let big = pattern(100 * 1024);
    c.send(format!(
        "POST /big HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
        big.len()
    ))
    .await
    .unwrap();
    for part in big.chunks(12 * 1024) {
        c.send(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let r = c.response("POST").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == big, "echoed {} bytes, not the body", r.body.len());

    let heads = backend.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(
        heads[0].get("content-length"),
        Some("5"),
        "{}",
        heads[0].raw
    );
    assert_eq!(
        heads[1].get("content-length"),
        Some("102400"),
        "{}",
        heads[1].raw
    );
    let bodies = backend.bodies();
    assert_eq!(bodies[0], b"hello");
    assert!(bodies[1] == big, "backend got {} bytes", bodies[1].len());
    drop(c);
    app.shutdown().await.unwrap();
}

/// The body the framing backend sends for `/eof`, delimited by closing the connection.
const EOF_BODY_LEN: usize = 3000;

/// Answers by path with each way of framing (or not having) a response body.
async fn framing(mut c: Conn) {
    while let Some(req) = c.next().await {
        let sent = match req.target.as_str() {
            "/length" => c.reply(ok(b"fixed length body")).await,
            "/chunked" => {
                let mut sent = c
                    .reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                for chunk in [
                    "7\r\nhello, \r\n",
                    "8\r\nchunked \r\n",
                    "5\r\nworld\r\n",
                    "0\r\n\r\n",
                ] {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    sent &= c.reply(chunk).await;
                }
                sent
            }
            "/eof" => {
                let body = pattern(EOF_BODY_LEN);
                c.reply("HTTP/1.1 200 OK\r\n\r\n").await;
                for part in body.chunks(1000) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    c.reply(part).await;
                }
                c.close().await;
                return;
            }
            "/no-content" => c.reply("HTTP/1.1 204 No Content\r\n\r\n").await,
            "/not-modified" => {
                c.reply("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
                    .await
            }
            // Meant for HEAD: the length of the body a GET would get, and no body.
            "/head" => {
                c.reply("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    .await
            }
            _ => {
                c.reply("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await
            }
        };
        if !sent {
            return;
        }
    }
}

#[tokio::test]
async fn content_length_and_chunked_responses_arrive_exact() {
    let backend = Backend::start(framing).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    for (path, body) in [
        ("/length", "fixed length body"),
        ("/chunked", "hello, chunked world"),
        ("/length", "fixed length body"),
    ] {
        c.send(get(path)).await.unwrap();
        let r = c.response("GET").await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_close_delimited_response_arrives_exact() {
    let backend = Backend::start(framing).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(get("/eof")).await.unwrap();
    // Re-framed (chunked or length) or close-delimited in turn: the bytes are what counts.
    let r = c.response("GET").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), EOF_BODY_LEN);
    assert!(r.body == pattern(EOF_BODY_LEN), "body bytes differ");
    drop(c);
    // The pod closed its connection; the next request needs (and gets) a new one.
    let r = get_once(&app, "/length").await;
    assert_eq!((r.status, r.text().as_str()), (200, "fixed length body"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn bodiless_204_and_304_leave_the_connection_usable() {
    let backend = Backend::start(framing).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    for (path, status) in [("/no-content", 204), ("/not-modified", 304)] {
        c.send(get(path)).await.unwrap();
        let r = c.response("GET").await;
        assert_eq!(r.status, status, "{}", r.head.raw);
        if let Some(n) = r.get("content-length").filter(|_| status == 204) {
            assert_eq!(n, "0", "{}", r.head.raw);
        }
        assert!(
            !r.head.lists("transfer-encoding", "chunked"),
            "{}",
            r.head.raw
        );
    }
    // Any stray body bytes would corrupt this response.
    c.send(get("/length")).await.unwrap();
    let r = c.response("GET").await;
    assert_eq!((r.status, r.text().as_str()), (200, "fixed length body"));
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn head_gets_the_length_and_no_body() {
    let backend = Backend::start(framing).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!("HEAD /head HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await
        .unwrap();
    let r = c.response("HEAD").await;
    assert_eq!(r.status, 200, "{}", r.head.raw);
    assert_eq!(r.get("content-length"), Some("1000"), "{}", r.head.raw);
    // Any body bytes would corrupt this response.
    c.send(get("/length")).await.unwrap();
    let r = c.response("GET").await;
    assert_eq!((r.status, r.text().as_str()), (200, "fixed length body"));
    assert_eq!(backend.lines(), ["HEAD /head", "GET /length"]);
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_forwarded() {
    let backend = Backend::start(|mut c: Conn| async move {
        while c.next().await.is_some() {
            let sent = c
                .reply(
                    "HTTP/1.1 200 OK\r\n\
                     Connection: x-resp-hop\r\n\
                     X-Resp-Hop: 1\r\n\
                     Keep-Alive: timeout=3\r\n\
                     X-Kept: 1\r\n\
                     Content-Length: 2\r\n\r\nok",
                )
                .await;
            if !sent {
                return;
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    for _ in 0..2 {
        c.send(get("/")).await.unwrap();
        let r = c.response("GET").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_eq!(r.get("x-kept"), Some("1"), "{}", r.head.raw);
        let leaked = leaked_hop_by_hop(&r.head, &["x-resp-hop"]);
        assert!(leaked.is_empty(), "{leaked:?} in\n{}", r.head.raw);
    }
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn connection_close_from_the_client_closes_after_the_response() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!(
        "GET /bye HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ))
    .await
    .unwrap();
    let r = c.response("GET").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /bye"));
    assert!(c.closed().await, "the activator kept the connection open");
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    for i in 0..5 {
        c.send(get(&format!("/{i}"))).await.unwrap();
        let r = c.response("GET").await;
        assert_eq!((r.status, r.text()), (200, format!("GET /{i}")));
    }
    assert_eq!(backend.heads().len(), 5);
    assert!(
        backend.used() <= 2,
        "{} upstream connections for 5 sequential requests",
        backend.used()
    );
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_closing_after_its_response_does_not_fail_the_next_request() {
    let backend = Backend::start(|mut c: Conn| async move {
        while let Some(req) = c.next().await {
            let body = format!("GET {}", req.target);
            match req.target.as_str() {
                "/close-header" => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    c.reply(head + &body).await;
                    return c.close().await;
                }
                "/close-silently" => {
                    c.reply(ok(body.as_bytes())).await;
                    return c.close().await;
                }
                _ => {
                    if !c.reply(ok(body.as_bytes())).await {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    for path in ["/a", "/close-header", "/b", "/close-silently", "/c"] {
        c.send(get(path)).await.unwrap();
        let r = c.response("GET").await;
        assert_eq!((r.status, r.text()), (200, format!("GET {path}")));
    }
    assert_eq!(
        backend.lines(),
        [
            "GET /a",
            "GET /close-header",
            "GET /b",
            "GET /close-silently",
            "GET /c"
        ]
    );
    assert!(backend.used() >= 3, "{} connections", backend.used());
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stale_pooled_connection_does_not_fail_a_get() {
    // Keep-alive answer, then the pod closes the idle connection on its own.
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = closed.clone();
    let backend = Backend::start(move |mut c: Conn| {
        let flag = flag.clone();
        async move {
            if let Some(req) = c.next().await {
                c.reply(ok(format!("GET {}", req.target).as_bytes())).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                c.close().await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(get("/first")).await.unwrap();
    let r = c.response("GET").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /first"));
    wait::until("the pod to close its idle connection", async || {
        closed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    c.send(get("/second")).await.unwrap();
    let r = c.response("GET").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /second"));
    assert_eq!(backend.used(), 2);
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_400_and_431() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "  max_header_bytes: 16384\n", "").await;

    let mut c = connect(&app).await;
    c.send("GARBAGE\r\n\r\n").await.unwrap();
    let r = c.response("GET").await;
    assert_eq!(r.status, 400, "{}", r.head.raw);
    drop(c);
    let r = get_once(&app, "/after-400").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /after-400"));

    let mut head = format!("GET /big HTTP/1.1\r\nHost: {HOST}\r\n");
    for i in 0..20 {
        head.push_str(&format!("x-big-{i:02}: {}\r\n", "a".repeat(1000)));
    }
    head.push_str("\r\n");
    assert!(head.len() > 20_000);
    let mut c = connect(&app).await;
    // The activator may answer before it has read everything: a failed write is fine.
    let _ = c.send(head).await;
    let r = c.response("GET").await;
    assert_eq!(r.status, 431, "{}", r.head.raw);
    drop(c);
    let r = get_once(&app, "/after-431").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /after-431"));
    assert_eq!(backend.lines(), ["GET /after-400", "GET /after-431"]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_host_gets_404() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send("GET / HTTP/1.1\r\nHost: nope.example.com\r\n\r\n")
        .await
        .unwrap();
    let r = c.response("GET").await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The connection may be closed now; if it is not, it must still serve.
    if c.send(get("/same-connection")).await.is_ok()
        && let Ok(Some(r)) = c.try_response("GET").await
    {
        assert_eq!((r.status, r.text().as_str()), (200, "GET /same-connection"));
    }
    drop(c);
    let r = get_once(&app, "/new-connection").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /new-connection"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_dropping_the_request_gets_502() {
    let backend = Backend::start(|mut c: Conn| async move {
        if c.next().await.is_some() {
            c.close().await;
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let r = get_once(&app, "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!backend.heads().is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_slower_than_the_revision_timeout_gets_504() {
    // Reads requests and never answers.
    let backend =
        Backend::start(|mut c: Conn| async move { while c.next().await.is_some() {} }).await;
    let app = app_with(&backend, "", "    timeout: 1s\n").await;
    let started = Instant::now();
    let r = get_once(&app, "/slow").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(backend.lines(), ["GET /slow"]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_large_response_body_streams_intact() {
    const LEN: usize = 1536 * 1024;
    let backend = Backend::start(|mut c: Conn| async move {
        while c.next().await.is_some() {
            let body = pattern(LEN);
            let mut sent = c
                .reply(format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n"))
                .await;
            for part in body.chunks(64 * 1024) {
                sent &= c.reply(part).await;
            }
            if !sent {
                return;
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let r = get_once(&app, "/large").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), LEN);
    assert!(r.body == pattern(LEN), "body bytes differ");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    ))
    .await
    .unwrap();
    let interim = c
        .head()
        .await
        .expect("100 Continue in time")
        .expect("100 Continue, not EOF");
    assert_eq!(interim.status(), 100, "{}", interim.raw);
    c.send("hello world").await.unwrap();
    let r = c.response("POST").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    assert_eq!(backend.bodies(), [b"hello world"]);
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_warm_request_has_no_cold_start_header() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    // The first request may find the pod not yet probed; once it is served, the pod is
    // known healthy and every later request is warm.
    assert_eq!(get_once(&app, "/first").await.status, 200);
    for path in ["/warm1", "/warm2"] {
        let r = get_once(&app, path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.get("x-kactivator-cold-start"), None, "{}", r.head.raw);
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_http_1_0_request_without_host_is_routed_by_headers_and_closed() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(
        "GET /old HTTP/1.0\r\n\
         Knative-Serving-Namespace: default\r\n\
         Knative-Serving-Revision: app\r\n\r\n",
    )
    .await
    .unwrap();
    let r = c.response("GET").await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /old"));
    // RFC 9112 §7.1: no chunked framing for an HTTP/1.0 recipient.
    assert!(!r.chunked, "{}", r.head.raw);
    assert!(
        c.closed().await,
        "the activator kept an HTTP/1.0 connection open"
    );
    drop(c);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_answering_before_the_body_is_sent_is_relayed() {
    // A server refusing an upload by its headers: it answers at once and never reads the body.
    let backend = Backend::start(|mut c: Conn| async move {
        if c.head_only().await.is_some() {
            c.reply("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big\n")
                .await;
            // Holds the connection open, unread, for longer than the client waits.
            tokio::time::sleep(WAIT).await;
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut w = connect(&app).await;
    // Only part of the 8 MiB body is sent: the activator must not wait for the rest before
    // relaying the pod's answer.
    w.send(format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    ))
    .await
    .unwrap();
    w.send(pattern(64 * 1024)).await.unwrap();
    let r = w.response("POST").await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.body, b"too big\n");
    // The rest of the body was never read: the connection cannot carry another request.
    assert!(w.closed().await, "client connection left open");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn at_closing_idle_connections_close_and_in_flight_requests_finish() {
    let backend = Backend::start(|mut c: Conn| async move {
        while let Some(req) = c.next().await {
            if req.head.raw.starts_with("GET /slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if !c.reply(ok(b"done")).await {
                return;
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut idle = connect(&app).await;
    idle.send(get("/")).await.unwrap();
    assert_eq!(idle.response("GET").await.status, 200);
    let mut busy = connect(&app).await;
    busy.send(get("/slow")).await.unwrap();
    wait::until("the slow request at the pod", async || {
        backend.lines().iter().any(|l| l == "GET /slow")
    })
    .await;
    app.drain().start_closing();
    assert!(
        idle.closed().await,
        "an idle keep-alive connection stayed open"
    );
    let r = busy.response("GET").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"done");
    assert!(
        busy.closed().await,
        "the connection stayed open after its last response"
    );
    app.shutdown().await.unwrap();
}
