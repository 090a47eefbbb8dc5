//! Drain of the real binary on SIGTERM: readiness fails at once, kubelet probes get 500,
//! the in-flight request completes, and the process exits 0.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use nix::{sys::signal, unistd::Pid};
use support::{app::raw_http_get, backend, wait};

const WAIT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (the binary binds it by number).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn kubelet_probe(addr: SocketAddr) -> u16 {
    let req = Request::get(format!("http://{addr}/"))
        .header("user-agent", "kube-probe/1.31")
        .body(Full::<Bytes>::default())
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(WAIT, client.request(req)).await {
        Ok(Ok(resp)) => resp.status().as_u16(),
        _ => 0,
    }
}

#[tokio::test]
async fn sigterm_fails_readiness_then_drains_the_in_flight_request_and_exits_0() {
    let echo = backend::http_echo().await;
    let (http, h2c, admin, grpc, autoscaler) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kactivator.yaml");
    std::fs::write(
        &path,
        format!(
            "listen:\n  http: {http}\n  h2c: {h2c}\n  admin: {admin}\n  grpc: {grpc}\n  autoscaler: {autoscaler}\n\
             discovery: static\nshutdown:\n  drain_delay: 1s\n  grace_period: 10s\n\
             activator:\n  probe_style: tcp\n  probe_period: 20ms\n\
             revisions:\n  - name: slow\n    endpoints: [{}]\n",
            echo.addr
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kactivator"))
        .args(["--mode", "activator", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let pid = Pid::from_raw(i32::try_from(child.0.id()).unwrap());

    wait::until("readiness", async || {
        tokio::net::TcpStream::connect(admin).await.is_ok()
            && raw_http_get(admin, "/readyz").await.0 == 200
    })
    .await;

    let slow = tokio::spawn(async move {
        let req = Request::get(format!("http://{http}/slow?ms=3000"))
            .header("host", "slow.default")
            .body(Full::<Bytes>::default())
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let resp = tokio::time::timeout(WAIT, client.request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    wait::until("the request to reach the pod", async || echo.hits() == 1).await;

    signal::kill(pid, signal::Signal::SIGTERM).unwrap();
    wait::until("readiness to fail", async || {
        raw_http_get(admin, "/readyz").await.0 == 503
    })
    .await;
    // Still serving during the drain delay (1 s), but failing kubelet probes. The slow
    // request outlives the delay: it completes after the listeners closed.
    assert_eq!(kubelet_probe(http).await, 500);

    let (status, body) = slow.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"slow"[..]));

    let code = wait::until_some("the process to exit", async || {
        child.0.try_wait().unwrap().map(|s| s.code())
    })
    .await;
    assert_eq!(code, Some(0));
}
