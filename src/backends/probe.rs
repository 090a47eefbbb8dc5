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
/// probe of an `auto` revision learns what it can from the pod's answer to the HTTP/2 preface
/// ([`sniff`]), unless `known` already says (what the last passing probe learned).
pub(super) async fn probe(
    style: ProbeStyle,
    protocol: Protocol,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    known: Option<Speaks>,
) -> Option<Speaks> {
    let knative = style == ProbeStyle::Knative;
    if style == ProbeStyle::Tcp {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        return Some(match (protocol, known) {
            (Protocol::Http1, _) => Speaks::HTTP1,
            (Protocol::H2c, _) => Speaks::H2C,
            (Protocol::Auto, Some(known)) => known,
            // Healthy either way: a pod slow to answer is not learned, not failed.
            (Protocol::Auto, None) => tokio::time::timeout_at(deadline, sniff(stream))
                .await
                .unwrap_or(Speaks::ANY),
        });
    }
    let fut = async {
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

/// The HTTP/2 connection preface and an empty SETTINGS frame (length 0, type 4, stream 0).
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// An HTTP/2 frame header's size: enough of an answer to tell.
const FRAME_HEADER: usize = 9;

/// What a pod that accepted a TCP connection speaks, from its answer to the HTTP/2 preface
/// (which no server takes for a request, so no app sees one). An h2c server answers with its
/// SETTINGS frame at once: h2c, with HTTP/1.1 unknown. A server that answers in HTTP/1.x (nginx:
/// 400) or closes without a byte (hyper) does not speak h2c: HTTP/1.1. Anything else (silence
/// until the probe timeout, other bytes) teaches nothing. Unknown halves stay allowed, so that
/// the client's version is used, as before protocols were learned: a TCP probe cannot tell an
/// h2c-only pod from one that speaks both.
async fn sniff(mut stream: TcpStream) -> Speaks {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if stream.write_all(H2_HELLO).await.is_err() {
        return Speaks::ANY;
    }
    let mut buf = [0u8; FRAME_HEADER];
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) if n == 0 => return Speaks::HTTP1,
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    if buf[..n].starts_with(b"HTTP/1.") {
        Speaks::HTTP1
    } else {
        // A SETTINGS frame (`buf[3] == 4`) or bytes unknown.
        Speaks::ANY
    }
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
