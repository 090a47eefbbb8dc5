//! `hold_until_ready`: a CHECK for a revision without a ready pod waits for one (static
//! discovery, endpoint added by a config reload) or for the hold to run out.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kactivator::cli::Mode;
use support::{
    app::{admin_get, metric_value, start},
    autoscaler::FakeAutoscaler,
    mixer::*,
};

fn yaml(url: &str, hold: &str, endpoints: &str) -> String {
    format!(
        "autoscaler:\n  url: {url}\ndiscovery: static\nadapter:\n  hold_until_ready: {hold}\nrevisions:\n  - name: hello\n    namespace: default\n    hosts: [hello.example.com]\n    endpoints: [{endpoints}]\n"
    )
}

#[tokio::test]
async fn a_held_check_is_released_when_the_revision_gets_a_healthy_pod() {
    let fake = FakeAutoscaler::start().await;
    let app = start(Mode::Adapter, &yaml(&fake.url(), "30s", "")).await;
    let ch = channel(app.addrs.grpc.unwrap()).await;

    let mixer = tokio::spawn(raw_call(
        ch.clone(),
        AUTHORIZATION_PATH,
        authorization_request("default", "hello-private", ""),
    ));
    let envoy = tokio::spawn(raw_call(
        ch.clone(),
        EXT_AUTHZ_PATH,
        ext_authz_request("hello.example.com", &[]),
    ));
    // Both calls reached the handler (their poke arrived) and are held while the revision
    // has no pod.
    let frames = fake.wait_frames(1, Duration::from_secs(10)).await;
    assert_eq!(frames[0].protobuf().messages[0].name, "hello");
    assert!(!mixer.is_finished() && !envoy.is_finished());

    let (pod, _pod_task) = healthy_pod().await;
    app.write_config(&yaml(&fake.url(), "30s", &pod.to_string()));
    let released = tokio::time::timeout(Duration::from_secs(20), async {
        (mixer.await.unwrap().unwrap(), envoy.await.unwrap().unwrap())
    })
    .await
    .expect("released once the pod is healthy");
    assert_eq!(&released.0[..2], &[0x0a, 0x00]);
    assert_eq!(released.1, [0x0a, 0x00, 0x1a, 0x00]);

    // A revision with a ready pod is not held at all.
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        raw_call(
            ch,
            EXT_AUTHZ_PATH,
            ext_authz_request("hello.example.com", &[]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_hold_still_allows_and_is_counted() {
    let fake = FakeAutoscaler::start().await;
    let app = start(Mode::Adapter, &yaml(&fake.url(), "300ms", "")).await;
    let ch = channel(app.addrs.grpc.unwrap()).await;
    let started = tokio::time::Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        raw_call(
            ch,
            EXT_AUTHZ_PATH,
            ext_authz_request("hello.default.svc", &[]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);
    let (_, metrics) = admin_get(&app, "/metrics").await;
    let expired = metric_value(
        &metrics,
        "kactivator_adapter_hold_expired_total{api=\"ext_authz\"}",
    );
    assert!(expired.unwrap() >= 1.0, "{metrics}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn closing_releases_held_calls() {
    let fake = FakeAutoscaler::start().await;
    let app = start(Mode::Adapter, &yaml(&fake.url(), "60s", "")).await;
    let ch = channel(app.addrs.grpc.unwrap()).await;
    let held = tokio::spawn(raw_call(
        ch,
        AUTHORIZATION_PATH,
        authorization_request("default", "hello", ""),
    ));
    // Held once its poke arrived.
    assert_eq!(fake.wait_frames(1, Duration::from_secs(10)).await.len(), 1);
    assert!(!held.is_finished());
    let shutdown = tokio::spawn(app.shutdown());
    let reply = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("released by closing, well before the 60 s hold")
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..2], &[0x0a, 0x00]);
    shutdown.await.unwrap().unwrap();
}
