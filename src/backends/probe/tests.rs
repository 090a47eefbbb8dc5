use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::Mutex};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Serves {
    Http1,
    H2c,
    Both,
}

/// A server speaking `serves`, answering 200 `queue`; records each request's version.
async fn server(serves: Serves) -> (SocketAddr, Arc<Mutex<Vec<http::Version>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        record.lock().await.push(req.version());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"queue"))))
                    }
                });
                let io = TokioIo::new(s);
                let _ = match serves {
                    Serves::Http1 => hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                        .map_err(|e| e.to_string()),
                    Serves::H2c => hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                        .map_err(|e| e.to_string()),
                    Serves::Both => {
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                            .map_err(|e| e.to_string())
                    }
                };
            });
        }
    });
    (addr, seen)
}

async fn run(style: ProbeStyle, protocol: Protocol, addr: SocketAddr) -> Option<Speaks> {
    probe(style, protocol, addr, "/healthz", TIMEOUT, None).await
}

#[tokio::test]
async fn auto_learns_what_each_pod_speaks() {
    let (h1, _) = server(Serves::Http1).await;
    let (h2, _) = server(Serves::H2c).await;
    let (both, _) = server(Serves::Both).await;
    for style in [ProbeStyle::Http, ProbeStyle::Knative] {
        assert_eq!(run(style, Protocol::Auto, h1).await, Some(Speaks::HTTP1));
        assert_eq!(run(style, Protocol::Auto, h2).await, Some(Speaks::H2C));
        assert_eq!(run(style, Protocol::Auto, both).await, Some(Speaks::ANY));
    }
}

#[tokio::test]
async fn configured_protocols_probe_in_that_protocol_only() {
    let (h1, seen_h1) = server(Serves::Http1).await;
    let (h2, seen_h2) = server(Serves::H2c).await;
    assert_eq!(
        run(ProbeStyle::Http, Protocol::H2c, h2).await,
        Some(Speaks::H2C)
    );
    assert_eq!(run(ProbeStyle::Http, Protocol::H2c, h1).await, None);
    assert_eq!(
        run(ProbeStyle::Http, Protocol::Http1, h1).await,
        Some(Speaks::HTTP1)
    );
    assert_eq!(run(ProbeStyle::Http, Protocol::Http1, h2).await, None);
    assert_eq!(*seen_h2.lock().await, [http::Version::HTTP_2]);
    assert_eq!(*seen_h1.lock().await, [http::Version::HTTP_11]);
}

#[tokio::test]
async fn tcp_probes_of_auto_revisions_tell_http1_only_pods_from_the_preface_answer() {
    let (h1, seen_h1) = server(Serves::Http1).await;
    let (h2, seen_h2) = server(Serves::H2c).await;
    let (both, seen_both) = server(Serves::Both).await;
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::Auto, h1).await,
        Some(Speaks::HTTP1)
    );
    // h2c-only and both answer the preface alike: the client's version decides.
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::Auto, h2).await,
        Some(Speaks::ANY)
    );
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::Auto, both).await,
        Some(Speaks::ANY)
    );
    // nginx answers the preface with a 400 instead of closing.
    let nginx_like = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nginx_addr = nginx_like.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut s, _) = nginx_like.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::Auto, nginx_addr).await,
        Some(Speaks::HTTP1)
    );
    // No app saw a request.
    for seen in [seen_h1, seen_h2, seen_both] {
        assert!(seen.lock().await.is_empty());
    }
    // What is known is not asked again.
    let known = Some(Speaks::H2C);
    assert_eq!(
        probe(ProbeStyle::Tcp, Protocol::Auto, h1, "/", TIMEOUT, known).await,
        known
    );
    // A pod that accepts and never answers is healthy (TCP) and unknown, within the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let got = probe(
        ProbeStyle::Tcp,
        Protocol::Auto,
        silent.local_addr().unwrap(),
        "/",
        Duration::from_millis(100),
        None,
    )
    .await;
    assert_eq!(got, Some(Speaks::ANY));
}

#[tokio::test]
async fn tcp_probes_of_configured_protocols_and_failures() {
    let (h2, seen) = server(Serves::H2c).await;
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::Http1, h2).await,
        Some(Speaks::HTTP1)
    );
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::H2c, h2).await,
        Some(Speaks::H2C)
    );
    assert!(seen.lock().await.is_empty());
    // A closed port is unhealthy in every style and protocol.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for style in [ProbeStyle::Tcp, ProbeStyle::Http, ProbeStyle::Knative] {
        for protocol in [Protocol::Auto, Protocol::Http1, Protocol::H2c] {
            assert_eq!(run(style, protocol, closed).await, None);
        }
    }
}

#[tokio::test]
async fn a_silent_pod_fails_within_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let started = tokio::time::Instant::now();
    let got = probe(
        ProbeStyle::Http,
        Protocol::Auto,
        addr,
        "/healthz",
        Duration::from_millis(200),
        None,
    )
    .await;
    assert_eq!(got, None);
    assert!(started.elapsed() < TIMEOUT);
    drop(l);
}
