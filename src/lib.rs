//! kactivator: Knative-style scale-from-zero for a service mesh, in one binary.
//!
//! # Layout
//!
//! ```text
//! activator:  listener → handler → revision lookup → throttler (queue, capacity) → lb pick → proxy
//!                                         ↑ capacity          ↑ healthy endpoints
//!             discovery (static | local | feed | kubernetes) → backends (probe) ──┘
//!             handler ──(in/out events)──→ concurrency reporter ──→ autoscaler client
//! adapter:    gRPC service → key derivation → poke coalescer ──→ autoscaler client
//! autoscaler: stats server → per-revision scaler → process supervisor → endpoints ──→ discovery
//! ```
//!
//! Modes: `activator`, `adapter`, `autoscaler` (the local, single-machine autoscaler). Shared
//! modules (`config`, `context`, `endpoints`, `discovery` with the autoscaler's endpoints `feed`,
//! `backends`, `autoscaler_client` — the stats client both architectures share — `backoff` and
//! `status`) never import a mode module; the wiring (`app`) imports the modes and hands each the
//! same [`context::Context`].
#![forbid(unsafe_code)]

pub mod activator;
pub mod adapter;
pub mod admin;
pub mod app;
pub mod autoscaler;
pub mod autoscaler_client;
pub mod backends;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod discovery;
pub mod drain;
pub mod endpoints;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod proto;
pub mod revision;
pub mod revisions;
pub mod status;
pub mod telemetry;
