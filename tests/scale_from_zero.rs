//! The whole single-machine product: activator + embedded local autoscaler + real child pods.
//! A request to a revision at zero starts its pod, is held and served; idle scales back to
//! zero; a pod that never becomes ready ends in 504 and leaves no process behind.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kactivator::cli::Mode;
use support::{
    app::{TestApp, raw_http_get, start},
    autoscaler::pids_with_env,
    wait,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

fn marker(test: &str) -> (String, String) {
    (
        "KACTIVATOR_TEST_MARKER".into(),
        format!("{test}-{}", std::process::id()),
    )
}

/// GET `/` with `Host: host` over HTTP/1.1; returns the whole response text.
async fn get(app: &TestApp, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(app.http()).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    String::from_utf8_lossy(&buf).to_lowercase()
}

#[tokio::test]
async fn a_request_at_zero_starts_the_pod_is_served_and_idle_scales_back_to_zero() {
    let (k, v) = marker("e2e-cold");
    let app = start(
        Mode::Activator,
        &format!(
            "discovery: local
revisions:
  - name: hello
    hosts: [hello.example.com]
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", DEMO_STARTUP_DELAY_MS: \"150\", {k}: \"{v}\"}}
    scale_to_zero_after: 1s
"
        ),
    )
    .await;
    let marker = format!("{k}={v}");
    assert!(pids_with_env(&marker).is_empty(), "scaled to zero at start");

    // Cold: the pod is started on demand and the held request is served by it.
    let cold = get(&app, "hello.example.com").await;
    assert!(cold.starts_with("http/1.1 200"), "{cold}");
    assert!(cold.contains("hello from hello!"), "{cold}");
    let ms: u64 = cold
        .lines()
        .find_map(|l| l.strip_prefix("x-kactivator-cold-start: "))
        .expect("cold-start header")
        .trim()
        .parse()
        .unwrap();
    assert!(ms >= 150, "the wait covers the app's start delay: {ms} ms");
    assert_eq!(pids_with_env(&marker).len(), 1);

    // Warm: no cold-start header.
    let warm = get(&app, "hello.example.com").await;
    assert!(
        warm.starts_with("http/1.1 200") && !warm.contains("x-kactivator-cold-start"),
        "{warm}"
    );

    // Idle: back to zero, then a new request cold-starts again.
    wait::until("scale to zero after idle", async || {
        pids_with_env(&marker).is_empty()
    })
    .await;
    let again = get(&app, "hello.example.com").await;
    assert!(
        again.starts_with("http/1.1 200") && again.contains("x-kactivator-cold-start"),
        "{again}"
    );

    let (_, metrics) = raw_http_get(app.admin(), "/metrics").await;
    assert!(metrics.contains("kactivator_cold_start_seconds_count{k8s_namespace_name=\"default\",kn_revision_name=\"hello\"} 2"), "{metrics}");
    app.shutdown().await.unwrap();
    assert!(
        pids_with_env(&marker).is_empty(),
        "no pod outlives kactivator"
    );
}

#[tokio::test]
async fn a_pod_that_never_becomes_ready_ends_in_504_and_leaks_no_process() {
    let (k, v) = marker("e2e-never");
    let app = start(
        Mode::Activator,
        &format!(
            "discovery: local
revisions:
  - name: stuck
    command: [sleep, \"1000\"]
    env: {{{k}: \"{v}\"}}
    timeout: 1500ms
    startup_timeout: 300ms
"
        ),
    )
    .await;
    let marker = format!("{k}={v}");
    let resp = get(&app, "stuck.default.svc.cluster.local").await;
    assert!(resp.starts_with("http/1.1 504"), "{resp}");
    // Meanwhile the supervisor killed the pod at least once (startup_timeout) and retried.
    app.shutdown().await.unwrap();
    wait::until("no pod left", async || pids_with_env(&marker).is_empty()).await;
}
