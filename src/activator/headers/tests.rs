use std::net::Ipv4Addr;

use http::{HeaderMap, HeaderName, HeaderValue, Version};

use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn framing(pairs: &[(&'static str, &'static str)]) -> Result<Framing, Error> {
    let fields = pairs.iter().map(|(n, v)| (*n, v.as_bytes()));
    RequestHead::read(fields).framing(Version::HTTP_11)
}

#[test]
fn ambiguous_request_framing_is_refused() {
    for bad in [
        &[
            ("host", "a"),
            ("content-length", "1"),
            ("transfer-encoding", "chunked"),
        ][..],
        &[
            ("host", "a"),
            ("content-length", "1"),
            ("content-length", "2"),
        ],
        &[
            ("host", "a"),
            ("content-length", "1"),
            ("content-length", "1"),
        ],
        &[("host", "a"), ("content-length", "+1")],
        &[("host", "a"), ("content-length", " 1")],
        &[("host", "a"), ("content-length", "0x1")],
        &[("host", "a"), ("content-length", "99999999999999999999999")],
        &[("host", "a"), ("transfer-encoding", "xchunked")],
        &[("host", "a"), ("transfer-encoding", "chunked, identity")],
        &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
        &[
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ],
        &[("host", "a"), ("transfer-encoding", "")],
        &[("host", "a"), ("host", "b")],
        &[("content-length", "1")],
    ] {
        assert!(
            matches!(framing(bad), Err(Error::BadRequest(_))),
            "{bad:?} accepted"
        );
    }
    let te = [("transfer-encoding", "chunked".as_bytes())];
    assert!(
        RequestHead::read(te).framing(Version::HTTP_10).is_err(),
        "HTTP/1.0 has no chunked coding"
    );
    // HTTP/2 carries the host in :authority.
    assert_eq!(
        RequestHead::read([]).framing(Version::HTTP_2).unwrap(),
        Framing::Empty
    );
}

#[test]
fn plain_request_framing() {
    assert_eq!(framing(&[("host", "a")]).unwrap(), Framing::Empty);
    assert_eq!(
        framing(&[("Host", "a"), ("Content-Length", "0")]).unwrap(),
        Framing::Empty
    );
    assert_eq!(
        framing(&[("host", "a"), ("content-length", "0012")]).unwrap(),
        Framing::Length(12)
    );
    assert_eq!(
        framing(&[("host", "a"), ("Transfer-Encoding", " Chunked ")]).unwrap(),
        Framing::Chunked
    );
}

#[test]
fn connection_never_removes_framing_fields() {
    let mut conn = Connection::default();
    conn.add(b"keep-alive, Content-Length, transfer-encoding, HOST, x-hop");
    for kept in ["content-length", "Content-Length"] {
        assert!(!drop_request_field(kept, &conn, false), "{kept}");
        assert!(
            !drop_response_field(kept, &conn, false, Framing::Length(3)),
            "{kept}"
        );
    }
    assert!(drop_request_field("x-hop", &conn, false));
    assert!(drop_response_field("X-Hop", &conn, false, Framing::Empty));
    // Transfer-Encoding's fate is the framing's: kept when it delimits the relayed body.
    assert!(!drop_response_field(
        "transfer-encoding",
        &conn,
        false,
        Framing::Chunked
    ));
    assert!(drop_response_field(
        "transfer-encoding",
        &conn,
        false,
        Framing::Length(1)
    ));
    assert!(drop_response_field(
        "content-length",
        &conn,
        false,
        Framing::Chunked
    ));
}

#[test]
fn response_framing_follows_rfc_9112() {
    let scan = |status, head, pairs: &[(&'static str, &'static str)]| {
        ResponseHead::scan(status, head, pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
    };
    let f = |status, pairs: &[(&'static str, &'static str)]| {
        scan(status, false, pairs).unwrap().framing
    };
    assert_eq!(f(200, &[("content-length", "5")]), Framing::Length(5));
    assert_eq!(f(200, &[]), Framing::Close);
    assert_eq!(
        f(200, &[("transfer-encoding", "gzip, chunked")]),
        Framing::Chunked
    );
    // Not chunked last: read to close, whatever Content-Length says.
    assert_eq!(
        f(
            200,
            &[("transfer-encoding", "gzip"), ("content-length", "5")]
        ),
        Framing::Close
    );
    assert_eq!(
        f(
            200,
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip")
            ]
        ),
        Framing::Close
    );
    let both = scan(
        200,
        false,
        &[("transfer-encoding", "chunked"), ("content-length", "5")],
    )
    .unwrap();
    assert_eq!(both.framing, Framing::Chunked);
    assert!(both.conflicting);
    for status in [103, 204, 304] {
        assert_eq!(f(status, &[("content-length", "5")]), Framing::Empty);
    }
    assert_eq!(
        scan(200, true, &[("content-length", "5")]).unwrap().framing,
        Framing::Empty
    );
    assert_eq!(
        scan(
            200,
            false,
            &[("content-length", "1"), ("content-length", "2")]
        )
        .unwrap_err(),
        BadResponse::ConflictingLength
    );
    assert_eq!(
        scan(200, false, &[("content-length", "-1")]).unwrap_err(),
        BadResponse::Malformed
    );
    assert!(
        scan(
            200,
            false,
            &[("content-length", "1"), ("content-length", "1")]
        )
        .is_ok()
    );
}

