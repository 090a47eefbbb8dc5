use serde_json::json;

use super::*;

fn key(ns: &str, name: &str) -> RevisionKey {
    RevisionKey::new(ns, name)
}

/// A split as Knative's route reconciler writes it.
fn split(rev: &str, percent: i64) -> Value {
    json!({
        "serviceNamespace": "default", "serviceName": rev, "servicePort": 80, "percent": percent,
        "appendHeaders": {"Knative-Serving-Revision": rev, "Knative-Serving-Namespace": "default"},
    })
}

fn table(spec: &Value) -> RouteTable {
    let rules = rules_of(&key("default", "hello"), spec);
    RouteTable::build(rules.iter())
}

fn revisions(m: Match) -> Vec<RevisionKey> {
    match m {
        Match::Revisions(keys) => keys.to_vec(),
        other => panic!("no revisions: {other:?}"),
    }
}

#[test]
fn hosts_match_any_case_and_port_and_splits_above_zero_count() {
    let t = table(&json!({"rules": [{
        "hosts": ["hello.default.example.com", "Hello.Default.svc.cluster.local"],
        "visibility": "ExternalIP",
        "http": {"paths": [{"splits": [split("hello-00001", 50), split("hello-00002", 50), split("hello-00003", 0)]}]},
    }]}));
    let both = vec![key("default", "hello-00001"), key("default", "hello-00002")];
    assert_eq!(
        revisions(t.lookup("hello.default.example.com", "/", |_| None)),
        both
    );
    assert_eq!(
        revisions(t.lookup("HELLO.default.example.com:8080", "/x?y", |_| None)),
        both
    );
    assert_eq!(
        revisions(t.lookup("hello.default.svc.cluster.local.", "", |_| None)),
        both
    );
    assert_eq!(
        t.lookup("other.example.com", "/", |_| None),
        Match::UnknownHost
    );
    assert!(t.knows("hello.default.example.com:80"));
}

#[test]
fn paths_are_whole_regex_matches_and_headers_exact_first_match_wins() {
    let t = table(&json!({"rules": [{
        "hosts": ["h.example.com"],
        "http": {"paths": [
            {"path": "/.well-known/acme-challenge/[a-z]+", "splits": [split("acme", 100)]},
            {"headers": {"Knative-Serving-Tag": {"exact": "canary"}}, "splits": [split("canary", 100)]},
            {"path": "/api/.*", "splits": [split("api", 100)]},
        ]},
    }]}));
    let one = |path: &str, tag: Option<&'static str>| {
        revisions(t.lookup("h.example.com", path, move |n| {
            (n == "knative-serving-tag").then_some(tag).flatten()
        }))
    };
    assert_eq!(
        one("/.well-known/acme-challenge/abc", None),
        [key("default", "acme")]
    );
    assert_eq!(
        one("/api/v1?q=1", Some("canary")),
        [key("default", "canary")]
    );
    assert_eq!(one("/api/v1?q=1", None), [key("default", "api")]);
    // Anchored at both ends: a prefix or a suffix is not a match.
    assert_eq!(
        t.lookup("h.example.com", "/x/api/v1", |_| None),
        Match::NoPath
    );
    assert_eq!(
        t.lookup("h.example.com", "/.well-known/acme-challenge/ABC", |_| None),
        Match::NoPath
    );
}

#[test]
fn odd_rules_paths_and_splits_are_skipped_not_fatal() {
    let rules = rules_of(
        &key("default", "odd"),
        &json!({"rules": [
            {"hosts": [7, ""], "http": {"paths": [{"splits": [split("a", 100)]}]}},
            {"hosts": ["ok.example.com"], "http": {"paths": [
                {"path": "/(unclosed", "splits": [split("bad-regex", 100)]},
                {"path": 3, "splits": [split("bad-path", 100)]},
                {"headers": {"x": {"prefix": "y"}}, "splits": [split("bad-header", 100)]},
                {"splits": [{"serviceName": "No_Such", "serviceNamespace": "default", "percent": 100}]},
                {"splits": [{"serviceName": "plain", "serviceNamespace": "ns2"}]},
            ]}},
            {"hosts": ["nohttp.example.com"]},
            "not an object",
        ]}),
    );
    assert_eq!(rules.len(), 1, "{rules:?}");
    let t = RouteTable::build(rules.iter());
    // The lone split without a percent defaults to 100 and names its revision by service.
    assert_eq!(
        revisions(t.lookup("ok.example.com", "/", |_| None)),
        [key("ns2", "plain")]
    );
    assert!(rules_of(&key("default", "x"), &json!(null)).is_empty());
    assert!(rules_of(&key("default", "x"), &json!({"rules": {"a": 1}})).is_empty());
}

#[test]
fn an_oversized_regex_is_refused() {
    let huge = format!("/({})", "a{1000}".repeat(50));
    let rules = rules_of(
        &key("default", "big"),
        &json!({"rules": [{"hosts": ["h"], "http": {"paths": [{"path": huge, "splits": [split("a", 100)]}]}}]}),
    );
    assert!(rules.is_empty());
}

#[test]
fn objects_apply_in_name_order_and_status_updates_do_not_rebuild() {
    use kube::runtime::watcher::Event;
    let ing = |name: &str, rev: &str, generation: i64| KIngress {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        },
        spec: json!({"rules": [{"hosts": ["same.example.com"], "http": {"paths": [{"splits": [split(rev, 100)]}]}}]}),
    };
    let mut state = Ingresses::default();
    state.on_event(Ok(Event::Init));
    state.on_event(Ok(Event::InitApply(ing("b", "from-b", 1))));
    state.on_event(Ok(Event::InitApply(ing("a", "from-a", 1))));
    assert!(!state.listed());
    state.on_event(Ok(Event::InitDone));
    assert!(state.listed());
    let t = state.rebuild().unwrap();
    assert_eq!(
        revisions(t.lookup("same.example.com", "/", |_| None)),
        [key("default", "from-a")]
    );
    assert!(state.rebuild().is_none());
    state.on_event(Ok(Event::Apply(ing("a", "from-a", 2))));
    assert!(state.rebuild().is_none(), "same rules: no new table");
    state.on_event(Ok(Event::Delete(ing("a", "from-a", 2))));
    let t = state.rebuild().unwrap();
    assert_eq!(
        revisions(t.lookup("same.example.com", "/", |_| None)),
        [key("default", "from-b")]
    );
}
