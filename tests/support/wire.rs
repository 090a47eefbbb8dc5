//! Raw HTTP/1.1 on both sides of the activator: a buffered socket that reads message heads
//! and bodies by hand, and a scriptable backend that records what reached it; plus the
//! stock backend and the one-revision app the byte-level tests share.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use super::app::{TestApp, start};
use kactivator::cli::Mode;

/// Bound of every wait of these fixtures.
pub const WAIT: Duration = Duration::from_secs(10);

/// A configured host of the revision `app` (namespace `default`).
pub const HOST: &str = "app.example.com";

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn eof() -> io::Error {
    io::ErrorKind::UnexpectedEof.into()
}

async fn timed<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no progress within the wait",
        ))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A message head: the start line and the fields, names lowercased, in order.
#[derive(Debug, Clone)]
pub struct Head {
    /// As received, without the final empty line.
    pub raw: String,
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &str) -> io::Result<Self> {
        let mut lines = raw.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Ok(Self {
            raw: raw.to_string(),
            start,
            headers,
        })
    }

    /// The first value of the field `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    pub fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        let name = name.to_string();
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `name` field lists `token` (comma-separated, case-insensitive).
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The status of a response head (0 if the start line is not a status line).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        self.get("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("content-length {v:?}")))
            })
            .transpose()
    }

    fn chunked(&self) -> bool {
        self.lists("transfer-encoding", "chunked")
    }
}

/// A final response as the client received it, body de-chunked.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub status: u16,
    pub body: Vec<u8>,
    /// Whether the body came with chunked framing.
    pub chunked: bool,
}

impl Response {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request as a backend received it, body de-chunked.
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

/// A TCP stream with a read buffer; every read is bounded by [`WAIT`].
#[derive(Debug)]
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .unwrap();
        Self::new(stream)
    }

    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        timed(self.stream.write_all(bytes.as_ref())).await
    }

    /// Reads more into the buffer; false at EOF.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = timed(self.stream.read(&mut chunk)).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next message head; `None` at EOF before its first byte.
    pub async fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                let raw =
                    std::str::from_utf8(&raw[..end]).map_err(|_| invalid("head is not UTF-8"))?;
                return Head::parse(raw).map(Some);
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(eof())
                };
            }
        }
    }

    async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(eof());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8(line[..end].to_vec())
                    .map_err(|_| invalid("line is not UTF-8"));
            }
            if !self.fill().await? {
                return Err(eof());
            }
        }
    }

    async fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("chunk size line {line:?}")))?;
            if size == 0 {
                // Trailer fields, if any, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exact(size).await?);
            if self.exact(2).await? != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    async fn until_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The final response to a `method` request, skipping interim 1xx responses (but
    /// not 101); `None` if the peer closed before sending a byte.
    pub async fn try_response(&mut self, method: &str) -> io::Result<Option<Response>> {
        loop {
            let Some(head) = self.head().await? else {
                return Ok(None);
            };
            if !head.start.starts_with("HTTP/1.") {
                return Err(invalid(format!("status line {:?}", head.start)));
            }
            let status = head.status();
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let bodiless = method == "HEAD" || matches!(status, 101 | 204 | 304);
            let chunked = !bodiless && head.chunked();
            let body = if bodiless {
                Vec::new()
            } else if chunked {
                self.chunked().await?
            } else if let Some(n) = head.content_length()? {
                self.exact(n).await?
            } else {
                self.until_eof().await?
            };
            return Ok(Some(Response {
                head,
                status,
                body,
                chunked,
            }));
        }
    }

    /// Like [`Self::try_response`], but the response must be there.
    pub async fn response(&mut self, method: &str) -> Response {
        self.try_response(method)
            .await
            .expect("a well-formed response in time")
            .expect("a response, not EOF")
    }

    /// Whether the peer closes the connection (EOF or reset) with nothing more sent.
    pub async fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.fill().await {
            Ok(more) => !more,
            Err(e) => e.kind() != io::ErrorKind::TimedOut,
        }
    }

    /// Reads one request as a server does: `Expect: 100-continue` is answered with
    /// `100 Continue` before the body is read. `None` at EOF before its first byte.
    pub async fn request(&mut self) -> io::Result<Option<Request>> {
        let Some(head) = self.head().await? else {
            return Ok(None);
        };
        let mut line = head.start.split(' ');
        let method = line.next().unwrap_or_default().to_string();
        let target = line.next().unwrap_or_default().to_string();
        if head.lists("expect", "100-continue") {
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = if head.chunked() {
            self.chunked().await?
        } else {
            let n = head.content_length()?.unwrap_or(0);
            self.exact(n).await?
        };
        Ok(Some(Request {
            head,
            method,
            target,
            body,
        }))
    }
}

#[derive(Debug, Default)]
struct Records {
    accepted: AtomicUsize,
    used: AtomicUsize,
    heads: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Vec<u8>>>,
}

/// A backend on 127.0.0.1:0 running a script per accepted connection. Dropping it closes
/// the port and every connection.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    records: Arc<Records>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Arc::new(Records::default());
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (r, t) = (records.clone(), tasks.clone());
        tasks.lock().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                r.accepted.fetch_add(1, Ordering::SeqCst);
                let conn = Conn {
                    wire: Wire::new(stream),
                    records: r.clone(),
                    used: false,
                };
                t.lock().spawn(script(conn));
            }
        });
        Self {
            addr,
            records,
            tasks,
        }
    }

    /// TCP connections accepted, the activator's TCP probes included.
    pub fn accepted(&self) -> usize {
        self.records.accepted.load(Ordering::SeqCst)
    }

    /// Connections that carried at least one request (probes carry none).
    pub fn used(&self) -> usize {
        self.records.used.load(Ordering::SeqCst)
    }

    /// Heads of the requests received, in arrival order.
    pub fn heads(&self) -> Vec<Head> {
        self.records
            .heads
            .lock()
            .iter()
            .map(|raw| Head::parse(raw).unwrap())
            .collect()
    }

    /// Bodies of the requests received, in arrival order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.records.bodies.lock().clone()
    }

    /// `METHOD target` of each request received.
    pub fn lines(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| h.start.rsplit_once(' ').map_or("", |(l, _)| l).to_string())
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.tasks.lock().abort_all();
    }
}

