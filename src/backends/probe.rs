//! One health probe of one endpoint, in the configured style.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::trace;

use crate::config::ProbeStyle;

/// The body a Knative queue-proxy answers a probe with.
const QUEUE_BODY: &[u8] = b"queue";
/// More than a queue-proxy answer needs; a larger body is not a healthy queue-proxy.
const MAX_BODY: usize = 1024;

/// Probes `addr` once; `true` when healthy. Never takes longer than `timeout`.
pub(super) async fn probe(
    style: ProbeStyle,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> bool {
    let fut = async {
        match style {
            ProbeStyle::Tcp => TcpStream::connect(addr).await.is_ok(),
            ProbeStyle::Knative => http_probe(addr, path, true).await,
            ProbeStyle::Http | ProbeStyle::Auto => http_probe(addr, path, false).await,
        }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or(false)
}

async fn http_probe(addr: SocketAddr, path: &str, knative: bool) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    // The connection task ends when the exchange below ends (or the timeout drops it).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONNECTION, "close");
    if knative {
        req = req
            .header("k-network-probe", "queue")
            .header(header::USER_AGENT, "Knative-Activator-Probe");
    }
    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
        return false;
    };
    let Ok(resp) = sender.send_request(req).await else {
        return false;
    };
    let status = resp.status();
    trace!(%addr, %status, "Probe answered");
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
