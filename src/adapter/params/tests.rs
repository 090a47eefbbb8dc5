use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use prost::Message as _;

use super::*;
use crate::{adapter::poke::Sink, revision::RevisionKey};

#[derive(Debug, Default)]
struct Null;

impl Sink for Null {
    fn poke(&self, _key: &RevisionKey) {}
}

fn targets(limit: usize) -> (Targets, Arc<AtomicUsize>) {
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let t = Targets::new(
        Arc::new(Null),
        Some("ws://default:8080".into()),
        Box::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Arc::new(Null)
        }),
        limit,
    );
    (t, connects)
}

fn any(endpoint: &str) -> prost_types::Any {
    prost_types::Any {
        type_url: PARAMS_TYPE_URL.into(),
        value: Params {
            autoscaler_endpoint: endpoint.into(),
        }
        .encode_to_vec(),
    }
}

#[test]
fn absent_or_empty_config_selects_the_default() {
    let (t, connects) = targets(4);
    assert_eq!(t.resolve(None, Api::Authorization).unwrap().id(), 0);
    assert_eq!(
        t.resolve(Some(&any("")), Api::Authorization).unwrap().id(),
        0
    );
    assert_eq!(
        t.resolve(Some(&any("ws://default:8080")), Api::Authorization)
            .unwrap()
            .id(),
        0
    );
    assert_eq!(connects.load(Ordering::SeqCst), 0);
}

#[test]
fn an_endpoint_gets_one_lazily_connected_client() {
    let (t, connects) = targets(4);
    let a = t.resolve(Some(&any("ws://a:8080")), Api::Metric).unwrap();
    let again = t.resolve(Some(&any("ws://a:8080")), Api::Metric).unwrap();
    let b = t.resolve(Some(&any("ws://b:8080")), Api::Metric).unwrap();
    assert_eq!(a.id(), again.id());
    assert_ne!(a.id(), b.id());
    assert_ne!(a.id(), 0);
    assert_eq!(connects.load(Ordering::SeqCst), 2);
}

#[test]
fn endpoints_beyond_the_limit_use_the_default() {
    let (t, connects) = targets(2);
    t.resolve(Some(&any("ws://a:1")), Api::Metric).unwrap();
    t.resolve(Some(&any("ws://b:1")), Api::Metric).unwrap();
    let c = t.resolve(Some(&any("ws://c:1")), Api::Metric).unwrap();
    assert_eq!(c.id(), 0);
    assert_eq!(connects.load(Ordering::SeqCst), 2);
}

#[test]
fn wrong_type_bad_bytes_and_bad_urls_are_invalid_arguments() {
    let (t, _) = targets(2);
    let wrong = prost_types::Any {
        type_url: "type.googleapis.com/adapter.other.config.Params".into(),
        value: vec![],
    };
    let err = t.resolve(Some(&wrong), Api::Authorization).unwrap_err();
    assert!(
        err.to_string().contains("adapter.other.config.Params"),
        "{err}"
    );
    let garbage = prost_types::Any {
        type_url: PARAMS_TYPE_URL.into(),
        value: vec![0x0a, 0x05, b'x'],
    };
    assert!(matches!(
        t.resolve(Some(&garbage), Api::Authorization),
        Err(CallError::Params(_))
    ));
    assert!(matches!(
        t.resolve(Some(&any("http://a:1")), Api::Authorization),
        Err(CallError::Endpoint(_))
    ));
    let status = CallError::Endpoint("http://a:1".into()).into_status(Api::Authorization);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}
