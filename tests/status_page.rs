//! The admin port's status: `/status.json` through a cold start (no browser), and the `/` page
//! in a real headless Chromium watching a revision go from 0 to 1 pod.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kactivator::cli::Mode;
use serde_json::Value;
use support::{
    app::{TestApp, admin_get, start},
    autoscaler::{FakeAutoscaler, Reaper},
    binary::{start_activator, try_exchange, try_get},
    cdp::{Browser, browser_program},
    mixer::{EXT_AUTHZ_PATH, channel, ext_authz_request, healthy_pod, raw_call},
    wait,
};

const WAIT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

/// Kills the pods `config(test, …)` marks, whatever happens to the test.
fn reaper(test: &str) -> Reaper {
    Reaper(format!(
        "KACTIVATOR_TEST_MARKER={test}-{}",
        std::process::id()
    ))
}

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

/// Polls `/status.json` until `cond` holds; returns that document.
async fn wait_status(app: &TestApp, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    wait::until_some(what, async || Some(status(app).await).filter(|d| cond(d))).await
}

fn revision(doc: &Value) -> &Value {
    &doc["activator"]["revisions"][0]
}

#[tokio::test]
async fn status_json_follows_a_cold_start_from_zero_to_one_pod() {
    let _reaper = reaper("status-json");
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
    // The embedded local autoscaler's side of the same revision.
    let scaled = &doc["autoscaler"]["revisions"][0];
    assert_eq!(
        (&scaled["namespace"], &scaled["name"]),
        (&"shop".into(), &"hello".into())
    );
    assert_eq!(
        (&scaled["desired"], &scaled["actual"]),
        (&0.into(), &0.into()),
        "{doc:#}"
    );
    assert_eq!(doc["adapter"], Value::Null);

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

    // The scaler's decision and its pod, whose port is the one the activator proxies to.
    let scaled = &doc["autoscaler"]["revisions"][0];
    assert_eq!(
        (&scaled["desired"], &scaled["ready"]),
        (&1.into(), &1.into()),
        "{doc:#}"
    );
    assert_eq!(scaled["last_decision"]["from"], 0);
    assert_eq!(scaled["last_decision"]["to"], 1);
    let pod = &scaled["pods"][0];
    assert_eq!(pod["state"], "ready");
    assert!(pod["pid"].as_u64().unwrap() > 1);
    let port = rev["pods"][0]["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(pod["port"].to_string(), port);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_json_in_adapter_mode_shows_holds_and_the_coalescer() {
    let fake = FakeAutoscaler::start().await;
    let yaml = format!(
        "autoscaler:\n  url: {}\ndiscovery: static\nadapter:\n  hold_until_ready: 30s\n  poke_interval: 60s\nrevisions:\n  - name: hello\n    namespace: shop\n    hosts: [hello.example.com]\n",
        fake.url()
    );
    let app = start(Mode::Adapter, &yaml).await;
    let doc = status(&app).await;
    assert_eq!(doc["mode"], "adapter");
    assert_eq!(doc["activator"], Value::Null);
    assert_eq!(doc["adapter"]["holds_in_progress"], 0);
    assert_eq!(doc["adapter"]["revisions_total"], 0);

    // Two checks for a revision without a pod: one poke, one coalesced, both held.
    let ch = channel(app.addrs.grpc.unwrap()).await;
    let calls: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(raw_call(
                ch.clone(),
                EXT_AUTHZ_PATH,
                ext_authz_request("hello.example.com", &[]),
            ))
        })
        .collect();
    let doc = wait_status(&app, "two holds", |d| {
        d["adapter"]["holds_in_progress"] == 2
    })
    .await;
    let a = &doc["adapter"];
    assert_eq!(
        (&a["pokes_forwarded"], &a["pokes_coalesced"]),
        (&1.into(), &1.into()),
        "{doc:#}"
    );
    assert_eq!(a["holds_total"], 0, "counted when they end");
    assert_eq!(a["revisions_total"], 1);
    assert_eq!(a["revisions"][0]["name"], "hello");
    assert_eq!(a["revisions"][0]["namespace"], "shop");
    wait_status(&app, "the link", |d| {
        d["autoscaler_link"]["state"] == "connected"
    })
    .await;

    // A healthy pod lets them go.
    let (pod, _pod_task) = healthy_pod().await;
    app.write_config(&yaml.replace(
        "hosts: [hello.example.com]",
        &format!("hosts: [hello.example.com]\n    endpoints: [{pod}]"),
    ));
    for call in calls {
        tokio::time::timeout(WAIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let doc = wait_status(&app, "holds ended", |d| {
        d["adapter"]["holds_in_progress"] == 0
    })
    .await;
    assert_eq!(doc["adapter"]["holds_total"], 2);
    assert_eq!(doc["adapter"]["holds_expired"], 0);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_json_in_autoscaler_mode_shows_the_scalers_pods() {
    let _reaper = reaper("status-autoscaler");
    let yaml = config("status-autoscaler", 0).replace("scale_to_zero_after: 30s", "min_scale: 1");
    let app = start(Mode::Autoscaler, &yaml).await;
    let doc = wait_status(&app, "a ready pod", |d| {
        d["autoscaler"]["revisions"][0]["ready"] == 1
    })
    .await;
    assert_eq!(doc["mode"], "autoscaler");
    assert_eq!(doc["autoscaler_link"], Value::Null);
    assert_eq!(doc["activator"], Value::Null);
    let scaled = &doc["autoscaler"]["revisions"][0];
    assert_eq!(
        (&scaled["min_scale"], &scaled["desired"]),
        (&1.into(), &1.into()),
        "{doc:#}"
    );
    assert_eq!(scaled["last_decision"]["to"], 1);
    let pod = &scaled["pods"][0];
    assert_eq!((&pod["id"], &pod["state"]), (&1.into(), &"ready".into()));
    let pid = u32::try_from(pod["pid"].as_u64().unwrap()).unwrap();
    assert!(support::autoscaler::is_alive(pid), "{doc:#}");
    app.shutdown().await.unwrap();
}

/// Held long enough for the page (polling every second) to show the request queued.
const POD_START_MS: u64 = 2_500;

#[tokio::test]
async fn the_page_in_a_real_browser_shows_a_revision_go_from_zero_to_one_pod() {
    let Some(program) = browser_program() else {
        return;
    };
    let _reaper = reaper("status-page");
    let dir = tempfile::tempdir().unwrap();
    // The real binary; a second revision kept warm (min_scale 1) so that the page has both.
    let yaml = format!(
        "{}  - name: catalog
    namespace: shop
    hosts: [catalog.example.com]
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", KACTIVATOR_TEST_MARKER: \"status-page-{}\"}}
    min_scale: 1
",
        config("status-page", POD_START_MS),
        std::process::id()
    );
    let mut binary = start_activator(dir.path(), &yaml, None);
    let admin = binary.ports.admin;
    wait::until("the admin port", async || {
        try_get(admin, "/status.json", Duration::from_secs(1))
            .await
            .is_some()
    })
    .await;

    let browser = Browser::launch(&program, 1000, 1100);
    let mut page = browser.page().await;
    page.navigate(&format!("http://{admin}/")).await;
    let card =
        |rev: &str, sel: &str| format!("document.querySelector('[data-revision=\"{rev}\"] {sel}')");
    let text_is = |rev: &str, sel: &str, want: &str| {
        format!("({q} || {{}}).textContent === {want:?}", q = card(rev, sel))
    };
    page.wait_for(
        "shop/hello at zero pods",
        &format!(
            "{} && {} !== null",
            text_is("shop/hello", ".ready-pods b", "0"),
            card("shop/hello", ".no-pods")
        ),
    )
    .await;
    page.wait_for(
        "the warm revision with its pod and the link up",
        &format!(
            "{} && document.getElementById('link').textContent.includes('connected')",
            text_is("shop/catalog", ".ready-pods b", "1")
        ),
    )
    .await;

    // The cold request: the page shows it held, then the pod and the cold start's duration.
    let http = binary.ports.http;
    let request = tokio::spawn(async move {
        try_exchange(
            http,
            "GET / HTTP/1.1\r\nHost: hello.example.com\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await
    });
    page.wait_for("the request held", &text_is("shop/hello", ".queued b", "1"))
        .await;
    if let Ok(path) = std::env::var("KACTIVATOR_STATUS_SCREENSHOT") {
        std::fs::write(path, page.screenshot().await).unwrap();
    }
    page.wait_for(
        "shop/hello at one pod with a cold start",
        &format!(
            "{} && {} && {} !== null",
            text_is("shop/hello", ".ready-pods b", "1"),
            text_is("shop/hello", ".cold-starts-total b", "1"),
            card("shop/hello", ".pods")
        ),
    )
    .await;
    let held = page
        .eval(&format!(
            "{}.textContent",
            card("shop/hello", ".cold-starts tbody td")
        ))
        .await;
    let ms: f64 = held
        .as_str()
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a cold-start duration, not {held}"));
    assert!(ms >= POD_START_MS as f64, "held {ms} ms");
    let (code, body) = request.await.unwrap().expect("the cold request's answer");
    assert_eq!(code, 200, "{body}");
    if let Ok(path) = std::env::var("KACTIVATOR_STATUS_SCREENSHOT_AFTER") {
        std::fs::write(path, page.screenshot().await).unwrap();
    }

    // Strings from config or the API are text, never markup: render a document naming a
    // revision with HTML in it, in the same synchronous turn as the checks (the next poll
    // cannot run in between).
    let injected = page
        .eval(
            r#"(() => {
                const evil = '<img src=x onerror="window.__pwned=1"><b id=pwn>x</b>';
                window.__pwned = 0;
                render({ schema: 1, version: '0', mode: 'activator', uptime_seconds: 1,
                  autoscaler_link: { url: 'ws://<i>u</i>', state: 'connected', for_seconds: 1 },
                  activator: { revisions_total: 1, revisions_truncated: 0, revisions: [{
                    namespace: 'ns', name: evil, container_concurrency: 0, capacity: null,
                    in_flight: 0, queued: 0, ready_pods: 1, pods_truncated: 0,
                    pods: [{ address: evil, state: 'healthy', protocols: [evil], in_use: true, in_flight: 0 }],
                    cold_starts_total: 0, recent_cold_starts: [], pokes: 0 }] },
                  adapter: null, autoscaler: null });
                return {
                  imgs: document.querySelectorAll('img').length,
                  bold: document.getElementById('pwn') === null,
                  italic: document.querySelectorAll('#link i').length,
                  name: document.querySelector('.revision h3').textContent,
                };
            })()"#,
        )
        .await;
    assert_eq!(injected["imgs"], 0, "{injected}");
    assert_eq!(injected["bold"], true, "{injected}");
    assert_eq!(injected["italic"], 0, "{injected}");
    assert_eq!(
        injected["name"],
        "ns/<img src=x onerror=\"window.__pwned=1\"><b id=pwn>x</b>"
    );
    assert_eq!(page.eval("window.__pwned").await, 0);

    drop(page);
    drop(browser);
    // SIGTERM: the binary stops its pods before exiting.
    nix::sys::signal::kill(binary.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(binary.exit_code(Duration::from_secs(30)).await, Some(0));
}
