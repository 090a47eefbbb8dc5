//! The Mixer out-of-process adapter APIs: `authorization` (CHECK) and `metric` (REPORT).

use tonic::{Request, Response, Status};

use super::{error::Api, key, service::Shared};
use crate::proto::{
    authorization::{
        HandleAuthorizationRequest, handle_authorization_service_server::HandleAuthorizationService,
    },
    google::rpc,
    istio::mixer::adapter::model::v1beta1::{CheckResult, ReportResult},
    metric::{HandleMetricRequest, handle_metric_service_server::HandleMetricService},
};

/// Serves both Mixer templates.
#[derive(Debug, Clone)]
pub(crate) struct Mixer {
    shared: Shared,
}

impl Mixer {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl HandleAuthorizationService for Mixer {
    /// Pokes `action.namespace` / first label of `action.service` (or, when the service is a
    /// KIngress Route host, the revisions its path splits to), optionally holds until they
    /// are ready, and always allows: a poke that fails must never deny traffic.
    async fn handle_authorization(
        &self,
        request: Request<HandleAuthorizationRequest>,
    ) -> Result<Response<CheckResult>, Status> {
        const API: Api = Api::Authorization;
        self.shared.called(API);
        let req = request.into_inner();
        let cfg = self.shared.config();
        let action = req.instance.as_ref().and_then(|i| i.action.as_ref());
        let routes = self.shared.routes();
        let found =
            action.and_then(|a| key::from_mixer_action(&a.namespace, &a.service, &a.path, &routes));
        match (found, action) {
            (Some(found), _) => {
                for key in found.keys() {
                    self.shared
                        .poke(API, req.adapter_config.as_ref(), key, &cfg)
                        .map_err(|e| e.into_status(API))?;
                }
                self.shared.hold(API, found.keys(), &cfg).await;
            }
            (None, action) => {
                self.shared
                    .check_config(API, req.adapter_config.as_ref())
                    .map_err(|e| e.into_status(API))?;
                let detail = action.map_or_else(
                    || "no action".to_string(),
                    |a| format!("namespace `{}`, service `{}`", a.namespace, a.service),
                );
                self.shared.no_revision(API, &detail);
            }
        }
        let valid_duration =
            prost_types::Duration::try_from(cfg.adapter.check_valid_duration).unwrap_or_default();
        Ok(Response::new(CheckResult {
            status: Some(rpc::Status::default()),
            valid_duration: Some(valid_duration),
            valid_use_count: cfg.adapter.check_valid_use_count,
        }))
    }
}

#[tonic::async_trait]
impl HandleMetricService for Mixer {
    /// One poke per instance whose dimensions name a revision.
    async fn handle_metric(
        &self,
        request: Request<HandleMetricRequest>,
    ) -> Result<Response<ReportResult>, Status> {
        const API: Api = Api::Metric;
        self.shared.called(API);
        let req = request.into_inner();
        let cfg = self.shared.config();
        self.shared
            .check_config(API, req.adapter_config.as_ref())
            .map_err(|e| e.into_status(API))?;
        for instance in &req.instances {
            match key::from_dimensions(&instance.dimensions) {
                Some(key) => self
                    .shared
                    .poke(API, req.adapter_config.as_ref(), &key, &cfg)
                    .map_err(|e| e.into_status(API))?,
                None => self.shared.no_revision(API, &instance.name),
            }
        }
        Ok(Response::new(ReportResult {}))
    }
}
