//! Foundation: config checking through the real binary, admin endpoints, readiness on drain.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use kactivator::cli::Mode;
use support::app::{admin_get, start};

fn kactivator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kactivator"))
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    std::fs::write(
        &path,
        "revisions:\n  - name: hello\n    endpoints: [127.0.0.1:9001]\n",
    )
    .unwrap();
    let out = kactivator()
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn check_config_exits_64_naming_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    std::fs::write(&path, "activator:\n  queue_dept: 5\n").unwrap();
    let out = kactivator()
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue_dept"), "{err}");
}

#[test]
fn check_config_reads_the_environment_twin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    std::fs::write(&path, "revisions:\n  - name: BAD\n").unwrap();
    let out = kactivator()
        .env("KACTIVATOR_CONFIG", &path)
        .env("KACTIVATOR_CHECK_CONFIG", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revisions[0].name"));
}

#[test]
fn version_and_help_work() {
    let out = kactivator().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kactivator"));
    let out = kactivator().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--mode"));
}

#[tokio::test]
async fn admin_serves_metrics_health_and_readiness_then_fails_readiness_on_drain() {
    let app = start(Mode::Autoscaler, "").await;
    assert_eq!(admin_get(&app, "/healthz").await.0, 200);
    assert_eq!(admin_get(&app, "/readyz").await, (200, "ready".into()));
    let (code, body) = admin_get(&app, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE") || body.is_empty() || body.contains("kactivator"),
        "{body}"
    );
    app.drain().start_draining();
    assert_eq!(admin_get(&app, "/readyz").await, (503, "draining".into()));
    // Liveness holds through the drain (docs/operations.md, Probes).
    assert_eq!(admin_get(&app, "/healthz").await, (200, "ok".into()));
    app.shutdown().await.unwrap();
}

/// The binary as Knative's activator Deployment starts it: no arguments, no file in the working
/// directory, and the Deployment's environment (the service account is not needed for this).
fn in_pod(dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = kactivator();
    cmd.current_dir(dir);
    for var in [
        "KUBERNETES_SERVICE_HOST",
        "POD_IP",
        "SYSTEM_NAMESPACE",
        "CONFIG_LOGGING_NAME",
        "CLUSTER_DOMAIN",
        "RUST_LOG",
        "KACTIVATOR_CONFIG",
        "KACTIVATOR_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

#[test]
fn check_config_in_a_pod_reports_the_in_pod_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_pod(
        dir.path(),
        &[
            ("POD_IP", "10.244.1.7"),
            ("POD_NAME", "activator-abc"),
            ("SYSTEM_NAMESPACE", "kn-system"),
            ("CONFIG_LOGGING_NAME", "config-logging"),
            ("CLUSTER_DOMAIN", "cluster.example"),
        ],
    )
    .arg("--check-config")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "config ok: in-pod defaults (no config file; POD_IP is set)",
        "http 0.0.0.0:8012, h2c 0.0.0.0:8013, admin 0.0.0.0:9090",
        "discovery: kubernetes",
        "autoscaler: ws://autoscaler.kn-system.svc.cluster.example:8080",
        "drain_delay 45s, grace_period 9m 10s",
        "log level: ConfigMap kn-system/config-logging (loglevel.activator or zap-logger-config)",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

#[test]
fn check_config_outside_a_pod_reports_the_built_in_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_pod(dir.path(), &[])
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("config ok: built-in defaults (no config file, not in a pod)"),
        "{text}"
    );
    assert!(text.contains("http 127.0.0.1:8012"), "{text}");
    assert!(text.contains("autoscaler: embedded"), "{text}");
    // A file in the working directory wins in a pod too.
    std::fs::write(dir.path().join("kactivator.yaml"), "discovery: static\n").unwrap();
    let out = in_pod(dir.path(), &[("POD_IP", "10.244.1.7")])
        .arg("--check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config ok: file kactivator.yaml"), "{text}");
    assert!(text.contains("http 127.0.0.1:8012"), "{text}");
}

#[test]
fn a_bad_pod_environment_exits_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_pod(
        dir.path(),
        &[
            ("POD_IP", "10.244.1.7"),
            ("SYSTEM_NAMESPACE", "Bad_Namespace"),
        ],
    )
    .arg("--check-config")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SYSTEM_NAMESPACE: `Bad_Namespace`"), "{err}");
}

/// One raw HTTP/1.1 exchange as the kubelet makes it (`Connection: close`); returns
/// (status, body).
async fn raw(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answered and closed")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

#[tokio::test]
async fn knative_kubelet_probes_on_the_http_port_pass_while_ready_and_fail_while_draining() {
    // A revision whose pod is unreachable: a probe that were proxied would not get 200.
    let dead = support::binary::free_port();
    let app = start(
        Mode::Activator,
        &format!(
            "discovery: static\nshutdown:\n  grace_period: 5s\nactivator:\n  probe_style: tcp\n\
             revisions:\n  - name: hello\n    hosts: [hello.example.com]\n    endpoints: [{dead}]\n"
        ),
    )
    .await;
    let http = app.http();
    // What the kubelet sends for Knative's `httpGet: {port: 8012}`: path `/`, the pod IP as Host.
    let kubelet = |host: &str, path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\n\
             Accept: */*\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    let probes = [
        kubelet("10.244.1.7:8012", "/", ""),
        kubelet("[fd00::17]:8012", "/", ""),
        kubelet("hello.example.com", "/", ""),
        kubelet("hello.example.com", "/healthz", ""),
        // Whatever the path or the headers that would route it, the probe is answered here.
        kubelet(
            "10.244.1.7:8012",
            "/",
            "Knative-Serving-Namespace: default\r\nKnative-Serving-Revision: hello\r\n",
        ),
        "GET / HTTP/1.1\r\nHost: hello.example.com\r\nK-Kubelet-Probe: queue\r\nConnection: close\r\n\r\n"
            .into(),
    ];
    let network = "GET / HTTP/1.1\r\nHost: hello.example.com\r\nK-Network-Probe: activator\r\nConnection: close\r\n\r\n";
    for probe in &probes {
        assert_eq!(raw(http, probe).await.0, 200, "{probe}");
    }
    assert_eq!(raw(http, network).await, (200, "activator".into()));
    app.drain().start_draining();
    for probe in &probes {
        assert_eq!(raw(http, probe).await.0, 500, "{probe}");
    }
    // Network probes are about routing, not readiness, as in Knative.
    assert_eq!(raw(http, network).await, (200, "activator".into()));
    // A request that is not a probe still goes to routing while draining: 404, not 500.
    let (status, _) = raw(
        http,
        "GET / HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    app.shutdown().await.unwrap();
}
