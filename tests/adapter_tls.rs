//! Adapter TLS and mTLS with certificates generated in the test (rcgen, ring).
#![allow(clippy::unwrap_used)]

mod support;

use kactivator::cli::Mode;
use support::{
    app::start,
    autoscaler::FakeAutoscaler,
    mixer::{EXT_AUTHZ_PATH, ext_authz_request, pki, raw_call, tls_channel},
};

#[tokio::test]
async fn mtls_accepts_a_client_with_a_certificate_and_refuses_one_without() {
    let fake = FakeAutoscaler::start().await;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let yaml = format!(
        "autoscaler:\n  url: {}\nadapter:\n  tls:\n    cert: {}\n    key: {}\n    client_ca: {}\n",
        fake.url(),
        path("server.pem", &pki.server_cert),
        path("server.key", &pki.server_key),
        path("ca.pem", &pki.ca),
    );
    let app = start(Mode::Adapter, &yaml).await;
    let addr = app.addrs.grpc.unwrap();

    let ch = tls_channel(addr, &pki, true).await.unwrap();
    let reply = raw_call(ch, EXT_AUTHZ_PATH, ext_authz_request("a.b.svc", &[]))
        .await
        .unwrap();
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);

    // Without a client certificate the handshake (or the first call) fails.
    let refused = match tls_channel(addr, &pki, false).await {
        Err(_) => true,
        Ok(ch) => raw_call(ch, EXT_AUTHZ_PATH, ext_authz_request("a.b.svc", &[]))
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_without_a_client_ca_serves_any_client() {
    let fake = FakeAutoscaler::start().await;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("s.pem"), dir.path().join("s.key"));
    std::fs::write(&cert, &pki.server_cert).unwrap();
    std::fs::write(&key, &pki.server_key).unwrap();
    let yaml = format!(
        "autoscaler:\n  url: {}\nadapter:\n  tls:\n    cert: {}\n    key: {}\n",
        fake.url(),
        cert.display(),
        key.display()
    );
    let app = start(Mode::Adapter, &yaml).await;
    let ch = tls_channel(app.addrs.grpc.unwrap(), &pki, false)
        .await
        .unwrap();
    let reply = raw_call(ch, EXT_AUTHZ_PATH, ext_authz_request("a.b.svc", &[]))
        .await
        .unwrap();
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);
    app.shutdown().await.unwrap();
}
