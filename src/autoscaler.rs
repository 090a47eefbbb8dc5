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
mod local;
mod remote;
mod reporter;
pub mod scaler;
mod server;
mod status;
pub mod supervisor;
pub mod wire;

use std::sync::Arc;

pub use client::{AutoscalerClient, Link, POKE_MEMORY};
pub use local::LocalAutoscaler;
pub use remote::{RevisionEndpoints, Snapshot, remote_endpoints};
pub use reporter::{ConcurrencyReporter, REPORT_INTERVAL, RequestGuard};
pub use server::{ENDPOINTS_PATH, MAX_FRAME};

use crate::{config::Encoding, revision::RevisionKey};

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
