//! Adapter mode: Mixer out-of-process gRPC adapter and Envoy ext_authz server.
//!
//! PLACEHOLDER (issue 4 replaces the body; the signatures are the contract `app.rs` uses).

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::watch};

use crate::{app::Context, autoscaler::AutoscalerClient, drain::Drain, endpoints::Endpoints};

/// Errors of the adapter mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The adapter with its gRPC listener bound.
#[derive(Debug)]
pub struct Adapter {
    listener: TcpListener,
    drain: Drain,
}

impl Adapter {
    /// `healthy` is the table `hold_until_ready` waits on.
    pub async fn bind(
        ctx: &Context,
        _client: AutoscalerClient,
        _healthy: watch::Receiver<Endpoints>,
    ) -> Result<Self, Error> {
        let addr = ctx.current().listen.grpc;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Self {
            listener,
            drain: ctx.drain.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until the drain reaches closing (health NOT_SERVING from draining), then finishes calls.
    pub async fn run(self) -> Result<(), Error> {
        self.drain.closing().await;
        Ok(())
    }
}
