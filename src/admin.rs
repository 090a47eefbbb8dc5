//! Admin server on its own port: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`,
//! the status page `/` and its document `/status.json`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{drain::Drain, status::Status};

/// Whether this process should receive traffic: started, discovery synced, and not draining.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    /// Cleared while a discovery source has not listed everything once (see [`SyncGate`]).
    unsynced: Arc<AtomicBool>,
    drain: Drain,
}

/// Held by a discovery source until its first full sync: readiness fails until then.
#[derive(Debug)]
pub struct SyncGate(Arc<AtomicBool>);

impl SyncGate {
    /// The first full sync is done; later failures no longer affect readiness.
    pub fn release(self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Readiness {
    pub fn new(drain: Drain) -> Self {
        Self {
            started: Arc::default(),
            unsynced: Arc::default(),
            drain,
        }
    }

    /// Makes readiness wait for the returned gate's release.
    pub fn sync_gate(&self) -> SyncGate {
        self.unsynced.store(true, Ordering::Release);
        SyncGate(self.unsynced.clone())
    }

    /// Called once every listener is bound and initial discovery has run.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire)
            && !self.unsynced.load(Ordering::Acquire)
            && !self.drain.is_draining()
    }
}

#[derive(Clone, Debug)]
struct AdminState {
    metrics: PrometheusHandle,
    readiness: Readiness,
    status: Arc<Status>,
}

/// The status page: one self-contained file (inline CSS and script, no external assets).
const STATUS_PAGE: &str = include_str!("status.html");

/// The admin router (exposed for tests that drive it without a socket).
pub fn router(metrics: PrometheusHandle, readiness: Readiness, status: Status) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/status.json", get(status_json))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(AdminState {
            metrics,
            readiness,
            status: Arc::new(status),
        })
}

async fn status_page() -> ([(&'static str, &'static str); 3], &'static str) {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            // Everything is inline; nothing may be loaded from elsewhere.
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        STATUS_PAGE,
    )
}

async fn status_json(
    State(s): State<AdminState>,
) -> (StatusCode, [(&'static str, &'static str); 2], String) {
    let headers = [
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    match serde_json::to_string(&s.status.document()) {
        Ok(body) => (StatusCode::OK, headers, body),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            headers,
            format!("{{\"error\":{:?}}}", error.to_string()),
        ),
    }
}

async fn render_metrics(
    State(s): State<AdminState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else if s.readiness.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// A bound admin server.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    metrics: PrometheusHandle,
    readiness: Readiness,
    status: Status,
}

impl Admin {
    /// Binds the port; the mode's status sources are added with [`Self::status`] before
    /// [`Self::run`].
    pub async fn bind(
        addr: SocketAddr,
        metrics: PrometheusHandle,
        readiness: Readiness,
        mode: &'static str,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            metrics,
            readiness,
            status: Status::new(mode),
        })
    }

    /// The document `/status.json` serves, for the mode to add its sources to.
    pub fn status(&mut self) -> &mut Status {
        &mut self.status
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled: the caller stops it last, once everything else has
    /// drained, so that `/healthz`, `/readyz` (`draining`) and `/metrics` answer until exit.
    pub async fn run(self, stop: CancellationToken) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        info!(%addr, "Admin server listening");
        // A periodic upkeep keeps histogram summaries bounded (metrics-exporter-prometheus).
        let router = router(self.metrics, self.readiness, self.status);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}
