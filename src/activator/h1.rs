//! The HTTP/1.1 fast path: one task per client connection reads each request head, queues it,
//! and relays it to a pooled pod connection and the response back, with no task hop, no
//! header map and no re-encoding. Anything else goes to the general (hyper) path.
//!
//! The fast path serves what most traffic is: HTTP/1.1 requests with no body or a
//! `Content-Length` body, to an HTTP/1.1 revision. Upgrades, `Expect`, chunked request
//! bodies, probes, HTTP/1.0, unknown revisions and malformed or oversized heads hand the
//! connection (with the bytes already read) to hyper, which answers them as before. The
//! admission rules, load balancing, retries, timeouts and accounting are the handler's.

pub(crate) mod chunked;
pub(crate) mod head;
mod prefixed;

use std::{io, net::IpAddr, time::Duration};

use bytes::{Buf, BytesMut};
use hyper_util::{rt::TokioExecutor, server::conn::auto::Builder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout_at},
};
use tracing::debug;

use self::{
    chunked::Chunked,
    head::{Extras, Framing, Next, Request},
    prefixed::Prefixed,
};
use super::{
    body::{CLIENT_CLOSED, Completion},
    breaker::Permit,
    connection,
    error::Error,
    handler::{Handler, Inner, MIN_HEAD_BUFFER},
    headers,
    lb::InFlight,
    retry::{Attempts, Failure, Retry},
    stats::GaugeGuard,
    timeouts::Clock,
    trace::RequestTrace,
    upstream::{self, Conn, ConnectError},
};
use crate::drain::Drain;

/// A client connection's first read buffer. Most request heads fit; it grows for larger ones.
/// Held requests each keep one, so it stays small.
const CLIENT_BUF: usize = 2048;
/// Largest read buffer a client connection keeps between requests.
const MAX_IDLE_BUF: usize = 4 * CLIENT_BUF;
/// While a request waits, the client's further bytes (its body, pipelined requests) are read
/// ahead up to this much, so that a closed connection is noticed.
const READ_AHEAD: usize = 64 * 1024;
/// Largest response head accepted from a pod.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Read size while relaying a body too large for the first read.
const RELAY_BUF: usize = 64 * 1024;

/// The general path for connections the fast path hands over.
pub(crate) type General = Builder<TokioExecutor>;

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    /// Appended to `X-Forwarded-For`.
    peer: IpAddr,
}

/// Serves one accepted client connection until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: IpAddr,
    handler: Handler,
    general: General,
    drain: Drain,
) {
    let mut client = Client {
        stream,
        buf: BytesMut::with_capacity(CLIENT_BUF),
        peer,
    };
    loop {
        let Some(next) = read_head(&mut client, &handler, &drain).await else {
            return;
        };
        match next {
            Next::Proxy(req) => {
                if !exchange(&mut client, &req, handler.inner(), &drain).await {
                    return;
                }
                if client.buf.is_empty() && client.buf.capacity() > MAX_IDLE_BUF {
                    // Grown for a large body: a kept-alive connection keeps only a small buffer.
                    client.buf = BytesMut::with_capacity(CLIENT_BUF);
                }
            }
            Next::Reject(e) => {
                handler.inner().unrouted.count(e.status().as_u16());
                debug!(error = %e, "Request refused");
                // What follows the head cannot be framed: answer and close.
                let _ = client.stream.write_all(&head::local(&e, true)).await;
                return;
            }
            Next::General | Next::Partial => {
                // Boxed: hyper's connection state is large, and fast-path connections
                // (thousands of them held during a cold start) should not carry its size.
                return Box::pin(serve_general(client, handler, &general, drain)).await;
            }
        }
    }
}

/// Hands the connection to hyper, the bytes already read first.
async fn serve_general(client: Client, handler: Handler, general: &General, drain: Drain) {
    let io = Prefixed::new(client.buf, client.stream);
    connection::serve(io, client.peer, handler, general, drain).await;
}

