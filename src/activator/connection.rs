//! Client connections on the general (hyper) path: requests counted in flight, the idle
//! watchdog, and the drain.
//!
//! hyper bounds an HTTP/1.1 head's arrival but has no HTTP/2 idle timeout: a client that sends
//! the preface (and SETTINGS) and then nothing would hold its connection forever. Each
//! connection therefore counts its requests in flight (from the service call until the
//! response body ends or is dropped); once nothing has been in flight for
//! `activator.idle_timeout`, it is asked to close (GOAWAY for HTTP/2), and dropped if it has
//! not closed `CLOSE_GRACE` later with still nothing in flight.

use std::{
    convert::Infallible,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tracing::debug;

use super::handler::Handler;
use crate::drain::Drain;

/// Once asked to close with nothing in flight, a connection gets this long to do so itself
/// (an HTTP/2 client acknowledges the GOAWAY's PING, then hyper closes) before it is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one client connection (from `peer`) with hyper until it closes, is idle for
/// `activator.idle_timeout`, or the drain reaches closing and its requests are done.
pub(crate) async fn serve<T>(
    io: T,
    peer: IpAddr,
    handler: Handler,
    builder: &Builder<TokioExecutor>,
    drain: Drain,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = handler.inner().throttler.load().settings.idle_timeout;
    // Per connection, so that a reloaded idle timeout applies to new connections.
    let mut builder = builder.clone();
    builder.http1().header_read_timeout(idle);
    let (busy, mut watch) = InFlight::new();
    // At closing hyper itself answers HTTP/1.1 with `Connection: close` (keep-alive off) and
    // HTTP/2 with GOAWAY; the service only counts requests in flight.
    let svc = service_fn(move |req: Request<Incoming>| {
        let guard = busy.start();
        let handler = handler.clone();
        async move {
            let Ok(resp) = handler.handle(req, Some(peer)).await;
            Ok::<_, Infallible>(resp.map(|body| Tracked {
                body,
                guard: Some(guard),
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = drain.closing() => shutdown(conn.as_mut(), &mut watch).await,
        () = watch.idle_for(idle) => {
            debug!(?idle, "Closing a client connection with no request in flight");
            shutdown(conn.as_mut(), &mut watch).await
        }
    };
    if let Err(error) = result {
        debug!(%error, "Connection ended with an error");
    }
}

/// Asks the connection to finish its requests and close; gives up on it (the caller drops
/// it) once nothing has been in flight for `CLOSE_GRACE`.
async fn shutdown<C, E>(mut conn: Pin<&mut C>, watch: &mut Watch) -> Result<(), E>
where
    C: Future<Output = Result<(), E>> + GracefulConn,
{
    conn.as_mut().shutdown_gracefully();
    tokio::select! {
        r = conn => r,
        () = watch.idle_for(CLOSE_GRACE) => {
            debug!("Dropping a client connection that did not close after its shutdown");
            Ok(())
        }
    }
}

/// A connection that can be asked to finish and close.
pub(crate) trait GracefulConn {
    fn shutdown_gracefully(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulConn for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shutdown_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The count of one connection's requests in flight. Cheap to clone.
#[derive(Debug, Clone)]
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn new() -> (Self, Watch) {
        let (tx, rx) = watch::channel(0);
        (Self(Arc::new(tx)), Watch(rx))
    }

    fn start(&self) -> Guard {
        self.0.send_modify(|n| *n += 1);
        Guard(self.0.clone())
    }
}

/// One request in flight; dropped when its response body ends or is dropped.
#[derive(Debug)]
struct Guard(Arc<watch::Sender<usize>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The watchdog's view of the count.
#[derive(Debug)]
struct Watch(watch::Receiver<usize>);

impl Watch {
    /// Resolves once nothing has been in flight for `period` without interruption.
    async fn idle_for(&mut self, period: Duration) {
        loop {
            let busy = *self.0.borrow_and_update() > 0;
            let changed = if busy {
                self.0.changed().await
            } else {
                tokio::select! {
                    () = tokio::time::sleep(period) => return,
                    changed = self.0.changed() => changed,
                }
            };
            if changed.is_err() {
                // The sender lives as long as the connection's service; without it nothing
                // can start, so only the other branches of the caller can end the wait.
                std::future::pending::<()>().await;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight until it ends or is dropped.
    #[derive(Debug)]
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        guard: Option<Guard>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_a_whole_period_with_nothing_in_flight() {
        let (busy, mut watch) = InFlight::new();
        let period = Duration::from_secs(30);
        let start = tokio::time::Instant::now();
        watch.idle_for(period).await;
        assert_eq!(start.elapsed(), period);

        let guard = busy.start();
        let start = tokio::time::Instant::now();
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            drop(guard);
        });
        watch.idle_for(period).await;
        // Busy for 100 s, then idle for a whole period.
        assert_eq!(start.elapsed(), Duration::from_secs(130));
        released.await.unwrap();
    }
}
