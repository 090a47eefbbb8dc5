//! The one set of header rules both HTTP paths apply: message framing (RFC 9112 §6),
//! hop-by-hop fields (RFC 9110 §7.6.1), Knative's proxy headers and `X-Forwarded-For`.
//!
//! The HTTP/1.1 fast path applies them to raw header lines (names keep their case and order),
//! the general path to hyper's `HeaderMap`; both call the functions here, so the two cannot
//! disagree on what a message's framing is or which fields cross the proxy.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Version};

use super::error::Error;

/// Header names, lowercase, in one place.
pub(crate) mod name {
    pub(crate) const HOST: &str = "host";
    pub(crate) const CONTENT_LENGTH: &str = "content-length";
    pub(crate) const TRANSFER_ENCODING: &str = "transfer-encoding";
    pub(crate) const CONNECTION: &str = "connection";
    pub(crate) const UPGRADE: &str = "upgrade";
    pub(crate) const TE: &str = "te";
    pub(crate) const EXPECT: &str = "expect";
    pub(crate) const DATE: &str = "date";
    pub(crate) const USER_AGENT: &str = "user-agent";
    pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";
    pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
    pub(crate) const X_IDEMPOTENCY_KEY: &str = "x-idempotency-key";
    /// Knative's routing headers (the activator's input, never the pod's).
    pub(crate) const REVISION: &str = crate::revision::REVISION_HEADER;
    pub(crate) const NAMESPACE: &str = crate::revision::NAMESPACE_HEADER;
    /// Knative's proxy headers, set for the pod.
    pub(crate) const PROXY_REQUEST: &str = "k-proxy-request";
    pub(crate) const ORIGINAL_HOST: &str = "k-original-host";
    /// Probe markers: a request carrying one is a probe, answered by the activator.
    pub(crate) const NETWORK_PROBE: &str = "k-network-probe";
    pub(crate) const KUBELET_PROBE: &str = "k-kubelet-probe";
    pub(crate) const NETWORK_HASH: &str = "k-network-hash";
    /// kactivator's own: milliseconds a cold start held the request.
    pub(crate) const COLD_START: &str = "x-kactivator-cold-start";
}

/// The value of `X-Kactivator-Cold-Start` for a request held `held`: whole milliseconds.
pub(crate) fn cold_start_ms(held: std::time::Duration) -> u64 {
    u64::try_from(held.as_millis()).unwrap_or(u64::MAX)
}

/// What the activator puts in `K-Proxy-Request`.
pub(crate) const PROXY_REQUEST_VALUE: &str = "activator";
/// The `User-Agent` prefix of kubelet probes.
pub(crate) const KUBE_PROBE_AGENT: &[u8] = b"kube-probe/";

/// Fields that describe one connection and never cross the proxy as they are (besides those
/// named in `Connection`). `te` is special: `TE: trailers` is forwarded (gRPC needs it).
const HOP_BY_HOP: [&str; 8] = [
    name::CONNECTION,
    "keep-alive",
    "proxy-connection",
    name::TRANSFER_ENCODING,
    "proxy-authenticate",
    "proxy-authorization",
    name::UPGRADE,
    name::TE,
];

/// Fields that `Connection` can never remove: they frame or address the message, and their
/// fate is decided by the framing rules below. A client that names `Content-Length` in
/// `Connection` must not make the proxy relay a body the pod cannot delimit.
const NOT_CONNECTION_OPTIONS: [&str; 3] =
    [name::CONTENT_LENGTH, name::TRANSFER_ENCODING, name::HOST];

/// Fields of a client request the activator consumes or sets itself.
const ROUTING: [&str; 5] = [
    name::HOST,
    name::REVISION,
    name::NAMESPACE,
    name::PROXY_REQUEST,
    name::X_FORWARDED_FOR,
];

pub(crate) fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// What `tokens` yields for an element that is not UTF-8: it equals no token and no field
/// name, so it can neither be mistaken for `chunked` nor hide the elements around it.
const INVALID: &str = "\u{fffd}";

/// The comma-separated elements of a field value, trimmed of optional whitespace (SP, HTAB),
/// empty ones left out (RFC 9110 §5.6.1).
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|b| *b == b',')
        .map(|t| std::str::from_utf8(t).map_or(INVALID, |t| t.trim_matches([' ', '\t'])))
        .filter(|t| !t.is_empty())
}

/// The options of a message's `Connection` fields (RFC 9110 §7.6.1), read once per message.
#[derive(Debug, Default)]
pub(crate) struct Connection<'a>(Vec<&'a str>);

