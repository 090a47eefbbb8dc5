//! Fuzzing shim (feature `fuzzing`): byte-slice entry points into the parsers, each with the
//! invariants it must keep, for `fuzz/` (cargo-fuzz) and `tests/fuzz_corpus.rs`.
//!
//! Every `check_*` takes arbitrary bytes, runs one parser on them and panics when an invariant
//! breaks. A refusal (error, "general path") is always acceptable; what is checked is that
//! whatever is accepted is relayed or used consistently: the framing a pod or a client reads
//! from a rewritten head is the framing the relay uses, decoded stats are finite and keyed,
//! and so on. Not a stable API.

use std::sync::{Arc, OnceLock};

use prost::Message as _;

use crate::{
    activator::{
        h1::{
            chunked::Chunked,
            head::{self, Extras, Framing, Next},
        },
        throttler::{Table, test_table},
    },
    adapter::{ext_authz, key},
    autoscaler_client::{gob, wire},
    config::{Config, Encoding, SharedConfig},
    proto::{
        adapter::kactivator::config::Params, authorization::HandleAuthorizationRequest,
        envoy::service::auth::v3::CheckRequest, metric::HandleMetricRequest,
    },
    revision::{RevisionKey, is_dns_label},
};

/// The configuration every target routes with: one HTTP/1.1 revision reachable by a
/// configured host, one h2c revision.
pub const CONFIG: &str = "revisions:\n  - name: hello\n    namespace: prod\n    hosts: [api.example.com]\n  - name: grpc\n    namespace: prod\n    protocol: h2c\n";

/// Where a proxied request is sent in [`check_request`].
pub const POD: &str = "10.0.0.7:8080";

/// Headers parsed when re-reading a rewritten head: the fast path's 64 plus what it adds.
const MAX_HEADERS: usize = 80;

fn config() -> &'static SharedConfig {
    static CFG: OnceLock<SharedConfig> = OnceLock::new();
    CFG.get_or_init(|| match Config::parse(CONFIG) {
        Ok(cfg) => Arc::new(cfg),
        Err(e) => panic!("fuzzing CONFIG is invalid: {e}"),
    })
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| test_table(config()))
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn values<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| eq(h.name, name))
        .map(|h| h.value)
}

