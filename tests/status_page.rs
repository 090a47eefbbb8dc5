//! The admin port's status: `/status.json` through a cold start (no browser), and the `/` page
//! in a real headless Chromium watching a revision go from 0 to 1 pod.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kactivator::cli::Mode;
use serde_json::Value;
use support::{
    app::{TestApp, admin_get, start},
    binary::try_exchange,
};

const WAIT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

/// A local-autoscaler revision at zero whose demo pod takes `delay_ms` to listen.
fn config(test: &str, delay_ms: u64) -> String {
    format!(
        "discovery: local
revisions:
  - name: hello
    namespace: shop
    hosts: [hello.example.com]
    container_concurrency: 4
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", DEMO_STARTUP_DELAY_MS: \"{delay_ms}\", KACTIVATOR_TEST_MARKER: \"{test}-{}\"}}
    scale_to_zero_after: 30s
",
        std::process::id()
    )
}

async fn status(app: &TestApp) -> Value {
    let (code, body) = admin_get(app, "/status.json").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/status.json` every 20 ms until `cond` holds; panics with the last document after `WAIT`.
async fn wait_status(app: &TestApp, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let doc = status(app).await;
        if cond(&doc) {
            return doc;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn revision(doc: &Value) -> &Value {
    &doc["activator"]["revisions"][0]
}

#[tokio::test]
async fn status_json_follows_a_cold_start_from_zero_to_one_pod() {
    let app = start(Mode::Activator, &config("status-json", 700)).await;
    let doc = wait_status(&app, "the autoscaler link", |d| {
        d["autoscaler_link"]["state"] == "connected"
    })
    .await;
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["mode"], "activator");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["activator"]["revisions_total"], 1);
    assert_eq!(doc["activator"]["revisions_truncated"], 0);
    let rev = revision(&doc);
    assert_eq!(
        (&rev["namespace"], &rev["name"]),
        (&"shop".into(), &"hello".into())
    );
    assert_eq!(rev["ready_pods"], 0);
    assert_eq!(rev["pods"], Value::Array(vec![]));
    assert_eq!(rev["capacity"], 0);
    assert_eq!(rev["container_concurrency"], 4);
    assert_eq!(rev["cold_starts_total"], 0);
    assert_eq!(rev["pokes"], 0);

    // The cold request is held while the pod starts: the document shows it queued.
    let addr = app.http();
    let request = tokio::spawn(async move {
        try_exchange(
            addr,
            "GET / HTTP/1.1\r\nHost: hello.example.com\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await
    });
    let held = wait_status(&app, "the held request", |d| revision(d)["queued"] == 1).await;
    assert_eq!(revision(&held)["pokes"], 1, "{held:#}");
    let (code, body) = request.await.unwrap().expect("an answer");
    assert_eq!(code, 200, "{body}");

    let doc = wait_status(&app, "one ready pod", |d| revision(d)["ready_pods"] == 1).await;
    let rev = revision(&doc);
    assert_eq!(rev["queued"], 0);
    assert_eq!(rev["capacity"], 4);
    assert_eq!(rev["pods"][0]["state"], "healthy", "{doc:#}");
    assert_eq!(rev["pods"][0]["in_use"], true);
    assert!(
        rev["pods"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(rev["cold_starts_total"], 1);
    let cold = &rev["recent_cold_starts"][0];
    let ms = cold["duration_ms"].as_f64().unwrap();
    assert!(ms >= 700.0 && ms < WAIT.as_secs_f64() * 1000.0, "{doc:#}");
    assert!(cold["seconds_ago"].as_f64().unwrap() >= 0.0);
    app.shutdown().await.unwrap();
}
