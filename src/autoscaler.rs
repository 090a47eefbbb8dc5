//! The autoscaler side: the shared stats client, the concurrency reporter, and the local
//! (single-machine) autoscaler.
//!
//! PLACEHOLDER (issue 3 replaces every body here; the signatures are the contract `app.rs`,
//! the activator and the adapter are written against).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{app::Context, config::Encoding, endpoints::Endpoints, revision::RevisionKey};

/// One revision's figures for one report period (pod name is added by the client).
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub key: RevisionKey,
    pub average_concurrent_requests: f64,
    pub request_count: f64,
}

/// Settings of one autoscaler connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` (path `/`).
    pub url: String,
    pub encoding: Encoding,
    pub pod_name: Arc<str>,
    /// Bounded outbound queue.
    pub send_queue: usize,
}

/// Handle to the task that owns the autoscaler websocket. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct AutoscalerClient {}

impl AutoscalerClient {
    /// Starts the connection task; it runs until `exit` is cancelled.
    pub fn spawn(_cfg: ClientConfig, _exit: CancellationToken) -> Self {
        Self {}
    }

    /// Scale-from-zero poke: `average_concurrent_requests=1, request_count=1`, sent at once.
    pub fn poke(&self, _key: &RevisionKey) {}

    /// One batch (one frame) of periodic stats.
    pub fn report(&self, _stats: Vec<Stat>) {}

    pub fn is_connected(&self) -> bool {
        false
    }
}

/// Per-revision concurrency accounting for the activator (Knative's concurrency reporter).
#[derive(Debug, Clone)]
pub struct ConcurrencyReporter {
    client: AutoscalerClient,
}

impl ConcurrencyReporter {
    /// Starts the 1 s report loop; it runs until `exit` is cancelled.
    pub fn spawn(client: AutoscalerClient, _exit: CancellationToken) -> Self {
        Self { client }
    }

    /// Records a request's arrival (before it is queued); the first request of an idle revision
    /// pokes the autoscaler at once. Dropping the guard records its departure.
    pub fn track(&self, key: &RevisionKey) -> RequestGuard {
        self.client.poke(key);
        RequestGuard {}
    }
}

/// Held from arrival to completion of one request.
#[derive(Debug)]
pub struct RequestGuard {}

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
