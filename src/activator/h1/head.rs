//! HTTP/1.1 heads on the fast path: the client's request rewritten for the pod, the pod's
//! response rewritten for the client, and locally generated responses.
//!
//! Every decision (framing, which fields cross, routing) is made by `headers.rs`, the rules
//! the general path applies too; this module only applies them to raw header lines, so that
//! names keep their case and order and no header map is built.

use std::{cell::RefCell, net::IpAddr, time::SystemTime};

use http::{StatusCode, Version};

pub(crate) use crate::activator::headers::Framing;
use crate::activator::{
    error::Error,
    headers::{self, RequestHead, ResponseHead, name},
    revision::normalize_host,
    throttler::{Route, Settings, Table},
    trace::Inbound,
};
use crate::telemetry::propagation;

/// Header lines parsed per head; a head with more goes to the general path.
const MAX_HEADERS: usize = 64;

/// What the connection does with the bytes it has read.
#[derive(Debug)]
pub(crate) enum Next {
    /// The head is not complete yet.
    Partial,
    /// Anything the fast path does not serve (upgrades, probes, `Expect`, chunked requests,
    /// unknown revisions, malformed heads…): the connection goes to the general (hyper)
    /// path, which answers it exactly as before.
    General,
    /// Framing that two parsers could read two ways: answered with this error, and the
    /// connection closed.
    Reject(Error),
    Proxy(Box<Request>),
}

/// A client request ready to be sent to a pod.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) route: Route,
    pub(crate) settings: Settings,
    /// Bytes of the client's head.
    pub(crate) head_len: usize,
    /// The upstream head without its Host line, which is inserted at `host_at` per attempt.
    head: Vec<u8>,
    host_at: usize,
    pub(crate) content_length: u64,
    pub(crate) is_head: bool,
    /// Safe to send again after an attempt that got no response byte (`headers::replayable`).
    pub(crate) idempotent: bool,
    /// The client asked for the connection to close after this response.
    pub(crate) close: bool,
    /// With traces on: the client's trace context, whose fields were left out of `head`
    /// (each attempt sends its own).
    pub(crate) trace: Option<Box<Inbound>>,
}

impl Request {
    /// The head for one attempt to the pod at `authority`, with the attempt's trace fields.
    pub(crate) fn head_for(&self, authority: &str, trace: &[(&str, String)], out: &mut Vec<u8>) {
        out.reserve(self.head.len() + authority.len() + 8);
        out.extend_from_slice(&self.head[..self.host_at]);
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in trace {
            push_field(out, name, value.as_bytes());
        }
        out.extend_from_slice(&self.head[self.host_at..]);
    }
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through a `String`.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Reads the request head at the start of `buf` and decides how it is served. `peer` is
/// the client's address, appended to `X-Forwarded-For`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn request(buf: &[u8], table: &Table, peer: IpAddr) -> Next {
    request_traced(buf, table, peer, false)
}

/// [`request`], also reading the client's trace context when `trace` (traces are on).
pub(crate) fn request_traced(buf: &[u8], table: &Table, peer: IpAddr, trace: bool) -> Next {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Next::Partial,
        Err(_) => return Next::General,
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Next::General;
    };
    if head_len > table.settings.max_header_bytes {
        return Next::General;
    }
    let fields = &*req.headers;
    let head = RequestHead::read(fields.iter().map(|h| (h.name, h.value)));
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let framing = match head.framing(version) {
        Ok(f) => f,
        Err(e) => return Next::Reject(e),
    };
    let content_length = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        // Chunked request bodies are hyper's.
        Framing::Chunked | Framing::Close => return Next::General,
    };
    if minor != 1
        || !target.starts_with('/')
        || method == "CONNECT"
        || head.upgrade
        || head.expect
        || head.probe
    {
        return Next::General;
    }
    let Some(host) = head.host.and_then(|h| std::str::from_utf8(h).ok()) else {
        return Next::General;
    };
    let Some(route) = route(table, head.namespace, head.revision, host) else {
        return Next::General;
    };
    // The fast path speaks HTTP/1.1 upstream only: an `auto` revision with a pod that does not
    // (as last probed) goes to the general path, which speaks each pod's protocol.
    if route.protocol == crate::config::Protocol::H2c
        || (route.protocol == crate::config::Protocol::Auto && !route.rev.http1_everywhere())
    {
        return Next::General;
    }

    let mut out = Vec::with_capacity(head_len + 96);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host_at = out.len();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut incoming = propagation::Incoming::default();
    for h in fields {
        if headers::eq(h.name, name::X_FORWARDED_FOR) {
            forwarded.push(h.value);
        }
        if trace && incoming.add(h.name, h.value) {
            continue;
        }
        if !headers::drop_request_field(h.name, &head.connection, false) {
            push_field(&mut out, h.name, h.value);
        }
    }
    if !head.original_host {
        push_field(&mut out, name::ORIGINAL_HOST, host.as_bytes());
    }
    if head.trailers {
        push_field(&mut out, name::TE, b"trailers");
    }
    out.extend_from_slice(name::X_FORWARDED_FOR.as_bytes());
    out.extend_from_slice(b": ");
    headers::forwarded_for(forwarded, peer, &mut out);
    out.extend_from_slice(b"\r\n");
    push_field(
        &mut out,
        name::PROXY_REQUEST,
        headers::PROXY_REQUEST_VALUE.as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    Next::Proxy(Box::new(Request {
        route: route.clone(),
        settings: table.settings,
        head_len,
        head: out,
        host_at,
        content_length,
        is_head: method == "HEAD",
        idempotent: headers::replayable(method, head.idempotency_key),
        close: head.connection.has("close"),
        trace: trace.then(|| Box::new(Inbound::new(incoming.parent(), method, target))),
    }))
}

