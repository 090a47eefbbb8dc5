//! Shutdown: the OS signal, and the two-step drain every server follows.
//!
//! 1. *draining*: readiness and kubelet probes fail, gRPC health says NOT_SERVING, but
//!    listeners keep accepting for `shutdown.drain_delay` so load balancers catch up;
//! 2. *closing*: listeners stop accepting; in-flight and queued work finishes, bounded by
//!    `shutdown.grace_period`, after which the process exits anyway.

use tokio_util::sync::CancellationToken;

/// The drain state shared by every component. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    draining: CancellationToken,
    closing: CancellationToken,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts step 1. Idempotent.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// Starts step 2 (and step 1 if it has not started). Idempotent.
    pub fn start_closing(&self) {
        self.draining.cancel();
        self.closing.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Resolves when step 1 starts.
    pub async fn draining(&self) {
        self.draining.cancelled().await;
    }

    /// Resolves when step 2 starts: stop accepting.
    pub async fn closing(&self) {
        self.closing.cancelled().await;
    }

    /// A token cancelled at step 2, for APIs that take one.
    pub fn closing_token(&self) -> CancellationToken {
        self.closing.clone()
    }
}

/// Which signal asked us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Kubernetes sends SIGTERM to start a graceful shutdown.
    Terminate,
    /// Ctrl-C in a terminal.
    Interrupt,
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; wait forever rather than
        // exit at once.
        std::future::pending::<()>().await;
        unreachable!("pending never resolves");
    };
    tokio::select! {
        _ = term.recv() => Signal::Terminate,
        _ = int.recv() => Signal::Interrupt,
    }
}
