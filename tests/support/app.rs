//! Starts kactivator in-process with a config file in a temp dir (listeners on port 0).

use std::{path::PathBuf, time::Duration};

use kactivator::{
    app::{Addrs, App},
    cli::Mode,
    config::Config,
    drain::Drain,
};
use tokio::{sync::oneshot, task::JoinHandle};

const LISTEN: &str = "listen:
  http: 127.0.0.1:0
  h2c: 127.0.0.1:0
  admin: 127.0.0.1:0
  grpc: 127.0.0.1:0
  autoscaler: 127.0.0.1:0
";

/// A running kactivator. `yaml` passed to [`start`] must not contain `listen:`.
pub struct TestApp {
    pub addrs: Addrs,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    drain: Drain,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn start(mode: Mode, yaml: &str) -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Pods start through the real binary's exec wrapper, as they do under `main`.
    kactivator::autoscaler::supervisor::use_exec_wrapper(env!("CARGO_BIN_EXE_kactivator").into());
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("kactivator.yaml");
    let text = format!("{LISTEN}{yaml}");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text).unwrap();
    let app = App::bind(mode, config, Some(config_path.clone()))
        .await
        .unwrap();
    let addrs = app.addrs().clone();
    let drain = app.drain().clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        addrs,
        dir,
        config_path,
        drain,
        stop: Some(tx),
        task: Some(task),
    }
}

impl TestApp {
    pub fn http(&self) -> std::net::SocketAddr {
        self.addrs.http.unwrap()
    }

    pub fn admin(&self) -> std::net::SocketAddr {
        self.addrs.admin.unwrap()
    }

    /// Rewrites the config file atomically (rename), as an operator or a ConfigMap would.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".kactivator.yaml.tmp");
        std::fs::write(&tmp, format!("{LISTEN}{yaml}")).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Triggers shutdown (as SIGTERM would) without waiting.
    pub fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for the drain to finish (bounded).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.signal();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), task).await??
    }
}

/// GET on the admin port; returns (status, body).
pub async fn admin_get(app: &TestApp, path: &str) -> (u16, String) {
    raw_http_get(app.admin(), path).await
}

/// A minimal HTTP/1.1 GET with `Connection: close`, for admin endpoints.
pub async fn raw_http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of a metric line (exact name and label set prefix) in Prometheus text.
pub fn metric_value(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the metric line `name_and_labels` on `app`'s `/metrics` satisfies `ok`, and
/// returns its value (absent counts as 0).
pub async fn wait_metric(app: &TestApp, name_and_labels: &str, ok: impl Fn(f64) -> bool) -> f64 {
    super::wait::until_some(format_args!("{name_and_labels}"), async || {
        let v = metric_value(&admin_get(app, "/metrics").await.1, name_and_labels).unwrap_or(0.0);
        ok(v).then_some(v)
    })
    .await
}
