use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};
use kube::api::ObjectMeta;
use serde_json::json;

use super::*;

fn revision(ns: &str, name: &str, spec: serde_json::Value) -> KnativeRevision {
    KnativeRevision {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec,
    }
}

fn endpoints(
    ns: &str,
    rev: &str,
    kind: &str,
    ready: &[&str],
    not_ready: &[&str],
    port: Option<(&str, i32)>,
) -> KubeEndpoints {
    let addrs = |ips: &[&str]| {
        Some(
            ips.iter()
                .map(|ip| EndpointAddress {
                    ip: (*ip).into(),
                    ..EndpointAddress::default()
                })
                .collect(),
        )
    };
    KubeEndpoints {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(format!("{rev}-{kind}")),
            labels: Some(BTreeMap::from([
                (objects::REVISION_LABEL.into(), rev.into()),
                (objects::SERVICE_TYPE_LABEL.into(), kind.into()),
            ])),
            ..ObjectMeta::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: addrs(ready),
            not_ready_addresses: addrs(not_ready),
            ports: Some(
                port.into_iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some(name.into()),
                        port,
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
        }]),
    }
}

fn config(yaml: &str) -> Config {
    Config::parse(&format!("discovery: kubernetes\n{yaml}")).unwrap()
}

fn key(ns: &str, name: &str) -> RevisionKey {
    RevisionKey::new(ns, name)
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// A state that has listed `revs` and `eps`, as after the first sync.
fn listed(pod_ip: Option<&str>, revs: Vec<KnativeRevision>, eps: Vec<KubeEndpoints>) -> State {
    let mut s = State {
        pod_ip: pod_ip.map(|ip| ip.parse().unwrap()),
        ..State::default()
    };
    s.on_revision(Ok(watcher::Event::Init));
    for r in revs {
        s.on_revision(Ok(watcher::Event::InitApply(r)));
    }
    s.on_revision(Ok(watcher::Event::InitDone));
    s.on_endpoints(Ok(watcher::Event::Init));
    for e in eps {
        s.on_endpoints(Ok(watcher::Event::InitApply(e)));
    }
    s.on_endpoints(Ok(watcher::Event::InitDone));
    assert!(!s.listed(), "listed before every watch is done");
    s.on_service(Ok(watcher::Event::Init));
    s.on_service(Ok(watcher::Event::InitDone));
    assert!(s.listed());
    s
}

#[test]
fn revision_spec_is_read_as_knative_reads_it() {
    let spec = objects::spec_of(
        key("prod", "hello-00001"),
        &json!({
            "containerConcurrency": 4,
            "timeoutSeconds": 120,
            "responseStartTimeoutSeconds": 30,
            "idleTimeoutSeconds": 0,
            "containers": [{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}],
        }),
    );
    assert_eq!(spec.container_concurrency, 4);
    assert_eq!(spec.timeout, Duration::from_secs(120));
    assert_eq!(spec.response_start_timeout, Some(Duration::from_secs(30)));
    assert_eq!(spec.idle_timeout, None);
    assert_eq!(spec.protocol, Protocol::H2c);

    // Missing and odd fields: defaults, never a panic.
    let odd = objects::spec_of(
        key("prod", "odd"),
        &json!({
            "containerConcurrency": "lots",
            "timeoutSeconds": -5,
            "idleTimeoutSeconds": 1.5,
            "containers": [{"ports": [{"name": "http1"}]}, {"ports": "none"}],
        }),
    );
    assert_eq!(odd.container_concurrency, 0);
    assert_eq!(odd.timeout, Duration::from_secs(300));
    assert_eq!(odd.idle_timeout, None);
    assert_eq!(odd.protocol, Protocol::Http1);
    let empty = objects::spec_of(key("prod", "empty"), &serde_json::Value::Null);
    assert_eq!(empty.container_concurrency, 0);
    assert_eq!(empty.protocol, Protocol::Http1);
}

#[test]
fn a_revision_only_in_the_api_is_served_with_its_pods_ready_or_not() {
    let cfg = config("");
    let mut s = listed(
        None,
        vec![revision(
            "prod",
            "hello",
            json!({"containerConcurrency": 1}),
        )],
        vec![endpoints(
            "prod",
            "hello",
            "Private",
            &["10.0.0.2"],
            &["10.0.0.1"],
            Some(("http", 8012)),
        )],
    );
    assert_eq!(s.recompute(&cfg), (true, true));
    let k = key("prod", "hello");
    assert_eq!(s.revisions[&k].container_concurrency, 1);
    assert_eq!(
        &*s.endpoints[&k],
        addrs(&["10.0.0.1:8012", "10.0.0.2:8012"]).as_slice()
    );
    // Nothing changed: nothing to publish.
    assert_eq!(s.recompute(&cfg), (false, false));
}

#[test]
fn the_port_follows_the_protocol_and_addresses_without_a_port_name_are_skipped() {
    let cfg = config("");
    let h2c = json!({"containers": [{"ports": [{"name": "h2c", "containerPort": 8080}]}]});
    let mut s = listed(
        None,
        vec![
            revision("prod", "grpc", h2c),
            revision("prod", "noport", json!({})),
        ],
        vec![
            endpoints(
                "prod",
                "grpc",
                "Private",
                &["10.0.0.3"],
                &[],
                Some(("http2", 8013)),
            ),
            endpoints("prod", "noport", "Private", &["10.0.0.4"], &[], None),
        ],
    );
    s.recompute(&cfg);
    assert_eq!(
        &*s.endpoints[&key("prod", "grpc")],
        addrs(&["10.0.0.3:8013"]).as_slice()
    );
    assert!(!s.endpoints.contains_key(&key("prod", "noport")));
    assert!(s.revisions.contains_key(&key("prod", "noport")));
}

#[test]
fn public_endpoints_give_this_activators_index_and_it_sticks_when_it_drops_out() {
    let cfg = config("");
    let mut s = listed(
        Some("10.1.0.2"),
        vec![revision(
            "prod",
            "hello",
            json!({"containerConcurrency": 1}),
        )],
        vec![endpoints(
            "prod",
            "hello",
            "Public",
            &["10.1.0.2", "10.1.0.10", "10.1.0.3"],
            &[],
            Some(("http", 8012)),
        )],
    );
    s.recompute(&cfg);
    let k = key("prod", "hello");
    // Text order: 10.1.0.10, 10.1.0.2, 10.1.0.3.
    assert_eq!(
        s.revisions[&k].activators,
        Some(Subset { index: 1, count: 3 })
    );
    // Serve mode: the public Endpoints list pods, not us; Knative keeps the last index.
    s.on_endpoints(Ok(watcher::Event::Apply(endpoints(
        "prod",
        "hello",
        "Public",
        &["10.9.9.9"],
        &[],
        Some(("http", 8012)),
    ))));
    s.recompute(&cfg);
    assert_eq!(
        s.revisions[&k].activators,
        Some(Subset { index: 1, count: 3 })
    );
    // Back in the path with another set.
    s.on_endpoints(Ok(watcher::Event::Apply(endpoints(
        "prod",
        "hello",
        "Public",
        &["10.1.0.2", "10.1.0.1"],
        &[],
        Some(("http", 8012)),
    ))));
    s.recompute(&cfg);
    assert_eq!(
        s.revisions[&k].activators,
        Some(Subset { index: 1, count: 2 })
    );
}

#[test]
fn a_deleted_revision_leaves_both_tables_and_a_relist_drops_what_vanished() {
    let cfg = config("");
    let mut s = listed(
        None,
        vec![
            revision("prod", "a", json!({})),
            revision("prod", "b", json!({})),
        ],
        vec![
            endpoints(
                "prod",
                "a",
                "Private",
                &["10.0.0.1"],
                &[],
                Some(("http", 8012)),
            ),
            endpoints(
                "prod",
                "b",
                "Private",
                &["10.0.0.2"],
                &[],
                Some(("http", 8012)),
            ),
        ],
    );
    s.recompute(&cfg);
    s.on_revision(Ok(watcher::Event::Delete(revision("prod", "a", json!({})))));
    assert_eq!(s.recompute(&cfg), (true, true));
    assert!(!s.revisions.contains_key(&key("prod", "a")));
    assert!(!s.endpoints.contains_key(&key("prod", "a")));
    // A relist (after 410 Gone) that no longer has `b` drops it; until InitDone it stays.
    s.on_revision(Ok(watcher::Event::Init));
    s.on_revision(Ok(watcher::Event::InitApply(revision(
        "prod",
        "c",
        json!({}),
    ))));
    assert_eq!(s.recompute(&cfg), (false, false));
    assert!(s.revisions.contains_key(&key("prod", "b")));
    s.on_revision(Ok(watcher::Event::InitDone));
    s.recompute(&cfg);
    assert!(!s.revisions.contains_key(&key("prod", "b")));
    assert!(s.revisions.contains_key(&key("prod", "c")));
}

#[test]
fn config_entries_override_the_api_per_revision_and_may_add_revisions() {
    let cfg = config(
        "revisions:\n  - name: hello\n    namespace: prod\n    container_concurrency: 7\n    hosts: [api.example.com]\n  - name: extra\n    namespace: prod\n",
    );
    let mut s = listed(
        None,
        vec![revision(
            "prod",
            "hello",
            json!({"containerConcurrency": 1}),
        )],
        vec![],
    );
    s.mark_all();
    s.recompute(&cfg);
    assert_eq!(s.revisions[&key("prod", "hello")].container_concurrency, 7);
    assert_eq!(
        s.revisions[&key("prod", "hello")].hosts,
        ["api.example.com"]
    );
    assert!(s.revisions.contains_key(&key("prod", "extra")));
}

#[test]
fn an_unchanged_revision_keeps_its_published_entry() {
    let cfg = config("");
    let mut s = listed(
        None,
        vec![revision(
            "prod",
            "hello",
            json!({"containerConcurrency": 2}),
        )],
        vec![],
    );
    s.recompute(&cfg);
    let before = s.revisions[&key("prod", "hello")].clone();
    // A status-only update: same spec.
    s.on_revision(Ok(watcher::Event::Apply(revision(
        "prod",
        "hello",
        json!({"containerConcurrency": 2}),
    ))));
    assert_eq!(s.recompute(&cfg), (false, false));
    assert!(Arc::ptr_eq(&before, &s.revisions[&key("prod", "hello")]));
}

#[test]
fn objects_without_the_labels_are_ignored() {
    let mut e = endpoints(
        "prod",
        "x",
        "Private",
        &["10.0.0.1"],
        &[],
        Some(("http", 8012)),
    );
    e.metadata.labels = Some(BTreeMap::from([(
        objects::SERVICE_TYPE_LABEL.into(),
        "Private".into(),
    )]));
    assert!(objects::classify(&e.metadata).is_none());
    e.metadata.labels = Some(BTreeMap::from([
        (objects::REVISION_LABEL.into(), "x".into()),
        (objects::SERVICE_TYPE_LABEL.into(), "Other".into()),
    ]));
    assert!(objects::classify(&e.metadata).is_none());
}

fn private_service(ns: &str, rev: &str, cluster_ip: &str, port: (&str, i32)) -> Service {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(format!("{rev}-private")),
            labels: Some(BTreeMap::from([
                (objects::REVISION_LABEL.into(), rev.into()),
                (objects::SERVICE_TYPE_LABEL.into(), "Private".into()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(vec![ServicePort {
                name: Some(port.0.into()),
                port: port.1,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[test]
fn mesh_mode_dials_the_private_service_and_counts_ready_pods_behind_it() {
    let mut s = listed(
        Some("10.1.0.1"),
        vec![revision(
            "prod",
            "hello",
            json!({"containerConcurrency": 10}),
        )],
        vec![
            endpoints(
                "prod",
                "hello",
                "Private",
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                &["10.0.0.4"],
                Some(("http", 8012)),
            ),
            endpoints(
                "prod",
                "hello",
                "Public",
                &["10.1.0.1", "10.1.0.2"],
                &[],
                Some(("http", 8012)),
            ),
        ],
    );
    s.on_service(Ok(watcher::Event::Init));
    s.on_service(Ok(watcher::Event::InitApply(private_service(
        "prod",
        "hello",
        "10.96.0.5",
        ("http", 80),
    ))));
    s.on_service(Ok(watcher::Event::InitApply(private_service(
        "prod",
        "headless",
        "None",
        ("http", 80),
    ))));
    s.on_service(Ok(watcher::Event::InitDone));
    let k = key("prod", "hello");
    // Mesh disabled (the default): the pods themselves.
    s.recompute(&config(""));
    assert_eq!(s.endpoints[&k].len(), 4);
    assert_eq!(s.revisions[&k].cluster_ip, None);
    // Enabled: the cluster IP alone, with the ready pods behind it as the backend count.
    s.mark_all();
    s.recompute(&config("kubernetes:\n  mesh: enabled\n"));
    assert_eq!(&*s.endpoints[&k], addrs(&["10.96.0.5:80"]).as_slice());
    let spec = &s.revisions[&k];
    assert_eq!(
        spec.cluster_ip,
        Some(ClusterRoute {
            addr: "10.96.0.5:80".parse().unwrap(),
            backends: 3
        })
    );
    assert_eq!(spec.activators, Some(Subset { index: 0, count: 2 }));
    // Scaled to zero: nothing to dial.
    s.on_endpoints(Ok(watcher::Event::Apply(endpoints(
        "prod",
        "hello",
        "Private",
        &[],
        &[],
        Some(("http", 8012)),
    ))));
    s.recompute(&config("kubernetes:\n  mesh: enabled\n"));
    assert!(!s.endpoints.contains_key(&k));
}
