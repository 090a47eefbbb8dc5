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
    app.shutdown().await.unwrap();
}