impl<'a> Connection<'a> {
    pub(crate) fn add(&mut self, value: &'a [u8]) {
        self.0.extend(tokens(value));
    }

    pub(crate) fn has(&self, option: &str) -> bool {
        self.0.iter().any(|t| eq(t, option))
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    Close,
}

/// `1*DIGIT` as a `u64`; anything else (sign, spaces, hex, overflow) is not a length.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// What the activator needs to know of a request head, from one pass over its fields.
#[derive(Debug, Default)]
pub(crate) struct RequestHead<'a> {
    /// The first `Host`, and how many there were.
    pub(crate) host: Option<&'a [u8]>,
    hosts: usize,
    /// The first `Content-Length` (`None` if malformed), and how many there were.
    length: Option<Option<u64>>,
    lengths: usize,
    /// How many `Transfer-Encoding` fields, and whether the first is a lone `chunked`.
    codings: usize,
    lone_chunked: bool,
    pub(crate) connection: Connection<'a>,
    pub(crate) namespace: Option<&'a [u8]>,
    pub(crate) revision: Option<&'a [u8]>,
    /// `Upgrade` is present (an upgrade also needs `Connection: upgrade`).
    pub(crate) upgrade: bool,
    pub(crate) expect: bool,
    /// A kubelet or Knative probe, answered by the activator.
    pub(crate) probe: bool,
    pub(crate) original_host: bool,
    /// `TE` lists `trailers`.
    pub(crate) trailers: bool,
    /// An idempotency key makes any method safe to send again (as Go's transport has it).
    pub(crate) idempotency_key: bool,
}

impl<'a> RequestHead<'a> {
    /// Reads a request's fields; `framing` then checks them.
    pub(crate) fn read(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut head = Self::default();
        for (name, value) in fields {
            if eq(name, name::HOST) {
                head.hosts += 1;
                head.host.get_or_insert(value);
            } else if eq(name, name::CONTENT_LENGTH) {
                head.lengths += 1;
                head.length.get_or_insert(content_length(value));
            } else if eq(name, name::TRANSFER_ENCODING) {
                head.codings += 1;
                let mut codings = tokens(value);
                head.lone_chunked =
                    codings.next().is_some_and(|c| eq(c, "chunked")) && codings.next().is_none();
            } else if eq(name, name::CONNECTION) {
                head.connection.add(value);
            } else if eq(name, name::UPGRADE) {
                head.upgrade = true;
            } else if eq(name, name::EXPECT) {
                head.expect = true;
            } else if eq(name, name::NAMESPACE) {
                head.namespace = Some(value);
            } else if eq(name, name::REVISION) {
                head.revision = Some(value);
            } else if eq(name, name::ORIGINAL_HOST) {
                head.original_host = true;
            } else if eq(name, name::TE) {
                head.trailers |= tokens(value).any(|t| eq(t, "trailers"));
            } else if eq(name, name::NETWORK_PROBE)
                || eq(name, name::KUBELET_PROBE)
                || (eq(name, name::USER_AGENT) && value.starts_with(KUBE_PROBE_AGENT))
            {
                head.probe = true;
            } else if eq(name, name::IDEMPOTENCY_KEY) || eq(name, name::X_IDEMPOTENCY_KEY) {
                head.idempotency_key = true;
            }
        }
        head
    }

    /// The request's framing, checked as nginx checks it: exactly one `Host` in HTTP/1.1
    /// (HTTP/2 has `:authority`); `Transfer-Encoding` only in HTTP/1.1, once, as a lone
    /// `chunked`, never with `Content-Length`; at most one `Content-Length`, all digits.
    /// Anything else can be read two ways by two parsers, so it is refused (400) rather than
    /// guessed at.
    pub(crate) fn framing(&self, version: Version) -> Result<Framing, Error> {
        let http11 = version == Version::HTTP_11;
        if self.hosts > 1 {
            return Err(Error::BadRequest("duplicate Host header"));
        }
        if http11 && self.hosts == 0 {
            return Err(Error::BadRequest("missing Host header"));
        }
        if self.lengths > 1 {
            return Err(Error::BadRequest("duplicate Content-Length header"));
        }
        if self.codings > 0 && (self.codings > 1 || !self.lone_chunked || !http11) {
            return Err(Error::BadRequest("unsupported Transfer-Encoding"));
        }
        match (self.length, self.codings > 0) {
            (Some(_), true) => Err(Error::BadRequest(
                "both Content-Length and Transfer-Encoding",
            )),
            (Some(None), false) => Err(Error::BadRequest("invalid Content-Length")),
            (Some(Some(0)) | None, false) => Ok(Framing::Empty),
            (Some(Some(n)), false) => Ok(Framing::Length(n)),
            (None, true) => Ok(Framing::Chunked),
        }
    }