/// `Table::route` from raw header values.
fn route<'t>(
    table: &'t Table,
    namespace: Option<&[u8]>,
    revision: Option<&[u8]>,
    host: &str,
) -> Option<&'t Route> {
    fn text(v: Option<&[u8]>) -> Option<&str> {
        v.and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
    }
    let names = text(namespace).zip(text(revision));
    table.lookup(names, Some(&normalize_host(host)))
}

/// A pod's response head, rewritten for the client.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// 1xx (101 excepted): relayed, and the final response follows on the same connection.
    pub(crate) informational: bool,
    pub(crate) head_len: usize,
    pub(crate) framing: Framing,
    /// The pod keeps the connection open after this response.
    pub(crate) reusable: bool,
    /// The client connection closes after this response.
    pub(crate) close: bool,
    /// The head to send to the client.
    pub(crate) head: Vec<u8>,
}

/// Why a pod's response head cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadResponse {
    #[error("malformed response head")]
    Malformed,
    #[error("unexpected 101 Switching Protocols")]
    Upgrade,
}

/// What the connection adds to a response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extras {
    pub(crate) cold_start_ms: Option<u64>,
    /// The client connection closes after this response (client asked, or draining).
    pub(crate) close: bool,
    pub(crate) is_head: bool,
}

/// Reads a response head at the start of `buf`; `None` until it is complete.
pub(crate) fn response(buf: &[u8], extras: Extras) -> Result<Option<Response>, BadResponse> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(BadResponse::Malformed);
    };
    if status == 101 {
        return Err(BadResponse::Upgrade);
    }
    let fields = &*resp.headers;
    let scanned = ResponseHead::scan(
        status,
        extras.is_head,
        fields.iter().map(|h| (h.name, h.value)),
    )
    .map_err(|_| BadResponse::Malformed)?;
    let framing = scanned.framing;
    let informational = (100..200).contains(&status);
    let pod_close = version == 0 || scanned.conflicting || scanned.connection.has("close");
    let close = !informational && (extras.close || framing == Framing::Close);

    let mut head = Vec::with_capacity(head_len + 96);
    head.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut head, u64::from(status));
    head.push(b' ');
    let reason = resp
        .reason
        .filter(|r| !r.is_empty())
        .or_else(|| StatusCode::from_u16(status).ok()?.canonical_reason())
        .unwrap_or("");
    head.extend_from_slice(reason.as_bytes());
    head.extend_from_slice(b"\r\n");
    for h in fields {
        // The framing fields that delimit the body as relayed go through as they came.
        if !headers::drop_response_field(h.name, &scanned.connection, false, framing) {
            push_field(&mut head, h.name, h.value);
        }
    }
    let date = scanned.date;
    if !informational {
        if !date {
            push_date(&mut head);
        }
        if let Some(ms) = extras.cold_start_ms {
            head.extend_from_slice(name::COLD_START.as_bytes());
            head.extend_from_slice(b": ");
            push_decimal(&mut head, ms);
            head.extend_from_slice(b"\r\n");
        }
        if close {
            head.extend_from_slice(b"connection: close\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Response {
        status,
        informational,
        head_len,
        framing,
        reusable: !pod_close && framing != Framing::Close,
        close,
        head,
    }))
}

