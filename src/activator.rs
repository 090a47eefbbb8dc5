//! Activator mode: the Knative-compatible buffering data path.
//!
//! PLACEHOLDER (issue 2 replaces the body; the signatures are the contract `app.rs` uses).

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::{app::Context, autoscaler::ConcurrencyReporter, backends::Backends, drain::Drain};

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
    drain: Drain,
}

impl Activator {
    pub async fn bind(
        ctx: &Context,
        _reporter: ConcurrencyReporter,
        _backends: Backends,
    ) -> Result<Self, Error> {
        let cfg = ctx.current();
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        Ok(Self {
            http: bind(cfg.listen.http).await?,
            h2c: bind(cfg.listen.h2c).await?,
            drain: ctx.drain.clone(),
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

    /// Serves until the drain reaches closing, then waits for in-flight and queued requests.
    pub async fn run(self) -> Result<(), Error> {
        self.drain.closing().await;
        Ok(())
    }
}
