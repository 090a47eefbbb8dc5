//! Envoy `ext_authz` v3 (`envoy.service.auth.v3.Authorization/Check`): the successor of the
//! Mixer CHECK for Istio >= 1.9 (`AuthorizationPolicy` action CUSTOM).

use tonic::{Request, Response, Status};

use super::{
    error::Api,
    key::{self, Found, HostIndex, Miss},
    service::Shared,
};
use crate::{
    config::SharedConfig,
    discovery::kingress::RouteTable,
    proto::{
        envoy::service::auth::v3::{
            AttributeContext, CheckRequest, CheckResponse, OkHttpResponse,
            attribute_context::HttpRequest, authorization_server::Authorization,
            check_response::HttpResponse,
        },
        google::rpc,
    },
    revision::{NAMESPACE_HEADER, REVISION_HEADER},
};

/// Serves ext_authz Check.
#[derive(Debug, Clone)]
pub(crate) struct ExtAuthz {
    shared: Shared,
}

impl ExtAuthz {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn revisions(&self, http: &HttpRequest, cfg: &SharedConfig) -> Result<Found, Miss> {
        revisions(http, cfg, self.shared.hosts(), &self.shared.routes())
    }
}

/// The revisions a request is for: the one the Knative routing headers name, else those its
/// host, path and headers reach (see [`key::from_request`]).
pub(crate) fn revisions(
    http: &HttpRequest,
    cfg: &SharedConfig,
    hosts: &HostIndex,
    routes: &RouteTable,
) -> Result<Found, Miss> {
    if let (Some(rev), Some(ns)) = (
        header(http, REVISION_HEADER),
        header(http, NAMESPACE_HEADER),
    ) {
        return key::from_headers(ns, rev)
            .map(Found::One)
            .ok_or(Miss::BadHeaders);
    }
    let host = host_of(http).ok_or(Miss::NoHost)?;
    key::from_request(
        host,
        &http.path,
        |name| header(http, name),
        cfg,
        hosts,
        routes,
    )
}

fn host_of(http: &HttpRequest) -> Option<&str> {
    Some(http.host.as_str())
        .filter(|h| !h.is_empty())
        .or_else(|| header(http, ":authority"))
        .or_else(|| header(http, "host"))
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    /// Pokes the request's revision, optionally holds until it is ready, and always allows.
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        const API: Api = Api::ExtAuthz;
        self.shared.called(API);
        let req = request.into_inner();
        let http = req
            .attributes
            .as_ref()
            .and_then(|a: &AttributeContext| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            self.shared.no_revision(API, "no http request");
            return Ok(Response::new(allow()));
        };
        let cfg = self.shared.config();
        match self.revisions(http, &cfg) {
            Ok(found) => {
                // ext_authz has no adapter_config: always the default autoscaler.
                for key in found.keys() {
                    self.shared
                        .poke(API, None, key, &cfg)
                        .map_err(|e| e.into_status(API))?;
                }
                self.shared.hold(API, found.keys(), &cfg).await;
            }
            Err(miss) => self
                .shared
                .missed(API, miss, host_of(http).unwrap_or_default()),
        }
        Ok(Response::new(allow()))
    }
}

/// `CheckResponse{status{}, ok_response{}}`: `0a 00 1a 00` on the wire.
pub(crate) fn allow() -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {})),
    }
}

/// A request header from `headers` (lower-case keys) or `header_map` (sent instead when the
/// filter has `encode_raw_headers`).
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(v) = http.headers.get(name) {
        return Some(v);
    }
    http.header_map.as_ref()?.headers.iter().find_map(|h| {
        if !h.key.eq_ignore_ascii_case(name) {
            return None;
        }
        if h.value.is_empty() {
            std::str::from_utf8(&h.raw_value).ok()
        } else {
            Some(h.value.as_str())
        }
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto::envoy::config::core::v3::{HeaderMap, HeaderValue};

    #[test]
    fn allow_is_the_documented_four_bytes() {
        assert_eq!(allow().encode_to_vec(), [0x0a, 0x00, 0x1a, 0x00]);
    }

    #[test]
    fn headers_come_from_the_map_or_the_raw_header_map() {
        let mut http = HttpRequest::default();
        http.headers
            .insert("knative-serving-revision".into(), "a".into());
        assert_eq!(header(&http, REVISION_HEADER), Some("a"));
        let http = HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![
                    HeaderValue {
                        key: "Knative-Serving-Namespace".into(),
                        value: "ns".into(),
                        raw_value: vec![],
                    },
                    HeaderValue {
                        key: "knative-serving-revision".into(),
                        value: String::new(),
                        raw_value: b"rev".to_vec(),
                    },
                ],
            }),
            ..HttpRequest::default()
        };
        assert_eq!(header(&http, NAMESPACE_HEADER), Some("ns"));
        assert_eq!(header(&http, REVISION_HEADER), Some("rev"));
        assert_eq!(header(&http, "host"), None);
    }
}
