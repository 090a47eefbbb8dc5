//! Adapter pokes observed at a fake Knative autoscaler: every API, both encodings, handler
//! `autoscaler_endpoint`, and coalescing under load.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeSet, time::Duration};

use kactivator::cli::Mode;
use support::{
    app::{TestApp, admin_get, metric_value, start},
    autoscaler::{FakeAutoscaler, Frame},
    mixer::*,
    wait,
};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

async fn adapter(fake: &FakeAutoscaler, extra: &str) -> (TestApp, Channel) {
    let yaml = format!("autoscaler:\n  url: {}\n{extra}", fake.url());
    let app = start(Mode::Adapter, &yaml).await;
    // Pokes made before the websocket is up are deferred and re-sent; waiting for it keeps
    // frame order equal to call order, which the sentinel checks below rely on.
    wait_connected(fake, 1).await;
    let ch = channel(app.addrs.grpc.unwrap()).await;
    (app, ch)
}

async fn wait_connected(fake: &FakeAutoscaler, n: u32) {
    wait::until("the client to connect", async || fake.connections() >= n).await;
}

/// `namespace/name` of every stat in protobuf frames.
fn keys(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .flat_map(|f| f.protobuf().messages)
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn every_api_pokes_the_revision_it_names() {
    let fake = FakeAutoscaler::start().await;
    let (app, ch) = adapter(
        &fake,
        "revisions:\n  - name: web\n    namespace: shop\n    hosts: [shop.example.com]\n",
    )
    .await;
    let calls = [
        (
            AUTHORIZATION_PATH,
            authorization_request("default", "hello-00001-private", ""),
        ),
        (
            AUTHORIZATION_PATH,
            authorization_request("team-a", "api-00002-priv.team-a.svc.cluster.local", ""),
        ),
        (
            METRIC_PATH,
            metric_request(&[
                &[("namespace", "ns1"), ("revision", "rev-a")],
                &[("service", "rev-b-private.ns2.svc.cluster.local")],
                &[("response_code", "200")],
            ]),
        ),
        (
            EXT_AUTHZ_PATH,
            ext_authz_request(
                "ignored.example.com",
                &[
                    ("knative-serving-revision", "rev-c"),
                    ("knative-serving-namespace", "ns3"),
                ],
            ),
        ),
        (
            EXT_AUTHZ_PATH,
            ext_authz_request("shop.example.com:443", &[]),
        ),
        (
            EXT_AUTHZ_PATH,
            ext_authz_request("rev-d.ns4.svc.cluster.local", &[]),
        ),
    ];
    for (path, body) in calls {
        raw_call(ch.clone(), path, body).await.unwrap();
    }
    let frames = fake.wait_frames(7, WAIT).await;
    let got: BTreeSet<String> = keys(&frames).into_iter().collect();
    let want: BTreeSet<String> = [
        "default/hello-00001",
        "team-a/api-00002",
        "ns1/rev-a",
        "ns2/rev-b",
        "ns3/rev-c",
        "shop/web",
        "ns4/rev-d",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
    // One stat per poke: concurrency 1, one request, our pod name.
    let stat = frames[0].protobuf().messages[0].stat.clone().unwrap();
    assert_eq!(stat.average_concurrent_requests, 1.0);
    assert_eq!(stat.request_count, 1.0);
    assert!(!stat.pod_name.is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn gob_encoding_carries_the_key_string() {
    let fake = FakeAutoscaler::start().await;
    let yaml = format!("autoscaler:\n  url: {}\n  encoding: gob\n", fake.url());
    let app = start(Mode::Adapter, &yaml).await;
    wait_connected(&fake, 1).await;
    let ch = channel(app.addrs.grpc.unwrap()).await;
    raw_call(
        ch.clone(),
        AUTHORIZATION_PATH,
        authorization_request("default", "helloworld-go-00001-priv", ""),
    )
    .await
    .unwrap();
    raw_call(
        ch,
        EXT_AUTHZ_PATH,
        ext_authz_request("other.default.svc", &[]),
    )
    .await
    .unwrap();
    let frames = fake.wait_frames(2, WAIT).await;
    assert_eq!(frames.len(), 2);
    assert!(contains(&frames[0].bytes, b"default/helloworld-go-00001"));
    assert!(
        contains(&frames[0].bytes, b"StatMessage"),
        "a self-contained gob stream"
    );
    assert!(contains(&frames[1].bytes, b"default/other"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_handler_autoscaler_endpoint_selects_that_autoscaler() {
    let fake = FakeAutoscaler::start().await;
    let other = FakeAutoscaler::start().await;
    let (app, ch) = adapter(&fake, "").await;
    raw_call(
        ch.clone(),
        AUTHORIZATION_PATH,
        authorization_request("default", "elsewhere", &other.url()),
    )
    .await
    .unwrap();
    let frames = other.wait_frames(1, WAIT).await;
    assert_eq!(keys(&frames), ["default/elsewhere"]);
    // The default autoscaler did not get it: a later default poke is its first frame.
    raw_call(
        ch,
        AUTHORIZATION_PATH,
        authorization_request("default", "here", ""),
    )
    .await
    .unwrap();
    assert_eq!(keys(&fake.wait_frames(1, WAIT).await), ["default/here"]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn five_thousand_calls_for_one_revision_send_one_poke() {
    let fake = FakeAutoscaler::start().await;
    // A long interval: every call below falls inside the first one.
    let (app, ch) = adapter(&fake, "adapter:\n  poke_interval: 60s\n").await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5_000 {
        let ch = ch.clone();
        let body = match i % 3 {
            0 => authorization_request("default", "hot-private", ""),
            1 => ext_authz_request("hot.default.svc.cluster.local", &[]),
            _ => metric_request(&[&[("namespace", "default"), ("revision", "hot")]]),
        };
        let path = [AUTHORIZATION_PATH, EXT_AUTHZ_PATH, METRIC_PATH][i % 3];
        calls.spawn(async move { raw_call(ch, path, body).await });
    }
    let mut ok = 0;
    while let Some(res) = tokio::time::timeout(Duration::from_secs(60), calls.join_next())
        .await
        .unwrap()
    {
        res.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 5_000);
    // Frames arrive in poke order on the one websocket: once the sentinel's frame is in,
    // every poke made by the calls above has arrived too.
    raw_call(
        ch,
        EXT_AUTHZ_PATH,
        ext_authz_request("sentinel.default.svc", &[]),
    )
    .await
    .unwrap();
    let frames = wait::until_some("the sentinel poke", async || {
        let frames = fake.frames();
        keys(&frames)
            .iter()
            .any(|k| k == "default/sentinel")
            .then_some(frames)
    })
    .await;
    let hot = keys(&frames).iter().filter(|k| *k == "default/hot").count();
    assert_eq!(hot, 1, "{:?}", keys(&frames));
    let (_, metrics) = admin_get(&app, "/metrics").await;
    let coalesced = metric_value(&metrics, "kactivator_pokes_total{result=\"coalesced\"}").unwrap();
    assert!(coalesced >= 4_999.0, "{metrics}");
    app.shutdown().await.unwrap();
}
