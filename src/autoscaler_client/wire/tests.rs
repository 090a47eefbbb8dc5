use super::*;
use crate::autoscaler_client::gob::tests::{GOB_1, GOB_2, unhex};

/// Golden vectors from Python `protobuf` (shared/vectors/README.md).
const PB_1: &str = "0a320a0764656661756c74121368656c6c6f776f726c642d676f2d30303030311a1211000000000000f03f21000000000000f03f";
const PB_2: &str = "0a390a0764656661756c74120b68656c6c6f2d30303030311a210a0d616374697661746f722d61626311000000000000f03f21000000000000f03f";

fn poke(ns: &str, name: &str) -> Stat {
    Stat {
        key: RevisionKey::new(ns, name),
        average_concurrent_requests: 1.0,
        request_count: 1.0,
    }
}

#[test]
fn protobuf_golden_vector_1() {
    let frame = encode_protobuf(&[poke("default", "helloworld-go-00001")], "");
    assert_eq!(frame.len(), 52);
    assert_eq!(frame, unhex(PB_1));
}

#[test]
fn protobuf_golden_vector_2() {
    let frame = encode_protobuf(&[poke("default", "hello-00001")], "activator-abc");
    assert_eq!(frame.len(), 59);
    assert_eq!(frame, unhex(PB_2));
}

#[test]
fn protobuf_always_writes_stat_even_when_zero() {
    let frame = encode_protobuf(
        &[Stat {
            key: RevisionKey::new("a", "b"),
            average_concurrent_requests: 0.0,
            request_count: 0.0,
        }],
        "",
    );
    assert!(frame.ends_with(&[0x1a, 0x00]), "{frame:02x?}");
}

#[test]
fn gob_golden_vectors_through_the_batch_encoder() {
    let frames = encode(
        Encoding::Gob,
        &[
            poke("default", "helloworld-go-00001"),
            poke("default", "hello-00001"),
        ],
        "",
    );
    assert_eq!(frames.len(), 2, "one StatMessage per frame");
    assert_eq!(frames[0], unhex(GOB_1));
    assert_eq!(
        encode_gob(&poke("default", "hello-00001"), "kactivator-abc"),
        unhex(GOB_2)
    );
}

#[test]
fn decode_detects_the_encoding_per_frame() {
    for (hex, enc, name, pod) in [
        (PB_1, Encoding::Protobuf, "helloworld-go-00001", ""),
        (PB_2, Encoding::Protobuf, "hello-00001", "activator-abc"),
        (GOB_1, Encoding::Gob, "helloworld-go-00001", ""),
        (GOB_2, Encoding::Gob, "hello-00001", "kactivator-abc"),
    ] {
        let (got_enc, stats) = decode(&unhex(hex)).unwrap();
        assert_eq!(got_enc, enc);
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!(s.key, RevisionKey::new("default", name));
        assert_eq!(s.pod_name, pod);
        assert_eq!((s.average_concurrent_requests, s.request_count), (1.0, 1.0));
    }
}

#[test]
fn decode_rejects_garbage() {
    for garbage in [&b""[..], b"garbage!", b"\xff\xfe\xfd", b"\x0a\x00"] {
        assert!(decode(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn decode_skips_messages_without_stat() {
    let batch = pb::WireStatMessages {
        messages: vec![
            pb::WireStatMessage {
                namespace: "a".into(),
                name: "b".into(),
                stat: None,
            },
            pb::WireStatMessage {
                namespace: "a".into(),
                name: "c".into(),
                stat: Some(pb::Stat::default()),
            },
        ],
    };
    let (_, stats) = decode(&batch.encode_to_vec()).unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].key.name(), "c");
}
