//! Fixtures shared by the integration tests: every server binds 127.0.0.1:0.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod apiserver;
pub mod app;
pub mod autoscaler;
pub mod backend;
pub mod binary;
pub mod cdp;
pub mod cluster;
pub mod h2;
pub mod mixer;
pub mod otlp;
pub mod wait;
pub mod wire;
