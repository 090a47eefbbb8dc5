//! Trace settings from Knative's `config-observability` ConfigMap (Knative 1.18+), read once
//! at start-up by a pod that has no config file.
//!
//! Knative's keys (knative.dev/pkg `observability/tracing`): `tracing-protocol` (`none`, the
//! default; `grpc`; `http/protobuf`; `stdout`), `tracing-endpoint` (required with `grpc` and
//! `http/protobuf`, refused with `none`), `tracing-sampling-rate` (0 to 1, default 0). Only
//! `grpc` is exported here; the others leave traces off with a warning.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use tracing::{info, warn};

use crate::config::TracingConfig;

/// The ConfigMap's name unless `CONFIG_OBSERVABILITY_NAME` says otherwise (as in Knative).
pub const DEFAULT_NAME: &str = "config-observability";
pub const NAME_ENV: &str = "CONFIG_OBSERVABILITY_NAME";
/// Start-up waits at most this long for the API server.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

pub const PROTOCOL: &str = "tracing-protocol";
pub const ENDPOINT: &str = "tracing-endpoint";
pub const SAMPLING_RATE: &str = "tracing-sampling-rate";

/// Knative tracing settings that cannot be used; traces stay off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{PROTOCOL}: `{0}` is not supported (kactivator exports OTLP over gRPC: `grpc`)")]
    Unsupported(String),
    #[error("{ENDPOINT} must be set when {PROTOCOL} is `grpc`")]
    MissingEndpoint,
    #[error("{ENDPOINT} must not be set when {PROTOCOL} is `none`")]
    EndpointWithoutProtocol,
    #[error("{SAMPLING_RATE}: `{0}` is not a number from 0 to 1")]
    BadRate(String),
}

/// The tracing settings `data` asks for: `None` when tracing is off there.
pub fn from_data(data: &BTreeMap<String, String>) -> Result<Option<TracingConfig>, Error> {
    let get = |k: &str| data.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let rate = match get(SAMPLING_RATE) {
        None => 0.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| Error::BadRate(v.chars().take(64).collect()))?,
    };
    let endpoint = get(ENDPOINT);
    match get(PROTOCOL).unwrap_or("none") {
        "none" if endpoint.is_some() => Err(Error::EndpointWithoutProtocol),
        "none" => Ok(None),
        "grpc" => {
            let endpoint = endpoint.ok_or(Error::MissingEndpoint)?;
            Ok(Some(TracingConfig {
                endpoint: Some(endpoint.to_owned()),
                sampling_rate: rate,
                ..TracingConfig::default()
            }))
        }
        other => Err(Error::Unsupported(other.chars().take(64).collect())),
    }
}

/// Reads the ConfigMap `namespace/name` and, when it turns tracing on, puts its settings in
/// `cfg`. An absent or unreadable ConfigMap leaves `cfg` as it is (logged).
pub async fn overlay(client: kube::Client, namespace: &str, name: &str, cfg: &mut TracingConfig) {
    let source = format!("ConfigMap {namespace}/{name}");
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let data = match tokio::time::timeout(READ_TIMEOUT, api.get_opt(name)).await {
        Ok(Ok(Some(cm))) => cm.data.unwrap_or_default(),
        Ok(Ok(None)) => {
            info!(%source, "ConfigMap not found; traces follow the config file and OTEL_*");
            return;
        }
        Ok(Err(error)) => {
            warn!(%source, %error, "Cannot read trace settings; traces follow the config file and OTEL_*");
            return;
        }
        Err(_) => {
            warn!(%source, timeout = ?READ_TIMEOUT, "API server too slow; traces follow the config file and OTEL_*");
            return;
        }
    };
    match from_data(&data) {
        Ok(Some(found)) => {
            info!(%source, endpoint = ?found.endpoint, sampling_rate = found.sampling_rate, "Trace settings");
            *cfg = TracingConfig {
                service_name: cfg.service_name.clone(),
                export_queue: cfg.export_queue,
                ..found
            };
        }
        Ok(None) => info!(%source, "Tracing is off in the ConfigMap"),
        Err(error) => warn!(%source, %error, "Trace settings not used; traces stay off"),
    }
}

/// In a pod without a config file: [`overlay`] from `$CONFIG_OBSERVABILITY_NAME` (default
/// [`DEFAULT_NAME`]) in `namespace`, unless the config or `OTEL_EXPORTER_OTLP_*` already name
/// an endpoint.
pub async fn apply_in_pod(namespace: &str, cfg: &mut TracingConfig) {
    let env = super::otel::process_env;
    if cfg.endpoint.is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
    {
        return;
    }
    let name = env(NAME_ENV).unwrap_or_else(|| DEFAULT_NAME.to_owned());
    match tokio::time::timeout(READ_TIMEOUT, kube::Client::try_default()).await {
        Ok(Ok(client)) => overlay(client, namespace, &name, cfg).await,
        Ok(Err(error)) => {
            warn!(%error, "No Kubernetes client; trace settings not read from {name}")
        }
        Err(_) => warn!("No Kubernetes client in time; trace settings not read from {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn knatives_keys() {
        assert_eq!(from_data(&data(&[])), Ok(None));
        assert_eq!(from_data(&data(&[(PROTOCOL, "none")])), Ok(None));
        let on = from_data(&data(&[
            (PROTOCOL, "grpc"),
            (ENDPOINT, "http://otel-collector.observability:4317"),
            (SAMPLING_RATE, "0.1"),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!(
            on.endpoint.as_deref(),
            Some("http://otel-collector.observability:4317")
        );
        assert_eq!(on.sampling_rate, 0.1);
        // Knative's default rate is 0 (a sampled client is still followed).
        let unset = from_data(&data(&[(PROTOCOL, "grpc"), (ENDPOINT, "http://c:4317")]));
        assert_eq!(unset.expect("valid").expect("on").sampling_rate, 0.0);
    }

    #[test]
    fn what_knative_refuses_or_kactivator_cannot_export() {
        for (kv, want) in [
            (&[(PROTOCOL, "grpc")][..], Error::MissingEndpoint),
            (
                &[(ENDPOINT, "http://c:4317")],
                Error::EndpointWithoutProtocol,
            ),
            (
                &[
                    (PROTOCOL, "http/protobuf"),
                    (ENDPOINT, "http://c:4318/v1/traces"),
                ],
                Error::Unsupported("http/protobuf".into()),
            ),
            (&[(PROTOCOL, "zipkin")], Error::Unsupported("zipkin".into())),
            (&[(SAMPLING_RATE, "1.5")], Error::BadRate("1.5".into())),
            (&[(SAMPLING_RATE, "lots")], Error::BadRate("lots".into())),
        ] {
            assert_eq!(from_data(&data(kv)), Err(want));
        }
    }
}
