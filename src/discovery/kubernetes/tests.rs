use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use super::*;

fn port(name: Option<&str>, number: i32) -> EndpointPort {
    EndpointPort {
        name: name.map(Into::into),
        port: Some(number),
        ..EndpointPort::default()
    }
}

fn endpoint(ip: &str, ready: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        conditions: Some(EndpointConditions {
            ready,
            ..EndpointConditions::default()
        }),
        ..Endpoint::default()
    }
}

fn slice(address_type: &str, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        address_type: address_type.into(),
        ports: Some(ports),
        endpoints,
        ..EndpointSlice::default()
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn ready_and_unknown_endpoints_count_unready_ones_do_not() {
    let s = slice(
        "IPv4",
        vec![port(Some("http"), 8012)],
        vec![
            endpoint("10.0.0.1", Some(true)),
            endpoint("10.0.0.2", Some(false)),
            endpoint("10.0.0.3", None),
            Endpoint {
                addresses: vec!["10.0.0.4".into()],
                conditions: None,
                ..Endpoint::default()
            },
        ],
    );
    assert_eq!(
        ready_addresses(&s, "http"),
        addrs(&["10.0.0.1:8012", "10.0.0.3:8012", "10.0.0.4:8012"])
    );
}

#[test]
fn the_named_port_wins_over_the_others() {
    let s = slice(
        "IPv4",
        vec![
            port(Some("http-queueadm"), 8022),
            port(Some("http"), 8012),
            port(Some("http2"), 8013),
        ],
        vec![endpoint("10.0.0.1", Some(true))],
    );
    assert_eq!(ready_addresses(&s, "http"), addrs(&["10.0.0.1:8012"]));
    assert_eq!(ready_addresses(&s, "http2"), addrs(&["10.0.0.1:8013"]));
    assert!(
        ready_addresses(&s, "grpc").is_empty(),
        "no fallback among several ports"
    );
}

#[test]
fn a_lone_port_is_used_whatever_its_name() {
    let s = slice(
        "IPv4",
        vec![port(None, 8080)],
        vec![endpoint("10.0.0.1", Some(true))],
    );
    assert_eq!(ready_addresses(&s, "http"), addrs(&["10.0.0.1:8080"]));
}

#[test]
fn unusable_slices_contribute_nothing() {
    let fqdn = slice(
        "FQDN",
        vec![port(Some("http"), 80)],
        vec![endpoint("pod.example.com", Some(true))],
    );
    assert!(ready_addresses(&fqdn, "http").is_empty());
    let all_ports = slice(
        "IPv4",
        vec![EndpointPort {
            name: Some("http".into()),
            ..EndpointPort::default()
        }],
        vec![endpoint("10.0.0.1", Some(true))],
    );
    assert!(ready_addresses(&all_ports, "http").is_empty());
    let no_ports = EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: vec![endpoint("10.0.0.1", Some(true))],
        ..EndpointSlice::default()
    };
    assert!(ready_addresses(&no_ports, "http").is_empty());
    let bad_port = slice(
        "IPv4",
        vec![port(Some("http"), 70_000)],
        vec![endpoint("10.0.0.1", Some(true))],
    );
    assert!(ready_addresses(&bad_port, "http").is_empty());
}

#[test]
fn ipv6_addresses_keep_their_port() {
    let s = slice(
        "IPv6",
        vec![port(Some("http"), 8012)],
        vec![endpoint("fd00::1", Some(true))],
    );
    assert_eq!(ready_addresses(&s, "http"), addrs(&["[fd00::1]:8012"]));
}

#[test]
fn services_are_grouped_by_namespace_into_one_selector() {
    let cfg = Config::parse(
        "discovery: kubernetes
revisions:
  - {namespace: a, name: two}
  - {namespace: a, name: one}
  - {namespace: b, name: three}
",
    )
    .unwrap();
    let wanted = wanted_services(&cfg);
    assert_eq!(wanted.len(), 2);
    assert_eq!(
        selector(&wanted["a"]),
        "kubernetes.io/service-name in (one-private,two-private)"
    );
    assert_eq!(
        selector(&wanted["b"]),
        "kubernetes.io/service-name in (three-private)"
    );
}
