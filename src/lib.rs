//! kactivator: Knative-style scale-from-zero for a service mesh, in one binary.
//!
//! # Layout
//!
//! ```text
//! activator:  listener → handler → revision lookup → throttler (queue, capacity) → lb pick → proxy
//!                                         ↑ capacity          ↑ healthy endpoints
//!             discovery (static | local) → backends (probe) ──┘
//!             handler ──(in/out events)──→ concurrency reporter ──→ autoscaler client
//! adapter:    gRPC service → key derivation → poke coalescer ──→ autoscaler client
//! autoscaler: stats server → per-revision scaler → process supervisor → endpoints ──→ discovery
//! ```
//!
//! Shared modules (`config`, `context`, `endpoints`, `discovery`, `backends`, `autoscaler` client)
//! never import a mode module (`activator`, `adapter`); the wiring (`app`) imports the modes and
//! hands each the same [`context::Context`].
#![forbid(unsafe_code)]

pub mod activator;
pub mod adapter;
pub mod admin;
pub mod app;
pub mod autoscaler;
pub mod backends;
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
