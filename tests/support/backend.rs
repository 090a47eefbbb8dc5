//! Test backends for the activator: HTTP echo/slow/stream, a rude body reader, a websocket
//! echo, and a gRPC echo. Each binds 127.0.0.1:0 and can be stopped (port then refuses).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

pub mod echo_proto {
    tonic::include_proto!("kactivator.test");
}

type Body = BoxBody<Bytes, Infallible>;

/// A running backend; dropping it (or `stop`) closes the port and every connection.
pub struct Backend {
    pub addr: SocketAddr,
    /// Requests received (HTTP backends), by arrival.
    pub hits: Arc<AtomicUsize>,
    /// `x-seq` header of each request, in arrival order.
    pub seqs: Arc<Mutex<Vec<String>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection.
    pub fn stop(&self) {
        self.tasks.lock().abort_all();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn spawn_accept<F, Fut>(serve: F) -> Backend
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    spawn_accept_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), serve).await
}

async fn spawn_accept_on<F, Fut>(listener: TcpListener, serve: F) -> Backend
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let tasks = Arc::new(Mutex::new(JoinSet::new()));
    let (h, s, t) = (hits.clone(), seqs.clone(), tasks.clone());
    tasks.lock().spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let fut = serve(stream, h.clone(), s.clone());
            t.lock().spawn(fut);
        }
    });
    Backend {
        addr,
        hits,
        seqs,
        tasks,
    }
}

