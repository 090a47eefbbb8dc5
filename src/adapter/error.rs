//! Call errors of the adapter, and the one place they become a `tonic::Status`.

use tracing::warn;

use crate::metrics;

/// Which API a call came in through (the `api` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Mixer `authorization` template (CHECK).
    Authorization,
    /// Mixer `metric` template (REPORT).
    Metric,
    /// Envoy `ext_authz` v3.
    ExtAuthz,
}

impl Api {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Api::Authorization => "authorization",
            Api::Metric => "metric",
            Api::ExtAuthz => "ext_authz",
        }
    }
}

/// A call the adapter refuses. Only a broken handler configuration is refused: a call that
/// names no revision, or a poke that cannot be delivered, still gets an OK answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// `adapter_config` is an `Any` of some other message.
    #[error("adapter_config: expected type_url `{expected}`, got `{got}`")]
    ConfigType { expected: &'static str, got: String },
    /// `adapter_config` has the right type but its bytes do not decode.
    #[error("adapter_config: cannot decode adapter.kactivator.config.Params: {0}")]
    Params(prost::DecodeError),
    /// `autoscaler_endpoint` is not a websocket URL.
    #[error("adapter_config: autoscaler_endpoint `{0}` must start with ws://")]
    Endpoint(String),
}

impl CallError {
    fn reason(&self) -> &'static str {
        match self {
            CallError::ConfigType { .. } => "config_type",
            CallError::Params(_) => "config_decode",
            CallError::Endpoint(_) => "config_endpoint",
        }
    }

    /// Counts and logs the error and turns it into the gRPC status the caller gets.
    pub(crate) fn into_status(self, api: Api) -> tonic::Status {
        ::metrics::counter!(metrics::ADAPTER_ERRORS, "api" => api.as_str(), "reason" => self.reason())
            .increment(1);
        warn!(error = %self, api = api.as_str(), "Refusing adapter call");
        tonic::Status::invalid_argument(self.to_string())
    }
}
