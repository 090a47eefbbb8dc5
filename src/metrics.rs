//! Metric names (the public contract of `/metrics`), their descriptions, and the recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Knative names; labels `k8s_namespace_name`, `kn_revision_name`.
/// Gauge: requests waiting for capacity.
pub const REVISION_REQUEST_QUEUED: &str = "kn_revision_request_queued";
/// Gauge: requests being proxied.
pub const REVISION_REQUEST_ACTIVE: &str = "kn_revision_request_active";
/// Gauge: concurrency last reported to the autoscaler.
pub const REVISION_REQUEST_CONCURRENCY: &str = "kn_revision_request_concurrency";
/// Gauge 1/0, label `peer="autoscaler"`.
pub const STATS_CONN_REACHABLE: &str = "kn_activator_stats_conn_reachable";
/// Counter, label `peer="autoscaler"`.
pub const STATS_CONN_ERRORS: &str = "kn_activator_stats_conn_errors_total";

// kactivator names.
/// Counter, label `code` (499 for clients that went away).
pub const REQUESTS: &str = "kactivator_requests_total";
/// Histogram of whole-request durations.
pub const REQUEST_DURATION: &str = "kactivator_request_duration_seconds";
/// Histogram: arrival to first byte sent upstream, for requests that found no ready pod.
pub const COLD_START: &str = "kactivator_cold_start_seconds";
/// Counter, label `reason` (`queue_full`, `queue_timeout`, `draining`).
pub const QUEUE_REJECTIONS: &str = "kactivator_queue_rejections_total";
/// Counter of requests retried on another pod after a failed connect.
pub const RETRIES: &str = "kactivator_retries_total";
/// Counter, label `result`.
pub const POKES: &str = "kactivator_pokes_total";
/// Counter, label `api`.
pub const ADAPTER_CALLS: &str = "kactivator_adapter_calls_total";
/// Counter of stats frames.
pub const AUTOSCALER_FRAMES: &str = "kactivator_autoscaler_frames_total";
/// Counter, label `result` (`applied`, `rejected`).
pub const CONFIG_RELOADS: &str = "kactivator_config_reloads_total";

/// Counter, labels `api`, `reason`: adapter calls that carried no usable revision or bad
/// `adapter_config` (traffic is still allowed unless the config itself is invalid).
pub const ADAPTER_ERRORS: &str = "kactivator_adapter_errors_total";
/// Counter, label `api`: adapter calls whose host is neither a configured `revisions[].hosts`
/// entry, a KIngress Route host nor a `.svc` revision host (allowed, nothing poked).
pub const ADAPTER_UNKNOWN_HOSTS: &str = "kactivator_adapter_unknown_hosts_total";
/// Counter, label `api`: `hold_until_ready` ran out before the revision had a ready pod.
pub const ADAPTER_HOLD_EXPIRED: &str = "kactivator_adapter_hold_expired_total";

/// Counter, label `resource` (`revisions`, `endpoints`, `services`; `ingresses` in adapter
/// mode): failed Kubernetes list/watch calls
/// (each is retried with backoff; the last known state stays in force).
pub const KUBERNETES_WATCH_ERRORS: &str = "kactivator_kubernetes_watch_errors_total";
/// Gauge 1/0: `discovery: kubernetes` has listed every watched resource once.
pub const KUBERNETES_SYNCED: &str = "kactivator_kubernetes_synced";

/// Counter, label `reason` (`queue_full`, `export_failed`): trace spans never delivered to
/// the collector. Requests never wait for the export.
pub const TRACE_SPANS_DROPPED: &str = "kactivator_trace_spans_dropped_total";
/// Counter of trace spans the collector accepted.
pub const TRACE_SPANS_EXPORTED: &str = "kactivator_trace_spans_exported_total";

/// Label names shared by the per-revision metrics.
pub const LABEL_NAMESPACE: &str = "k8s_namespace_name";
pub const LABEL_REVISION: &str = "kn_revision_name";

