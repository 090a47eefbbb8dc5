//! The stats server of the local autoscaler: both encodings, garbage, probes, shutdown.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kactivator::{
    autoscaler::MAX_FRAME,
    autoscaler_client::{Stat, wire},
    cli::Mode,
    revision::RevisionKey,
};
use support::{
    app::{metric_value, raw_http_get, start},
    autoscaler::pids_with_env,
    wait,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

fn frames(result: &str) -> f64 {
    let text = kactivator::metrics::install().render();
    metric_value(
        &text,
        &format!("kactivator_autoscaler_frames_total{{direction=\"in\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

async fn endpoints_json(addr: std::net::SocketAddr) -> String {
    raw_http_get(addr, "/endpoints").await.1
}

#[tokio::test]
async fn accepts_protobuf_and_gob_drops_garbage_and_keeps_the_connection() {
    let marker = format!("KACTIVATOR_TEST_MARKER=server-{}", std::process::id());
    let (k, v) = marker.split_once('=').unwrap();
    let app = start(
        Mode::Autoscaler,
        &format!(
            "discovery: local
revisions:
  - name: hello
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", {k}: \"{v}\"}}
  - name: other
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", {k}: \"{v}\"}}
"
        ),
    )
    .await;
    let addr = app.addrs.autoscaler.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let (malformed, oversized, ignored, accepted) = (
        frames("malformed"),
        frames("oversized"),
        frames("ignored"),
        frames("accepted"),
    );
    ws.send(Message::Binary(b"\xffgarbage\x00\x01".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![0x0a; MAX_FRAME + 1].into()))
        .await
        .unwrap();
    ws.send(Message::Text("{\"json\": true}".into()))
        .await
        .unwrap();
    // After all that, the same connection still delivers a gob poke…
    let hello = Stat::poke(RevisionKey::new("default", "hello"));
    ws.send(Message::Binary(
        wire::encode_gob(&hello, "gob-client").into(),
    ))
    .await
    .unwrap();
    wait::until("hello scaled from zero by a gob frame", async || {
        frames("accepted") > accepted
    })
    .await;
    wait::until("hello ready", async || {
        endpoints_json(addr).await.contains("\"name\":\"hello\"")
    })
    .await;
    // …and a protobuf one.
    let other = Stat::poke(RevisionKey::new("default", "other"));
    ws.send(Message::Binary(
        wire::encode_protobuf(&[other], "pb-client").into(),
    ))
    .await
    .unwrap();
    wait::until("other ready", async || {
        endpoints_json(addr).await.contains("\"name\":\"other\"")
    })
    .await;
    assert!(frames("malformed") > malformed);
    assert!(frames("oversized") > oversized);
    assert!(frames("ignored") > ignored);
    assert!(frames("accepted") >= accepted + 2.0);
    // The connection is still open: a ping gets its pong.
    ws.send(Message::Ping(b"still-there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"still-there".to_vec().into()));
    app.shutdown().await.unwrap();
    assert!(pids_with_env(&marker).is_empty());
}

#[tokio::test]
async fn kubelet_probe_and_plain_get_answer_200() {
    let app = start(Mode::Autoscaler, "").await;
    let addr = app.addrs.autoscaler.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: autoscaler\r\nUser-Agent: kube-probe/1.30\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert_eq!(raw_http_get(addr, "/healthz").await.0, 200);
    assert_eq!(
        raw_http_get(addr, "/endpoints").await,
        (200, "{\"revisions\":[]}".to_owned())
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1012() {
    let app = start(Mode::Autoscaler, "").await;
    let addr = app.addrs.autoscaler.unwrap();
    let (mut stats, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let (mut feed, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/endpoints"))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, feed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::Text("{\"revisions\":[]}".into()));
    let shutdown = tokio::spawn(app.shutdown());
    for ws in [&mut stats, &mut feed] {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Close(Some(frame)) = msg else {
            panic!("expected a close frame, got {msg:?}");
        };
        assert_eq!(u16::from(frame.code), 1012);
    }
    shutdown.await.unwrap().unwrap();
}
