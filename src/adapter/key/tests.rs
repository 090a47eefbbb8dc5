use std::{collections::HashMap, sync::Arc};

use super::*;
use crate::proto::istio::policy::v1beta1::DnsName;

/// A host alone (no path, no headers, no KIngress table), as far as one revision goes.
fn from_host(host: &str, cfg: &SharedConfig, index: &HostIndex) -> Option<RevisionKey> {
    match from_request(host, "/", |_| None, cfg, index, &RouteTable::default()) {
        Ok(Found::One(key)) => Some(key),
        _ => None,
    }
}

fn key(ns: &str, name: &str) -> Option<RevisionKey> {
    Some(RevisionKey::new(ns, name))
}

fn s(v: &str) -> Value {
    Value {
        value: Some(value::Value::StringValue(v.into())),
    }
}

#[test]
fn mixer_takes_the_first_label_and_strips_private_suffixes() {
    assert_eq!(
        from_mixer("default", "hello-00001"),
        key("default", "hello-00001")
    );
    assert_eq!(
        from_mixer("default", "hello-00001-private"),
        key("default", "hello-00001")
    );
    assert_eq!(
        from_mixer("default", "hello-00001-priv"),
        key("default", "hello-00001")
    );
    assert_eq!(
        from_mixer("ns1", "hello-00001-private.ns1.svc.cluster.local"),
        key("ns1", "hello-00001")
    );
    assert_eq!(from_mixer("ns1", "hello:8080"), key("ns1", "hello"));
}

#[test]
fn mixer_rejects_empty_and_invalid_names() {
    assert_eq!(from_mixer("", "hello"), None);
    assert_eq!(from_mixer("default", ""), None);
    assert_eq!(from_mixer("default", "-private"), None);
    assert_eq!(from_mixer("Default", "hello"), None);
    assert_eq!(from_mixer("default", "he_llo"), None);
    assert_eq!(from_mixer("default", &"a".repeat(64)), None);
}

#[test]
fn dimensions_prefer_revision_then_service() {
    let mut d = HashMap::new();
    d.insert("namespace".to_string(), s("default"));
    d.insert(
        "service".to_string(),
        s("hello-private.default.svc.cluster.local"),
    );
    assert_eq!(from_dimensions(&d), key("default", "hello"));
    d.insert("revision".to_string(), s("hello-00002"));
    assert_eq!(from_dimensions(&d), key("default", "hello-00002"));
}

#[test]
fn dimensions_take_the_namespace_from_a_service_host_and_accept_dns_names() {
    let mut d = HashMap::new();
    d.insert(
        "service".to_string(),
        Value {
            value: Some(value::Value::DnsNameValue(DnsName {
                value: "hello.team-a.svc.cluster.local".into(),
            })),
        },
    );
    assert_eq!(from_dimensions(&d), key("team-a", "hello"));
    let mut d = HashMap::new();
    d.insert("revision".to_string(), s("hello"));
    assert_eq!(from_dimensions(&d), None, "no namespace anywhere");
    d.insert(
        "namespace".to_string(),
        Value {
            value: Some(value::Value::Int64Value(3)),
        },
    );
    assert_eq!(from_dimensions(&d), None, "namespace is not text");
}

#[test]
fn hosts_use_the_config_then_the_svc_form() {
    let cfg: SharedConfig = Arc::new(
        Config::parse(
            "cluster_domain: example.internal\nrevisions:\n  - name: hello\n    namespace: web\n    hosts: [hello.example.com]\n",
        )
        .unwrap(),
    );
    let index = HostIndex::default();
    assert_eq!(
        from_host("Hello.Example.com:443", &cfg, &index),
        key("web", "hello")
    );
    assert_eq!(
        from_host("hello.example.com.", &cfg, &index),
        key("web", "hello")
    );
    assert_eq!(from_host("rev-1.ns.svc", &cfg, &index), key("ns", "rev-1"));
    assert_eq!(
        from_host("rev-1.ns.svc.example.internal:80", &cfg, &index),
        key("ns", "rev-1")
    );
    assert_eq!(from_host("rev-1.ns.svc.cluster.local", &cfg, &index), None);
    assert_eq!(from_host("unknown.example.com", &cfg, &index), None);
    assert_eq!(from_host("[::1]:80", &cfg, &index), None);
    assert_eq!(from_host("", &cfg, &index), None);
}

#[test]
fn host_index_follows_a_new_config() {
    let index = HostIndex::default();
    let a: SharedConfig =
        Arc::new(Config::parse("revisions:\n  - name: a\n    hosts: [x.example.com]\n").unwrap());
    let b: SharedConfig =
        Arc::new(Config::parse("revisions:\n  - name: b\n    hosts: [x.example.com]\n").unwrap());
    assert_eq!(from_host("x.example.com", &a, &index), key("default", "a"));
    assert_eq!(from_host("x.example.com", &b, &index), key("default", "b"));
}

#[test]
fn header_values_must_be_labels() {
    assert_eq!(from_headers("default", "hello"), key("default", "hello"));
    assert_eq!(from_headers(" default ", "hello "), key("default", "hello"));
    assert_eq!(from_headers("", "hello"), None);
    assert_eq!(from_headers("default", "a/b"), None);
}

#[test]
fn configured_hosts_then_kingress_then_svc_forms() {
    let cfg: SharedConfig = Arc::new(
        Config::parse(
            "revisions:\n  - name: pinned\n    namespace: web\n    hosts: [hello.default.example.com]\n",
        )
        .unwrap(),
    );
    let split = |rev: &str| serde_json::json!({"serviceNamespace": "default", "serviceName": rev, "percent": 50});
    let rules = crate::discovery::kingress::rules_of(
        &RevisionKey::new("default", "hello"),
        &serde_json::json!({"rules": [{
            "hosts": ["hello.default.example.com", "hello.default.svc.cluster.local", "other.example.com"],
            "http": {"paths": [{"path": "/api/.*", "splits": [split("a"), split("b")]}]},
        }]}),
    );
    let routes = RouteTable::build(rules.iter());
    let index = HostIndex::default();
    let get = |host: &str, path: &str| from_request(host, path, |_| None, &cfg, &index, &routes);
    // The operator's hand map wins over the Route.
    assert_eq!(
        get("hello.default.example.com", "/api/x"),
        Ok(Found::One(RevisionKey::new("web", "pinned")))
    );
    // A Route's cluster-local host is the Route's, not `<rev>.<ns>.svc`.
    let both: Arc<[RevisionKey]> = Arc::from([
        RevisionKey::new("default", "a"),
        RevisionKey::new("default", "b"),
    ]);
    assert_eq!(
        get("hello.default.svc.cluster.local", "/api/x"),
        Ok(Found::Route(both))
    );
    assert_eq!(get("other.example.com", "/"), Err(Miss::NoPath));
    assert_eq!(
        get("rev-1.ns.svc.cluster.local", "/"),
        Ok(Found::One(RevisionKey::new("ns", "rev-1")))
    );
    assert_eq!(get("nobody.example.com", "/"), Err(Miss::UnknownHost));
    assert_eq!(get(" ", "/"), Err(Miss::NoHost));
}
