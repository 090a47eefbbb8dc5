//! Headless Chromium driven over the DevTools protocol (CDP JSON over a websocket): launch, navigate, evaluate, screenshot.
//!
//! `KACTIVATOR_CHROMIUM` names the browser (default: `chromium`, Debian's package). A missing
//! browser fails the test unless `KACTIVATOR_SKIP_BROWSER=1` says to skip it (`.ci/run`
//! installs Chromium and never sets it).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// How long one CDP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Events read past while waiting for one reply, at most (a page that floods is a failure).
const MAX_EVENTS_PER_REPLY: usize = 10_000;

/// A running headless browser, killed (its whole process group) when dropped.
pub struct Browser {
    child: Child,
    /// `127.0.0.1:PORT`
    debug_url: String,
    /// The browser-wide DevTools socket.
    browser_ws: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// The browser to run, or `None` when the test should be skipped; panics when it is missing
/// and skipping was not asked for.
pub fn browser_program() -> Option<String> {
    let program = std::env::var("KACTIVATOR_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(program);
    }
    if std::env::var("KACTIVATOR_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("browser test SKIPPED: `{program}` not found and KACTIVATOR_SKIP_BROWSER=1");
        return None;
    }
    panic!(
        "`{program}` is not installed: apt-get install chromium (or set KACTIVATOR_CHROMIUM; \
         KACTIVATOR_SKIP_BROWSER=1 skips this test)"
    );
}

impl Browser {
    /// Starts `program` headless on a free DevTools port with a fresh profile, `width`×`height`.
    pub fn launch(program: &str, width: u32, height: u32) -> Self {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--hide-scrollbars",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" (bounded: the
        // browser prints it within its first lines, or exits and closes stderr).
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().take(10_000) {
                let Ok(line) = line else { break };
                if !sent && let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        });
        let ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("Chromium printed its DevTools address");
        let debug_url = ws
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string();
        Self {
            child,
            debug_url,
            browser_ws: ws,
            _profile: profile,
        }
    }

    /// Attaches to the browser's first page (found over the browser's own session:
    /// `Target.getTargets`, then the page's socket `/devtools/page/<targetId>`).
    pub async fn page(&self) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(self.browser_ws.as_str())
            .await
            .unwrap();
        let mut browser = Page { ws, next_id: 0 };
        let id = super::wait::until_some("a page target in Chromium", async || {
            let targets = browser.call("Target.getTargets", json!({})).await;
            targets["targetInfos"].as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["targetId"].as_str().map(str::to_owned))
            })
        })
        .await;
        let url = format!("ws://{}/devtools/page/{id}", self.debug_url);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Page { ws, next_id: 0 }
    }
}

/// One page's DevTools session.
pub struct Page {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Sends one command and returns its `result` (panics on a CDP error or a timeout).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let reply = timeout(COMMAND_TIMEOUT, async {
            for _ in 0..MAX_EVENTS_PER_REPLY {
                let Some(Ok(frame)) = self.ws.next().await else {
                    panic!("DevTools connection closed during {method}");
                };
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
            panic!("no reply to {method} among {MAX_EVENTS_PER_REPLY} events");
        })
        .await
        .unwrap_or_else(|_| panic!("{method} timed out"));
        assert!(reply["error"].is_null(), "{method}: {reply}");
        reply["result"].clone()
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Evaluates `expression` in the page and returns its value (JSON-serialisable).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true` (the tests' one bounded wait).
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        let what = format!("the page to show {what}");
        super::wait::until(what, async || {
            self.eval(expression).await == Value::Bool(true)
        })
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}