/// The whole response for an error answered by the activator itself. `close` adds
/// `Connection: close` (errors that always close carry it already).
pub(crate) fn local(error: &Error, close: bool) -> Vec<u8> {
    let (status, headers, body) = error.response_parts();
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    push_decimal(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    push_date(&mut out);
    if close && !error.closes_connection() {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

thread_local! {
    /// The `date` line, formatted once per second per thread (as hyper does).
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{activator::throttler::test_table, config::Config};

    /// TCP probes: `auto` revisions are taken as HTTP/1.1 until a probe says otherwise.
    fn table() -> Table {
        let cfg = Config::parse(
            "activator:\n  probe_style: tcp\nrevisions:\n  - name: hello\n    namespace: prod\n    hosts: [api.example.com]\n  - name: grpc\n    namespace: prod\n    protocol: h2c\n",
        )
        .unwrap();
        test_table(&cfg)
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn auto_revisions_not_known_to_speak_http1_everywhere_go_to_hyper() {
        // HTTP probes learn each pod's protocols; none learned yet.
        let cfg = Config::parse(
            "discovery: static\nrevisions:\n  - name: auto\n  - name: one\n    protocol: http1\n",
        )
        .unwrap();
        let table = test_table(&cfg);
        let raw = |rev: &str| format!("GET / HTTP/1.1\r\nhost: {rev}.default\r\n\r\n");
        assert!(matches!(
            request(raw("auto").as_bytes(), &table, PEER),
            Next::General
        ));
        assert!(matches!(
            request(raw("one").as_bytes(), &table, PEER),
            Next::Proxy(_)
        ));
    }

    fn proxied(raw: &str) -> Box<Request> {
        match request(raw.as_bytes(), &table(), PEER) {
            Next::Proxy(req) => req,
            other => panic!("not proxied: {other:?}\n{raw}"),
        }
    }

    #[test]
    fn requests_are_rewritten_line_by_line() {
        let raw = "POST /a/b?c=d HTTP/1.1\r\nHost: Hello.Prod:8080\r\nConnection: keep-alive, X-Hop\r\n\
                   x-hop: 1\r\nKeep-Alive: timeout=5\r\nX-Case: V\r\nTE: gzip, trailers\r\n\
                   Knative-Serving-Revision: hello\r\nknative-serving-namespace: prod\r\n\
                   K-Proxy-Request: spoofed\r\nContent-Length: 3\r\n\r\nabc";
        let req = proxied(raw);
        assert_eq!(req.head_len, raw.len() - 3);
        assert_eq!(req.content_length, 3);
        assert!(!req.close && !req.is_head && !req.idempotent);
        assert_eq!(req.route.rev.key.to_string(), "prod/hello");
        let mut out = Vec::new();
        req.head_for("10.0.0.7:8080", &[], &mut out);
        assert_eq!(
            text(&out),
            "POST /a/b?c=d HTTP/1.1\r\nhost: 10.0.0.7:8080\r\nX-Case: V\r\nContent-Length: 3\r\n\
             k-original-host: Hello.Prod:8080\r\nte: trailers\r\nx-forwarded-for: 127.0.0.3\r\n\
             k-proxy-request: activator\r\n\r\n"
        );
    }

    #[test]
    fn with_traces_on_the_clients_context_is_replaced_per_attempt() {
        let raw = "GET /p?q HTTP/1.1\r\nHost: hello.prod\r\n\
                   traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
                   tracestate: a=b\r\nX-B3-TraceId: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\
                   X-B3-SpanId: 00f067aa0ba902b7\r\nX-B3-ParentSpanId: 1111111111111111\r\n\r\n";
        // Off: every field crosses untouched, and nothing is read.
        let off = proxied(raw);
        assert!(off.trace.is_none());
        let mut out = Vec::new();
        off.head_for("p:1", &[], &mut out);
        assert!(text(&out).contains("X-B3-ParentSpanId: 1111111111111111\r\n"));
        let Next::Proxy(on) = request_traced(raw.as_bytes(), &table(), PEER, true) else {
            panic!("not proxied");
        };
        let inbound = on.trace.as_ref().expect("read");
        assert_eq!(
            (inbound.method.as_str(), inbound.path.as_str()),
            ("GET", "/p")
        );
        let parent = inbound.parent.context.as_ref().expect("traceparent");
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(inbound.parent.b3, Some(propagation::B3::Multi));
        let fields = vec![("traceparent", "00-x-y-01".to_owned())];
        out.clear();
        on.head_for("p:1", &fields, &mut out);
        let out = text(&out);
        assert_eq!(
            out,
            "GET /p?q HTTP/1.1\r\nhost: p:1\r\ntraceparent: 00-x-y-01\r\nHost: hello.prod\r\n\
             tracestate: a=b\r\nk-original-host: hello.prod\r\nx-forwarded-for: 127.0.0.3\r\n\
             k-proxy-request: activator\r\n\r\n"
                .replace("Host: hello.prod\r\n", "")
        );
    }

    #[test]
    fn connection_cannot_strip_the_framing_of_a_relayed_body() {
        for conn in [
            "Content-Length",
            "keep-alive, content-length",
            "host, transfer-encoding",
        ] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: api.example.com\r\nConnection: {conn}\r\nContent-Length: 5\r\n\r\nGET /"
            );
            let req = proxied(&raw);
            assert_eq!(req.content_length, 5);
            let mut out = Vec::new();
            req.head_for("p:1", &[], &mut out);
            let out = text(&out);
            assert!(out.contains("Content-Length: 5\r\n"), "{conn}: {out}");
            assert_eq!(
                out.to_ascii_lowercase().matches("\r\nhost: ").count(),
                1,
                "{out}"
            );
        }
        let resp = response(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
            extras(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(resp.framing, Framing::Length(2));
        assert!(text(&resp.head).contains("Content-Length: 2\r\n"));
    }

    #[test]
    fn forwarded_for_is_appended_in_one_field() {
        let req = proxied(
            "GET / HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\r\n",
        );
        let mut out = Vec::new();
        req.head_for("p:1", &[], &mut out);
        let out = text(&out);
        assert!(
            out.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 127.0.0.3\r\n"),
            "{out}"
        );
        assert_eq!(
            out.to_ascii_lowercase().matches("x-forwarded-for").count(),
            1
        );
    }

    #[test]
    fn a_coded_response_with_a_length_is_read_to_close() {
        let resp = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n",
            extras(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(resp.framing, Framing::Close);
        assert!(resp.close && !resp.reusable);
        let head = text(&resp.head);
        assert!(head.contains("Transfer-Encoding: gzip\r\n") && !head.contains("Content-Length"));
        let both = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            extras(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.framing, Framing::Chunked);
        assert!(
            !both.reusable,
            "a pod sending both is not trusted with another request"
        );
    }

    #[test]
    fn routing_follows_headers_then_hosts() {
        let by_host =
            proxied("GET / HTTP/1.1\r\nhost: API.example.com\r\nconnection: close\r\n\r\n");
        assert_eq!(by_host.route.rev.key.to_string(), "prod/hello");
        assert!(by_host.close && by_host.idempotent);
        let kept = proxied(
            "HEAD / HTTP/1.1\r\nhost: hello.prod.svc.cluster.local\r\nk-original-host: first\r\n\r\n",
        );
        assert!(kept.is_head);
        let mut out = Vec::new();
        kept.head_for("p:1", &[], &mut out);
        assert!(text(&out).contains("k-original-host: first\r\n"));
        assert!(!text(&out).contains("hello.prod"));
    }

    #[test]
    fn what_the_fast_path_does_not_take_goes_to_hyper() {
        for raw in [
            "GET / HTTP/1.1\r\nhost: api.example.com\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: api.example.com\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: api.example.com\r\nuser-agent: kube-probe/1.33\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: api.example.com\r\nk-network-probe: queue\r\n\r\n",
            "GET / HTTP/1.0\r\nhost: api.example.com\r\n\r\n",
            "GET http://api.example.com/ HTTP/1.1\r\nhost: api.example.com\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: unknown.example.com\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: grpc.prod\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert!(
                matches!(request(raw.as_bytes(), &table(), PEER), Next::General),
                "{raw}"
            );
        }
        for raw in [
            "POST / HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.0\r\nhost: api.example.com\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nhost: api.example.com\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(
                    request(raw.as_bytes(), &table(), PEER),
                    Next::Reject(Error::BadRequest(_))
                ),
                "{raw}"
            );
        }
        assert!(matches!(
            request(b"GET / HTTP/1.1\r\nhost: api.exa", &table(), PEER),
            Next::Partial
        ));
    }

    #[test]
    fn garbage_and_mutated_heads_never_panic() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let table = table();
        let valid_req = b"POST /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: a, b\r\nContent-Length: 3\r\nTE: trailers\r\n\r\nabc";
        let valid_resp = b"HTTP/1.1 200 OK\r\nConnection: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n";
        for i in 0..5000 {
            let mut bytes = if i % 2 == 0 {
                valid_req.to_vec()
            } else {
                valid_resp.to_vec()
            };
            if i % 5 == 0 {
                let len = rng.random_range(0..300);
                bytes = (0..len).map(|_| rng.random()).collect();
            } else {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                bytes.truncate(rng.random_range(0..=bytes.len()));
            }
            let _ = request(&bytes, &table, PEER);
            let _ = response(
                &bytes,
                Extras {
                    cold_start_ms: Some(u64::MAX),
                    close: i % 3 == 0,
                    is_head: i % 7 == 0,
                },
            );
            let _ = crate::activator::h1::chunked::Chunked::default().advance(&bytes);
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 404, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(text(&out), n.to_string());
        }
    }

    fn extras() -> Extras {
        Extras {
            cold_start_ms: None,
            close: false,
            is_head: false,
        }
    }

    fn text(head: &[u8]) -> String {
        String::from_utf8_lossy(head).into_owned()
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let r = |raw: &str, e: Extras| response(raw.as_bytes(), e).unwrap().unwrap();
        let resp = r(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            extras(),
        );
        assert_eq!(resp.framing, Framing::Length(5));
        assert!(resp.reusable && !resp.close);
        assert_eq!(resp.head_len, 38);
        let resp = r(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            extras(),
        );
        assert_eq!(resp.framing, Framing::Chunked);
        assert!(text(&resp.head).contains("transfer-encoding: gzip, chunked\r\n"));
        assert!(!text(&resp.head).contains("content-length"));
        let resp = r("HTTP/1.1 200 OK\r\n\r\n", extras());
        assert_eq!(resp.framing, Framing::Close);
        assert!(resp.close && !resp.reusable);
        assert!(text(&resp.head).contains("connection: close\r\n"));
        let resp = r(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            extras(),
        );
        assert_eq!(resp.framing, Framing::Empty);
        let head = Extras {
            is_head: true,
            ..extras()
        };
        let resp = r("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", head);
        assert_eq!(resp.framing, Framing::Empty);
        assert!(text(&resp.head).contains("content-length: 1000\r\n"));
        let resp = r("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx", extras());
        assert!(!resp.reusable);
    }

    #[test]
    fn response_hop_by_hop_headers_are_stripped() {
        let raw = "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\nDate: x\r\ncontent-length: 0\r\n\r\n";
        let e = Extras {
            cold_start_ms: Some(27),
            ..extras()
        };
        let resp = response(raw.as_bytes(), e).unwrap().unwrap();
        let head = text(&resp.head);
        assert!(head.starts_with("HTTP/1.1 200 Fine\r\n"), "{head}");
        assert!(head.contains("X-Kept: 1\r\n"));
        assert!(head.contains("x-kactivator-cold-start: 27\r\n"));
        assert!(head.contains("Date: x\r\n") && !head.contains("date: "));
        for gone in ["Connection", "X-Hop", "Keep-Alive"] {
            assert!(!head.contains(gone), "{gone} in {head}");
        }
    }

    #[test]
    fn bad_responses_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "NOPE\r\n\r\n",
        ] {
            assert_eq!(
                response(raw.as_bytes(), extras()).unwrap_err(),
                BadResponse::Malformed,
                "{raw}"
            );
        }
        assert_eq!(
            response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", extras()).unwrap_err(),
            BadResponse::Upgrade
        );
        assert!(
            response(b"HTTP/1.1 200 OK\r\ncontent-le", extras())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn local_responses_are_complete() {
        let out = text(&local(&Error::QueueFull, true));
        assert!(
            out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{out}"
        );
        assert!(out.contains("retry-after: 1\r\n"));
        assert!(out.contains("connection: close\r\n"));
        assert!(out.ends_with("\r\n\r\npending request queue full"));
    }
}
