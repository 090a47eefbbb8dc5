//! The local autoscaler with real child processes: scale from zero, up, down to zero,
//! restarts, startup timeouts, and no process left behind.
#![allow(clippy::unwrap_used)]

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use kactivator::{
    autoscaler_client::{AutoscalerClient, ClientConfig, Stat},
    cli::Mode,
    config::Encoding,
    discovery::feed::remote_endpoints,
    endpoints::Endpoints,
    revision::RevisionKey,
};
use support::{
    app::{TestApp, raw_http_get, start},
    autoscaler::{children_of, is_alive, pids_with_env},
    wait,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);
const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

fn marker(test: &str) -> String {
    format!("KACTIVATOR_TEST_MARKER={test}-{}", std::process::id())
}

/// A revision `hello` running the demo app, marked with `marker`.
fn demo_yaml(marker: &str, extra: &str) -> String {
    let (k, v) = marker.split_once('=').unwrap();
    format!(
        "discovery: local
revisions:
  - name: hello
    command: [\"{BIN}\"]
    env: {{KACTIVATOR_DEMO_APP: \"1\", {k}: \"{v}\"}}
    target: 10
    max_scale: 3
{extra}"
    )
}

fn key() -> RevisionKey {
    RevisionKey::new("default", "hello")
}

struct Harness {
    app: TestApp,
    endpoints: watch::Receiver<Endpoints>,
    client: AutoscalerClient,
    exit: CancellationToken,
}

async fn harness(yaml: &str) -> Harness {
    let app = start(Mode::Autoscaler, yaml).await;
    let url = format!("ws://{}", app.addrs.autoscaler.unwrap());
    let exit = CancellationToken::new();
    let endpoints = remote_endpoints(url.clone(), exit.clone());
    let client = AutoscalerClient::spawn(
        ClientConfig {
            url,
            encoding: Encoding::Protobuf,
            pod_name: Arc::from("test-activator"),
            send_queue: 64,
        },
        exit.clone(),
    );
    Harness {
        app,
        endpoints,
        client,
        exit,
    }
}

impl Harness {
    async fn wait_endpoints(
        &mut self,
        what: &str,
        f: impl Fn(&[SocketAddr]) -> bool,
    ) -> Vec<SocketAddr> {
        let key = key();
        let got = tokio::time::timeout(
            WAIT,
            self.endpoints
                .wait_for(|m| f(m.get(&key).map_or(&[][..], |e| &e[..]))),
        )
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
        .unwrap();
        got.get(&key).map(|e| e.to_vec()).unwrap_or_default()
    }

    async fn finish(self, marker: &str) {
        self.exit.cancel();
        self.app.shutdown().await.unwrap();
        assert!(pids_with_env(marker).is_empty(), "pods left after shutdown");
    }
}

#[tokio::test]
async fn poke_scales_zero_to_one_and_idle_scales_back_to_zero() {
    let marker = marker("poke");
    let mut h = harness(&demo_yaml(&marker, "    scale_to_zero_after: 1s\n")).await;
    assert!(
        pids_with_env(&marker).is_empty(),
        "nothing runs before the first poke"
    );
    h.client.poke(&key());
    let eps = h
        .wait_endpoints("a ready pod after the poke", |e| e.len() == 1)
        .await;
    let (status, body) = raw_http_get(eps[0], "/").await;
    assert_eq!((status, body.as_str()), (200, "Hello from hello!\n"));
    assert_eq!(pids_with_env(&marker).len(), 1);
    h.wait_endpoints("scale to zero after 1 s idle", <[SocketAddr]>::is_empty)
        .await;
    wait::until("the pod process to exit", async || {
        pids_with_env(&marker).is_empty()
    })
    .await;
    h.finish(&marker).await;
}

#[tokio::test]
async fn sustained_concurrency_scales_up_and_reports_of_two_clients_add_up() {
    let marker = marker("scale-up");
    let mut h = harness(&demo_yaml(&marker, "    scale_to_zero_after: 1s\n")).await;
    let second = AutoscalerClient::spawn(
        ClientConfig {
            url: format!("ws://{}", h.app.addrs.autoscaler.unwrap()),
            encoding: Encoding::Gob,
            pod_name: Arc::from("second-activator"),
            send_queue: 64,
        },
        h.exit.clone(),
    );
    // Two activators each see concurrency 8: alone 1 pod (target 10), together 2.
    let load = watch::channel(8.0f64);
    let reporting = CancellationToken::new();
    tokio::spawn({
        let (a, b, mut level, stop) = (
            h.client.clone(),
            second.clone(),
            load.1.clone(),
            reporting.clone(),
        );
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let c = *level.borrow_and_update();
                for client in [&a, &b] {
                    client.report(vec![Stat {
                        key: key(),
                        average_concurrent_requests: c,
                        request_count: c,
                    }]);
                }
            }
        }
    });
    h.wait_endpoints("two pods for 8 + 8 at target 10", |e| e.len() == 2)
        .await;
    load.0.send_replace(40.0);
    h.wait_endpoints("max_scale pods for 80", |e| e.len() == 3)
        .await;
    assert_eq!(pids_with_env(&marker).len(), 3);
    reporting.cancel();
    h.wait_endpoints("zero pods after idle", <[SocketAddr]>::is_empty)
        .await;
    wait::until("every pod process to exit", async || {
        pids_with_env(&marker).is_empty()
    })
    .await;
    h.finish(&marker).await;
}

#[tokio::test]
async fn a_crashed_pod_is_restarted() {
    let marker = marker("crash");
    let mut h = harness(&demo_yaml(&marker, "    min_scale: 1\n")).await;
    let first = h.wait_endpoints("min_scale pod", |e| e.len() == 1).await;
    let pids = pids_with_env(&marker);
    assert_eq!(pids.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = h
        .wait_endpoints("a new pod after the crash", |e| {
            e.len() == 1 && e[0] != first[0]
        })
        .await;
    let (status, _) = raw_http_get(second[0], "/").await;
    assert_eq!(status, 200);
    let now = pids_with_env(&marker);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], pids[0]);
    h.finish(&marker).await;
}

