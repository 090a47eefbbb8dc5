//! Traces from the real binary to a real OTLP/gRPC receiver on 127.0.0.1: the server span
//! continues the client's W3C or B3 context, `throttler_try` covers a cold start,
//! `activator_proxy` is the parent the pod sees; sampling, and a dead collector.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use support::{
    backend::http_echo_on,
    binary::{Running, free_port, start_activator_env, try_exchange},
    otlp::{BlackHole, Received, Receiver},
    wait,
};
use tokio::{net::TcpListener, time::Instant};

const WAIT: Duration = Duration::from_secs(15);
/// How long the pod takes to start in the cold-start test.
const COLD: Duration = Duration::from_millis(600);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn config(pod: SocketAddr, tracing: &str) -> String {
    format!(
        "discovery: static\nactivator:\n  probe_style: tcp\n  probe_period: 20ms\n\
         {tracing}revisions:\n  - name: app\n    endpoints: [{pod}]\n"
    )
}

fn start(dir: &tempfile::TempDir, yaml: &str, env: &[(&str, &str)]) -> Running {
    let mut env = env.to_vec();
    // Batches leave at once, so that the test does not wait the default 5 s.
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "20"));
    start_activator_env(dir.path(), yaml, None, &env)
}

/// A request through the activator; (status, the response's head and body).
async fn send(app: &Running, head: &str) -> (u16, String) {
    // Retried while the listener is not bound yet.
    wait::until_some("an answer from the activator", async || {
        try_exchange(app.ports.http, head, WAIT).await
    })
    .await
}

fn get(extra: &str) -> String {
    format!("GET /hello?x=1 HTTP/1.1\r\nHost: app.default\r\n{extra}Connection: close\r\n\r\n")
}

/// Request fields as the echo backend saw them (lower-case names).
fn seen(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn one<'a>(trace: &'a HashMap<String, Vec<Received>>, name: &str) -> &'a Received {
    let spans = &trace[name];
    assert_eq!(spans.len(), 1, "{name}: {spans:?}");
    &spans[0]
}

/// Waits until the binary answers on its admin port.
async fn up(app: &Running) {
    let head = "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    wait::until("the activator's admin port", async || {
        try_exchange(app.ports.admin, head, WAIT).await.is_some()
    })
    .await;
}

async fn metrics(app: &Running) -> String {
    let head = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    try_exchange(app.ports.admin, head, WAIT).await.unwrap().1
}

#[tokio::test]
async fn a_cold_request_with_a_traceparent_yields_its_spans_and_the_pod_a_child_context() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pod = free_port();
    let tracing = format!("tracing:\n  endpoint: {}\n", receiver.endpoint());
    let app = start(&dir, &config(pod, &tracing), &[]);
    up(&app).await;

    // The pod starts late: the request waits in the queue meanwhile.
    let late = tokio::spawn(async move {
        tokio::time::sleep(COLD).await;
        http_echo_on(TcpListener::bind(pod).await.unwrap()).await
    });
    let tp = format!("traceparent: 00-{TRACE_ID}-{CLIENT_SPAN}-01\r\ntracestate: vendor=x\r\n");
    let (status, text) = send(&app, &get(&tp)).await;
    let _pod = late.await.unwrap();
    assert_eq!(status, 200, "{text}");
    let fields = seen(&text);

    let trace = receiver
        .trace(TRACE_ID, &["GET", "throttler_try", "activator_proxy"])
        .await;
    let server = one(&trace, "GET");
    let queue = one(&trace, "throttler_try");
    let attempt = one(&trace, "activator_proxy");
    assert_eq!(server.service, "kactivator");
    assert_eq!(server.parent_id(), CLIENT_SPAN);
    assert_eq!(server.attr("url.path").as_deref(), Some("/hello"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.attr("kn.revision.name").as_deref(), Some("app"));
    assert_eq!(queue.parent_id(), server.span_id());
    assert_eq!(queue.attr("kactivator.cold_start").as_deref(), Some("true"));
    assert_eq!(queue.attr("k8s.namespace.name").as_deref(), Some("default"));
    assert_eq!(queue.attr("kactivator.queue.depth").as_deref(), Some("0"));
    // The queue wait covers the cold start, and the attempt follows it.
    assert!(
        queue.duration() >= COLD - Duration::from_millis(50),
        "{:?}",
        queue.duration()
    );
    assert!(attempt.span.start_time_unix_nano >= queue.span.end_time_unix_nano);
    assert!(server.duration() >= queue.duration());
    assert_eq!(attempt.parent_id(), server.span_id());
    assert_eq!(attempt.attr("server.port"), Some(pod.port().to_string()));
    assert_eq!(attempt.attr("kactivator.retry").as_deref(), Some("0"));
    assert_eq!(
        attempt.attr("http.response.status_code").as_deref(),
        Some("200")
    );

    // The pod's parent is the attempt; the client's tracestate crosses as it was.
    assert_eq!(
        fields.get("traceparent"),
        Some(&format!("00-{TRACE_ID}-{}-01", attempt.span_id())),
        "{text}"
    );
    assert_eq!(
        fields.get("tracestate").map(String::as_str),
        Some("vendor=x")
    );
    assert!(!fields.contains_key("b3"), "{text}");
}

