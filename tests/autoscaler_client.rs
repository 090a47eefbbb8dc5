//! The shared autoscaler client and the concurrency reporter against a fake Knative autoscaler.
#![allow(clippy::unwrap_used)]

mod support;

use std::{sync::Arc, time::Duration};

use kactivator::{
    autoscaler_client::{AutoscalerClient, ClientConfig, ConcurrencyReporter, Stat, wire},
    config::Encoding,
    revision::RevisionKey,
};
use support::{autoscaler::FakeAutoscaler, wait};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn client(
    url: String,
    encoding: Encoding,
    send_queue: usize,
    exit: &CancellationToken,
) -> AutoscalerClient {
    AutoscalerClient::spawn(
        ClientConfig {
            url,
            encoding,
            pod_name: Arc::from("activator-abc"),
            send_queue,
        },
        exit.clone(),
    )
}

fn metric(name_and_labels: &str) -> f64 {
    let text = kactivator::metrics::install().render();
    support::app::metric_value(&text, name_and_labels).unwrap_or(0.0)
}

#[tokio::test]
async fn poke_is_sent_at_once_with_the_exact_protobuf_bytes() {
    let fake = FakeAutoscaler::start().await;
    let exit = CancellationToken::new();
    let c = client(fake.url(), Encoding::Protobuf, 16, &exit);
    let key = RevisionKey::new("default", "hello-00001");
    c.poke(&key);
    let frames = fake.wait_frames(1, WAIT).await;
    assert_eq!(frames.len(), 1);
    // Golden vector 2 of shared/vectors/README.md.
    assert_eq!(
        hex(&frames[0].bytes),
        "0a390a0764656661756c74120b68656c6c6f2d30303030311a210a0d616374697661746f722d61626311000000000000f03f21000000000000f03f"
    );
    assert!(c.is_connected());
    exit.cancel();
}

#[tokio::test]
async fn gob_poke_is_one_complete_gob_stream_per_frame() {
    let fake = FakeAutoscaler::start().await;
    let exit = CancellationToken::new();
    let c = client(fake.url(), Encoding::Gob, 16, &exit);
    // Reports made while disconnected are dropped by design; pokes are held.
    wait::until("the client to connect", async || c.is_connected()).await;
    c.poke(&RevisionKey::new("default", "hello-00001"));
    c.report(vec![
        Stat {
            key: RevisionKey::new("default", "a"),
            average_concurrent_requests: 2.0,
            request_count: 3.0,
        },
        Stat {
            key: RevisionKey::new("default", "b"),
            average_concurrent_requests: 0.5,
            request_count: 0.0,
        },
    ]);
    let frames = fake.wait_frames(3, WAIT).await;
    assert_eq!(frames.len(), 3);
    let expected = wire::encode_gob(
        &Stat::poke(RevisionKey::new("default", "hello-00001")),
        "activator-abc",
    );
    assert_eq!(frames[0].bytes, expected);
    let (enc, a) = wire::decode(&frames[1].bytes).unwrap();
    assert_eq!(enc, Encoding::Gob);
    assert_eq!(
        (
            a[0].key.name(),
            a[0].average_concurrent_requests,
            a[0].request_count
        ),
        ("a", 2.0, 3.0)
    );
    let (_, b) = wire::decode(&frames[2].bytes).unwrap();
    assert_eq!(
        (b[0].key.name(), b[0].average_concurrent_requests),
        ("b", 0.5)
    );
    exit.cancel();
}

