//! Activator mode: the Knative-compatible buffering data path.
//!
//! ```text
//! server → handler → probe_handler | revision → throttler (breaker) → lb → proxy (+retry)
//!                                     ↑ table (config)   ↑ capacity   ↑ healthy endpoints (backends)
//! ```

mod body;
mod breaker;
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
pub(crate) mod throttler;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::{app::Context, autoscaler::ConcurrencyReporter, backends::Backends, drain::Drain};

use self::{
    handler::Handler,
    server::{Protocols, builder},
    throttler::Throttler,
};

/// Errors of the activator mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The activator with its listeners bound.
#[derive(Debug)]
pub struct Activator {
    http: TcpListener,
    h2c: TcpListener,
    handler: Handler,
    max_header_bytes: usize,
    drain: Drain,
    tunnels: TaskTracker,
}

impl Activator {
    /// Binds `listen.http` and `listen.h2c` and starts the throttler's table writer.
    ///
    /// `activator.connect_timeout` and the HTTP/1.1 read buffer (`max_header_bytes`) are read
    /// here; the other activator settings apply live on reload.
    pub async fn bind(
        ctx: &Context,
        reporter: ConcurrencyReporter,
        backends: Backends,
    ) -> Result<Self, Error> {
        let cfg = ctx.current();
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let http = bind(cfg.listen.http).await?;
        let h2c = bind(cfg.listen.h2c).await?;
        let throttler = Throttler::spawn(ctx.config.clone(), backends.pods());
        let tunnels = TaskTracker::new();
        let handler = Handler::new(
            throttler,
            cfg.activator.connect_timeout,
            reporter,
            backends,
            ctx.drain.clone(),
            tunnels.clone(),
        );
        Ok(Self {
            http,
            h2c,
            handler,
            max_header_bytes: cfg.activator.max_header_bytes,
            drain: ctx.drain.clone(),
            tunnels,
        })
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
            drain,
            tunnels,
        } = self;
        tokio::join!(
            server::serve(
                http,
                Protocols::Auto,
                builder(Protocols::Auto, max_header_bytes),
                handler.clone(),
                drain.clone(),
            ),
            server::serve(
                h2c,
                Protocols::H2c,
                builder(Protocols::H2c, max_header_bytes),
                handler,
                drain,
            ),
        );
        tunnels.close();
        tunnels.wait().await;
        Ok(())
    }
}
