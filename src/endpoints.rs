//! Endpoint tables: which pod addresses each revision has, published by one writer on a `watch`.
//!
//! Two tables flow through kactivator: *discovered* endpoints (from static config, the local
//! autoscaler or Kubernetes) and *healthy* endpoints (discovered ones that passed a probe and
//! were not ejected). Both have this type; readers clone the `Arc` and never lock.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::revision::{KeyMap, RevisionKey};

/// Endpoints of every known revision. A revision absent from the map has none.
pub type EndpointMap = KeyMap<Arc<[SocketAddr]>>;

/// A published snapshot of an [`EndpointMap`].
pub type Endpoints = Arc<EndpointMap>;

/// The HTTP versions a pod answered a probe in. Both set when nothing was learned (a `tcp`
/// probe): the request then goes out in the client's version, as it always did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Speaks {
    pub http1: bool,
    /// HTTP/2 over cleartext with prior knowledge.
    pub h2c: bool,
}

impl Speaks {
    /// Unknown, or both: the client's version is fine.
    pub const ANY: Self = Self {
        http1: true,
        h2c: true,
    };
    pub const HTTP1: Self = Self {
        http1: true,
        h2c: false,
    };
    pub const H2C: Self = Self {
        http1: false,
        h2c: true,
    };

    /// As one byte, for an atomic.
    pub fn bits(self) -> u8 {
        u8::from(self.http1) | (u8::from(self.h2c) << 1)
    }

    pub fn from_bits(bits: u8) -> Self {
        Self {
            http1: bits & 1 != 0,
            h2c: bits & 2 != 0,
        }
    }
}

/// A healthy pod and what it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod {
    pub addr: SocketAddr,
    pub speaks: Speaks,
}

/// Healthy pods of every known revision, sorted by address; the healthy [`EndpointMap`] with
/// each pod's protocols.
pub type PodMap = KeyMap<Arc<[Pod]>>;

/// A published snapshot of a [`PodMap`].
pub type Pods = Arc<PodMap>;

/// Number of endpoints `key` has in `map`.
pub fn count(map: &EndpointMap, key: &RevisionKey) -> usize {
    map.get(key).map_or(0, |e| e.len())
}

/// Waits until `key` has at least one endpoint in `rx`, or `timeout` passes.
///
/// Returns `true` when an endpoint is there. Wakes on the change itself, never polls.
pub async fn wait_ready(
    rx: &watch::Receiver<Endpoints>,
    key: &RevisionKey,
    timeout: Duration,
) -> bool {
    let mut rx = rx.clone();
    let ready = tokio::time::timeout(timeout, rx.wait_for(|m| count(m, key) > 0)).await;
    matches!(ready, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_ready_wakes_on_publish_and_times_out_otherwise() {
        let key = RevisionKey::new("default", "hello");
        let (tx, rx) = watch::channel(Endpoints::default());
        assert!(!wait_ready(&rx, &key, Duration::from_millis(100)).await);
        let waiter = tokio::spawn({
            let (rx, key) = (rx.clone(), key.clone());
            async move { wait_ready(&rx, &key, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        let mut map = EndpointMap::default();
        map.insert(key, Arc::from(vec![SocketAddr::from(([127, 0, 0, 1], 1))]));
        tx.send_replace(Arc::new(map));
        assert!(waiter.await.expect("join"));
    }
}
