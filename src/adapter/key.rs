//! Revision key derivation from what each API carries: Mixer instances, metric dimensions,
//! ext_authz headers, hosts and paths (through the KIngress route table).

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwapOption;

use crate::{
    config::{Config, SharedConfig},
    discovery::kingress::{Match, RouteTable},
    proto::istio::policy::v1beta1::{Value, value},
    revision::{self, RevisionKey, is_dns_label},
};

/// Knative's private (ServerlessService) K8s service suffixes: `-private` today, `-priv` in
/// Knative v0.6, the version the 2019 adapter targeted.
const PRIVATE_SUFFIXES: &[&str] = &["-private", "-priv"];

/// From the `authorization` template's `action.namespace` and `action.service`.
///
/// `service` may be a short name or a host (`hello-private.default.svc.cluster.local`); the
/// revision is its first DNS label without a private-service suffix.
pub(crate) fn from_mixer(namespace: &str, service: &str) -> Option<RevisionKey> {
    let namespace = namespace.trim();
    let name = revision_of_service(service)?;
    is_dns_label(namespace).then(|| RevisionKey::new(namespace, name))
}

/// From a Mixer CHECK's `action`: when `service` is a Route host of the KIngress table, every
/// revision its matching path (`path`, no headers: Mixer's action carries none) splits to;
/// otherwise [`from_mixer`].
pub(crate) fn from_mixer_action(
    namespace: &str,
    service: &str,
    path: &str,
    routes: &RouteTable,
) -> Option<Found> {
    match routes.lookup(service, path, |_| None) {
        Match::Revisions(keys) => Some(Found::Route(keys)),
        // A Route's host: its first label names the Route, not a revision.
        Match::NoPath => None,
        Match::UnknownHost => from_mixer(namespace, service).map(Found::One),
    }
}

/// From a metric instance's dimensions: `revision` (the name as is) or `service` (as in
/// [`from_mixer`]), plus `namespace`; without `namespace`, the second label of a
/// `<service>.<namespace>.svc…` host.
pub(crate) fn from_dimensions(dims: &HashMap<String, Value>) -> Option<RevisionKey> {
    let text = |k: &str| dims.get(k).and_then(text_of);
    let service = text("service");
    let name = match text("revision") {
        Some(rev) => rev.trim(),
        None => revision_of_service(service?)?,
    };
    let namespace = match text("namespace") {
        Some(ns) => ns.trim(),
        None => service?.split('.').nth(1)?,
    };
    (is_dns_label(name) && is_dns_label(namespace)).then(|| RevisionKey::new(namespace, name))
}

/// From the `Knative-Serving-Revision` / `Knative-Serving-Namespace` header values.
pub(crate) fn from_headers(namespace: &str, revision: &str) -> Option<RevisionKey> {
    let (namespace, revision) = (namespace.trim(), revision.trim());
    (is_dns_label(namespace) && is_dns_label(revision))
        .then(|| RevisionKey::new(namespace, revision))
}

/// The revisions a call is for: one it names, or every revision a Route can send it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    One(RevisionKey),
    Route(Arc<[RevisionKey]>),
}

impl Found {
    pub(crate) fn keys(&self) -> &[RevisionKey] {
        match self {
            Found::One(key) => std::slice::from_ref(key),
            Found::Route(keys) => keys,
        }
    }
}

/// Why a call's host gave no revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No host at all.
    NoHost,
    /// `Knative-Serving-Revision` / `-Namespace` present but not DNS labels.
    BadHeaders,
    /// Neither `revisions[].hosts`, a KIngress rule nor a `.svc` form names the host.
    UnknownHost,
    /// A KIngress host, but none of its paths matches the request's path and headers.
    NoPath,
}

/// From a Host (`[:port]` allowed), path and headers: a configured `revisions[].hosts`
/// entry (the operator's word wins), else the KIngress route table (every revision the
/// matching path splits to with a percent above 0), else `<rev>.<ns>.svc` or
/// `<rev>.<ns>.svc.<cluster_domain>`. `header` takes a lower-case name.
pub(crate) fn from_request<'h>(
    host: &str,
    path: &str,
    header: impl Fn(&str) -> Option<&'h str>,
    cfg: &SharedConfig,
    index: &HostIndex,
    routes: &RouteTable,
) -> Result<Found, Miss> {
    let host = revision::strip_port(host.trim())
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(Miss::NoHost);
    }
    if let Some(key) = index.get(cfg, &host) {
        return Ok(Found::One(key));
    }
    match routes.lookup(&host, path, header) {
        Match::Revisions(keys) => return Ok(Found::Route(keys)),
        Match::NoPath => return Err(Miss::NoPath),
        Match::UnknownHost => {}
    }
    from_svc_host(&host, cfg)
        .map(Found::One)
        .ok_or(Miss::UnknownHost)
}

/// `<rev>.<ns>.svc[.<cluster_domain>]`, from a lower-case host without port.
fn from_svc_host(host: &str, cfg: &Config) -> Option<RevisionKey> {
    // Only the `.svc` forms: every external host passes the gateway, and reading `<a>.<b>`
    // as `<rev>.<ns>` would poke for most of them.
    if host.split('.').nth(2) != Some("svc") {
        return None;
    }
    let (ns, rev) = revision::from_service_host(host, &cfg.cluster_domain)?;
    (is_dns_label(rev) && is_dns_label(ns)).then(|| RevisionKey::new(ns, rev))
}

/// `revisions[].hosts` of the config in force, rebuilt when the config changes.
///
/// Rebuilt lazily by whichever call first sees a new config: two calls racing on a reload
/// build the same table, so either result is right.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    /// The config the table was built from, and the table. Read lock-free on every call.
    built: ArcSwapOption<Built>,
}

/// A host table and the config generation it was built from.
#[derive(Debug)]
struct Built {
    config: SharedConfig,
    table: HostTable,
}

/// Lower-case host → revision.
type HostTable = HashMap<String, RevisionKey>;

impl HostIndex {
    fn get(&self, cfg: &SharedConfig, host: &str) -> Option<RevisionKey> {
        let current = self.built.load();
        if let Some(built) = current.as_deref().filter(|b| Arc::ptr_eq(&b.config, cfg)) {
            return built.table.get(host).cloned();
        }
        let built = Arc::new(Built {
            config: cfg.clone(),
            table: Self::build(cfg),
        });
        let key = built.table.get(host).cloned();
        self.built.store(Some(built));
        key
    }

    fn build(cfg: &Config) -> HostTable {
        cfg.revisions
            .iter()
            .flat_map(|r| r.hosts.iter().map(|h| (h.to_ascii_lowercase(), r.key())))
            .collect()
    }
}

fn revision_of_service(service: &str) -> Option<&str> {
    let label = service.trim().split(['.', ':']).next()?;
    let name = PRIVATE_SUFFIXES
        .iter()
        .find_map(|s| label.strip_suffix(s))
        .unwrap_or(label);
    is_dns_label(name).then_some(name)
}

fn text_of(v: &Value) -> Option<&str> {
    match v.value.as_ref()? {
        value::Value::StringValue(s) => Some(s),
        value::Value::DnsNameValue(d) => Some(&d.value),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
