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
    spawn_accept(|stream, hits, seqs| async move {
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
