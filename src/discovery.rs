//! Discovery: which revisions exist and which pod addresses each has.
//!
//! Every source yields the same two tables ([`Discovered`]): the revisions table and the
//! *discovered* endpoint table. `static` reads both from the (hot-reloaded) config. `local`
//! takes revisions from the config and endpoints from the local autoscaler's process
//! supervisor (see `autoscaler::local`), in process, or over its endpoints [`feed`] when it
//! runs as a separate process. `kubernetes` watches Knative's Revisions and the
//! Endpoints of their Services (see [`kubernetes`]), and in adapter mode Knative's
//! networking Ingresses for the adapter's route table (see [`kingress`]).

pub mod feed;
pub mod kingress;
pub mod kubernetes;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, SharedConfig},
    endpoints::{EndpointMap, Endpoints},
    revisions::Revisions,
};

/// What a discovery source publishes.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// Every revision served and its settings.
    pub revisions: watch::Receiver<Revisions>,
    /// Pod addresses per revision, before probing.
    pub endpoints: watch::Receiver<Endpoints>,
    /// Route hosts → revisions from Knative's KIngress objects (adapter mode with
    /// `discovery: kubernetes`; empty otherwise).
    pub routes: watch::Receiver<kingress::Routes>,
}

/// Endpoints listed in the config file, republished whenever the file changes.
pub fn spawn_static(
    mut config: watch::Receiver<SharedConfig>,
    shutdown: CancellationToken,
) -> watch::Receiver<Endpoints> {
    let (tx, rx) = watch::channel(static_endpoints(&config.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = config.changed() => if changed.is_err() { return },
            }
            let next = static_endpoints(&config.borrow_and_update());
            // Only publish real changes: every publish makes the prober re-plan.
            tx.send_if_modified(|cur| {
                if **cur == *next {
                    false
                } else {
                    *cur = next;
                    true
                }
            });
        }
    });
    rx
}

/// The endpoint table a config describes.
pub fn static_endpoints(cfg: &Config) -> Endpoints {
    let map: EndpointMap = cfg
        .revisions
        .iter()
        .filter(|r| !r.endpoints.is_empty())
        .map(|r| (r.key(), Arc::from(r.endpoints.clone())))
        .collect();
    Arc::new(map)
}