/// Reads until a request head is complete (or the connection must go to the general path);
/// `None` when the connection is done: closed, timed out, or idle at closing.
async fn read_head(client: &mut Client, handler: &Handler, drain: &Drain) -> Option<Next> {
    // The whole head, and the wait for it on an idle connection (`activator.idle_timeout`).
    let deadline = Instant::now() + handler.inner().throttler.load().settings.idle_timeout;
    loop {
        if !client.buf.is_empty() {
            let table = handler.inner().throttler.load();
            let traced = handler.inner().traces.is_some();
            match head::request_traced(&client.buf, &table, client.peer, traced) {
                Next::Partial => {}
                next => return Some(next),
            }
            // hyper answers an oversized head (431) the way it always has.
            if client.buf.len() >= table.settings.max_header_bytes.max(MIN_HEAD_BUFFER) {
                return Some(Next::General);
            }
        }
        if client.buf.capacity() - client.buf.len() < CLIENT_BUF / 2 {
            client.buf.reserve(client.buf.capacity().max(CLIENT_BUF));
        }
        let idle = client.buf.is_empty();
        let read = tokio::select! {
            biased;
            () = drain.closing(), if idle => return None,
            read = timeout_at(deadline, client.stream.read_buf(&mut client.buf)) => read,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            // Closed (mid-head or not), failed, or too slow: nothing to answer.
            _ => return None,
        }
    }
}

/// How an exchange ended early.
enum Failed {
    /// The client closed its connection: counted as 499, nothing to answer.
    ClientGone,
    Error(Error),
}

/// A request sent and its response head received.
struct Sent {
    up: Conn,
    resp: head::Response,
    in_flight: InFlight,
    permit: Permit,
    active: GaugeGuard,
    cold_start: Option<Duration>,
}

/// Proxies one request and its response. Whether the client connection stays open.
async fn exchange(client: &mut Client, req: &Request, h: &Inner, drain: &Drain) -> bool {
    let start = Instant::now();
    let rev = &req.route.rev;
    let mut done = Completion::new(start, rev.clone());
    if let (Some(traces), Some(inbound)) = (&h.traces, &req.trace) {
        done.trace = RequestTrace::start(traces, inbound, rev);
    }
    done.track(&h.reporter);
    client.buf.advance(req.head_len);
    let clock = Clock::of(&req.route, start);
    // Nothing is written before the response head, so the next deadline stays put.
    let (deadline, expiry) = clock.next();
    let forwarded = timeout_at(
        deadline,
        forward(client, req, h, start, drain, &mut done.trace),
    )
    .await;
    match forwarded.unwrap_or_else(|_| Err(Failed::Error(expiry.error()))) {
        // Boxed for the same reason as the attempts.
        Ok(sent) => Box::pin(relay_response(client, sent, done, clock, drain)).await,
        Err(Failed::ClientGone) => false,
        Err(Failed::Error(e)) => {
            done.fail(&e);
            // An unread request body would be taken for the next request: close instead.
            let keep = !req.close && !drain.is_closing() && req.content_length == 0;
            let written = client.stream.write_all(&head::local(&e, !keep)).await;
            keep && written.is_ok()
        }
    }
}

/// Waits for capacity, picks a pod and sends the request, retrying attempts that never
/// reached a pod; returns once the response head is in.
async fn forward(
    client: &mut Client,
    req: &Request,
    h: &Inner,
    start: Instant,
    drain: &Drain,
    trace: &mut RequestTrace,
) -> Result<Sent, Failed> {
    let rev = &req.route.rev;
    let cold = rev.trackers.load().is_empty();
    let queue = trace.queue(rev, cold);
    if cold && client.buf.is_empty() {
        // A cold start holds this request for a while, and thousands like it: keep no
        // buffer meanwhile (reading resumes into a new one).
        client.buf = BytesMut::new();
    }
    let permit = tokio::select! {
        permit = h.admit(rev, req.settings) => permit,
        () = client_gone(client) => return Err(Failed::ClientGone),
    };
    queue.end(permit.as_ref().map(|_| ()));
    let permit = permit.map_err(Failed::Error)?;
    // Boxed: a waiting request keeps only the small state above; the exchange with the pod
    // is allocated once there is capacity.
    Box::pin(attempts(client, req, h, start, drain, permit, cold, trace)).await
}

