//! Regression tests for the HTTP hardening of both HTTP paths, each over real sockets with a
//! raw client and a raw scripted pod: request smuggling through `Connection`, ambiguous
//! framing, 1xx before the body, stale pooled connections, response framing, and what a
//! client learns of the cluster.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::wire::{Backend, Conn, HOST, app_with, connect, get, get_once, ok, stock};

/// A request whose body is itself a complete request: a pod that loses the body's framing
/// reads it as a second request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn connection_naming_content_length_cannot_smuggle_a_request() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    for connection in ["Content-Length", "keep-alive, content-length"] {
        let mut c = connect(&app).await;
        c.send(format!(
            "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        ))
        .await
        .unwrap();
        let r = c.response("POST").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, SMUGGLED),
            "{connection}"
        );
        // Another client's request on the (pooled) pod connection gets its own response.
        let victim = get_once(&app, "/victim").await;
        assert_eq!(victim.text(), "GET /victim", "{connection}");
    }
    assert_eq!(
        backend.lines(),
        ["POST /upload", "GET /victim", "POST /upload", "GET /victim"]
    );
    assert!(
        backend
            .heads()
            .iter()
            .all(|h| h.get("content-length").is_some() || h.start.starts_with("GET"))
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn ambiguous_framing_gets_400_closes_and_reaches_no_pod() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let cases = [
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
        ),
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!("POST / HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example.com\r\n\r\n"),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
    ];
    for raw in &cases {
        let mut c = connect(&app).await;
        c.send(raw).await.unwrap();
        let r = c.response("POST").await;
        assert_eq!(r.status, 400, "{raw}");
        assert!(r.head.lists("connection", "close"), "{raw}");
        assert!(c.closed().await, "connection left open after {raw}");
    }
    // The same on a connection the general path serves (after an HTTP/1.0 request).
    let mut c = connect(&app).await;
    c.send(format!(
        "GET /first HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
    ))
    .await
    .unwrap();
    assert_eq!(c.response("GET").await.status, 200);
    c.send(format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example.com\r\n\r\n"
    ))
    .await
    .unwrap();
    let r = c.response("GET").await;
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
    assert_eq!(backend.lines(), ["GET /first"]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_1xx_before_the_body_is_relayed_and_the_body_still_flows() {
    let backend = Backend::start(|mut c: Conn| async move {
        let Some(head) = c.head_only().await else {
            return;
        };
        let n: usize = head.get("content-length").unwrap().parse().unwrap();
        c.reply("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            .await;
        let body = c.body(n).await.unwrap_or_default();
        c.reply(ok(&body)).await;
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nhello"
    ))
    .await
    .unwrap();
    // The interim response arrives while half the body is still with the client.
    let early = c.head().await.unwrap().unwrap();
    assert_eq!(early.status(), 103, "{}", early.raw);
    assert_eq!(early.get("link"), Some("</style.css>; rel=preload"));
    c.send("world").await.unwrap();
    let r = c.response("POST").await;
    assert_eq!((r.status, r.text().as_str()), (200, "helloworld"));
    app.shutdown().await.unwrap();
}

/// A pod that answers the first request of each connection with keep-alive, and closes a
/// connection when a second request arrives on it: a pooled connection the pod closed just
/// as it was reused.
async fn one_per_connection(mut c: Conn) {
    let Some(req) = c.next().await else { return };
    c.reply(ok(format!("{} {}", req.method, req.target).as_bytes()))
        .await;
    let _ = c.head_only().await;
    c.close().await;
}

#[tokio::test]
async fn a_stale_pooled_connection_is_resent_once_on_both_paths_but_never_a_post() {
    let backend = Backend::start(one_per_connection).await;
    let app = app_with(&backend, "", "").await;
    // HTTP/1.1 requests take the fast path; HTTP/1.0 ones the general path.
    for version in ["1.1", "1.0"] {
        for i in 0..3 {
            let mut c = connect(&app).await;
            c.send(format!(
                "GET /{version}/{i} HTTP/{version}\r\nHost: {HOST}\r\n\r\n"
            ))
            .await
            .unwrap();
            let r = c.response("GET").await;
            assert_eq!(
                (r.status, r.text()),
                (200, format!("GET /{version}/{i}")),
                "{version}"
            );
        }
    }
    for version in ["1.1", "1.0"] {
        // Warm a pooled connection, then a POST on it: it may have been processed, so it is
        // not sent again.
        let _ = get_once(&app, "/warm").await;
        let mut c = connect(&app).await;
        c.send(format!(
            "POST /once HTTP/{version}\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx"
        ))
        .await
        .unwrap();
        let r = c.response("POST").await;
        if r.status == 200 {
            // Served on a new connection (the pool had none): nothing to check.
            continue;
        }
        assert_eq!(r.status, 502, "{version}");
    }
    assert!(
        backend
            .lines()
            .iter()
            .filter(|l| *l == "POST /once")
            .count()
            <= 2,
        "{:?}",
        backend.lines()
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_answer_keeps_its_framing() {
    let backend = Backend::start(|mut c: Conn| async move {
        while let Some(req) = c.next().await {
            let reply: &[u8] = match req.target.as_str() {
                // Connection names Content-Length: the length still frames the body.
                "/named" => b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
                // Not chunked last: read until close, whatever Content-Length says.
                "/coded" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            };
            c.reply(reply).await;
            if req.target == "/coded" {
                c.close().await;
                return;
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(get("/named")).await.unwrap();
    let r = c.response("GET").await;
    assert_eq!(r.text(), "hello");
    assert_eq!(r.get("content-length"), Some("5"));
    c.send(get("/next")).await.unwrap();
    assert_eq!(c.response("GET").await.text(), "ok");

    let mut c = connect(&app).await;
    c.send(get("/coded")).await.unwrap();
    let r = c.response("GET").await;
    assert_eq!(r.get("content-length"), None, "{}", r.head.raw);
    assert_eq!(r.text(), "abcdef");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn forwarded_for_is_appended_and_error_bodies_name_no_pod() {
    let backend = Backend::start(|mut c: Conn| async move {
        while let Some(req) = c.next().await {
            if req.target == "/fail" {
                // Closes without an answer: a non-replayable request gets 502.
                c.close().await;
                return;
            }
            let xff = req.head.get("x-forwarded-for").unwrap_or("").to_string();
            c.reply(ok(xff.as_bytes())).await;
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    for version in ["1.1", "1.0"] {
        let mut c = connect(&app).await;
        c.send(format!(
            "GET / HTTP/{version}\r\nHost: {HOST}\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n"
        ))
        .await
        .unwrap();
        let r = c.response("GET").await;
        assert_eq!(
            r.text(),
            "203.0.113.7, 198.51.100.1, 127.0.0.1",
            "HTTP/{version}"
        );
        let mut c = connect(&app).await;
        c.send(format!(
            "POST /fail HTTP/{version}\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx"
        ))
        .await
        .unwrap();
        let r = c.response("POST").await;
        assert_eq!(r.status, 502, "HTTP/{version}");
        let body = r.text();
        assert!(
            !body.contains("127.0.0.1") && !body.contains(&backend.addr.port().to_string()),
            "HTTP/{version}: {body}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fully_qualified_host_routes() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    for host in [format!("{HOST}."), format!("{}.:80", HOST.to_uppercase())] {
        let mut c = connect(&app).await;
        c.send(format!("GET /fqdn HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .await
            .unwrap();
        let r = c.response("GET").await;
        assert_eq!((r.status, r.text().as_str()), (200, "GET /fqdn"), "{host}");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_chunk_from_the_client_is_its_error_not_the_pods() {
    let backend = Backend::start(stock).await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(format!(
        "POST /chunks HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n"
    ))
    .await
    .unwrap();
    let r = c.response("POST").await;
    assert_eq!(r.status, 400, "{}", r.text());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_response_finished_during_the_drain_closes_the_connection() {
    let (release, released) = tokio::sync::watch::channel(false);
    let backend = Backend::start(move |mut c: Conn| {
        let mut released = released.clone();
        async move {
            while let Some(req) = c.next().await {
                if req.target == "/slow" {
                    let _ = released.wait_for(|r| *r).await;
                }
                c.reply(ok(b"done")).await;
            }
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    let mut c = connect(&app).await;
    c.send(get("/slow")).await.unwrap();
    support::wait::until("the pod has the request", async || {
        backend.lines().len() == 1
    })
    .await;
    app.drain().start_closing();
    release.send_replace(true);
    let r = c.response("GET").await;
    assert_eq!(r.text(), "done");
    assert!(r.head.lists("connection", "close"), "{}", r.head.raw);
    assert!(c.closed().await);
    tokio::time::timeout(Duration::from_secs(30), app.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_switch_nobody_asked_for_is_a_bad_gateway_on_both_paths() {
    let backend = Backend::start(|mut c: Conn| async move {
        if c.next().await.is_some() {
            c.reply("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nNOT HTTP")
                .await;
        }
    })
    .await;
    let app = app_with(&backend, "", "").await;
    for version in ["1.1", "1.0"] {
        let mut c = connect(&app).await;
        c.send(format!("GET /x HTTP/{version}\r\nHost: {HOST}\r\n\r\n"))
            .await
            .unwrap();
        let r = c.response("GET").await;
        assert_eq!(r.status, 502, "HTTP/{version}: {}", r.head.raw);
        assert!(!r.text().contains("NOT HTTP"));
    }
    app.shutdown().await.unwrap();
}
