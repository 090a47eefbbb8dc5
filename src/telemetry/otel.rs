//! OpenTelemetry traces: settings from `OTEL_*` and the config file, spans exported over
//! OTLP/gRPC through a bounded queue that drops (and counts) rather than slow a request.

use std::{env, fmt, sync::Arc, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor},
};
use tokio::{sync::mpsc, time::Instant};
use tracing::{Instrument as _, info, info_span, warn};

use crate::{config::TracingConfig, metrics as names};

/// Each export call is bounded by this; a collector that does not answer loses the batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest export batch and export queue accepted from `OTEL_BSP_*`.
const MAX_QUEUE: usize = 1 << 20;

/// Where spans go and which are kept, resolved once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// OTLP/gRPC collector (`http://host:4317`).
    pub endpoint: String,
    pub sampler: SamplerSpec,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Spans waiting for export; beyond it new spans are dropped and counted.
    pub queue: usize,
    pub batch: usize,
    /// How long a batch waits to fill before it is sent.
    pub delay: Duration,
}

/// `OTEL_TRACES_SAMPLER` (with `OTEL_TRACES_SAMPLER_ARG`), the subset the SDK implements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerSpec {
    fn sampler(self) -> Sampler {
        let ratio = |r: f64| Sampler::TraceIdRatioBased(r);
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => ratio(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(ratio(r))),
        }
    }
}

/// Why the trace settings were refused (traces then stay off; the activator still starts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}: `{1}` is not supported (only OTLP over gRPC is)")]
    Unsupported(&'static str, String),
    #[error("{0}: `{1}` is not valid")]
    Invalid(&'static str, String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// An environment lookup; `std::env::var` in production, a table in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values read as unset (as the OTel spec says).
pub fn process_env(key: &str) -> Option<String> {
    env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// Resolves the settings: each `OTEL_*` variable wins over its config key; `None` when no
/// endpoint is set anywhere, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
pub fn settings(cfg: &TracingConfig, env: Env<'_>) -> Result<Option<TraceSettings>, Error> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match env("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => return Err(Error::Unsupported("OTEL_TRACES_EXPORTER", other.into())),
    }
    for key in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env(key) {
            if p.trim() != "grpc" {
                return Err(Error::Unsupported(key, p));
            }
            break;
        }
    }
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .or_else(|| cfg.endpoint.clone().filter(|e| !e.trim().is_empty()));
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let endpoint = endpoint.trim().to_owned();
    if !endpoint.starts_with("http://") {
        // The exporter is built without a TLS stack: in a cluster the collector is plain
        // gRPC on 4317, or a sidecar.
        return Err(Error::Unsupported(
            "endpoint (http://host:port only)",
            endpoint,
        ));
    }
    let sampler = match env("OTEL_TRACES_SAMPLER") {
        Some(name) => sampler(&name, env("OTEL_TRACES_SAMPLER_ARG"))?,
        None => SamplerSpec::ParentBasedRatio(ratio("tracing.sampling_rate", cfg.sampling_rate)?),
    };
    let size = |key: &'static str, default: usize| -> Result<usize, Error> {
        env(key).map_or(Ok(default), |v| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_QUEUE).contains(n))
                .ok_or(Error::Invalid(key, v))
        })
    };
    let queue = size("OTEL_BSP_MAX_QUEUE_SIZE", cfg.export_queue)?;
    let batch = size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.min(queue);
    let delay = Duration::from_millis(size("OTEL_BSP_SCHEDULE_DELAY", 5000)? as u64);
    Ok(Some(TraceSettings {
        endpoint,
        sampler,
        service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| cfg.service_name.clone()),
        queue,
        batch,
        delay,
    }))
}

fn ratio(key: &'static str, r: f64) -> Result<f64, Error> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(Error::Invalid(key, r.to_string()))
    }
}

/// `OTEL_TRACES_SAMPLER`: the ratio samplers take `OTEL_TRACES_SAMPLER_ARG` (default 1.0).
fn sampler(name: &str, arg: Option<String>) -> Result<SamplerSpec, Error> {
    let r = || -> Result<f64, Error> {
        arg.as_deref().map_or(Ok(1.0), |a| {
            let bad = || Error::Invalid("OTEL_TRACES_SAMPLER_ARG", a.into());
            ratio(
                "OTEL_TRACES_SAMPLER_ARG",
                a.trim().parse().map_err(|_| bad())?,
            )
            .map_err(|_| bad())
        })
    };
    Ok(match name.trim() {
        "always_on" => SamplerSpec::AlwaysOn,
        "always_off" => SamplerSpec::AlwaysOff,
        "traceidratio" => SamplerSpec::Ratio(r()?),
        "parentbased_always_on" => SamplerSpec::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerSpec::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerSpec::ParentBasedRatio(r()?),
        other => return Err(Error::Unsupported("OTEL_TRACES_SAMPLER", other.into())),
    })
}

/// The tracer the request path uses. Present only when traces are on, so that "off" is one
/// `Option` check per request.
#[derive(Clone)]
pub struct Traces {
    tracer: SdkTracer,
    // Kept so that the span pipeline lives as long as any handle.
    _provider: Arc<SdkTracerProvider>,
}

