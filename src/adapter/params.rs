//! `adapter_config`: decoding `adapter.kactivator.config.Params`, and the autoscaler client
//! each distinct config selects.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use prost::Message as _;
use tracing::{info, warn};

use super::{
    error::{Api, CallError},
    poke::{Sink, Target},
};
use crate::{metrics, proto::adapter::kactivator::config::Params};

/// The only `type_url` accepted in `adapter_config`.
pub const PARAMS_TYPE_URL: &str = "type.googleapis.com/adapter.kactivator.config.Params";

/// Distinct `adapter_config` byte strings remembered. Mixer sends the same bytes on every
/// call of a handler, and there are few handlers; past this, configs are decoded each call.
const CACHE_CAP: usize = 64;

/// Builds a client for an autoscaler endpoint.
pub(crate) type Connect = Box<dyn Fn(&str) -> Arc<dyn Sink> + Send + Sync>;

/// The autoscaler targets: the configured default and one per `autoscaler_endpoint`.
pub(crate) struct Targets {
    default: Target,
    /// The default client's URL: a handler naming it shares the default connection.
    default_url: Option<String>,
    connect: Connect,
    /// Clients beyond the default; at most `limit`, then the default is used.
    limit: usize,
    by_endpoint: Mutex<HashMap<String, Target>>,
    /// `adapter_config.value` → target.
    cache: Mutex<HashMap<Vec<u8>, Target>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("default_url", &self.default_url)
            .field("limit", &self.limit)
            .field("endpoints", &self.by_endpoint.lock().len())
            .finish_non_exhaustive()
    }
}

// === impl Targets ===

impl Targets {
    /// `connect` is called lazily, once per distinct endpoint, at most `limit` times.
    pub(crate) fn new(
        default: Arc<dyn Sink>,
        default_url: Option<String>,
        connect: Connect,
        limit: usize,
    ) -> Self {
        Self {
            default: Target::new(0, default),
            default_url,
            connect,
            limit,
            by_endpoint: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The target an `adapter_config` selects; absent (session-based handlers) → the default.
    pub(crate) fn resolve(
        &self,
        config: Option<&prost_types::Any>,
        api: Api,
    ) -> Result<Target, CallError> {
        let Some(any) = config else {
            return Ok(self.default.clone());
        };
        if any.type_url.is_empty() && any.value.is_empty() {
            return Ok(self.default.clone());
        }
        if any.type_url != PARAMS_TYPE_URL {
            return Err(CallError::ConfigType {
                expected: PARAMS_TYPE_URL,
                got: any.type_url.clone(),
            });
        }
        if let Some(t) = self.cache.lock().get(&any.value) {
            return Ok(t.clone());
        }
        let params = Params::decode(any.value.as_slice()).map_err(CallError::Params)?;
        let target = self.for_endpoint(params.autoscaler_endpoint.trim(), api)?;
        let mut cache = self.cache.lock();
        if cache.len() < CACHE_CAP {
            cache.insert(any.value.clone(), target.clone());
        }
        Ok(target)
    }

    fn for_endpoint(&self, endpoint: &str, api: Api) -> Result<Target, CallError> {
        if endpoint.is_empty() || self.default_url.as_deref() == Some(endpoint) {
            return Ok(self.default.clone());
        }
        if !endpoint.starts_with("ws://") {
            return Err(CallError::Endpoint(endpoint.to_string()));
        }
        let mut by_endpoint = self.by_endpoint.lock();
        if let Some(t) = by_endpoint.get(endpoint) {
            return Ok(t.clone());
        }
        if by_endpoint.len() >= self.limit {
            ::metrics::counter!(metrics::ADAPTER_ERRORS, "api" => api.as_str(), "reason" => "autoscaler_limit")
                .increment(1);
            warn!(
                endpoint,
                limit = self.limit,
                "Too many autoscaler endpoints; using the default"
            );
            return Ok(self.default.clone());
        }
        // Ids start at 1; 0 is the default. Bounded by `limit`, so u16 cannot overflow.
        let id = u16::try_from(by_endpoint.len() + 1).unwrap_or(u16::MAX);
        info!(endpoint, "Connecting to a handler's autoscaler");
        let target = Target::new(id, (self.connect)(endpoint));
        by_endpoint.insert(endpoint.to_string(), target.clone());
        Ok(target)
    }
}

#[cfg(test)]
mod tests;