/// Picks a pod and sends the request, retrying as `retry::Attempts` decides.
#[allow(clippy::too_many_arguments)] // the request's state, passed once from `forward`
async fn attempts(
    client: &mut Client,
    req: &Request,
    h: &Inner,
    start: Instant,
    drain: &Drain,
    permit: Permit,
    cold: bool,
    trace: &mut RequestTrace,
) -> Result<Sent, Failed> {
    let rev = &req.route.rev;
    let mut attempts = Attempts::new(req.settings.max_retries, req.idempotent);
    let mut active = None;
    let mut head = Vec::new();
    loop {
        let in_flight = tokio::select! {
            in_flight = h.pick(rev, req.route.container_concurrency, attempts.tried()) => in_flight,
            () = client_gone(client) => return Err(Failed::ClientGone),
        };
        let tracker = in_flight.tracker();
        let addr = tracker.addr;
        let attempt = trace.attempt(addr);
        if !tracker.speaks().http1 {
            // This path only speaks HTTP/1.1 upstream; the revision was taken while every pod
            // did. A pod that joined since and does not is passed over like a failed connect.
            let source = io::Error::new(io::ErrorKind::Unsupported, "pod does not speak HTTP/1.1");
            attempt.failed(&source);
            if h.retry(rev, &mut attempts, addr, Failure::Connect, true, &source) == Retry::Fail {
                return Err(Failed::Error(Error::UpstreamIo {
                    addr,
                    error: source,
                }));
            }
            continue;
        }
        let pooled = if attempts.fresh() {
            None
        } else {
            tracker.pool.checkout()
        };
        let mut up = match pooled {
            Some(up) => up,
            None => match upstream::connect(addr, h.connect_timeout).await {
                Ok(up) => up,
                Err(e) => {
                    let failure = match e {
                        ConnectError::Refused(_) => Failure::Refused,
                        ConnectError::Failed(_) => Failure::Connect,
                    };
                    let source = e.into_io();
                    attempt.failed(&source);
                    if h.retry(rev, &mut attempts, addr, failure, true, &source) == Retry::Fail {
                        return Err(Failed::Error(Error::UpstreamIo {
                            addr,
                            error: source,
                        }));
                    }
                    continue;
                }
            },
        };
        let sent_at = start.elapsed();
        active.get_or_insert_with(|| GaugeGuard::new(&rev.stats.active));
        let cold_start_ms = cold.then(|| headers::cold_start_ms(sent_at));
        let sent = send(
            client,
            req,
            &mut up,
            (tracker.authority.as_str(), &attempt.fields()),
            &mut head,
            drain,
            cold_start_ms,
        )
        .await;
        match sent {
            Ok(resp) => {
                trace.answered(attempt, resp.status);
                return Ok(Sent {
                    up,
                    resp,
                    in_flight,
                    permit,
                    active: active.unwrap_or_else(|| GaugeGuard::new(&rev.stats.active)),
                    cold_start: cold.then_some(sent_at),
                });
            }
            Err(SendError::Client) => return Err(Failed::ClientGone),
            Err(SendError::Pod {
                stale,
                whole,
                error,
            }) => {
                attempt.failed(&error);
                // Only a reused connection can have been closed by the pod while idle.
                let failure = if stale && up.reused {
                    Failure::Stale
                } else {
                    Failure::Other
                };
                if h.retry(rev, &mut attempts, addr, failure, whole, &error) == Retry::Fail {
                    return Err(Failed::Error(Error::UpstreamIo { addr, error }));
                }
            }
        }
    }
}

enum SendError {
    Client,
    Pod {
        /// The pod closed the connection before any byte of the response.
        stale: bool,
        /// The request body is still whole in the client's buffer: it can be sent again.
        whole: bool,
        error: io::Error,
    },
}

/// Sends the head and body, then reads the response head (relaying 1xx responses).
async fn send(
    client: &mut Client,
    req: &Request,
    up: &mut Conn,
    (authority, trace): (&str, &[(&str, String)]),
    head: &mut Vec<u8>,
    drain: &Drain,
    cold_start_ms: Option<u64>,
) -> Result<head::Response, SendError> {
    head.clear();
    req.head_for(authority, trace, head);
    up.buf.clear();
    // Body bytes already read go out with the head; a body read whole stays in the buffer
    // until the response starts, so that a stale connection can be retried.
    let buffered = usize::try_from(req.content_length)
        .unwrap_or(usize::MAX)
        .min(client.buf.len());
    head.extend_from_slice(&client.buf[..buffered]);
    let whole = buffered as u64 == req.content_length;
    if let Err(error) = up.stream.write_all(head).await {
        return Err(SendError::Pod {
            stale: true,
            whole,
            error,
        });
    }
    let mut cut = false;
    if !whole {
        client.buf.advance(buffered);
        cut = !send_body(
            client,
            up,
            req.content_length - buffered as u64,
            req.is_head,
        )
        .await?;
    }
    loop {
        // Decided when the head is in: a drain that began meanwhile closes this connection.
        let extras = Extras {
            cold_start_ms,
            // The pod answered (or stopped reading) before the whole body was sent: the rest
            // is never read, so neither connection can carry another request.
            close: req.close || cut || drain.is_closing(),
            is_head: req.is_head,
        };
        match head::response(&up.buf, extras) {
            Ok(Some(resp)) if resp.informational => {
                if client.stream.write_all(&resp.head).await.is_err() {
                    return Err(SendError::Client);
                }
                up.buf.advance(resp.head_len);
                continue;
            }
            Ok(Some(mut resp)) => {
                if whole {
                    client.buf.advance(buffered);
                }
                resp.reusable &= !cut;
                return Ok(resp);
            }
            Ok(None) if up.buf.len() < MAX_RESPONSE_HEAD => {}
            Ok(None) | Err(_) => {
                return Err(SendError::Pod {
                    stale: false,
                    whole: false,
                    error: io::Error::new(io::ErrorKind::InvalidData, "bad response head"),
                });
            }
        }
        up.make_room();
        let nothing_yet = up.buf.is_empty();
        let read = tokio::select! {
            read = up.stream.read_buf(&mut up.buf) => read,
            () = client_gone(client) => return Err(SendError::Client),
        };
        let error = match read {
            Ok(0) => io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => continue,
            Err(error) => error,
        };
        return Err(SendError::Pod {
            stale: nothing_yet,
            whole,
            error,
        });
    }
}

