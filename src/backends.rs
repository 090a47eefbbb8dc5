//! Backends: probes discovered endpoints and publishes the *healthy* table; passive ejection.
//!
//! PLACEHOLDER (issue 2 replaces the body; the signatures are the contract).

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{config::SharedConfig, endpoints::Endpoints, revision::RevisionKey};

/// Handle to the prober task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backends {
    healthy: watch::Receiver<Endpoints>,
}

impl Backends {
    /// Starts probing; runs until `exit` is cancelled.
    pub fn spawn(
        _config: watch::Receiver<SharedConfig>,
        discovered: watch::Receiver<Endpoints>,
        _exit: CancellationToken,
    ) -> Self {
        Self {
            healthy: discovered,
        }
    }

    /// Endpoints that passed a probe and were not ejected since.
    pub fn healthy(&self) -> watch::Receiver<Endpoints> {
        self.healthy.clone()
    }

    /// Passive ejection: `addr` refused a connection; keep it out until a probe passes.
    pub fn eject(&self, _key: &RevisionKey, _addr: SocketAddr) {}
}
