//! Hand-written protobuf messages and unary calls for kactivator's adapter, for the bench clients.
#![allow(dead_code)]
//!
//! Only the fields the adapter reads are declared (field numbers from the Istio `authorization`
//! template and Envoy `ext_authz` v3), so that the benches do not depend on the adapter's
//! generated types. Unknown fields in replies are skipped by prost.

use std::net::SocketAddr;

use anyhow::Context as _;
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// Mixer → adapter (`authorization` template).
pub(crate) const HANDLE_AUTHORIZATION: &str =
    "/authorization.HandleAuthorizationService/HandleAuthorization";
/// Envoy → ext_authz server.
pub(crate) const EXT_AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HandleAuthorizationRequest {
    #[prost(message, optional, tag = "1")]
    pub(crate) instance: Option<InstanceMsg>,
    #[prost(message, optional, tag = "2")]
    pub(crate) adapter_config: Option<prost_types::Any>,
    #[prost(string, tag = "3")]
    pub(crate) dedup_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InstanceMsg {
    #[prost(message, optional, tag = "2")]
    pub(crate) action: Option<Action>,
    #[prost(string, tag = "72295727")]
    pub(crate) name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Action {
    #[prost(string, tag = "1")]
    pub(crate) namespace: String,
    #[prost(string, tag = "2")]
    pub(crate) service: String,
    #[prost(string, tag = "3")]
    pub(crate) method: String,
    #[prost(string, tag = "4")]
    pub(crate) path: String,
}

/// `google.rpc.Status`, the first field of both `CheckResult` and `CheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
}

/// `CheckResult` and `CheckResponse` both carry the status in field 1.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusOnly {
    #[prost(message, optional, tag = "1")]
    pub(crate) status: Option<RpcStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub(crate) attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AttributeContext {
    #[prost(message, optional, tag = "4")]
    pub(crate) request: Option<AttrRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AttrRequest {
    #[prost(message, optional, tag = "2")]
    pub(crate) http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HttpRequest {
    #[prost(map = "string, string", tag = "3")]
    pub(crate) headers: std::collections::HashMap<String, String>,
    #[prost(string, tag = "5")]
    pub(crate) host: String,
}

/// Which adapter API a client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Mixer's `HandleAuthorization` (Istio <= 1.7, the 2019 adapter).
    Mixer,
    /// Envoy `ext_authz` v3 `Check`.
    ExtAuthz,
}

impl std::str::FromStr for Api {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "mixer" => Ok(Self::Mixer),
            "extauthz" => Ok(Self::ExtAuthz),
            other => anyhow::bail!("unknown api {other:?} (mixer | extauthz)"),
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mixer => "mixer",
            Self::ExtAuthz => "extauthz",
        })
    }
}

/// The Mixer request for revision `ns/name`, as Istio renders `action.service` (a host name).
pub(crate) fn mixer_request(namespace: &str, revision: &str) -> HandleAuthorizationRequest {
    HandleAuthorizationRequest {
        instance: Some(InstanceMsg {
            action: Some(Action {
                namespace: namespace.into(),
                service: format!("{revision}.{namespace}.svc.cluster.local"),
                method: "GET".into(),
                path: "/".into(),
            }),
            name: "kactivator.instance.istio-system".into(),
        }),
        adapter_config: None,
        dedup_id: String::new(),
    }
}

/// The ext_authz request for revision `ns/name`, identified by the Knative headers.
pub(crate) fn ext_authz_request(namespace: &str, revision: &str) -> CheckRequest {
    let headers = [
        ("knative-serving-namespace".to_owned(), namespace.to_owned()),
        ("knative-serving-revision".to_owned(), revision.to_owned()),
    ]
    .into_iter()
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    headers,
                    host: format!("{revision}.{namespace}.svc.cluster.local"),
                }),
            }),
        }),
    }
}

/// One HTTP/2 connection to the adapter.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the adapter at {addr}"))
}

/// Calls `api` once for `ns/revision`; returns the `google.rpc.Status` code of the reply.
pub(crate) async fn check(
    channel: Channel,
    api: Api,
    namespace: &str,
    revision: &str,
) -> anyhow::Result<i32> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let reply = match api {
        Api::Mixer => {
            let codec =
                tonic_prost::ProstCodec::<HandleAuthorizationRequest, StatusOnly>::default();
            grpc.unary(
                tonic::Request::new(mixer_request(namespace, revision)),
                PathAndQuery::from_static(HANDLE_AUTHORIZATION),
                codec,
            )
            .await?
        }
        Api::ExtAuthz => {
            let codec = tonic_prost::ProstCodec::<CheckRequest, StatusOnly>::default();
            grpc.unary(
                tonic::Request::new(ext_authz_request(namespace, revision)),
                PathAndQuery::from_static(EXT_AUTHZ_CHECK),
                codec,
            )
            .await?
        }
    };
    Ok(reply.into_inner().status.map_or(0, |s| s.code))
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub(crate) service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub(crate) status: i32,
}

/// `grpc.health.v1.Health/Check` for the whole server; `true` when SERVING.
pub(crate) async fn serving(channel: Channel) -> anyhow::Result<bool> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let reply = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest::default()),
            PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            codec,
        )
        .await?;
    Ok(reply.into_inner().status == 1)
}
