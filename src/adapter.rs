//! Adapter mode: Mixer out-of-process gRPC adapter and Envoy ext_authz server.
//!
//! One gRPC port serves `authorization.HandleAuthorizationService` (Mixer CHECK),
//! `metric.HandleMetricService` (Mixer REPORT), `envoy.service.auth.v3.Authorization`
//! (ext_authz) and `grpc.health.v1.Health`. Every call derives the revision keys it is for
//! (headers, hosts, and with `discovery: kubernetes` Knative's KIngress route table), pokes
//! the autoscaler through a per-revision coalescer, and allows the request.

mod coalescer;
mod error;
pub(crate) mod ext_authz;
mod hold;
pub(crate) mod key;
mod mixer;
mod params;
mod poke;
mod service;
mod status;
mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::info;

pub use self::tls::{ENV_CERT, ENV_CLIENT_CA, ENV_KEY, TlsError, load as load_tls};
use self::{ext_authz::ExtAuthz, mixer::Mixer, params::Targets, poke::Sink, service::Shared};
use crate::{
    autoscaler_client::{AutoscalerClient, ClientConfig},
    context::Context,
    discovery::kingress::Routes,
    drain::Drain,
    endpoints::Endpoints,
    proto::{
        authorization::handle_authorization_service_server::HandleAuthorizationServiceServer,
        envoy::service::auth::v3::authorization_server::AuthorizationServer,
        metric::handle_metric_service_server::HandleMetricServiceServer,
    },
};

pub use self::params::PARAMS_TYPE_URL;

/// Autoscaler clients the handlers' `autoscaler_endpoint`s may open, besides the default.
const MAX_ENDPOINT_CLIENTS: usize = 16;

/// Errors of the adapter mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Causes are part of the messages, not `source()`s: a chain printer would repeat them.
    #[error("cannot bind listen.grpc {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("adapter gRPC server failed: {0}")]
    Serve(tonic::transport::Error),
}

/// The adapter with its gRPC listener bound.
#[derive(Debug)]
pub struct Adapter {
    listener: TcpListener,
    drain: Drain,
    shared: Shared,
    tls: Option<ServerTlsConfig>,
    max_connection_age: Duration,
    /// Stops the clients this adapter opened for handlers' own autoscaler endpoints.
    exit: CancellationToken,
}

impl Adapter {
    /// Binds `listen.grpc` and checks TLS files. `healthy` is the table `hold_until_ready`
    /// waits on; `routes` the KIngress route table hosts are looked up in.
    pub async fn bind(
        ctx: &Context,
        client: AutoscalerClient,
        healthy: watch::Receiver<Endpoints>,
        routes: watch::Receiver<Routes>,
    ) -> Result<Self, Error> {
        let cfg = ctx.current();
        let tls = tls::load(cfg.adapter.tls.as_ref())?;
        let addr = cfg.listen.grpc;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| Error::Bind { addr, error })?;
        let exit = CancellationToken::new();
        let connect: params::Connect = {
            let (encoding, send_queue) = (cfg.autoscaler.encoding, cfg.autoscaler.send_queue);
            let (pod_name, exit) = (ctx.pod_name.clone(), exit.clone());
            Box::new(move |url: &str| {
                let client = AutoscalerClient::spawn(
                    ClientConfig {
                        url: url.to_string(),
                        encoding,
                        pod_name: pod_name.clone(),
                        send_queue,
                    },
                    exit.clone(),
                );
                Arc::new(client) as Arc<dyn Sink>
            })
        };
        let targets = Targets::new(
            Arc::new(client),
            cfg.autoscaler.url.clone(),
            connect,
            MAX_ENDPOINT_CLIENTS,
        );
        let traces = crate::telemetry::otel::Traces::from_config(&cfg.tracing);
        let shared = Shared::new(
            ctx.config.clone(),
            healthy,
            ctx.drain.clone(),
            targets,
            routes,
            traces,
        );
        Ok(Self {
            listener,
            drain: ctx.drain.clone(),
            shared,
            tls,
            max_connection_age: cfg.adapter.max_connection_age,
            exit,
        })
    }

    /// The adapter's part of `/status.json`.
    pub fn status_source(&self) -> Arc<dyn crate::status::Source> {
        Arc::new(status::AdapterSource(self.shared.clone()))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until the drain reaches closing, then lets in-flight calls finish. Health says
    /// NOT_SERVING from the moment draining starts.
    pub async fn run(self) -> Result<(), Error> {
        let Self {
            listener,
            drain,
            shared,
            tls,
            max_connection_age,
            exit,
        } = self;
        let (reporter, health) = tonic_health::server::health_reporter();
        set_status(&reporter, ServingStatus::Serving).await;
        let health_task = tokio::spawn({
            let (drain, mut reporter) = (drain.clone(), reporter);
            async move {
                drain.draining().await;
                set_status(&reporter, ServingStatus::NotServing).await;
                drain.closing().await;
                // Ends every Watch stream, which would otherwise hold the graceful stop
                // until the grace period.
                for name in SERVICES {
                    reporter.clear_service_status(name).await;
                }
            }
        });

        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).map_err(Error::Serve)?;
        }
        // Mixer keeps one HTTP/2 connection per handler (istio/istio#11819): ageing it out
        // makes it reconnect and spread over replicas.
        if !max_connection_age.is_zero() {
            server = server.max_connection_age(max_connection_age);
        }
        let mixer = Mixer::new(shared.clone());
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Ok(addr) = incoming.local_addr() {
            info!(%addr, "Adapter serving gRPC");
        }
        let served = server
            .add_service(health)
            .add_service(HandleAuthorizationServiceServer::new(mixer.clone()))
            .add_service(HandleMetricServiceServer::new(mixer))
            .add_service(AuthorizationServer::new(ExtAuthz::new(shared)))
            .serve_with_incoming_shutdown(incoming, drain.closing())
            .await;
        // Normally finished already; if serving failed before closing, stop it.
        health_task.abort();
        exit.cancel();
        served.map_err(Error::Serve)
    }
}

/// Every service name the health service reports on, "" being the whole server.
const SERVICES: &[&str] = &[
    "",
    <HandleAuthorizationServiceServer<Mixer> as NamedService>::NAME,
    <HandleMetricServiceServer<Mixer> as NamedService>::NAME,
    <AuthorizationServer<ExtAuthz> as NamedService>::NAME,
];

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    for name in SERVICES {
        reporter.set_service_status(*name, status).await;
    }
}