#[tokio::test]
async fn reporter_pokes_on_first_request_then_reports_every_second() {
    let fake = FakeAutoscaler::start().await;
    let exit = CancellationToken::new();
    let c = client(fake.url(), Encoding::Protobuf, 16, &exit);
    wait::until("the client to connect", async || c.is_connected()).await;
    let reporter = ConcurrencyReporter::spawn(c, exit.clone());
    let key = RevisionKey::new("default", "hello");
    let g1 = reporter.track(&key);
    let g2 = reporter.track(&key);
    let frames = fake.wait_frames(1, WAIT).await;
    let poke = frames[0].protobuf();
    assert_eq!(poke.messages.len(), 1, "one poke for two requests");
    let stat = poke.messages[0].stat.clone().unwrap();
    assert_eq!(
        (stat.average_concurrent_requests, stat.request_count),
        (1.0, 1.0)
    );
    assert_eq!(stat.pod_name, "activator-abc");
    // Two requests in flight over a whole period: 2 − 1 (the poke) = 1, count 2 − 1 = 1.
    let frames = fake.wait_frames(2, WAIT).await;
    let report = frames[1].protobuf().messages[0].stat.clone().unwrap();
    assert!(
        (report.average_concurrent_requests - 1.0).abs() < 0.05,
        "{report:?}"
    );
    assert_eq!(report.request_count, 1.0);
    // The next period: both still in flight, no arrivals.
    let frames = fake.wait_frames(3, WAIT).await;
    let report = frames[2].protobuf().messages[0].stat.clone().unwrap();
    assert!(
        (report.average_concurrent_requests - 2.0).abs() < 1e-9,
        "{report:?}"
    );
    assert_eq!(report.request_count, 0.0);
    drop((g1, g2));
    let text = kactivator::metrics::install().render();
    assert!(text.contains("kn_revision_request_concurrency"), "{text}");
    exit.cancel();
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_and_resends_the_held_poke() {
    let fake = FakeAutoscaler::start().await;
    let exit = CancellationToken::new();
    let c = client(fake.url(), Encoding::Protobuf, 16, &exit);
    wait::until("the client to connect", async || c.is_connected()).await;
    let addr = fake.stop();
    wait::until("the client to see the loss", async || !c.is_connected()).await;
    let key = RevisionKey::new("default", "held");
    c.poke(&key);
    // A few reconnect attempts fail before the server comes back.
    let errors = "kn_activator_stats_conn_errors_total{peer=\"autoscaler\"}";
    let before = metric(errors);
    wait::until("two failed reconnects", async || {
        metric(errors) >= before + 2.0
    })
    .await;
    let fake = FakeAutoscaler::start_on(addr).await;
    let frames = fake.wait_frames(1, WAIT).await;
    assert_eq!(frames.len(), 1, "held poke re-sent after reconnecting");
    let m = &frames[0].protobuf().messages[0];
    assert_eq!((m.namespace.as_str(), m.name.as_str()), ("default", "held"));
    assert!(c.is_connected());
    exit.cancel();
}

#[tokio::test]
async fn reconnects_at_once_after_close_1012() {
    let fake = FakeAutoscaler::start().await;
    let exit = CancellationToken::new();
    let c = client(fake.url(), Encoding::Protobuf, 16, &exit);
    wait::until("one connection", async || {
        fake.connections() == 1 && c.is_connected()
    })
    .await;
    fake.close_all(1012);
    wait::until("a second connection", async || fake.connections() == 2).await;
    wait::until("the client to connect", async || c.is_connected()).await;
    c.poke(&RevisionKey::new("default", "after-1012"));
    let frames = fake.wait_frames(1, WAIT).await;
    assert_eq!(frames[0].protobuf().messages[0].name, "after-1012");
    exit.cancel();
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts() {
    let fake = FakeAutoscaler::start().await;
    let exit = CancellationToken::new();
    let c = client(fake.url(), Encoding::Protobuf, 2, &exit);
    let before = metric("kactivator_pokes_total{result=\"dropped\"}");
    let before_frames =
        metric("kactivator_autoscaler_frames_total{direction=\"out\",result=\"dropped\"}");
    // On a current-thread runtime the connection task cannot run during this loop.
    for i in 0..10 {
        c.poke(&RevisionKey::new("default", &format!("r{i}")));
    }
    c.report(vec![Stat::poke(RevisionKey::new("default", "x"))]);
    let after = metric("kactivator_pokes_total{result=\"dropped\"}");
    assert!(after - before >= 8.0, "before {before}, after {after}");
    let after_frames =
        metric("kactivator_autoscaler_frames_total{direction=\"out\",result=\"dropped\"}");
    assert!(after_frames - before_frames >= 1.0);
    // The two that fit are still delivered.
    let frames = fake.wait_frames(2, WAIT).await;
    assert_eq!(frames.len(), 2);
    exit.cancel();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
