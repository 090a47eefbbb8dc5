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
    probe(style, protocol, addr, "/healthz", TIMEOUT).await
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
async fn tcp_learns_nothing_and_failures_are_unhealthy() {
    let (h2, seen) = server(Serves::H2c).await;
    assert_eq!(
        run(ProbeStyle::Tcp, Protocol::Auto, h2).await,
        Some(Speaks::ANY)
    );
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
    )
    .await;
    assert_eq!(got, None);
    assert!(started.elapsed() < TIMEOUT);
    drop(l);
}