#[tokio::test]
async fn b3_single_and_multi_keep_their_trace_on_both_http_paths() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod = listener.local_addr().unwrap();
    let _pod = http_echo_on(listener).await;
    let tracing = format!("tracing:\n  endpoint: {}\n", receiver.endpoint());
    let app = start(&dir, &config(pod, &tracing), &[]);

    // B3 single on the fast path (a plain GET).
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let single = format!("b3: {b3_trace}-e457b5a2e4d86bd1-1\r\n");
    let (status, text) = send(&app, &get(&single)).await;
    assert_eq!(status, 200, "{text}");
    let trace = receiver.trace(b3_trace, &["GET", "activator_proxy"]).await;
    let attempt = one(&trace, "activator_proxy");
    assert_eq!(one(&trace, "GET").parent_id(), "e457b5a2e4d86bd1");
    let fields = seen(&text);
    assert_eq!(
        fields.get("b3"),
        Some(&format!("{b3_trace}-{}-1", attempt.span_id())),
        "{text}"
    );
    assert_eq!(
        fields.get("traceparent"),
        Some(&format!("00-{b3_trace}-{}-01", attempt.span_id()))
    );

    // B3 multi on the general path (a chunked body is hyper's), 64-bit trace id.
    let multi = "POST /upload HTTP/1.1\r\nHost: app.default\r\nTransfer-Encoding: chunked\r\n\
                 X-B3-TraceId: 64fe8b2a57d3eff7\r\nX-B3-SpanId: 05e3ac9a4f6e3b90\r\n\
                 X-B3-ParentSpanId: 1111111111111111\r\nX-B3-Sampled: 1\r\n\
                 Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let (status, text) = send(&app, multi).await;
    assert_eq!(status, 200, "{text}");
    let wide = "000000000000000064fe8b2a57d3eff7";
    let trace = receiver
        .trace(wide, &["POST", "throttler_try", "activator_proxy"])
        .await;
    let attempt = one(&trace, "activator_proxy");
    assert_eq!(one(&trace, "POST").parent_id(), "05e3ac9a4f6e3b90");
    assert_eq!(
        one(&trace, "throttler_try")
            .attr("kactivator.cold_start")
            .as_deref(),
        Some("false")
    );
    let fields = seen(&text);
    assert_eq!(
        fields.get("x-b3-traceid").map(String::as_str),
        Some(wide),
        "{text}"
    );
    assert_eq!(fields.get("x-b3-spanid"), Some(&attempt.span_id()));
    assert_eq!(fields.get("x-b3-sampled").map(String::as_str), Some("1"));
    assert!(!fields.contains_key("x-b3-parentspanid"), "{text}");
    assert_eq!(
        fields.get("traceparent"),
        Some(&format!("00-{wide}-{}-01", attempt.span_id()))
    );
}

