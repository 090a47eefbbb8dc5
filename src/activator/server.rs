//! Listeners: accept loops with one task per connection, and the graceful close.

use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::handler::{Handler, MIN_HEAD_BUFFER};
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
/// in-flight (and queued) requests.
pub(crate) async fn serve(
    listener: TcpListener,
    builder: Builder<TokioExecutor>,
    handler: Handler,
    drain: Drain,
) {
    let graceful = GracefulShutdown::new();
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
        let handler = handler.clone();
        let svc = service_fn(move |req| handler.clone().handle(req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        // Detached: the graceful watcher tracks it.
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%error, %peer, "Connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
