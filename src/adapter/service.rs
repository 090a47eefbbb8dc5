//! What every gRPC API of the adapter shares: live config, targets, coalescer, hold.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use opentelemetry::{
    KeyValue,
    trace::{Span as _, SpanKind, Tracer as _},
};
use tokio::{sync::watch, time::Instant};
use tracing::debug;

use super::{
    error::{Api, CallError},
    hold::{Hold, hold_all},
    key::{HostIndex, Miss},
    params::Targets,
    poke::Pokes,
};
use crate::{
    config::SharedConfig, discovery::kingress::Routes, drain::Drain, endpoints::Endpoints, metrics,
    revision::RevisionKey, telemetry::otel::Traces,
};

/// [`Shared::status`]'s figures.
#[derive(Debug)]
pub(crate) struct AdapterFigures {
    pub(crate) holds: (usize, u64, u64),
    pub(crate) pokes: (u64, u64, u64),
    pub(crate) recent: Vec<(RevisionKey, Instant)>,
    pub(crate) poked: usize,
}

/// Shared state of the adapter's services. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: watch::Receiver<SharedConfig>,
    healthy: watch::Receiver<Endpoints>,
    drain: Drain,
    targets: Targets,
    pokes: Pokes,
    hosts: HostIndex,
    /// The KIngress route table (empty without `discovery: kubernetes`).
    routes: watch::Receiver<Routes>,
    /// Present when traces are on.
    traces: Option<Traces>,
    holds: Holds,
}

/// Hold counts for the status page.
#[derive(Debug, Default)]
struct Holds {
    /// Calls inside `hold` now.
    waiting: AtomicUsize,
    /// Calls that waited (a pod was not ready), and those of them that ran out.
    held: AtomicU64,
    expired: AtomicU64,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn new(
        config: watch::Receiver<SharedConfig>,
        healthy: watch::Receiver<Endpoints>,
        drain: Drain,
        targets: Targets,
        routes: watch::Receiver<Routes>,
        traces: Option<Traces>,
    ) -> Self {
        Self(Arc::new(Inner {
            config,
            healthy,
            drain,
            targets,
            pokes: Pokes::default(),
            hosts: HostIndex::default(),
            routes,
            traces,
            holds: Holds::default(),
        }))
    }

    /// What the status page shows: (holds in progress, held, expired), the poke decisions
    /// (sent, coalesced, overflow), and the revisions poked within the poke interval (at
    /// most `max`, with when) and how many there are.
    pub(crate) fn status(&self, max: usize) -> AdapterFigures {
        let h = &self.0.holds;
        let interval = self.config().adapter.poke_interval;
        let (keys, poked) = self.0.pokes.coalescer.recent(Instant::now(), interval, max);
        AdapterFigures {
            holds: (
                h.waiting.load(Ordering::Relaxed),
                h.held.load(Ordering::Relaxed),
                h.expired.load(Ordering::Relaxed),
            ),
            pokes: self.0.pokes.counts(),
            recent: keys.into_iter().map(|((_, k), at)| (k, at)).collect(),
            poked,
        }
    }

    /// The config in force now.
    pub(crate) fn config(&self) -> SharedConfig {
        self.0.config.borrow().clone()
    }

    pub(crate) fn hosts(&self) -> &HostIndex {
        &self.0.hosts
    }

    /// The route table in force now (a snapshot: never held across an `.await`).
    pub(crate) fn routes(&self) -> Routes {
        self.0.routes.borrow().clone()
    }

    /// Counts the call.
    pub(crate) fn called(&self, api: Api) {
        ::metrics::counter!(metrics::ADAPTER_CALLS, "api" => api.as_str()).increment(1);
    }

    /// Pokes the revision (coalesced) at the autoscaler `adapter_config` selects.
    pub(crate) fn poke(
        &self,
        api: Api,
        adapter_config: Option<&prost_types::Any>,
        key: &RevisionKey,
        cfg: &SharedConfig,
    ) -> Result<(), CallError> {
        let target = self.0.targets.resolve(adapter_config, api)?;
        let decision = self.0.pokes.poke(&target, key, cfg.adapter.poke_interval);
        debug!(revision = %key, api = api.as_str(), result = decision.as_str(), "Poke");
        Ok(())
    }

    /// Checks `adapter_config` without poking (a call that names no revision).
    pub(crate) fn check_config(
        &self,
        api: Api,
        adapter_config: Option<&prost_types::Any>,
    ) -> Result<(), CallError> {
        self.0.targets.resolve(adapter_config, api).map(|_| ())
    }

    /// Counts a call that named no usable revision; it is still allowed.
    pub(crate) fn no_revision(&self, api: Api, detail: &str) {
        ::metrics::counter!(metrics::ADAPTER_ERRORS, "api" => api.as_str(), "reason" => "no_revision")
            .increment(1);
        debug!(
            api = api.as_str(),
            detail, "Call names no revision; allowing it"
        );
    }

    /// Counts a call whose host names no revision (see [`Miss`]); it is still allowed.
    pub(crate) fn missed(&self, api: Api, miss: Miss, host: &str) {
        if miss == Miss::UnknownHost {
            ::metrics::counter!(metrics::ADAPTER_UNKNOWN_HOSTS, "api" => api.as_str()).increment(1);
        }
        self.no_revision(api, host);
    }

    /// Holds a CHECK per `hold_until_ready`, until every one of `keys` has a ready pod; with
    /// traces on, in a span of the call (the revisions, whether it was held, how it ended).
    pub(crate) async fn hold(&self, api: Api, keys: &[RevisionKey], cfg: &SharedConfig) {
        let limit = cfg.adapter.hold_until_ready;
        let span = self.0.traces.as_ref().map(|traces| {
            let name = match api {
                Api::ExtAuthz => "ext_authz.Check",
                Api::Authorization | Api::Metric => "mixer.HandleAuthorization",
            };
            // A split names several revisions: comma-separated.
            let names: Vec<&str> = keys.iter().map(RevisionKey::name).collect();
            let namespace = keys.first().map_or("", RevisionKey::namespace);
            traces
                .tracer()
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("kn.revision.name", names.join(",")),
                    KeyValue::new("k8s.namespace.name", namespace.to_owned()),
                ])
                .start(traces.tracer())
        });
        let holds = &self.0.holds;
        holds.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&holds.waiting);
        let outcome = hold_all(&self.0.healthy, keys, limit, &self.0.drain).await;
        if let Some(mut span) = span {
            span.set_attribute(KeyValue::new("kactivator.held", outcome != Hold::NotNeeded));
            span.set_attribute(KeyValue::new("kactivator.hold.outcome", outcome.as_str()));
            span.end();
        }
        drop(waiting);
        if outcome != Hold::NotNeeded {
            holds.held.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == Hold::Expired {
            holds.expired.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(metrics::ADAPTER_HOLD_EXPIRED, "api" => api.as_str()).increment(1);
            debug!(revisions = ?keys, ?limit, "No ready pod within hold_until_ready; allowing");
        }
    }
}
