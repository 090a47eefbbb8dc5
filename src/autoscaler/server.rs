//! The stats server on `listen.autoscaler`: Knative's stats websocket, the endpoints feed, and
//! a kubelet-style health answer.
//!
//! - websocket on any path but `/endpoints`: binary stats frames, protobuf or gob (detected per
//!   frame); malformed or oversized frames are dropped and counted, the connection is kept;
//!   text frames are ignored (Knative dropped JSON in v0.20);
//! - websocket on `/endpoints`: a JSON snapshot of the ready pods (see docs/autoscaler.md),
//!   pushed at once and after every change;
//! - plain `GET /endpoints`: the same snapshot once;
//! - any other plain `GET` (a kubelet probe): 200 `ok`.
//!
//! On shutdown every websocket is closed with code 1012 ("service restart"), which tells
//! Knative-style clients to reconnect at once.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use crate::{
    autoscaler_client::wire,
    discovery::feed::{ENDPOINTS_PATH, Snapshot},
    endpoints::Endpoints,
    metrics as m,
};

/// Largest stats frame accepted; bigger ones are dropped (the connection is kept).
pub const MAX_FRAME: usize = 1024 * 1024;
/// Beyond this the websocket layer itself gives up on the connection.
const MAX_WS_MESSAGE: usize = 4 * MAX_FRAME;
/// How long closing handshakes may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the connections share.
#[derive(Debug, Clone)]
pub(crate) struct ServerState {
    pub(crate) stats: mpsc::Sender<wire::Received>,
    pub(crate) endpoints: watch::Receiver<Endpoints>,
    pub(crate) closing: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Accepts until `state.closing`, then waits (bounded) for connections to close.
pub(crate) async fn serve(listener: TcpListener, state: ServerState) {
    loop {
        let (stream, peer) = tokio::select! {
            () = state.closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "Autoscaler listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let st = state.clone();
        state.tasks.spawn(async move {
            let service = service_fn(move |req| handle(req, peer, st.clone()));
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = conn.await {
                debug!(%error, %peer, "Autoscaler connection ended with an error");
            }
        });
    }
    drop(listener);
    state.tasks.close();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, state.tasks.wait()).await;
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: ServerState,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(accept) = websocket_accept(&req) {
        let feed = req.uri().path() == ENDPOINTS_PATH;
        let upgrade = hyper::upgrade::on(req);
        let st = state.clone();
        state.tasks.spawn(async move {
            let upgraded = match upgrade.await {
                Ok(u) => u,
                Err(error) => {
                    debug!(%error, %peer, "Websocket upgrade failed");
                    return;
                }
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_WS_MESSAGE))
                .max_frame_size(Some(MAX_WS_MESSAGE));
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            if feed {
                endpoints_feed(ws, peer, st).await;
            } else {
                stats_stream(ws, peer, st).await;
            }
        });
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return Ok(resp);
    }
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, ENDPOINTS_PATH) => {
            let snapshot = Snapshot::from_endpoints(&state.endpoints.borrow());
            (StatusCode::OK, "application/json", snapshot.to_json())
        }
        // Kubelet probes (User-Agent kube-probe/…) and anything else that just GETs.
        (&Method::GET | &Method::HEAD, _) => (StatusCode::OK, "text/plain", "ok".to_owned()),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// `Some(Sec-WebSocket-Accept)` when `req` is a valid websocket upgrade request.
fn websocket_accept(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let ok = req.method() == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && h.get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    ok.then(|| h.get(header::SEC_WEBSOCKET_KEY))
        .flatten()
        .map(|k| derive_accept_key(k.as_bytes()))
}

fn count_in(result: &'static str) {
    metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "in", "result" => result).increment(1);
}

async fn stats_stream<S>(mut ws: WebSocketStream<S>, peer: SocketAddr, state: ServerState)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    debug!(%peer, "Stats client connected");
    loop {
        let msg = tokio::select! {
            () = state.closing.cancelled() => {
                close_restarting(&mut ws).await;
                return;
            }
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Binary(frame))) => {
                if frame.len() > MAX_FRAME {
                    count_in("oversized");
                    warn!(%peer, size = frame.len(), max = MAX_FRAME, "Dropping oversized stats frame");
                    continue;
                }
                match wire::decode(&frame) {
                    Ok((_, stats)) => {
                        count_in("accepted");
                        for stat in stats {
                            if state.stats.try_send(stat).is_err() {
                                count_in("dropped");
                            }
                        }
                    }
                    Err(error) => {
                        count_in("malformed");
                        debug!(%peer, %error, "Dropping malformed stats frame");
                    }
                }
            }
            Some(Ok(Message::Text(_))) => {
                count_in("ignored");
                debug!(%peer, "Dropping unknown message type");
            }
            Some(Ok(Message::Close(_))) | None => return,
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                debug!(%peer, %error, "Stats connection failed");
                return;
            }
        }
    }
}

async fn endpoints_feed<S>(mut ws: WebSocketStream<S>, peer: SocketAddr, state: ServerState)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    info!(%peer, "Endpoints subscriber connected");
    let mut rx = state.endpoints.clone();
    loop {
        let snapshot = Snapshot::from_endpoints(&rx.borrow_and_update()).to_json();
        if ws.send(Message::Text(snapshot.into())).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                () = state.closing.cancelled() => {
                    close_restarting(&mut ws).await;
                    return;
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        close_restarting(&mut ws).await;
                        return;
                    }
                    break;
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

async fn close_restarting<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Restart,
        reason: "Restarting".into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            // Wait for the peer's close reply so the frame is really delivered.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455() {
        // RFC 6455 §1.3; the upgrade itself is exercised in tests/autoscaler_server.rs.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
