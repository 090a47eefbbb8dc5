//! Generated protobuf and gRPC code (build.rs compiles `proto/` with protox).
//!
//! Modules mirror the proto packages, because generated code refers to other packages by
//! relative paths (`super::super::…`).
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

/// Mixer `authorization` template handler service (CHECK).
pub mod authorization {
    tonic::include_proto!("authorization");
}

/// Mixer `metric` template handler service (REPORT).
pub mod metric {
    tonic::include_proto!("metric");
}

/// Mixer adapter model and policy value types.
pub mod istio {
    pub mod mixer {
        pub mod adapter {
            pub mod model {
                /// `CheckResult`, `ReportResult`.
                pub mod v1beta1 {
                    tonic::include_proto!("istio.mixer.adapter.model.v1beta1");
                }
            }
        }
    }
    pub mod policy {
        /// Attribute `Value`s.
        pub mod v1beta1 {
            tonic::include_proto!("istio.policy.v1beta1");
        }
    }
}

/// `google.rpc.Status`.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Envoy ext_authz v3 and the core types it uses.
pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
    }
}

/// The adapter's handler params (`package adapter.kactivator.config`).
pub mod adapter {
    pub mod kactivator {
        pub mod config {
            tonic::include_proto!("adapter.kactivator.config");
        }
    }
}

/// FileDescriptorSet (no source info) of `adapter.kactivator.config.Params`: the `config` of the
/// Mixer adapter resource in `manifests/adapter/`.
pub const PARAMS_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kactivator_params.fds"));
