//! One health probe of one endpoint, in the configured style and the revision's protocol.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::trace;

use crate::{
    config::{ProbeStyle, Protocol},
    endpoints::Speaks,
};

/// The body a Knative queue-proxy answers a probe with.
const QUEUE_BODY: &[u8] = b"queue";
/// More than a queue-proxy answer needs; a larger body is not a healthy queue-proxy.
const MAX_BODY: usize = 1024;

/// The HTTP version a probe is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http1,
    H2c,
}

/// Probes `addr` once: `Some` with what it speaks when healthy. Never takes longer than
/// `timeout`.
///
/// `protocol` decides the probe's HTTP version: `http1` and `h2c` probe in that version only;
/// `auto` probes in both at once and is healthy when either passes, learning which. A `tcp`
/// probe learns nothing: `auto` then assumes the client's version will do (`Speaks::ANY`).
pub(super) async fn probe(
    style: ProbeStyle,
    protocol: Protocol,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<Speaks> {
    let knative = style == ProbeStyle::Knative;
    let fut = async {
        if style == ProbeStyle::Tcp {
            TcpStream::connect(addr).await.ok()?;
            return Some(match protocol {
                Protocol::Auto => Speaks::ANY,
                Protocol::Http1 => Speaks::HTTP1,
                Protocol::H2c => Speaks::H2C,
            });
        }
        let speaks = match protocol {
            Protocol::Http1 => Speaks {
                http1: http_probe(Wire::Http1, addr, path, knative).await,
                h2c: false,
            },
            Protocol::H2c => Speaks {
                http1: false,
                h2c: http_probe(Wire::H2c, addr, path, knative).await,
            },
            Protocol::Auto => {
                let (http1, h2c) = tokio::join!(
                    http_probe(Wire::Http1, addr, path, knative),
                    http_probe(Wire::H2c, addr, path, knative),
                );
                Speaks { http1, h2c }
            }
        };
        (speaks.http1 || speaks.h2c).then_some(speaks)
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

/// One HTTP probe in `wire`; `true` when it passed.
async fn http_probe(wire: Wire, addr: SocketAddr, path: &str, knative: bool) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let resp = match wire {
        Wire::Http1 => {
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
                return false;
            };
            // The connection task ends when the exchange below ends (or the timeout drops it).
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = Request::get(path)
                .header(header::HOST, addr.to_string())
                .header(header::CONNECTION, "close");
            let Ok(req) = with_probe_headers(req, knative).body(Empty::<Bytes>::new()) else {
                return false;
            };
            sender.send_request(req).await
        }
        Wire::H2c => {
            let Ok((mut sender, conn)) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await
            else {
                return false;
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            // HTTP/2 carries the authority in the URI (`:authority`), not in a Host header.
            let req = Request::get(format!("http://{addr}{path}"));
            let Ok(req) = with_probe_headers(req, knative).body(Empty::<Bytes>::new()) else {
                return false;
            };
            sender.send_request(req).await
        }
    };
    let Ok(resp) = resp else {
        return false;
    };
    passed(addr, resp, knative).await
}

fn with_probe_headers(req: http::request::Builder, knative: bool) -> http::request::Builder {
    if knative {
        req.header("k-network-probe", "queue")
            .header(header::USER_AGENT, "Knative-Activator-Probe")
    } else {
        req
    }
}

/// `knative`: 200 with body `queue`; otherwise any 2xx.
async fn passed(addr: SocketAddr, resp: Response<Incoming>, knative: bool) -> bool {
    let status = resp.status();
    trace!(%addr, %status, version = ?resp.version(), "Probe answered");
    if !knative {
        return status.is_success();
    }
    if status != StatusCode::OK {
        return false;
    }
    match Limited::new(resp.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes().as_ref() == QUEUE_BODY,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