/// The HTTP/2 preface the activator's TCP probe sends to learn whether a pod speaks h2c: an
/// HTTP/1.1 server closes on it (as hyper does), and it is no request.
fn is_preface(head: &Head) -> bool {
    head.start == "PRI * HTTP/2.0"
}

/// One accepted connection, as a backend script sees it.
#[derive(Debug)]
pub struct Conn {
    wire: Wire,
    records: Arc<Records>,
    used: bool,
}

impl Conn {
    /// The next request, recorded; `None` at EOF, on an error or after [`WAIT`] idle.
    pub async fn next(&mut self) -> Option<Request> {
        let req = self.wire.request().await.ok().flatten()?;
        if is_preface(&req.head) {
            return None;
        }
        if !self.used {
            self.used = true;
            self.records.used.fetch_add(1, Ordering::SeqCst);
        }
        self.records.heads.lock().push(req.head.raw.clone());
        self.records.bodies.lock().push(req.body.clone());
        Some(req)
    }

    /// The next request head only, its body left unread (as a server refusing an upload
    /// by its headers does); recorded with an empty body.
    pub async fn head_only(&mut self) -> Option<Head> {
        let head = self.wire.head().await.ok().flatten()?;
        if is_preface(&head) {
            return None;
        }
        if !self.used {
            self.used = true;
            self.records.used.fetch_add(1, Ordering::SeqCst);
        }
        self.records.heads.lock().push(head.raw.clone());
        self.records.bodies.lock().push(Vec::new());
        Some(head)
    }

    /// The next `n` bytes (a body after [`Self::head_only`]); `None` if the peer closed.
    pub async fn body(&mut self, n: usize) -> Option<Vec<u8>> {
        self.wire.exact(n).await.ok()
    }

    /// Writes raw bytes; false if the peer is gone.
    pub async fn reply(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.wire.send(bytes).await.is_ok()
    }

    /// Half-closes (FIN) and drops the connection.
    pub async fn close(mut self) {
        let _ = self.wire.stream.shutdown().await;
    }
}

/// A 200 response with `body` and its Content-Length.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Deterministic bytes that do not line up with any buffer size.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

/// Serves requests while the connection lasts: 200 echoing the request body, or
/// `METHOD target` for a request without one; a HEAD gets the length and no body.
pub async fn stock(mut c: Conn) {
    while let Some(req) = c.next().await {
        let body = if req.body.is_empty() {
            format!("{} {}", req.method, req.target).into_bytes()
        } else {
            req.body
        };
        let mut reply = ok(&body);
        if req.method == "HEAD" {
            reply.truncate(reply.len() - body.len());
        }
        if !c.reply(reply).await {
            return;
        }
    }
}

/// One revision `app` in `default`, host [`HOST`], its pod `endpoint`; TCP probes.
pub fn config(activator: &str, revision: &str, endpoint: SocketAddr) -> String {
    format!(
        "discovery: static\nshutdown:\n  grace_period: 2s\nactivator:\n  probe_style: tcp\n  probe_period: 20ms\n{activator}revisions:\n  - name: app\n    hosts: [{HOST}]\n    endpoints: [{endpoint}]\n{revision}"
    )
}

pub async fn app_with(backend: &Backend, activator: &str, revision: &str) -> TestApp {
    start(Mode::Activator, &config(activator, revision, backend.addr)).await
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

pub async fn connect(app: &TestApp) -> Wire {
    Wire::connect(app.http()).await
}

/// One GET on a new connection; returns the response.
pub async fn get_once(app: &TestApp, path: &str) -> Response {
    let mut c = connect(app).await;
    c.send(get(path)).await.unwrap();
    c.response("GET").await
}

/// Hop-by-hop fields of `head` that a proxy must not have forwarded, given the sender's
/// `Connection` tokens; a `Connection` the proxy set itself may exist but not name them.
pub fn leaked_hop_by_hop(head: &Head, named: &[&str]) -> Vec<String> {
    let mut leaked: Vec<String> = ["keep-alive", "proxy-connection"]
        .iter()
        .chain(named)
        .filter(|n| head.get(n).is_some())
        .map(ToString::to_string)
        .collect();
    leaked.extend(
        named
            .iter()
            .filter(|n| head.lists("connection", n))
            .map(|n| format!("connection: {n}")),
    );
    leaked
}
