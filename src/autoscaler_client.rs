//! The shared autoscaler client: Knative's stats protocol, spoken by the activator and the adapter.
//!
//! Both architectures of the design card meet here: the activator's handler and the adapter's
//! poke coalescer hand their stats to one [`AutoscalerClient`], which speaks to Knative's
//! autoscaler or to kactivator's own (`crate::autoscaler`, which decodes the same [`wire`]).
//!
//! - [`AutoscalerClient`] owns the websocket (protobuf or gob frames) and reconnects;
//! - [`ConcurrencyReporter`] turns the activator's request arrivals and departures into pokes
//!   and 1 s reports;
//! - [`wire`] and [`gob`] encode and decode the frames, both directions.

mod client;
pub mod gob;
mod reporter;
pub mod wire;

use std::sync::Arc;

pub use client::{AutoscalerClient, POKE_MEMORY};
pub use reporter::{ConcurrencyReporter, REPORT_INTERVAL, RequestGuard};

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