/// Latency buckets in seconds: sub-millisecond proxy overhead up to multi-minute cold starts.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// How often histogram samples are folded into their buckets. Until then the exporter keeps
/// every raw sample, so an instance nobody scrapes would grow without bound.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once and returns the handle `/metrics` renders.
///
/// Idempotent, so that tests may start several servers in one process.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is already global (an embedding program's);
            // then our handle renders nothing, which beats refusing to start.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Runs the exporter's upkeep every `UPKEEP_INTERVAL` until `exit` is cancelled.
///
/// Upkeep folds every histogram sample recorded since the last run (one per request) into the
/// buckets: at tens of thousands of requests per second that is milliseconds of work, so it runs
/// on the blocking pool, not on a worker that serves requests.
pub fn spawn_upkeep(handle: PrometheusHandle, exit: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = exit.cancelled() => return,
                _ = tick.tick() => {
                    let handle = handle.clone();
                    let _ = tokio::task::spawn_blocking(move || handle.run_upkeep()).await;
                }
            }
        }
    });
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        REVISION_REQUEST_QUEUED,
        "Requests waiting for capacity, per revision"
    );
    describe_gauge!(
        REVISION_REQUEST_ACTIVE,
        "Requests being proxied, per revision"
    );
    describe_gauge!(
        REVISION_REQUEST_CONCURRENCY,
        "Average concurrency last reported to the autoscaler"
    );
    describe_gauge!(
        STATS_CONN_REACHABLE,
        "1 when the autoscaler websocket is connected"
    );
    describe_counter!(STATS_CONN_ERRORS, "Autoscaler websocket connection errors");
    describe_counter!(
        REQUESTS,
        "Requests answered, by status code (499: client went away)"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Request duration, queueing included"
    );
    describe_histogram!(
        COLD_START,
        Unit::Seconds,
        "Arrival to first byte upstream for requests that found no ready pod"
    );
    describe_counter!(
        QUEUE_REJECTIONS,
        "Requests rejected by the throttler, by reason"
    );
    describe_counter!(
        RETRIES,
        "Requests retried after a connect failure (they never reached a pod)"
    );
    describe_counter!(POKES, "Scale-from-zero pokes, by result");
    describe_counter!(ADAPTER_CALLS, "Adapter gRPC calls, by api");
    describe_counter!(AUTOSCALER_FRAMES, "Stats frames to or from the autoscaler");
    describe_counter!(
        ADAPTER_ERRORS,
        "Adapter calls without a usable revision or with bad adapter_config, by api and reason"
    );
    describe_counter!(
        ADAPTER_UNKNOWN_HOSTS,
        "Adapter calls whose host no revision, Route or .svc form names, by api"
    );
    describe_counter!(
        ADAPTER_HOLD_EXPIRED,
        "Adapter holds that ended without a ready pod, by api"
    );
    describe_counter!(CONFIG_RELOADS, "Config file reloads, by result");
    describe_counter!(
        TRACE_SPANS_DROPPED,
        "Trace spans never delivered to the collector, by reason (queue_full, export_failed)"
    );
    describe_counter!(
        TRACE_SPANS_EXPORTED,
        "Trace spans accepted by the collector"
    );
    describe_counter!(
        KUBERNETES_WATCH_ERRORS,
        "Failed Kubernetes list/watch calls, by resource (retried with backoff)"
    );
    describe_gauge!(
        KUBERNETES_SYNCED,
        "1 once discovery: kubernetes has listed Revisions and Endpoints"
    );
}

/// Counts a failed Kubernetes list or watch of `resource`.
pub fn count_kubernetes_error(resource: &'static str) {
    ::metrics::counter!(KUBERNETES_WATCH_ERRORS, "resource" => resource).increment(1);
}

/// Records whether Kubernetes discovery has synced.
pub fn set_kubernetes_synced(synced: bool) {
    ::metrics::gauge!(KUBERNETES_SYNCED).set(if synced { 1.0 } else { 0.0 });
}