#[tokio::test]
async fn sampling_rate_zero_exports_only_what_a_sampled_client_asks_for() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod = listener.local_addr().unwrap();
    let _pod = http_echo_on(listener).await;
    let tracing = format!(
        "tracing:\n  endpoint: {}\n  sampling_rate: 0\n",
        receiver.endpoint()
    );
    let app = start(&dir, &config(pod, &tracing), &[]);

    for _ in 0..20 {
        let (status, text) = send(&app, &get("")).await;
        assert_eq!(status, 200);
        // Not sampled, but the pod still gets a context to continue (flag 00).
        let tp = seen(&text).remove("traceparent").expect("traceparent");
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    }
    // Parent-based: a sampled client is followed. Its spans arriving shows the exporter works,
    // so that the absence of the others is not an exporter that never sends.
    let tp = format!("traceparent: 00-{TRACE_ID}-{CLIENT_SPAN}-01\r\n");
    assert_eq!(send(&app, &get(&tp)).await.0, 200);
    receiver
        .trace(TRACE_ID, &["GET", "throttler_try", "activator_proxy"])
        .await;
    let others: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|r| r.trace_id() != TRACE_ID)
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request_and_drops_are_counted() {
    let hole = BlackHole::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod = listener.local_addr().unwrap();
    let _pod = http_echo_on(listener).await;
    let endpoint = format!("http://{}", hole.addr);
    let app = start(
        &dir,
        &config(pod, ""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
        ],
    );
    send(&app, &get("")).await;
    // Every export hangs (up to its 10 s timeout): the queue fills after a few requests, and
    // every request still completes at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let start = Instant::now();
        let (status, _) = send(&app, &get("")).await;
        assert_eq!(status, 200);
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?}"
    );
    let text = metrics(&app).await;
    let dropped = text
        .lines()
        .find(|l| l.starts_with("kactivator_trace_spans_dropped_total{reason=\"queue_full\"}"))
        .unwrap_or_else(|| panic!("no drop counter:\n{text}"));
    let n: u64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
    // 51 requests × 3 spans, at most 8 queued and 4 in the hung export.
    assert!(n >= 51 * 3 - 12, "{dropped}");
}

#[tokio::test]
async fn adapter_checks_get_a_span_saying_whether_they_were_held() {
    use kactivator::cli::Mode;
    use support::{app, autoscaler::FakeAutoscaler, mixer::*};

    let receiver = Receiver::start().await;
    let fake = FakeAutoscaler::start().await;
    let yaml = format!(
        "autoscaler:\n  url: {}\ndiscovery: static\nadapter:\n  hold_until_ready: 200ms\n\
         tracing:\n  endpoint: {}\n  service_name: adapter\nrevisions:\n  - name: hello\n    \
         namespace: default\n    hosts: [hello.example.com]\n",
        fake.url(),
        receiver.endpoint()
    );
    let app = app::start(Mode::Adapter, &yaml).await;
    let ch = channel(app.addrs.grpc.unwrap()).await;
    raw_call(
        ch.clone(),
        EXT_AUTHZ_PATH,
        ext_authz_request("hello.example.com", &[]),
    )
    .await
    .unwrap();
    raw_call(
        ch,
        AUTHORIZATION_PATH,
        authorization_request("default", "hello-private", ""),
    )
    .await
    .unwrap();
    // The default batch delay (5 s) applies in-process.
    let spans = wait::until_some("the two adapter spans", async || {
        let spans = receiver.spans();
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    let mut names: Vec<_> = spans.iter().map(|r| r.span.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["ext_authz.Check", "mixer.HandleAuthorization"]);
    for r in &spans {
        assert_eq!(r.service, "adapter");
        assert_eq!(r.attr("kn.revision.name").as_deref(), Some("hello"));
        assert_eq!(r.attr("kactivator.held").as_deref(), Some("true"));
        assert_eq!(
            r.attr("kactivator.hold.outcome").as_deref(),
            Some("expired")
        );
        assert!(
            r.duration() >= Duration::from_millis(190),
            "{:?}",
            r.duration()
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn config_observability_is_read_from_the_api_server() {
    use kactivator::{config::TracingConfig, telemetry::config_observability::overlay};
    use support::apiserver::{FakeApiServer, config_map};

    let api = FakeApiServer::start().await;
    let mut cfg = TracingConfig::default();
    // Absent: nothing changes.
    overlay(
        api.client(),
        "knative-serving",
        "config-observability",
        &mut cfg,
    )
    .await;
    assert_eq!(cfg, TracingConfig::default());
    api.apply(config_map(
        "knative-serving",
        "config-observability",
        &[
            ("tracing-protocol", "grpc"),
            (
                "tracing-endpoint",
                "http://otel-collector.observability:4317",
            ),
            ("tracing-sampling-rate", "0.25"),
        ],
    ));
    overlay(
        api.client(),
        "knative-serving",
        "config-observability",
        &mut cfg,
    )
    .await;
    assert_eq!(
        cfg.endpoint.as_deref(),
        Some("http://otel-collector.observability:4317")
    );
    assert_eq!(cfg.sampling_rate, 0.25);
    assert_eq!(cfg.service_name, "kactivator");
}
