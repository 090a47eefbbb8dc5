//! Activator mode: the Knative-compatible buffering data path.
//!
//! ```text
//! server → handler → probe_handler | revision → throttler (breaker) → lb → proxy (+retry)
//!                                ↑ table (revisions)  ↑ capacity (subset)  ↑ healthy endpoints
//! ```

mod body;
mod breaker;
mod cold_starts;
mod connection;
pub mod error;
pub(crate) mod h1;
mod handler;
mod headers;
mod lb;
mod probe_handler;
mod protocol;
mod proxy;
mod retry;
mod revision;
mod server;
mod stats;
mod status;
mod subset;
pub(crate) mod throttler;
mod timeouts;
mod trace;
pub(crate) mod upstream;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use tokio::sync::watch;

use crate::{
    autoscaler_client::ConcurrencyReporter, backends::Backends, context::Context, drain::Drain,
    revisions::Revisions,
};

use self::{
    handler::Handler,
    server::{Protocols, builder},
    throttler::Throttler,
};

/// Errors of the activator mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message, not a `source()`: a chain printer would repeat it.
    #[error("cannot bind {key} {addr}: {error}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The activator with its listeners bound.
#[derive(Debug)]
pub struct Activator {
    http: TcpListener,
    h2c: TcpListener,
    handler: Handler,
    max_header_bytes: usize,
    /// Per listener.
    max_connections: usize,
    drain: Drain,
    tunnels: TaskTracker,
    status: Arc<status::ActivatorSource>,
}

/// File descriptors kept for everything but client connections: listeners, the admin port's
/// connections, the autoscaler and Kubernetes clients, probes, logs.
const RESERVED_FDS: u64 = 256;
/// The derived connection limit never goes below this (a tiny descriptor limit is an
/// operator's choice; serving a few clients beats serving none).
const MIN_CONNECTIONS: u64 = 16;

/// `activator.max_connections`, else half of the descriptors left after `RESERVED_FDS`, per
/// listener: idle client connections on both listeners together cannot exhaust them, and a
/// client connection with a request in flight has room for its pod connection.
///
/// The soft descriptor limit is first raised to the hard one, as Go's runtime (Knative's
/// activator) does at start.
fn max_connections(configured: Option<usize>) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Some(max) = configured {
        return max;
    }
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return usize::MAX;
    };
    let limit = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    if limit == nix::sys::resource::RLIM_INFINITY {
        return usize::MAX;
    }
    let derived = (limit.saturating_sub(RESERVED_FDS) / 2).max(MIN_CONNECTIONS);
    usize::try_from(derived).unwrap_or(usize::MAX)
}

impl Activator {
    /// Binds `listen.http` and `listen.h2c` and starts the throttler's table writer.
    ///
    /// `activator.connect_timeout`, `activator.max_connections` and the HTTP/1.1 read buffer
    /// (`max_header_bytes`) are read here; the other activator settings apply live on reload.
    pub async fn bind(
        ctx: &Context,
        reporter: ConcurrencyReporter,
        revisions: watch::Receiver<Revisions>,
        backends: Backends,
    ) -> Result<Self, Error> {
        let cfg = ctx.current();
        let bind = |key, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| Error::Bind { key, addr, error })
        };
        let http = bind("listen.http", cfg.listen.http).await?;
        let h2c = bind("listen.h2c", cfg.listen.h2c).await?;
        let throttler = Throttler::spawn(ctx.config.clone(), revisions, backends.pods());
        let status = Arc::new(status::ActivatorSource {
            throttler: throttler.clone(),
            discovered: backends.discovered(),
            healthy: backends.pods(),
        });
        let tunnels = TaskTracker::new();
        let max_connections = max_connections(cfg.activator.max_connections);
        tracing::info!(max_connections, "Client connections per listener");
        let handler = Handler::new(
            crate::telemetry::otel::Traces::from_config(&cfg.tracing),
            throttler,
            cfg.activator.connect_timeout,
            reporter,
            backends,
            ctx.readiness.clone(),
            tunnels.clone(),
        );
        Ok(Self {
            http,
            h2c,
            handler,
            max_header_bytes: cfg.activator.max_header_bytes,
            max_connections,
            drain: ctx.drain.clone(),
            tunnels,
            status,
        })
    }

    /// The activator's part of `/status.json`.
    pub fn status_source(&self) -> Arc<dyn crate::status::Source> {
        self.status.clone()
    }

    /// (`listen.http`, `listen.h2c`) as bound.
    pub fn local_addrs(&self) -> (SocketAddr, SocketAddr) {
        let addr = |l: &TcpListener| {
            l.local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        (addr(&self.http), addr(&self.h2c))
    }

    /// Serves until the drain reaches closing, then waits for in-flight and queued requests
    /// and upgraded tunnels. The caller bounds the wait (`shutdown.grace_period`).
    pub async fn run(self) -> Result<(), Error> {
        let Self {
            http,
            h2c,
            handler,
            max_header_bytes,
            max_connections,
            drain,
            tunnels,
            status: _,
        } = self;
        tokio::join!(
            server::serve(
                http,
                Protocols::Auto,
                builder(Protocols::Auto, max_header_bytes),
                handler.clone(),
                drain.clone(),
                max_connections,
            ),
            server::serve(
                h2c,
                Protocols::H2c,
                builder(Protocols::H2c, max_header_bytes),
                handler,
                drain,
                max_connections,
            ),
        );
        tunnels.close();
        tunnels.wait().await;
        Ok(())
    }
}