    /// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
    pub(crate) fn is_upgrade(&self) -> bool {
        self.upgrade && self.connection.has(name::UPGRADE)
    }
}

/// Whether a request may be sent again after an attempt that may have reached the pod but
/// got no response byte (a reused connection the pod had just closed): safe methods, or an
/// idempotency key (the rule of Go's transport, which Knative's activator runs on).
pub(crate) fn replayable(method: &str, idempotency_key: bool) -> bool {
    idempotency_key || matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// Whether a field of a client request is left out of the request sent to the pod. The
/// activator sets `Host`, `K-Proxy-Request` and `X-Forwarded-For` itself, and `TE: trailers`
/// when the client asked for trailers.
pub(crate) fn drop_request_field(name: &str, connection: &Connection<'_>, upgrade: bool) -> bool {
    ROUTING.iter().any(|r| eq(name, r)) || drop_hop_by_hop(name, connection, upgrade)
}

/// Whether a field of a pod's response is left out of the response sent to the client.
/// `framing` is the response's (`response_framing`): the framing fields that delimit the
/// body as relayed are kept, whatever `Connection` says.
pub(crate) fn drop_response_field(
    name: &str,
    connection: &Connection<'_>,
    upgrade: bool,
    framing: Framing,
) -> bool {
    if eq(name, name::TRANSFER_ENCODING) {
        return !matches!(framing, Framing::Chunked | Framing::Close);
    }
    if eq(name, name::CONTENT_LENGTH) {
        // A message with Transfer-Encoding is not delimited by its Content-Length (RFC 9112
        // §6.3): forwarding both would let the client pick the other one.
        return matches!(framing, Framing::Chunked | Framing::Close);
    }
    drop_hop_by_hop(name, connection, upgrade)
}

fn drop_hop_by_hop(name: &str, connection: &Connection<'_>, upgrade: bool) -> bool {
    if upgrade && (eq(name, name::UPGRADE) || eq(name, name::CONNECTION)) {
        return false;
    }
    HOP_BY_HOP.iter().any(|h| eq(name, h))
        || (connection.has(name) && !NOT_CONNECTION_OPTIONS.iter().any(|n| eq(name, n)))
}

/// What a pod's response head says about its body.
#[derive(Debug)]
pub(crate) struct ResponseHead<'a> {
    pub(crate) framing: Framing,
    pub(crate) connection: Connection<'a>,
    pub(crate) date: bool,
    /// Both `Transfer-Encoding` and `Content-Length`: framed by the former, but the
    /// connection is not reused (RFC 9112 §6.3: it may be an attempt at smuggling).
    pub(crate) conflicting: bool,
}

/// Why a pod's response head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadResponse {
    #[error("malformed response head")]
    Malformed,
    #[error("conflicting Content-Length values")]
    ConflictingLength,
}

impl<'a> ResponseHead<'a> {
    /// Reads a response's fields and decides its framing per RFC 9112 §6.3 (a status outside
    /// 100–999, or a `Transfer-Encoding` that is empty or not text, is malformed): no body for 1xx,
    /// 204, 304 and a response to HEAD; chunked when the final coding is `chunked`; until
    /// close when another coding is final (even with a `Content-Length`); else the
    /// `Content-Length` (differing values are an error), else until close.
    pub(crate) fn scan(
        status: u16,
        is_head: bool,
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, BadResponse> {
        if !(100..1000).contains(&status) {
            return Err(BadResponse::Malformed);
        }
        let mut connection = Connection::default();
        let mut length: Option<u64> = None;
        // The final coding of all Transfer-Encoding fields together, when any.
        let mut last_coding: Option<&str> = None;
        let mut date = false;
        for (name, value) in fields {
            if eq(name, name::CONNECTION) {
                connection.add(value);
            } else if eq(name, name::TRANSFER_ENCODING) {
                // A coding list a client could read another way (empty, or not text) is not
                // relayed at all.
                let mut codings = tokens(value).peekable();
                if codings.peek().is_none() {
                    return Err(BadResponse::Malformed);
                }
                for coding in codings {
                    if coding == INVALID {
                        return Err(BadResponse::Malformed);
                    }
                    last_coding = Some(coding);
                }
            } else if eq(name, name::CONTENT_LENGTH) {
                let parsed = content_length(value).ok_or(BadResponse::Malformed)?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(BadResponse::ConflictingLength);
                }
                length = Some(parsed);
            } else if eq(name, name::DATE) {
                date = true;
            }
        }
        let framing = if (100..200).contains(&status) || is_head || status == 204 || status == 304 {
            Framing::Empty
        } else {
            match (last_coding, length) {
                (Some(c), _) if eq(c, "chunked") => Framing::Chunked,
                (Some(_), _) | (None, None) => Framing::Close,
                (None, Some(n)) => Framing::Length(n),
            }
        };
        Ok(Self {
            framing,
            connection,
            date,
            conflicting: last_coding.is_some() && length.is_some(),
        })
    }
}