#[test]
fn request_gets_knative_headers_and_loses_routing_ones() {
    let mut h = map(&[
        ("host", "hello.prod.svc.cluster.local"),
        ("knative-serving-revision", "hello"),
        ("knative-serving-namespace", "prod"),
        ("k-proxy-request", "spoofed"),
        ("x-app", "kept"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "5.6.7.8"),
    ]);
    let host = h.get("host").cloned();
    rewrite_request(&mut h, host, Some(Ipv4Addr::new(127, 0, 0, 9).into()));
    assert_eq!(h["k-proxy-request"], "activator");
    assert_eq!(h["k-original-host"], "hello.prod.svc.cluster.local");
    assert_eq!(h["x-app"], "kept");
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 127.0.0.9");
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    for gone in [
        "host",
        "knative-serving-revision",
        "knative-serving-namespace",
    ] {
        assert!(!h.contains_key(gone), "{gone}");
    }
}

#[test]
fn an_existing_original_host_is_kept() {
    let mut h = map(&[("k-original-host", "first.example"), ("host", "second")]);
    let host = h.get("host").cloned();
    rewrite_request(&mut h, host, None);
    assert_eq!(h["k-original-host"], "first.example");
    assert!(!h.contains_key("x-forwarded-for"));
}

#[test]
fn hop_by_hop_headers_are_stripped_per_rfc_9110() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret-hop, content-length"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "gzip, trailers"),
        ("x-end-to-end", "1"),
        ("content-length", "3"),
    ]);
    rewrite_request(&mut h, None, None);
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
    assert_eq!(h["content-length"], "3");
    let mut h = map(&[
        ("te", "gzip"),
        ("connection", "content-length"),
        ("content-length", "3"),
    ]);
    rewrite_response(&mut h, 200, false, false);
    assert!(!h.contains_key("te"));
    assert_eq!(h["content-length"], "3");
}

#[test]
fn upgrades_keep_upgrade_and_connection_upgrade() {
    let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    assert!(RequestHead::read(fields(&h)).is_upgrade());
    rewrite_request(&mut h, None, None);
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["connection"], "upgrade");
    let lone = map(&[("upgrade", "websocket")]);
    assert!(!RequestHead::read(fields(&lone)).is_upgrade());
}

#[test]
fn replayable_methods() {
    assert!(replayable("GET", false) && replayable("HEAD", false));
    assert!(!replayable("POST", false));
    assert!(replayable("POST", true));
}

#[test]
fn responses_a_client_could_read_another_way_are_malformed() {
    let scan = |status, pairs: &[(&'static str, &'static [u8])]| {
        ResponseHead::scan(status, false, pairs.iter().map(|(n, v)| (*n, *v)))
    };
    for bad in [
        &[
            ("transfer-encoding", &b"chunked"[..]),
            ("transfer-encoding", b""),
        ][..],
        &[("transfer-encoding", b"\x8b, chunked")],
        &[("transfer-encoding", b" , ")],
    ] {
        assert_eq!(
            scan(200, bad).unwrap_err(),
            BadResponse::Malformed,
            "{bad:?}"
        );
    }
    for status in [0, 99, 1000] {
        assert_eq!(scan(status, &[]).unwrap_err(), BadResponse::Malformed);
    }
}

#[test]
fn connection_options_survive_a_non_text_element() {
    let mut conn = Connection::default();
    conn.add(b"x-hop, \xff\xfe, x-other");
    assert!(conn.has("x-hop") && conn.has("x-other"));
    let te = [("host", &b"a"[..]), ("transfer-encoding", b"\x8b, chunked")];
    assert!(RequestHead::read(te).framing(Version::HTTP_11).is_err());
    let vt = [("host", &b"a"[..]), ("transfer-encoding", b"\x0bchunked")];
    assert!(RequestHead::read(vt).framing(Version::HTTP_11).is_err());
}

#[test]
fn forwarded_for_writes_both_address_families() {
    for (ip, text) in [
        ("0.0.0.0", "0.0.0.0"),
        ("10.200.3.255", "10.200.3.255"),
        ("::1", "::1"),
        ("2001:db8::7", "2001:db8::7"),
    ] {
        let mut out = Vec::new();
        forwarded_for([&b"1.2.3.4"[..]], ip.parse().unwrap(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("1.2.3.4, {text}"));
    }
}
