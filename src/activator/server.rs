//! Listeners: accept loops with one task per connection, and the graceful close.

use std::{sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{
    connection, h1,
    handler::{Handler, MIN_HEAD_BUFFER},
};
use crate::drain::Drain;

/// After a failed accept (out of file descriptors, say), pause instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

// HTTP/2 limits of both listeners (docs/operations.md, "Limits").
/// Streams open at once on one client connection: Go's HTTP/2 server default, which is what
/// Knative's activator gives its clients (hyper's own default is 200).
const H2_MAX_CONCURRENT_STREAMS: u32 = 250;
/// Streams the client resets before we accept them; beyond it, GOAWAY. The rapid-reset guard
/// (CVE-2023-44487), h2's own default made explicit.
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams we reset because the client broke a rule; beyond it, GOAWAY (RUSTSEC-2024-0003).
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Largest frame a client may send: the protocol's minimum, so a frame never costs more.
const H2_MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Response bytes buffered per stream ahead of the client's flow-control window: at most
/// 250 × 256 KiB = 64 MiB for a connection whose client reads nothing, and four times the
/// protocol's default window, so a reading client is never held back by it.
const H2_MAX_SEND_BUF_SIZE: usize = 256 * 1024;
/// A PING is sent after this long without a frame from the client…
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and the connection is closed if it is not acknowledged within this: a vanished client
/// (no FIN, no RST) does not hold its streams, queue slots and pod connections.
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_frame_size(H2_MAX_FRAME_SIZE)
        .max_send_buf_size(H2_MAX_SEND_BUF_SIZE)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    match protocols {
        Protocols::Auto => b,
        Protocols::H2c => b.http2_only(),
    }
}

/// Accepts until the drain reaches closing, then waits for every connection to finish its
/// in-flight (and queued) requests. HTTP/1.1 connections start on the fast path (`h1`).
/// At most `max_connections` are open at once: beyond it, accepting waits for one to end, so
/// that client connections cannot take every file descriptor (the admin port's included).
pub(crate) async fn serve(
    listener: TcpListener,
    protocols: Protocols,
    builder: Builder<TokioExecutor>,
    handler: Handler,
    drain: Drain,
    max_connections: usize,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    // Warned once per episode: a listener held at its limit would log every accept.
    let mut warned = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                warned &= slots.available_permits() == 0;
                Ok(slot)
            }
            Err(_) => {
                if !warned {
                    warn!(
                        max_connections,
                        "Connection limit reached; accepting again when a connection ends"
                    );
                    warned = true;
                }
                tokio::select! {
                    biased;
                    () = drain.closing() => break,
                    slot = slots.clone().acquire_owned() => slot,
                }
            }
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
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
                    connection::serve(stream, peer.ip(), handler, &builder, drain).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
