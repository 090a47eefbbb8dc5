//! Faults through the real binaries: a SIGKILLed autoscaler leaves no pod behind, and a lost
//! endpoints feed does not touch warm traffic.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::SinkExt;
use kactivator::{discovery::feed::remote_endpoints, endpoints::Endpoints, revision::RevisionKey};
use support::{
    autoscaler::{Reaper, is_alive, pids_with_env},
    binary::{Ports, Running, free_port, start_on, try_exchange, try_get},
    wait,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_kactivator");
const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "hello.example.com";

fn marker(test: &str) -> (String, String) {
    (
        "KACTIVATOR_TEST_MARKER".into(),
        format!("{test}-{}", std::process::id()),
    )
}

/// `revisions:` with one always-on demo revision `hello`, marked with `(k, v)`.
fn revision_yaml(k: &str, v: &str) -> String {
    format!(
        "revisions:
  - name: hello
    hosts: [{HOST}]
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", {k}: \"{v}\"}}
    min_scale: 1
"
    )
}

fn start_autoscaler(ports: Ports, dir: &Path, k: &str, v: &str) -> Running {
    let yaml = format!("discovery: local\n{}", revision_yaml(k, v));
    start_on(
        ports,
        "autoscaler",
        dir,
        &yaml,
        None,
        &[("RUST_LOG", "info")],
    )
}

async fn get(http: SocketAddr) -> Option<u16> {
    let head = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    try_exchange(http, &head, Duration::from_secs(5))
        .await
        .map(|(status, _)| status)
}

/// Waits until the autoscaler at `addr` publishes a ready pod on its endpoints document.
async fn wait_published(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((200, body)) = try_get(addr, "/endpoints", Duration::from_secs(2)).await
            && body.contains("127.0.0.1")
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pod published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the `pid`s until none is alive; false after `limit`.
async fn all_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while pids.iter().any(|p| is_alive(*p)) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test]
async fn pods_die_with_a_sigkilled_autoscaler() {
    let (k, v) = marker("faults-sigkill");
    let marker = format!("{k}={v}");
    let _sweep = Reaper(marker.clone());
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut autoscaler = start_autoscaler(ports, dir.path(), &k, &v);
    // Ready, not just started: a pod still printing its first line would die of the broken
    // pipe and prove nothing.
    wait_published(ports.autoscaler).await;
    let pods = pids_with_env(&marker);
    assert_eq!(pods.len(), 1, "{pods:?}");

    autoscaler.child.kill().unwrap(); // SIGKILL: no chance to stop anything in order
    autoscaler.child.wait().unwrap();
    assert!(
        all_gone(&pods, Duration::from_secs(5)).await,
        "pods {pods:?} outlived their SIGKILLed autoscaler"
    );
}

#[test]
fn the_exec_wrapper_refuses_without_its_parent_and_reports_a_missing_command() {
    let run = |parent: Option<&str>, cmd: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("exec-pod").arg("--").args(cmd);
        match parent {
            Some(p) => c.env("KACTIVATOR_POD_PARENT", p),
            None => c.env_remove("KACTIVATOR_POD_PARENT"),
        };
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let me = std::process::id().to_string();
    // The right parent: the command runs, and does not see the wrapper's variable.
    let mut c = Command::new(BIN);
    let out = c
        .args([
            "exec-pod",
            "--",
            "sh",
            "-c",
            "echo \"[$KACTIVATOR_POD_PARENT]\"",
        ])
        .env("KACTIVATOR_POD_PARENT", &me)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    // A parent that is not ours (init): the supervisor is gone, the command never runs.
    let (code, err) = run(Some("1"), &["sh", "-c", "exit 7"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is gone"), "{err}");
    let (code, err) = run(None, &["true"]);
    assert_eq!(code, Some(64), "{err}");
    let (code, err) = run(Some(&me), &["/nonexistent/app"]);
    assert_eq!(code, Some(127), "{err}");
    assert!(err.contains("/nonexistent/app"), "{err}");
}

/// A TCP relay the test can cut (every connection closed, nothing listening) and restore on the
/// same port: the activator loses its autoscaler while the pods keep running.
struct Relay {
    addr: SocketAddr,
    to: SocketAddr,
    accepted: Arc<AtomicUsize>,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let mut relay = Self {
            addr: free_port(),
            to,
            accepted: Arc::default(),
            tasks: None,
        };
        relay.restore().await;
        relay
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let (to, accepted) = (self.to, self.accepted.clone());
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Dropping the set aborts the acceptor, which drops its connections' set in turn.
    fn cut(&mut self) {
        self.tasks = None;
    }
}

/// Sequential warm requests until `stop`; counts answers by class.
#[derive(Default)]
struct Traffic {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
}

impl Traffic {
    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }
    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
    async fn run(self: Arc<Self>, http: SocketAddr) {
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        while !self.stop.load(Ordering::SeqCst) {
            pace.tick().await;
            match get(http).await {
                Some(200) => self.ok.fetch_add(1, Ordering::SeqCst),
                _ => self.failed.fetch_add(1, Ordering::SeqCst),
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_autoscaler_does_not_touch_warm_traffic() {
    let (k, v) = marker("faults-feed");
    let marker = format!("{k}={v}");
    let _sweep = Reaper(marker.clone());
    let (adir, vdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let aports = Ports::free();
    let mut autoscaler = start_autoscaler(aports, adir.path(), &k, &v);
    let mut relay = Relay::start(aports.autoscaler).await;
    // A short queue timeout: an emptied table shows up as 503s within a second.
    let yaml = format!(
        "discovery: local\nautoscaler:\n  url: ws://{}\nactivator:\n  queue_timeout: 1s\n{}",
        relay.addr,
        revision_yaml(&k, &v)
    );
    let activator = start_on(
        Ports::free(),
        "activator",
        vdir.path(),
        &yaml,
        None,
        &[("RUST_LOG", "info")],
    );
    let http = activator.ports.http;
    let deadline = tokio::time::Instant::now() + WAIT;
    while get(http).await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "warm traffic never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let traffic = Arc::new(Traffic::default());
    let runner = tokio::spawn(traffic.clone().run(http));
    let wait_ok = |more: usize| {
        let t = traffic.clone();
        let target = t.ok() + more;
        async move {
            wait::until("warm requests keep being served", async || {
                t.ok() >= target || t.failed() > 0
            })
            .await;
        }
    };
    wait_ok(20).await;

    // The feed (and the stats connection) drop; the pods keep running.
    relay.cut();
    let cut_at = traffic.ok();
    wait_ok(300).await;
    let during = traffic.ok() - cut_at;
    assert_eq!(
        traffic.failed(),
        0,
        "warm requests failed while the autoscaler was unreachable ({during} served)"
    );

    // Back: the activator reconnects (feed and stats, with jittered backoff) and keeps serving.
    let before = relay.accepted.load(Ordering::SeqCst);
    relay.restore().await;
    wait::until("the activator reconnects", async || {
        relay.accepted.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    wait_ok(100).await;
    assert_eq!(
        traffic.failed(),
        0,
        "warm requests failed after the reconnect"
    );

    // SIGKILL of the autoscaler itself takes its pods along; once it is back, its new pod
    // (a fresh document) serves again.
    let pods = pids_with_env(&marker);
    autoscaler.child.kill().unwrap();
    autoscaler.child.wait().unwrap();
    assert!(
        all_gone(&pods, Duration::from_secs(5)).await,
        "orphaned pods"
    );
    let _autoscaler = start_autoscaler(aports, adir.path(), &k, &v);
    wait::until("a new pod runs", async || {
        !pids_with_env(&marker).is_empty()
    })
    .await;
    let ok = traffic.ok();
    wait::until(
        "traffic recovers after the autoscaler's restart",
        async || traffic.ok() >= ok + 50,
    )
    .await;
    traffic.stop.store(true, Ordering::SeqCst);
    runner.await.unwrap();
    eprintln!(
        "served {} warm requests, {} during the cut; {} failed (all after the SIGKILL)",
        traffic.ok(),
        during,
        traffic.failed()
    );
}

#[tokio::test]
async fn a_lost_feed_keeps_the_last_table_and_a_fresh_document_replaces_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let exit = CancellationToken::new();
    let mut table = remote_endpoints(url, exit.clone());
    let doc = |addr: &str| {
        Message::text(format!(
            r#"{{"revisions":[{{"namespace":"default","name":"hello","endpoints":["{addr}"]}}]}}"#
        ))
    };
    let addrs = |t: &watch::Receiver<Endpoints>| -> Vec<String> {
        t.borrow()
            .get(&RevisionKey::new("default", "hello"))
            .map(|e| e.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    };

    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    ws.send(doc("127.0.0.1:1")).await.unwrap();
    tokio::time::timeout(WAIT, table.wait_for(|t| !t.is_empty()))
        .await
        .unwrap()
        .unwrap();
    drop(ws); // the autoscaler goes away without a word

    // The feed reconnects; until a document arrives the last table stays in force.
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the feed reconnects")
        .unwrap();
    assert_eq!(addrs(&table), ["127.0.0.1:1"], "kept while disconnected");
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    ws.send(doc("127.0.0.1:2")).await.unwrap();
    tokio::time::timeout(
        WAIT,
        table.wait_for(|t| {
            t.get(&RevisionKey::new("default", "hello"))
                .is_some_and(|e| e.len() == 1 && e[0].port() == 2)
        }),
    )
    .await
    .expect("the fresh document replaces the table")
    .unwrap();
    exit.cancel();
}
