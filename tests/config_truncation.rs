//! The emptied-config fault through the real binary: a writer truncates the config file and
//! pauses longer than the reload debounce while requests flow. The working config must stay
//! (no 404s), the rejection is counted, and the next valid write applies.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use parking_lot::Mutex;
use support::{
    app::metric_value,
    binary::{start_activator, try_exchange, try_get},
    wait::until,
};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(5);

fn get(host: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// `kactivator_config_reloads_total{result}` as the binary's admin port reports it.
async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    let Some((200, body)) = try_get(admin, "/metrics", LIMIT).await else {
        return 0.0;
    };
    metric_value(
        &body,
        &format!("kactivator_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn an_emptied_config_file_is_never_applied_while_requests_flow() {
    let pod = support::backend::http1_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let revisions = |extra: &str| {
        format!(
            "discovery: static\nrevisions:\n  - name: hello\n    hosts: [hello.example.com]\n    \
             endpoints: [{}]\n{extra}",
            pod.addr
        )
    };
    let bin = start_activator(dir.path(), &revisions(""), None);
    let (http, admin) = (bin.ports.http, bin.ports.admin);
    let path = dir.path().join("kactivator.yaml");
    let listen = bin.ports.yaml();
    until("the revision to answer", async || {
        try_exchange(http, &get("hello.example.com"), LIMIT)
            .await
            .map(|r| r.0)
            == Some(200)
    })
    .await;

    // Requests flow, one after another, for the whole test.
    let statuses: Arc<Mutex<BTreeMap<Option<u16>, usize>>> = Arc::default();
    let stop = CancellationToken::new();
    let client = tokio::spawn({
        let (statuses, stop) = (statuses.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                let status = try_exchange(http, &get("hello.example.com"), LIMIT).await;
                *statuses.lock().entry(status.map(|r| r.0)).or_default() += 1;
            }
        }
    });
    let served = || statuses.lock().values().sum::<usize>();

    // The writer truncates the file in place and pauses: the watcher sees a 0-byte file for
    // longer than the debounce. The binary rejects it, counted once.
    std::fs::File::create(&path).unwrap();
    until("the empty file to be decided on", async || {
        reloads(admin, "rejected").await + reloads(admin, "applied").await >= 1.0
    })
    .await;
    // Hold it empty a while longer, with requests still going through.
    let before = served();
    until("more requests while the file is empty", async || {
        served() >= before + 200
    })
    .await;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "still empty");
    let while_empty = statuses.lock().clone();
    assert_eq!(
        while_empty.keys().copied().collect::<Vec<_>>(),
        [Some(200)],
        "every request answered 200 while the file was empty: {while_empty:?}"
    );
    assert_eq!(
        reloads(admin, "rejected").await,
        1.0,
        "one rejection per change"
    );
    assert_eq!(reloads(admin, "applied").await, 0.0);

    // The writer finishes: a valid file (one more revision) applies.
    std::fs::write(
        &path,
        format!(
            "{listen}{}",
            revisions(&format!(
                "  - name: world\n    hosts: [world.example.com]\n    endpoints: [{}]\n",
                pod.addr
            ))
        ),
    )
    .unwrap();
    until("the valid file to apply", async || {
        reloads(admin, "applied").await >= 1.0
    })
    .await;
    until("the new revision to answer", async || {
        try_exchange(http, &get("world.example.com"), LIMIT)
            .await
            .map(|r| r.0)
            == Some(200)
    })
    .await;
    stop.cancel();
    client.await.unwrap();

    let statuses = statuses.lock().clone();
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [Some(200)],
        "every request answered 200 throughout: {statuses:?}"
    );
    drop(bin);
}