/// The `X-Forwarded-For` the pod gets: the client's list with the peer appended, as Go's
/// reverse proxy (Knative's) writes it.
pub(crate) fn forwarded_for<'v>(
    prior: impl IntoIterator<Item = &'v [u8]>,
    peer: IpAddr,
    out: &mut Vec<u8>,
) {
    for value in prior {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    match peer {
        // The common case, written without the formatting machinery (it is on every request).
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        // `Display` of an address never fails.
        IpAddr::V6(v6) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{v6}"));
        }
    }
}

/// The general path's rewrite of a request's fields for the pod (the form of the rules the
/// fast path applies line by line), planned from the one read of the head that `handle` makes
/// for its checks, and applied when the request goes to a pod.
#[derive(Debug)]
pub(crate) struct RequestRewrite {
    gone: Vec<HeaderName>,
    upgrade: bool,
    original_host: bool,
    trailers: bool,
    /// The `X-Forwarded-For` value, empty when the peer is unknown.
    forwarded: Vec<u8>,
}

impl RequestRewrite {
    /// `head` is `headers` as read by `RequestHead::read`; `peer` is appended to
    /// `X-Forwarded-For`.
    pub(crate) fn plan(head: &RequestHead<'_>, headers: &HeaderMap, peer: Option<IpAddr>) -> Self {
        let upgrade = head.is_upgrade();
        let gone = names_where(headers, |n| {
            drop_request_field(n, &head.connection, upgrade)
        });
        let mut forwarded = Vec::new();
        if let Some(peer) = peer {
            let prior = headers
                .get_all(name::X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes);
            forwarded_for(prior, peer, &mut forwarded);
        }
        Self {
            gone,
            upgrade,
            original_host: head.original_host,
            trailers: head.trailers,
            forwarded,
        }
    }

    /// Applies the plan. `host` is the original host (Host header or `:authority`); it goes
    /// to `K-Original-Host` (unless already set). `Host` itself is left to the client
    /// library, which writes the pod's address.
    pub(crate) fn apply(self, headers: &mut HeaderMap, host: Option<HeaderValue>) {
        for n in self.gone {
            headers.remove(n);
        }
        if let Some(host) = host
            && !self.original_host
        {
            headers.insert(name::ORIGINAL_HOST, host);
        }
        if self.trailers {
            headers.insert(name::TE, HeaderValue::from_static("trailers"));
        }
        if self.upgrade {
            headers.insert(name::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if !self.forwarded.is_empty()
            && let Ok(value) = HeaderValue::from_bytes(&self.forwarded)
        {
            headers.insert(name::X_FORWARDED_FOR, value);
        }
        headers.insert(
            name::PROXY_REQUEST,
            HeaderValue::from_static(PROXY_REQUEST_VALUE),
        );
    }
}

/// Read, plan and apply in one go (the unit tests' form).
#[cfg(test)]
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    peer: Option<IpAddr>,
) {
    let plan = RequestRewrite::plan(&RequestHead::read(fields(headers)), headers, peer);
    plan.apply(headers, host);
}

/// Rewrites a pod's response fields for the client (general path). hyper frames the body it
/// relays itself; the rules still decide which framing fields cross.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, status: u16, is_head: bool, upgrade: bool) {
    let gone = {
        // hyper's client already refused what `scan` refuses; were it not to, read to close.
        let (connection, framing) = match ResponseHead::scan(status, is_head, fields(headers)) {
            Ok(h) => (h.connection, h.framing),
            Err(_) => (Connection::default(), Framing::Close),
        };
        names_where(headers, |n| {
            drop_response_field(n, &connection, upgrade, framing)
        })
    };
    for n in gone {
        headers.remove(n);
    }
}

/// The distinct names of the fields `drop` selects.
fn names_where(headers: &HeaderMap, drop: impl Fn(&str) -> bool) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|n| drop(n.as_str()))
        .cloned()
        .collect()
}

/// The fields of a `HeaderMap` as the rules read them.
pub(crate) fn fields(headers: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
}

#[cfg(test)]
mod tests;
