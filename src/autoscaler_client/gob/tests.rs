use super::*;

/// Golden vectors from Go 1.19 `encoding/gob` (shared/vectors/README.md).
pub(crate) const GOB_1: &str = "2bff810301010b537461744d65737361676501ff8200010201034b6579010c0001045374617401ff84000000ff94ff83030101045374617401ff84000106010454696d6501ff86000107506f644e616d65010c00011941766572616765436f6e63757272656e74526571756573747301080001204176657261676550726f78696564436f6e63757272656e745265717565737473010800010c52657175657374436f756e74010400011350726f7869656452657175657374436f756e7401040000000aff85050102ff8800000028ff82011b64656661756c742f68656c6c6f776f726c642d676f2d30303030310103fef03f02020000";
pub(crate) const GOB_2: &str = "2bff810301010b537461744d65737361676501ff8200010201034b6579010c0001045374617401ff84000000ff94ff83030101045374617401ff84000106010454696d6501ff86000107506f644e616d65010c00011941766572616765436f6e63757272656e74526571756573747301080001204176657261676550726f78696564436f6e63757272656e745265717565737473010800010c52657175657374436f756e74010400011350726f7869656452657175657374436f756e7401040000000aff85050102ff8800000030ff82011364656661756c742f68656c6c6f2d303030303101020e6b616374697661746f722d61626301fef03f02020000";

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn poke(pod_name: &str) -> GobStat {
    GobStat {
        pod_name: pod_name.into(),
        average_concurrent_requests: 1.0,
        request_count: 1.0,
        ..GobStat::default()
    }
}

#[test]
fn encodes_golden_vector_1_byte_for_byte() {
    let frame = encode("default/helloworld-go-00001", &poke(""));
    assert_eq!(frame.len(), 246);
    assert_eq!(frame, unhex(GOB_1));
}

#[test]
fn encodes_golden_vector_2_byte_for_byte() {
    let frame = encode("default/hello-00001", &poke("kactivator-abc"));
    assert_eq!(frame.len(), 254);
    assert_eq!(frame, unhex(GOB_2));
}

#[test]
fn decodes_golden_vectors() {
    let got = decode(&unhex(GOB_1)).unwrap();
    assert_eq!(
        got,
        vec![GobStat {
            namespace: "default".into(),
            name: "helloworld-go-00001".into(),
            ..poke("")
        }]
    );
    let got = decode(&unhex(GOB_2)).unwrap();
    assert_eq!(
        got,
        vec![GobStat {
            namespace: "default".into(),
            name: "hello-00001".into(),
            ..poke("kactivator-abc")
        }]
    );
}

#[test]
fn round_trips_every_field_and_large_numbers() {
    let stat = GobStat {
        namespace: "ns".into(),
        name: "rev".into(),
        pod_name: "p".repeat(300),
        average_concurrent_requests: 12.75,
        average_proxied_concurrent_requests: 3.5,
        request_count: 100_000.0,
        proxied_request_count: -7.0,
    };
    let got = decode(&encode("ns/rev", &stat)).unwrap();
    assert_eq!(got, vec![stat]);
}

#[test]
fn counts_saturate_to_int32() {
    let stat = GobStat {
        request_count: 1e12,
        ..GobStat::default()
    };
    let got = decode(&encode("a/b", &stat)).unwrap();
    assert_eq!(got[0].request_count, f64::from(i32::MAX));
}

#[test]
fn uint_and_int_encodings_match_go() {
    let mut v = Vec::new();
    put_uint(&mut v, 148);
    assert_eq!(v, [0xff, 0x94]);
    v.clear();
    put_int(&mut v, -65);
    assert_eq!(v, [0xff, 0x81]);
    v.clear();
    put_int(&mut v, 65);
    assert_eq!(v, [0xff, 0x82]);
    v.clear();
    put_float(&mut v, 1.0);
    assert_eq!(v, [0xfe, 0xf0, 0x3f]);
    v.clear();
    put_uint(&mut v, u64::MAX);
    assert_eq!(v.len(), 9);
    assert_eq!(Reader::new(&v).uint().unwrap(), u64::MAX);
}

#[test]
fn accepts_a_value_with_time_set_and_unknown_fields_skipped() {
    // Go v0.6 activators could set Time (a GobEncoder: opaque bytes). Build the value by hand:
    // Time (field 0) = 15 opaque bytes, then ACR.
    let mut value = Vec::new();
    put_int(&mut value, 65);
    value.extend_from_slice(&[0x01]);
    put_bytes(&mut value, b"ns/rev");
    value.extend_from_slice(&[0x01, 0x01]);
    put_bytes(&mut value, &[1; 15]);
    value.push(0x02);
    put_float(&mut value, 2.5);
    value.extend_from_slice(&[0x00, 0x00]);
    let mut frame = TYPE_DEFINITIONS.to_vec();
    put_uint(&mut frame, value.len() as u64);
    frame.extend_from_slice(&value);
    let got = decode(&frame).unwrap();
    assert_eq!(got[0].average_concurrent_requests, 2.5);
    assert_eq!(
        (got[0].namespace.as_str(), got[0].name.as_str()),
        ("ns", "rev")
    );
}

#[test]
fn rejects_garbage_without_panicking() {
    let golden = unhex(GOB_2);
    // Every truncation and every single-byte corruption: an error or a value, never a panic.
    for n in 0..golden.len() {
        assert!(decode(&golden[..n]).is_err(), "truncated at {n}");
    }
    for i in 0..golden.len() {
        for b in [0x00, 0x01, 0x7f, 0x80, 0xf8, 0xff] {
            let mut g = golden.clone();
            g[i] = b;
            let _ = decode(&g);
        }
    }
    // A type id of i64::MIN (uint u64::MAX) must not overflow when negated.
    let min_id = [
        0x0a, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
    ];
    assert!(decode(&min_id).is_err());
    for garbage in [
        &b""[..],
        b"\x00",
        b"hello world",
        b"\xff\xff\xff\xff",
        b"\x0a\x02\x08\x01",
    ] {
        assert!(decode(garbage).is_err());
    }
}

#[test]
fn rejects_a_key_without_namespace() {
    let frame = encode("no-slash", &poke(""));
    assert!(matches!(
        decode(&frame),
        Err(GobError::Field { field: "Key", .. })
    ));
}

#[test]
fn random_bytes_and_random_mutations_never_panic() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let golden = unhex(GOB_1);
    for _ in 0..5_000 {
        let len = rng.random_range(0..300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = decode(&bytes);
        let mut g = golden.clone();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..g.len());
            g[i] = rng.random();
        }
        let _ = decode(&g);
    }
}
