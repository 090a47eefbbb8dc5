//! Header rewriting for proxied requests and responses (Knative parity, RFC 9110 hop-by-hop).

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::revision::{NAMESPACE_HEADER, REVISION_HEADER};

pub(crate) static PROXY_REQUEST: HeaderName = HeaderName::from_static("k-proxy-request");
pub(crate) static ORIGINAL_HOST: HeaderName = HeaderName::from_static("k-original-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Rewrites an inbound request's headers for the pod.
///
/// `host` is the original host (Host header or `:authority`); it moves to `K-Original-Host`
/// (unless already set) and the upstream Host becomes the pod address.
pub(crate) fn rewrite_request(headers: &mut HeaderMap, host: Option<HeaderValue>, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::HOST);
    if let Some(host) = host
        && !headers.contains_key(&ORIGINAL_HOST)
    {
        headers.insert(ORIGINAL_HOST.clone(), host);
    }
    headers.remove(&REVISION_HEADER);
    headers.remove(&NAMESPACE_HEADER);
    headers.insert(PROXY_REQUEST.clone(), HeaderValue::from_static("activator"));
}

/// Rewrites a pod's response headers for the client.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the headers that describe one connection (RFC 9110 §7.6.1). For an upgrade,
/// `Connection: upgrade` and `Upgrade` go through; `TE: trailers` always does (gRPC needs it).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        // Named in Connection: collected first, since removing while iterating is not possible.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && n == header::UPGRADE) && n != header::TE)
            .collect();
        for n in named {
            headers.remove(n);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    if let Some(te) = headers.remove(header::TE) {
        let trailers = te.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn request_gets_knative_headers_and_loses_routing_ones() {
        let mut h = map(&[
            ("host", "hello.prod.svc.cluster.local"),
            ("knative-serving-revision", "hello"),
            ("knative-serving-namespace", "prod"),
            ("x-app", "kept"),
        ]);
        let host = h.get("host").cloned();
        rewrite_request(&mut h, host, false);
        assert_eq!(h["k-proxy-request"], "activator");
        assert_eq!(h["k-original-host"], "hello.prod.svc.cluster.local");
        assert_eq!(h["x-app"], "kept");
        assert!(!h.contains_key("host"));
        assert!(!h.contains_key("knative-serving-revision"));
        assert!(!h.contains_key("knative-serving-namespace"));
    }

    #[test]
    fn an_existing_original_host_is_kept() {
        let mut h = map(&[("k-original-host", "first.example"), ("host", "second")]);
        let host = h.get("host").cloned();
        rewrite_request(&mut h, host, false);
        assert_eq!(h["k-original-host"], "first.example");
    }

    #[test]
    fn hop_by_hop_headers_are_stripped_per_rfc_9110() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip, trailers"),
            ("x-end-to-end", "1"),
        ]);
        rewrite_request(&mut h, None, false);
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-end-to-end"], "1");
        let mut h = map(&[("te", "gzip")]);
        rewrite_response(&mut h, false);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn upgrades_keep_upgrade_and_connection_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        rewrite_request(&mut h, None, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }
}
