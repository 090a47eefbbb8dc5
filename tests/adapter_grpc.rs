//! Adapter over real gRPC on 127.0.0.1: wire compatibility with Mixer's and Envoy's encodings
//! (generated clients and hand-encoded bytes), bad input, health and drain.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kactivator::{
    cli::Mode,
    proto::{
        authorization::{
            ActionMsg, HandleAuthorizationRequest, InstanceMsg,
            handle_authorization_service_client::HandleAuthorizationServiceClient,
        },
        envoy::{
            config::core::v3::{HeaderMap, HeaderValue},
            service::auth::v3::{
                AttributeContext, CheckRequest, attribute_context,
                authorization_client::AuthorizationClient, check_response::HttpResponse,
            },
        },
    },
};
use support::{
    app::{TestApp, admin_get, metric_value, start},
    autoscaler::FakeAutoscaler,
    mixer::*,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn adapter(fake: &FakeAutoscaler, extra: &str) -> TestApp {
    let yaml = format!(
        "autoscaler:\n  url: {}\nadapter:\n  poke_interval: 1s\n  check_valid_duration: 1s\n  check_valid_use_count: 10000\n{extra}",
        fake.url()
    );
    start(Mode::Adapter, &yaml).await
}

fn grpc(app: &TestApp) -> std::net::SocketAddr {
    app.addrs.grpc.unwrap()
}

#[tokio::test]
async fn authorization_answers_ok_to_the_generated_client() {
    let fake = FakeAutoscaler::start().await;
    let app = adapter(&fake, "").await;
    let mut client = HandleAuthorizationServiceClient::new(channel(grpc(&app)).await);
    let reply = client
        .handle_authorization(HandleAuthorizationRequest {
            instance: Some(InstanceMsg {
                name: "kactivator.instance.istio-system".into(),
                subject: None,
                action: Some(ActionMsg {
                    namespace: "default".into(),
                    service: "hello-00001-private".into(),
                    ..ActionMsg::default()
                }),
            }),
            adapter_config: None,
            dedup_id: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status.unwrap().code, 0);
    assert_eq!(reply.valid_duration.unwrap().seconds, 1);
    assert_eq!(reply.valid_use_count, 10_000);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn hand_encoded_mixer_and_envoy_calls_get_the_documented_bytes() {
    let fake = FakeAutoscaler::start().await;
    let app = adapter(&fake, "").await;
    let ch = channel(grpc(&app)).await;

    // InstanceMsg.name at field 72295727 (a 5-byte tag), Params in an Any, dedup_id.
    let body = authorization_request("default", "hello-00001-priv", "");
    assert_eq!(
        &body[2..7],
        &[0xfa, 0xd2, 0xe4, 0x93, 0x02],
        "tag of field 72295727"
    );
    let reply = raw_call(ch.clone(), AUTHORIZATION_PATH, body)
        .await
        .unwrap();
    // status{} (code 0), valid_duration{seconds: 1}, valid_use_count 10000.
    assert_eq!(
        reply,
        [0x0a, 0x00, 0x12, 0x02, 0x08, 0x01, 0x18, 0x90, 0x4e]
    );

    let body = metric_request(&[&[("namespace", "default"), ("revision", "hello-00001")]]);
    let reply = raw_call(ch.clone(), METRIC_PATH, body).await.unwrap();
    assert!(
        reply.is_empty(),
        "ReportResult{{}} is zero bytes: {reply:02x?}"
    );

    let body = ext_authz_request("hello-00001.default.svc.cluster.local", &[(":path", "/")]);
    let reply = raw_call(ch.clone(), EXT_AUTHZ_PATH, body).await.unwrap();
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);

    // A host that names no revision is still allowed.
    let body = ext_authz_request("www.example.com", &[]);
    let reply = raw_call(ch, EXT_AUTHZ_PATH, body).await.unwrap();
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);

    let (_, metrics) = admin_get(&app, "/metrics").await;
    for api in ["authorization", "metric", "ext_authz"] {
        let line = format!("kactivator_adapter_calls_total{{api=\"{api}\"}}");
        assert!(
            metric_value(&metrics, &line).unwrap() >= 1.0,
            "{line}\n{metrics}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn ext_authz_generated_client_with_header_map_is_allowed() {
    let fake = FakeAutoscaler::start().await;
    let app = adapter(&fake, "").await;
    let mut client = AuthorizationClient::new(channel(grpc(&app)).await);
    let http = attribute_context::HttpRequest {
        header_map: Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "knative-serving-revision".into(),
                    value: String::new(),
                    raw_value: b"hello-00001".to_vec(),
                },
                HeaderValue {
                    key: "knative-serving-namespace".into(),
                    value: "default".into(),
                    raw_value: vec![],
                },
            ],
        }),
        ..Default::default()
    };
    let reply = client
        .check(CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(http),
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status.unwrap().code, 0);
    assert!(matches!(
        reply.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn garbage_and_wrong_types_are_grpc_errors_and_the_server_stays_healthy() {
    let fake = FakeAutoscaler::start().await;
    let app = adapter(&fake, "").await;
    let ch = channel(grpc(&app)).await;

    for path in [AUTHORIZATION_PATH, METRIC_PATH, EXT_AUTHZ_PATH] {
        // A length prefix that runs past the end of the message.
        let err = raw_call(ch.clone(), path, vec![0x0a, 0xff, 0xff, 0x01, 0x00])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.code(),
                tonic::Code::Internal | tonic::Code::InvalidArgument
            ),
            "{path}: {err:?}"
        );
    }

    // adapter_config of another adapter's Params.
    let mut body = authorization_request("default", "hello", "");
    let other = [
        len_field(1, b"type.googleapis.com/adapter.other.config.Params"),
        len_field(2, b""),
    ]
    .concat();
    body.extend(len_field(2, &other)); // the last occurrence of a message field merges
    let err = raw_call(ch.clone(), AUTHORIZATION_PATH, body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("adapter.kactivator.config.Params"),
        "{err:?}"
    );

    // Undecodable Params, and an endpoint that is not a websocket URL.
    let mut body = authorization_request("default", "hello", "");
    let bad = [
        len_field(1, b"type.googleapis.com/adapter.kactivator.config.Params"),
        len_field(2, &[0x0a, 0x09, b'w']),
    ]
    .concat();
    body = [body, len_field(2, &bad)].concat();
    let err = raw_call(ch.clone(), AUTHORIZATION_PATH, body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = raw_call(
        ch.clone(),
        METRIC_PATH,
        [
            metric_request(&[&[("namespace", "default"), ("revision", "a")]]),
            len_field(2, &params_any("http://wrong:1")),
        ]
        .concat(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Empty names are allowed (never deny), and counted.
    let reply = raw_call(
        ch.clone(),
        AUTHORIZATION_PATH,
        authorization_request("", "", ""),
    )
    .await
    .unwrap();
    assert_eq!(&reply[..2], &[0x0a, 0x00]);

    let mut health = HealthClient::new(ch);
    let status = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    let (_, metrics) = admin_get(&app, "/metrics").await;
    assert!(
        metric_value(
            &metrics,
            "kactivator_adapter_errors_total{api=\"authorization\",reason=\"config_type\"}"
        )
        .unwrap()
            >= 1.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "kactivator_adapter_errors_total{api=\"authorization\",reason=\"no_revision\"}"
        )
        .unwrap()
            >= 1.0,
        "{metrics}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_is_serving_then_not_serving_once_draining_starts() {
    let fake = FakeAutoscaler::start().await;
    let app = adapter(&fake, "").await;
    let mut health = HealthClient::new(channel(grpc(&app)).await);
    for service in [
        "",
        "authorization.HandleAuthorizationService",
        "metric.HandleMetricService",
        "envoy.service.auth.v3.Authorization",
    ] {
        let req = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(req).await.unwrap().into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    app.drain().start_draining();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("NOT_SERVING within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    // Still answering calls while draining (the listener stays open until closing).
    let ch = channel(grpc(&app)).await;
    let reply = raw_call(ch, EXT_AUTHZ_PATH, ext_authz_request("a.b.svc", &[]))
        .await
        .unwrap();
    assert_eq!(reply, [0x0a, 0x00, 0x1a, 0x00]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_tls_file_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let yaml = format!(
        "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\nautoscaler:\n  url: ws://127.0.0.1:1\nadapter:\n  tls:\n    cert: {0}\n    key: {0}\n",
        missing.display()
    );
    let config = kactivator::config::Config::parse(&yaml).unwrap();
    let err = kactivator::app::App::bind(Mode::Adapter, config, None)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("adapter.tls.cert") && text.contains("nope.pem"),
        "{text}"
    );
}