/// What `Content-Length` says, RFC 9112 §6.3 rule 5: `Ok(None)` without one, `Err` when the
/// values are not one decimal number (a list of identical values counts as that value).
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, String> {
    let mut found = None;
    for value in values(headers, "content-length") {
        for item in list(value).chain(value.trim_ascii().is_empty().then_some(&b""[..])) {
            let n = std::str::from_utf8(item)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("invalid content-length {:?}", lossy(value)))?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting content-length values".into());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Whether the transfer codings of all `Transfer-Encoding` lines, read as one list, end in
/// `chunked`; `None` without the header.
fn ends_chunked(headers: &[httparse::Header<'_>]) -> Option<bool> {
    let mut last: Option<&[u8]> = None;
    let mut present = false;
    for value in values(headers, "transfer-encoding") {
        present = true;
        last = list(value).last().or(last);
    }
    present.then(|| last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A request head, as the fast path reads, routes and rewrites it for a pod.
///
/// When it is proxied: the client's framing (RFC 9112 §6.3) is a body of `content_length`
/// bytes, and the rewritten head is exactly one complete head with the same method and target,
/// one `Host` (the pod), no `Transfer-Encoding`, a `Content-Length` equal to `content_length`
/// whenever the body is not empty, one `k-proxy-request: activator` and no connection-specific
/// field but `TE: trailers`. Otherwise a pod would read a different body than the one relayed
/// (request smuggling) or act on the client's connection options.
pub fn check_request(buf: &[u8]) {
    let table = table();
    let Next::Proxy(req) = head::request(buf, table, std::net::IpAddr::from([192, 0, 2, 1])) else {
        return;
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut client = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(client_len)) = client.parse(buf) else {
        panic!("proxied a request httparse does not read as complete");
    };
    assert_eq!(req.head_len, client_len, "head length");
    assert!(req.head_len <= table.settings.max_header_bytes);
    assert!(
        ends_chunked(client.headers).is_none(),
        "proxied a request with Transfer-Encoding"
    );
    let client_body = content_length(client.headers)
        .unwrap_or_else(|e| panic!("proxied a request with {e}"))
        .unwrap_or(0);
    assert_eq!(
        client_body, req.content_length,
        "the client framed a different body than the one relayed"
    );

    let mut out = Vec::new();
    req.head_for(POD, &[], &mut out);
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut pod = httparse::Request::new(&mut storage);
    match pod.parse(&out) {
        Ok(httparse::Status::Complete(n)) if n == out.len() => {}
        other => panic!(
            "rewritten head is not one complete head ({other:?}): {:?}",
            lossy(&out)
        ),
    }
    let head = lossy(&out);
    assert_eq!(pod.method, client.method, "method: {head:?}");
    assert_eq!(pod.path, client.path, "target: {head:?}");
    assert_eq!(pod.version, Some(1), "version: {head:?}");
    let hosts: Vec<&[u8]> = values(pod.headers, "host").collect();
    assert_eq!(hosts, [POD.as_bytes()], "host lines: {head:?}");
    assert!(
        ends_chunked(pod.headers).is_none(),
        "Transfer-Encoding sent to the pod: {head:?}"
    );
    let pod_body = content_length(pod.headers)
        .unwrap_or_else(|e| panic!("{e} sent to the pod: {head:?}"))
        .unwrap_or(0);
    assert_eq!(
        pod_body, req.content_length,
        "the pod reads a {pod_body}-byte body, the activator relays {}: {head:?}",
        req.content_length
    );
    let marks: Vec<&[u8]> = values(pod.headers, "k-proxy-request").collect();
    assert_eq!(marks, [&b"activator"[..]], "k-proxy-request: {head:?}");
    for h in pod.headers.iter() {
        let hop = HOP_BY_HOP.iter().any(|n| eq(h.name, n))
            || (eq(h.name, "te") && h.value != b"trailers");
        assert!(!hop, "hop-by-hop {} sent to the pod: {head:?}", h.name);
    }
}

/// Connection-specific fields (RFC 9110 §7.6.1) that never cross the proxy; `TE: trailers` and
/// the framing of a relayed response body excepted.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "upgrade",
    "transfer-encoding",
];

/// A pod's response head, read and rewritten by the fast path. `data[0]` picks the
/// [`Extras`] (bit 0: client asked to close, bit 1: HEAD request, bit 2: cold start).
///
/// When it is relayed: the framing the relay uses is the one RFC 9112 §6.3 gives the pod's
/// head (so the pod connection stays in step), and the rewritten head is one complete head
/// whose framing, as a client reads it, is that same framing (so the client connection stays
/// in step), never with both `Content-Length` and `Transfer-Encoding`, and saying
/// `connection: close` whenever the client connection is closed after it, and no other
/// connection-specific field than that and the body's framing.
pub fn check_response(data: &[u8]) {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let extras = Extras {
        close: flags & 1 != 0,
        is_head: flags & 2 != 0,
        cold_start_ms: (flags & 4 != 0).then_some(u64::from(flags)),
    };
    let Ok(Some(resp)) = head::response(buf, extras) else {
        return;
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut from_pod = httparse::Response::new(&mut storage);
    let Ok(httparse::Status::Complete(pod_len)) = from_pod.parse(buf) else {
        panic!("relayed a response httparse does not read as complete");
    };
    assert_eq!(resp.head_len, pod_len, "head length");
    let status = from_pod.code.unwrap_or_default();
    assert_eq!(resp.status, status);
    assert_eq!(resp.informational, (100..200).contains(&status));
    let pod_framing = response_framing(from_pod.headers, status, extras.is_head);
    assert_eq!(
        Ok(resp.framing),
        pod_framing,
        "the relay reads the pod's response otherwise than RFC 9112: {:?}",
        lossy(&buf[..pod_len])
    );
    if resp.framing == Framing::Close {
        assert!(!resp.reusable, "a close-delimited pod connection reused");
    }

    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut to_client = httparse::Response::new(&mut storage);
    let out = &resp.head;
    match to_client.parse(out) {
        Ok(httparse::Status::Complete(n)) if n == out.len() => {}
        other => panic!(
            "rewritten head is not one complete head ({other:?}): {:?}",
            lossy(out)
        ),
    }
    let head = lossy(out);
    assert_eq!(to_client.code, Some(status), "status: {head:?}");
    assert_eq!(to_client.version, Some(1), "version: {head:?}");
    assert!(
        !(ends_chunked(to_client.headers).is_some()
            && values(to_client.headers, "content-length").next().is_some()),
        "both Transfer-Encoding and Content-Length sent to the client: {head:?}"
    );
    let client_framing = response_framing(to_client.headers, status, extras.is_head);
    assert_eq!(
        Ok(resp.framing),
        client_framing,
        "the client reads a framing other than the relayed one: {head:?}"
    );
    for h in to_client.headers.iter() {
        let allowed = (eq(h.name, "connection") && h.value == b"close")
            || (eq(h.name, "transfer-encoding")
                && matches!(resp.framing, Framing::Chunked | Framing::Close));
        let hop = HOP_BY_HOP.iter().any(|n| eq(h.name, n)) || eq(h.name, "te");
        assert!(
            allowed || !hop,
            "hop-by-hop {} sent to the client: {head:?}",
            h.name
        );
    }
    if resp.close {
        let closes = values(to_client.headers, "connection")
            .flat_map(list)
            .any(|t| t.eq_ignore_ascii_case(b"close"));
        assert!(
            closes,
            "client connection closed without saying so: {head:?}"
        );
    }
}

/// RFC 9112 §6.3 for a response (the request's method being HEAD or not).
fn response_framing(
    headers: &[httparse::Header<'_>],
    status: u16,
    is_head: bool,
) -> Result<Framing, String> {
    if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    match ends_chunked(headers) {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Ok(Framing::Close),
        None => {}
    }
    Ok(content_length(headers)?.map_or(Framing::Close, Framing::Length))
}

/// The chunk scanner over a body fed in pieces. `data[0] % 8` split points follow, each a
/// byte giving the distance from the previous one; the rest is the body.
///
/// Feeding the body in any pieces gives the same answer as feeding it at once (bytes that
/// belong to the body, whether it ended, whether it is malformed), and a body that ended
/// ends with CRLF and scans the same again.
pub fn check_chunked(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let splits = usize::from(n % 8).min(rest.len());
    let (steps, body) = rest.split_at(splits);

    let mut whole = Chunked::default();
    let once = whole.advance(body).map(|n| (n, whole.is_done()));

    let mut pieces = Chunked::default();
    let mut fed = 0;
    let mut taken = 0;
    let mut failed = false;
    let mut cuts: Vec<usize> = Vec::with_capacity(splits + 1);
    let mut at = 0usize;
    for s in steps {
        at = (at + usize::from(*s)).min(body.len());
        cuts.push(at);
    }
    cuts.push(body.len());
    for cut in cuts {
        let piece = &body[fed..cut];
        fed = cut;
        match pieces.advance(piece) {
            Ok(n) => {
                assert!(n <= piece.len());
                taken += n;
                if n < piece.len() {
                    assert!(
                        pieces.is_done(),
                        "stopped early without the end of the body"
                    );
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let split = if failed {
        Err(())
    } else {
        Ok((taken, pieces.is_done()))
    };
    assert_eq!(
        once.map_err(drop),
        split,
        "split feeding disagrees with one feed"
    );
    if let Ok((n, true)) = once {
        assert!(body[..n].ends_with(b"\r\n"));
        let mut again = Chunked::default();
        assert_eq!(again.advance(&body[..n]), Ok(n));
        assert!(again.is_done());
    }
}

/// A gob stats frame: what decodes is keyed and finite, and the encoder writes it back to the
/// same stat (counts being `int32` in this shape).
pub fn check_gob(frame: &[u8]) {
    let Ok(stats) = gob::decode(frame) else {
        return;
    };
    assert!(!stats.is_empty());
    for stat in stats {
        assert!(
            !stat.namespace.is_empty() && !stat.name.is_empty(),
            "{stat:?}"
        );
        let figures = [
            stat.average_concurrent_requests,
            stat.average_proxied_concurrent_requests,
            stat.request_count,
            stat.proxied_request_count,
        ];
        assert!(figures.iter().all(|f| f.is_finite()), "{stat:?}");
        if stat.namespace.contains('/') {
            // A `{Namespace, Name}` key that a "namespace/name" string cannot carry.
            continue;
        }
        let key = format!("{}/{}", stat.namespace, stat.name);
        let again = gob::decode(&gob::encode(&key, &stat));
        let count = |v: f64| f64::from(v.round() as i32);
        let expected = gob::GobStat {
            request_count: count(stat.request_count),
            proxied_request_count: count(stat.proxied_request_count),
            ..stat
        };
        assert_eq!(again, Ok(vec![expected]), "gob round trip");
    }
}

/// A stats frame of either encoding: at least one stat, every one keyed and finite, and a
/// frame taken as gob is exactly what the gob decoder reads.
pub fn check_stats_frame(frame: &[u8]) {
    let Ok((encoding, stats)) = wire::decode(frame) else {
        return;
    };
    assert!(!stats.is_empty());
    for s in &stats {
        assert!(
            !s.key.namespace().is_empty() && !s.key.name().is_empty(),
            "{s:?}"
        );
        let figures = [
            s.average_concurrent_requests,
            s.average_proxied_concurrent_requests,
            s.request_count,
            s.proxied_request_count,
        ];
        assert!(figures.iter().all(|f| f.is_finite()), "{s:?}");
        assert!(s.concurrency() >= 0.0);
    }
    if encoding == Encoding::Gob {
        let gob = gob::decode(frame).map(|v| v.len());
        assert_eq!(gob, Ok(stats.len()));
    }
}

/// The adapter's protobuf requests. `data[0] % 4` picks the message (Mixer authorization,
/// Mixer metric, ext_authz Check, handler `Params`); the rest is its encoding. Every revision
/// key the adapter derives (and would poke the autoscaler for) is a pair of DNS labels, and
/// a key derived from a configured host is that host's revision.
pub fn check_adapter_proto(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let cfg = config();
    match which % 4 {
        0 => {
            let Ok(req) = HandleAuthorizationRequest::decode(bytes) else {
                return;
            };
            if let Some(any) = req.adapter_config.as_ref() {
                let _ = Params::decode(any.value.as_slice());
            }
            let action = req.instance.as_ref().and_then(|i| i.action.as_ref());
            if let Some(a) = action {
                check_key(key::from_mixer(&a.namespace, &a.service));
            }
        }
        1 => {
            let Ok(req) = HandleMetricRequest::decode(bytes) else {
                return;
            };
            for instance in &req.instances {
                check_key(key::from_dimensions(&instance.dimensions));
            }
        }
        2 => {
            let Ok(req) = CheckRequest::decode(bytes) else {
                return;
            };
            let http = req
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref());
            if let Some(http) = http {
                let hosts = key::HostIndex::default();
                let routes = crate::discovery::kingress::RouteTable::default();
                let derived = match ext_authz::revisions(http, cfg, &hosts, &routes) {
                    Ok(key::Found::One(key)) => Some(key),
                    _ => None,
                };
                check_key(derived.clone());
                let configured = cfg.revisions.iter().find(|r| {
                    r.hosts
                        .iter()
                        .any(|h| eq(h, crate::revision::strip_port(http.host.trim())))
                });
                if let Some(r) = configured
                    && http.headers.is_empty()
                    && http.header_map.is_none()
                {
                    assert_eq!(derived, Some(r.key()), "configured host {:?}", http.host);
                }
            }
        }
        _ => {
            if let Ok(params) = Params::decode(bytes) {
                let again = Params::decode(params.encode_to_vec().as_slice());
                assert_eq!(again.ok(), Some(params), "Params round trip");
            }
        }
    }
}

fn check_key(key: Option<RevisionKey>) {
    if let Some(key) = key {
        assert!(
            is_dns_label(key.namespace()) && is_dns_label(key.name()),
            "poked {key:?}"
        );
    }
}

/// The configuration parser: a configuration that parses validates again, and the routing
/// table built from it routes every revision by its names and by each of its hosts.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text) else {
        return;
    };
    if let Err(e) = cfg.validate() {
        panic!("parsed config fails validation: {e}");
    }
    let table = test_table(&cfg);
    for r in &cfg.revisions {
        let key = r.key();
        let by_name = table.lookup(Some((&r.namespace, &r.name)), None);
        assert_eq!(by_name.map(|route| &route.rev.key), Some(&key), "{key}");
        for h in &r.hosts {
            let host = h.to_ascii_lowercase();
            // A Service host (`<rev>.<ns>[.svc…]`) of a configured revision routes there first,
            // by design.
            let service = crate::revision::from_service_host(&host, &cfg.cluster_domain);
            if service.is_some_and(|(ns, name)| {
                cfg.revisions
                    .iter()
                    .any(|o| o.namespace == ns && o.name == name)
            }) {
                continue;
            }
            let by_host = table.lookup(None, Some(&host));
            assert_eq!(by_host.map(|route| &route.rev.key), Some(&key), "host {h}");
        }
    }
}