/// Copies the rest of a `Content-Length` request body from the client to the pod. `false` when
/// the pod sends its final response, closes or stops reading first (a server refusing an
/// upload by its headers does): the rest stays unsent and the response is read as it is.
/// 1xx responses (`100 Continue`, `103 Early Hints`) are relayed to the client meanwhile,
/// and the body keeps flowing.
async fn send_body(
    client: &mut Client,
    up: &mut Conn,
    mut left: u64,
    is_head: bool,
) -> Result<bool, SendError> {
    enum Event {
        Client(io::Result<usize>),
        Writable,
        PodReadable,
    }
    while left > 0 {
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(client.buf.len());
        let event = if n == 0 {
            client.buf.reserve(RELAY_BUF);
            tokio::select! {
                read = client.stream.read_buf(&mut client.buf) => Event::Client(read),
                _ = up.stream.readable() => Event::PodReadable,
            }
        } else {
            tokio::select! {
                _ = up.stream.writable() => Event::Writable,
                _ = up.stream.readable() => Event::PodReadable,
            }
        };
        match event {
            Event::Client(Ok(0) | Err(_)) => return Err(SendError::Client),
            Event::Client(Ok(_)) => {}
            Event::Writable => match up.stream.try_write(&client.buf[..n]) {
                Ok(k) => {
                    client.buf.advance(k);
                    left -= k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(false),
            },
            Event::PodReadable => match pod_spoke(up) {
                Spoke::Nothing => {}
                Spoke::Closed => return Ok(false),
                Spoke::Data => {
                    if !relay_informational(client, up, is_head).await? {
                        return Ok(false);
                    }
                }
            },
        }
    }
    Ok(true)
}

/// What a readable pod connection turned out to have.
enum Spoke {
    /// A stale readiness flag.
    Nothing,
    /// Bytes, now in its buffer.
    Data,
    Closed,
}

fn pod_spoke(up: &mut Conn) -> Spoke {
    up.make_room();
    match up.stream.try_read_buf(&mut up.buf) {
        Ok(0) => Spoke::Closed,
        Ok(_) => Spoke::Data,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Spoke::Nothing,
        Err(_) => Spoke::Closed,
    }
}

/// Relays the complete 1xx heads at the start of the pod's buffer. `true` while the request
/// body may keep flowing (only 1xx, or a head not complete yet); `false` once a final
/// response (or something that is not a response head) has started.
async fn relay_informational(
    client: &mut Client,
    up: &mut Conn,
    is_head: bool,
) -> Result<bool, SendError> {
    loop {
        let extras = Extras {
            cold_start_ms: None,
            close: false,
            is_head,
        };
        match head::response(&up.buf, extras) {
            Ok(Some(resp)) if resp.informational => {
                if client.stream.write_all(&resp.head).await.is_err() {
                    return Err(SendError::Client);
                }
                up.buf.advance(resp.head_len);
            }
            Ok(None) => return Ok(up.buf.len() < MAX_RESPONSE_HEAD),
            Ok(Some(_)) | Err(_) => return Ok(false),
        }
    }
}

/// Resolves when the client closes its connection; meanwhile reads ahead what it sends (its
/// body, pipelined requests), up to `READ_AHEAD`.
async fn client_gone(client: &mut Client) {
    loop {
        if client.buf.len() >= READ_AHEAD {
            std::future::pending::<()>().await;
        }
        if client.stream.readable().await.is_err() {
            return;
        }
        match read_ahead(client) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// One non-blocking read appended to the client's buffer. Through a small stack buffer, so
/// that a waiting client holds no read buffer until it actually sends something.
fn read_ahead(client: &mut Client) -> io::Result<usize> {
    let mut chunk = [0u8; 1024];
    let n = client.stream.try_read(&mut chunk)?;
    client.buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Sends the response head and relays the body; returns the pod connection to its pool when
/// the exchange ended cleanly. Whether the client connection stays open. Each wait (for the
/// pod, for the client to take bytes) ends at `clock`'s next deadline: then the body is cut.
async fn relay_response(
    client: &mut Client,
    sent: Sent,
    mut done: Completion,
    mut clock: Clock,
    drain: &Drain,
) -> bool {
    let Sent {
        mut up,
        resp,
        in_flight,
        permit,
        active,
        cold_start,
    } = sent;
    done.code = Some(resp.status);
    if let Some(held) = cold_start {
        done.cold_start(held);
    }
    done.permit = Some(permit);
    done.active = Some(active);
    up.buf.advance(resp.head_len);

    let mut out = resp.head;
    let mut chunked = Chunked::default();
    // Bytes of the body still to come from the pod (for `Length`), or whether it is over.
    let mut left = 0u64;
    let mut finished = match resp.framing {
        Framing::Empty => true,
        Framing::Length(n) => {
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(up.buf.len());
            out.extend_from_slice(&up.buf[..k]);
            up.buf.advance(k);
            left = n - k as u64;
            left == 0
        }
        Framing::Chunked => match chunked.advance(&up.buf) {
            Ok(k) => {
                out.extend_from_slice(&up.buf[..k]);
                up.buf.advance(k);
                chunked.is_done()
            }
            Err(error) => {
                // Nothing is sent yet: the client gets a 502 instead.
                let e = Error::UpstreamIo {
                    addr: in_flight.tracker().addr,
                    error: io::Error::new(io::ErrorKind::InvalidData, error),
                };
                done.fail(&e);
                let _ = client.stream.write_all(&head::local(&e, true)).await;
                return false;
            }
        },
        Framing::Close => {
            out.extend_from_slice(&up.buf);
            up.buf.clear();
            false
        }
    };
    clock.started();
    let (deadline, expiry) = clock.next();
    let wrote = timeout_at(deadline, client.stream.write_all(&out)).await;
    if !matches!(wrote, Ok(Ok(()))) {
        done.code = Some(if wrote.is_err() {
            expiry.error().status().as_u16()
        } else {
            CLIENT_CLOSED
        });
        return false;
    }
    drop(out);
    if !finished {
        if up.buf.capacity() < RELAY_BUF {
            up.buf.reserve(RELAY_BUF);
        }
        loop {
            up.buf.clear();
            let (deadline, expiry) = clock.next();
            let Ok(read) = timeout_at(deadline, up.stream.read_buf(&mut up.buf)).await else {
                // The revision and idle timeouts cover the body too: cut it.
                done.code = Some(expiry.error().status().as_u16());
                return false;
            };
            let body = match (read, resp.framing) {
                (Ok(0), Framing::Close) => {
                    finished = true;
                    break;
                }
                // The pod broke the body off: the client has the status already.
                (Ok(0) | Err(_), _) => return false,
                (Ok(_), Framing::Length(_)) => {
                    let k = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(up.buf.len());
                    left -= k as u64;
                    &up.buf[..k]
                }
                (Ok(_), Framing::Chunked) => match chunked.advance(&up.buf) {
                    Ok(k) => &up.buf[..k],
                    Err(_) => return false,
                },
                (Ok(n), _) => &up.buf[..n],
            };
            let body_len = body.len();
            if body_len > 0 {
                clock.wrote();
            }
            let (deadline, expiry) = clock.next();
            match timeout_at(deadline, client.stream.write_all(body)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    done.code = Some(CLIENT_CLOSED);
                    return false;
                }
                Err(_) => {
                    done.code = Some(expiry.error().status().as_u16());
                    return false;
                }
            }
            up.buf.advance(body_len);
            finished = match resp.framing {
                Framing::Length(_) => left == 0,
                Framing::Chunked => chunked.is_done(),
                Framing::Empty | Framing::Close => false,
            };
            if finished {
                break;
            }
        }
    }
    if finished && resp.reusable {
        in_flight.tracker().pool.checkin(up);
    }
    done.in_flight = Some(in_flight);
    finished && !resp.close && !drain.is_closing()
}