#[tokio::test]
async fn a_pod_never_ready_is_killed_after_startup_timeout_and_retried() {
    let marker = marker("never-ready");
    let (k, v) = marker.split_once('=').unwrap();
    let yaml = format!(
        "discovery: local
revisions:
  - name: hello
    command: [sleep, \"1000\"]
    env: {{{k}: \"{v}\"}}
    min_scale: 1
    startup_timeout: 300ms
"
    );
    let h = harness(&yaml).await;
    let mut first = Vec::new();
    wait::until("the pod to start", async || {
        first = pids_with_env(&marker);
        !first.is_empty()
    })
    .await;
    wait::until("the never-ready pod to be killed", async || {
        !is_alive(first[0])
    })
    .await;
    wait::until("a retry with a new process", async || {
        pids_with_env(&marker).iter().any(|p| *p != first[0])
    })
    .await;
    assert!(
        h.endpoints.borrow().is_empty(),
        "a pod that never listened is never ready"
    );
    h.finish(&marker).await;
}

/// Runs the real binary in autoscaler mode with two pods, signals it, and checks it leaves
/// no child behind.
async fn no_child_left_after(signal: nix::sys::signal::Signal) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let marker = marker(&format!("signal-{signal}"));
    let path = dir.path().join("kactivator.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {{admin: 127.0.0.1:0, autoscaler: 127.0.0.1:{port}}}\n{}",
            demo_yaml(&marker, "    min_scale: 2\n")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["--mode", "autoscaler", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait::until("both pods ready", async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
            && raw_http_get(addr, "/endpoints")
                .await
                .1
                .matches("127.0.0.1:")
                .count()
                == 2
    })
    .await;
    let pods = children_of(pid);
    assert_eq!(pods.len(), 2, "two pods are children of kactivator");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    for p in pods {
        assert!(!is_alive(p), "pod {p} outlived kactivator");
    }
    assert!(pids_with_env(&marker).is_empty());
}

#[tokio::test]
async fn no_child_left_when_kactivator_exits_on_sigterm() {
    no_child_left_after(nix::sys::signal::Signal::SIGTERM).await;
}

#[tokio::test]
async fn no_child_left_when_kactivator_exits_on_sigint() {
    no_child_left_after(nix::sys::signal::Signal::SIGINT).await;
}
