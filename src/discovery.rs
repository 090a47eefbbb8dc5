//! Discovery: turns a source of pod addresses into the *discovered* endpoint table.
//!
//! `static` reads `revisions[].endpoints` from the (hot-reloaded) config. `local` endpoints
//! come from the local autoscaler's process supervisor (see `autoscaler::local`). `kubernetes`
//! watches the EndpointSlices of each revision's private Service (see [`kubernetes`]).

pub mod kubernetes;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, SharedConfig},
    endpoints::{EndpointMap, Endpoints},
};

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

/// Endpoints of the configured revisions' private Services, watched through `client`.
///
/// Production passes `kube::Client::try_default()` (kubeconfig, else the pod's service account);
/// tests pass a client pointed at a fake API server. See [`kubernetes::spawn`].
pub fn spawn_kubernetes(
    config: watch::Receiver<SharedConfig>,
    client: kube::Client,
    shutdown: CancellationToken,
) -> watch::Receiver<Endpoints> {
    kubernetes::spawn(config, client, shutdown)
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