impl fmt::Debug for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

impl Traces {
    /// Starts the export task (on the current tokio runtime) and returns the tracer.
    pub fn start(settings: &TraceSettings) -> Result<Self, Error> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(settings.queue);
        let dropped = metrics::counter!(names::TRACE_SPANS_DROPPED, "reason" => "queue_full");
        tokio::spawn(
            export(exporter, rx, settings.batch, settings.delay)
                .instrument(info_span!("trace_export", endpoint = %settings.endpoint)),
        );
        let provider = SdkTracerProvider::builder()
            .with_sampler(settings.sampler.sampler())
            .with_resource(resource)
            .with_span_processor(Queue { tx, dropped })
            .build();
        info!(
            endpoint = %settings.endpoint,
            sampler = ?settings.sampler,
            service = %settings.service_name,
            "Exporting traces over OTLP/gRPC"
        );
        Ok(Self {
            tracer: provider.tracer("kactivator"),
            _provider: Arc::new(provider),
        })
    }

    /// From the config file and the environment; `None` (with a warning for bad settings)
    /// when traces are off.
    pub fn from_config(cfg: &TracingConfig) -> Option<Self> {
        let started =
            settings(cfg, &process_env).and_then(|s| s.map(|s| Self::start(&s)).transpose());
        match started {
            Ok(traces) => traces,
            Err(error) => {
                warn!(%error, "Traces are off");
                None
            }
        }
    }

    pub(crate) fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }
}

/// Hands ended spans to the export task without ever waiting: a full queue drops the span.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
    dropped: metrics::Counter,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends spans in batches of up to `batch`, each at most `delay` after its first span, one
/// export at a time; a failed or timed-out export loses its batch (counted).
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    batch: usize,
    delay: Duration,
) {
    let exported = metrics::counter!(names::TRACE_SPANS_EXPORTED);
    let failed = metrics::counter!(names::TRACE_SPANS_DROPPED, "reason" => "export_failed");
    let mut spans = Vec::with_capacity(batch);
    let mut open = true;
    while open {
        if rx.recv_many(&mut spans, batch).await == 0 {
            break;
        }
        let deadline = Instant::now() + delay;
        while spans.len() < batch {
            let more = batch - spans.len();
            tokio::select! {
                n = rx.recv_many(&mut spans, more) => if n == 0 { open = false; break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let n = spans.len() as u64;
        let sent = std::mem::replace(&mut spans, Vec::with_capacity(batch));
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(sent)).await {
            Ok(Ok(())) => exported.increment(n),
            Ok(Err(error)) => {
                failed.increment(n);
                warn!(%error, spans = n, "Trace export failed");
            }
            Err(_) => {
                failed.increment(n);
                warn!(spans = n, "Trace export timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(cfg: &TracingConfig, vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        settings(cfg, &|k| map.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        let cfg = TracingConfig::default();
        assert_eq!(resolve(&cfg, &[]), Ok(None));
        let on = resolve(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])
            .expect("valid")
            .expect("on");
        assert_eq!(on.endpoint, "http://c:4317");
        assert_eq!(on.sampler, SamplerSpec::ParentBasedRatio(1.0));
        assert_eq!(on.service_name, "kactivator");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), off];
            assert_eq!(resolve(&cfg, &vars), Ok(None), "{off:?}");
        }
    }

    #[test]
    fn env_wins_over_the_config_file() {
        let cfg = TracingConfig {
            endpoint: Some("http://file:4317".into()),
            sampling_rate: 0.5,
            service_name: "from-file".into(),
            export_queue: 100,
        };
        let file = resolve(&cfg, &[]).expect("valid").expect("on");
        assert_eq!(file.endpoint, "http://file:4317");
        assert_eq!(file.sampler, SamplerSpec::ParentBasedRatio(0.5));
        assert_eq!((file.queue, file.batch), (100, 100));
        let env = resolve(
            &cfg,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
                ("OTEL_SERVICE_NAME", "activator"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        )
        .expect("valid")
        .expect("on");
        assert_eq!(env.endpoint, "http://traces:4317");
        assert_eq!(env.sampler, SamplerSpec::ParentBasedRatio(0.01));
        assert_eq!(env.service_name, "activator");
        assert_eq!(env.delay, Duration::from_millis(100));
    }

    #[test]
    fn bad_settings_are_named() {
        let cfg = TracingConfig {
            endpoint: Some("http://c:4317".into()),
            ..TracingConfig::default()
        };
        for (vars, key) in [
            (
                &[("OTEL_TRACES_SAMPLER", "xray")][..],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "OTEL_BSP_MAX_QUEUE_SIZE",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")],
                "http://",
            ),
        ] {
            let error = resolve(&cfg, vars).expect_err(key).to_string();
            assert!(error.contains(key), "{error}");
        }
        let bad_rate = TracingConfig {
            sampling_rate: -1.0,
            ..cfg
        };
        assert!(resolve(&bad_rate, &[]).is_err());
    }
}