/// HTTP/1.1 + h2c echo server.
///
/// - `/healthz`: 200 `ok`.
/// - `/slow?ms=N`: waits N ms, then 200 `slow`.
/// - `/stream`: 200 at once, then echoes each request body chunk as it arrives.
/// - anything else: 200 with one `name: value` line per request header, after
///   `method`, `path` and `port` lines, then `body-bytes: N`.
pub async fn http_echo() -> Backend {
    http_echo_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

/// [`http_echo`] on a listener bound by the caller (a pod that starts on a known port).
pub async fn http_echo_on(listener: TcpListener) -> Backend {
    spawn_accept_on(listener, |stream, hits, seqs| async move {
        let port = stream.local_addr().unwrap().port();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (hits, seqs) = (hits.clone(), seqs.clone());
            async move { Ok::<_, Infallible>(echo(req, port, hits, seqs).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// The echo of [`http_echo`], speaking HTTP/1.1 only (a plain HTTP/1 app).
pub async fn http1_echo() -> Backend {
    spawn_accept(|stream, hits, seqs| async move {
        let port = stream.local_addr().unwrap().port();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (hits, seqs) = (hits.clone(), seqs.clone());
            async move { Ok::<_, Infallible>(echo(req, port, hits, seqs).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// The echo of [`http_echo`], speaking h2c with prior knowledge only (as gRPC servers do).
pub async fn h2c_echo() -> Backend {
    h2c_echo_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

/// [`h2c_echo`] on a listener bound by the caller (a pod that comes up on a known address).
pub async fn h2c_echo_on(listener: TcpListener) -> Backend {
    spawn_accept_on(listener, |stream, hits, seqs| async move {
        let port = stream.local_addr().unwrap().port();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (hits, seqs) = (hits.clone(), seqs.clone());
            async move { Ok::<_, Infallible>(echo(req, port, hits, seqs).await) }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

async fn echo(
    req: Request<Incoming>,
    port: u16,
    hits: Arc<AtomicUsize>,
    seqs: Arc<Mutex<Vec<String>>>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok".into());
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if let Some(seq) = req.headers().get("x-seq") {
        seqs.lock().push(seq.to_str().unwrap().to_string());
    }
    if path == "/slow" {
        let ms: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text(StatusCode::OK, "slow".into());
    }
    if path == "/stream" {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(Ok(Frame::data(data))).await.is_err()
                {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        return Response::new(BodyExt::boxed(StreamBody::new(stream)));
    }
    let mut out = format!(
        "method: {}\npath: {}\nport: {port}\nversion: {:?}\n",
        req.method(),
        req.uri().path(),
        req.version()
    );
    for (k, v) in req.headers() {
        out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    out.push_str(&format!("body-bytes: {}\n", body.len()));
    text(StatusCode::OK, out)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r
}

/// Reads a little of each request, then drops the connection without answering: a pod that
/// died after the request reached it. The HTTP/2 preface of the activator's TCP probe (which
/// learns whether a pod speaks h2c) is no request and is not counted.
pub async fn rude() -> Backend {
    spawn_accept(|mut stream, hits, _| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n > 0 && !buf.starts_with(b"PRI * HTTP/2.0") {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await
}

/// Websocket echo (any path).
pub async fn websocket_echo() -> Backend {
    spawn_accept(|stream, hits, _| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        hits.fetch_add(1, Ordering::SeqCst);
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                return;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// gRPC echo: `Unary` echoes the message; `ServerStream` sends it `count` times.
pub async fn grpc_echo() -> Backend {
    use echo_proto::echo_server::EchoServer;
    let svc = EchoServer::new(GrpcEcho);
    spawn_accept(move |stream, hits, _| {
        let svc = svc.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                tower::ServiceExt::oneshot(svc.clone(), req)
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await
}

#[derive(Debug, Clone, Copy)]
struct GrpcEcho;

#[tonic::async_trait]
impl echo_proto::echo_server::Echo for GrpcEcho {
    async fn unary(
        &self,
        req: tonic::Request<echo_proto::EchoRequest>,
    ) -> Result<tonic::Response<echo_proto::EchoReply>, tonic::Status> {
        let proxied = req
            .metadata()
            .get("k-proxy-request")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let message = req.into_inner().message;
        Ok(tonic::Response::new(echo_proto::EchoReply {
            message: format!("{message} via {proxied}"),
        }))
    }

    type ServerStreamStream =
        tokio_stream::wrappers::ReceiverStream<Result<echo_proto::EchoReply, tonic::Status>>;

    async fn server_stream(
        &self,
        req: tonic::Request<echo_proto::EchoRequest>,
    ) -> Result<tonic::Response<Self::ServerStreamStream>, tonic::Status> {
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..req.count {
                let reply = echo_proto::EchoReply {
                    message: format!("{} {i}", req.message),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }
}

/// A pod behind a Knative queue-proxy: answers the activator's probe (`K-Network-Probe: queue`)
/// with 200 `queue` while ready (503 otherwise) and echoes every other request (first line
/// `pod: <addr>`), HTTP/1.1 and h2c. Requests can be held to measure concurrency; dropping it
/// closes the port and every connection.
pub struct QueueProxy {
    pub addr: SocketAddr,
    stats: Arc<PodStats>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

#[derive(Debug)]
struct PodStats {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    hits: AtomicUsize,
    probes: AtomicUsize,
    ready: std::sync::atomic::AtomicBool,
    /// `true`: requests wait until it turns `false`.
    hold: tokio::sync::watch::Sender<bool>,
    /// When each request (not probe) arrived, in order.
    arrivals: Mutex<Vec<tokio::time::Instant>>,
}

impl QueueProxy {
    /// Serves on 127.0.0.1:0.
    pub async fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Serves on `ip:port`, e.g. `127.0.0.12` and the port every pod of a revision shares.
    pub async fn bind(ip: &str, port: u16) -> std::io::Result<Self> {
        Ok(Self::start_on(TcpListener::bind((ip, port)).await?))
    }

    pub fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(PodStats {
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            ready: std::sync::atomic::AtomicBool::new(true),
            hold: tokio::sync::watch::channel(false).0,
            arrivals: Mutex::new(Vec::new()),
        });
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (s, t) = (stats.clone(), tasks.clone());
        tasks.lock().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let stats = s.clone();
                t.lock().spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let stats = stats.clone();
                        async move { Ok::<_, Infallible>(queue_proxy_serve(req, addr, stats).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, stats, tasks }
    }

    /// Requests (not probes) received.
    pub fn hits(&self) -> usize {
        self.stats.hits.load(Ordering::SeqCst)
    }

    /// Probes received.
    pub fn probes(&self) -> usize {
        self.stats.probes.load(Ordering::SeqCst)
    }

    /// Requests inside the pod now.
    pub fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    /// Most requests ever inside the pod at once.
    pub fn max_in_flight(&self) -> usize {
        self.stats.max_in_flight.load(Ordering::SeqCst)
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<tokio::time::Instant> {
        self.stats.arrivals.lock().clone()
    }

    /// Probes answer 200 `queue` (`true`) or 503 (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.stats.ready.store(ready, Ordering::SeqCst);
    }

    /// `true`: requests stay in the pod until `hold(false)`.
    pub fn hold(&self, on: bool) {
        self.stats.hold.send_replace(on);
    }

    /// Closes the listener and every open connection.
    pub fn stop(&self) {
        self.tasks.lock().abort_all();
    }
}

impl Drop for QueueProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds one [`QueueProxy`] per IP on one port shared by all (Endpoints give a revision's pods
/// one port): tries free ports of 127.0.0.1 until every IP could bind it.
pub async fn queue_proxies(ips: &[&str]) -> (u16, Vec<QueueProxy>) {
    for _ in 0..50 {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pods = Vec::new();
        for ip in ips {
            match QueueProxy::bind(ip, port).await {
                Ok(p) => pods.push(p),
                Err(_) => break,
            }
        }
        if pods.len() == ips.len() {
            return (port, pods);
        }
    }
    panic!("no port free on all of {ips:?}");
}

async fn queue_proxy_serve(
    req: Request<Incoming>,
    addr: SocketAddr,
    stats: Arc<PodStats>,
) -> Response<Body> {
    if req
        .headers()
        .get("k-network-probe")
        .is_some_and(|v| v == "queue")
    {
        stats.probes.fetch_add(1, Ordering::SeqCst);
        return if stats.ready.load(Ordering::SeqCst) {
            text(StatusCode::OK, "queue".into())
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready".into())
        };
    }
    stats.arrivals.lock().push(tokio::time::Instant::now());
    stats.hits.fetch_add(1, Ordering::SeqCst);
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Decremented however the request ends (also when the activator gives up on it).
    struct Leave(Arc<PodStats>);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(stats.clone());
    let mut hold = stats.hold.subscribe();
    let _ = hold.wait_for(|held| !held).await;
    let mut out = format!(
        "pod: {addr}\nmethod: {}\npath: {}\nversion: {:?}\n",
        req.method(),
        req.uri().path(),
        req.version()
    );
    for (k, v) in req.headers() {
        out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    text(StatusCode::OK, out)
}
