//! Listeners: accept loops with one task per connection, and the graceful close.

use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{
    h1,
    handler::{Handler, MIN_HEAD_BUFFER},
};
use crate::drain::Drain;

/// After a failed accept (out of file descriptors, say), pause instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Which protocols a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocols {
    /// HTTP/1.1, and HTTP/2 with prior knowledge (h2c), told apart by the preface.
    Auto,
    /// HTTP/2 with prior knowledge only.
    H2c,
}

/// The connection builder for a listener.
pub(crate) fn builder(protocols: Protocols, max_header_bytes: usize) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper answers a head over this with 431 and malformed ones with 400.
        .max_buf_size(max_header_bytes.max(MIN_HEAD_BUFFER));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    match protocols {
        Protocols::Auto => b,
        Protocols::H2c => b.http2_only(),
    }
}

/// Accepts until the drain reaches closing, then waits for every connection to finish its
/// in-flight (and queued) requests. HTTP/1.1 connections start on the fast path (`h1`).
pub(crate) async fn serve(
    listener: TcpListener,
    protocols: Protocols,
    builder: Builder<TokioExecutor>,
    handler: Handler,
    drain: Drain,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            // Closing wins over a pending accept: no new connection after it.
            biased;
            () = drain.closing() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(error) => {
                warn!(%error, "Accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (handler, builder, drain) = (handler.clone(), builder.clone(), drain.clone());
        // Detached: the tracker waits for it.
        connections.spawn(async move {
            match protocols {
                Protocols::Auto => h1::serve(stream, peer.ip(), handler, builder, drain).await,
                Protocols::H2c => {
                    let svc = service_fn(move |req| handler.clone().handle(req, Some(peer.ip())));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    h1::until_closing(conn, &drain).await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
