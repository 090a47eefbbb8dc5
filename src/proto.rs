//! Generated protobuf and gRPC code (build.rs compiles `proto/` with protox).
#![allow(
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]

/// Knative stats (`package metrics`).
pub mod metrics {
    tonic::include_proto!("metrics");
}
