//! The Kubernetes objects Knative's activator reads, and what kactivator takes from each.
//!
//! Knative Revisions are read leniently: an odd or missing field is logged and defaulted, never
//! fatal, because one bad object must not stop the watch of thousands of good ones.

use std::{borrow::Cow, net::IpAddr, net::SocketAddr, time::Duration};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Endpoints, Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use crate::{
    config::{Protocol, RevisionConfig},
    revision::RevisionKey,
    revisions::RevisionSpec,
};

/// Label naming the revision an object belongs to.
pub(crate) const REVISION_LABEL: &str = "serving.knative.dev/revision";
/// Label telling a revision's private Service (its pods) from its public one (its activators).
pub(crate) const SERVICE_TYPE_LABEL: &str = "networking.internal.knative.dev/serviceType";
/// The Endpoints (and Services) kactivator watches: those of Knative's per-revision Services.
pub(crate) const ENDPOINTS_SELECTOR: &str =
    "serving.knative.dev/revision,networking.internal.knative.dev/serviceType";

/// Knative's port names for the revision Services (`pkg/network` `ServicePortName`).
pub(crate) const PORT_HTTP1: &str = "http";
pub(crate) const PORT_H2C: &str = "http2";

/// A `serving.knative.dev/v1` Revision; `spec` is kept loose and read by [`spec_of`].
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct KnativeRevision {
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: Value,
}

impl kube::Resource for KnativeRevision {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Revision".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "serving.knative.dev".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "revisions".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The key of an object: its namespace and name.
pub(crate) fn key_of(meta: &ObjectMeta) -> Option<RevisionKey> {
    Some(RevisionKey::new(
        meta.namespace.as_deref()?,
        meta.name.as_deref()?,
    ))
}

/// The settings of a Revision, as Knative's activator reads them: `containerConcurrency`
/// (absent: 0, unlimited), `timeoutSeconds` (absent: the config default), the response-start
/// and idle timeouts (absent or 0: off), and h2c when a container port is named `h2c`.
pub(crate) fn spec_of(key: RevisionKey, spec: &Value) -> RevisionSpec {
    let defaults = RevisionConfig::default();
    let seconds = |field: &str| -> Option<u64> {
        match spec.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(s) => Some(s),
                None => {
                    warn!(revision = %key, field, value = %v, "Revision field is not a whole number of seconds; ignored");
                    None
                }
            },
        }
    };
    let container_concurrency = match spec.get("containerConcurrency") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                warn!(revision = %key, value = %v, "Revision containerConcurrency is not a count; using 0 (unlimited)");
                0
            }
        },
    };
    let timeout = seconds("timeoutSeconds")
        .filter(|s| *s > 0)
        .map_or(defaults.timeout, Duration::from_secs);
    let positive = |field: &str| seconds(field).filter(|s| *s > 0).map(Duration::from_secs);
    let protocol = if has_port_named(spec, "h2c") {
        Protocol::H2c
    } else {
        Protocol::Http1
    };
    let response_start_timeout = positive("responseStartTimeoutSeconds");
    let idle_timeout = positive("idleTimeoutSeconds");
    RevisionSpec {
        key,
        hosts: Vec::new(),
        container_concurrency,
        timeout,
        response_start_timeout,
        idle_timeout,
        protocol,
        activators: None,
        cluster_ip: None,
    }
}

fn has_port_named(spec: &Value, name: &str) -> bool {
    let Some(containers) = spec.get("containers").and_then(Value::as_array) else {
        return false;
    };
    containers
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .any(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

/// Which of a revision's Services an Endpoints object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceType {
    /// The revision's pods (queue-proxies).
    Private,
    /// The activators in the revision's path (or its pods, when the activator is out of it).
    Public,
}

/// The revision and Service type an Endpoints or Service object is for, from its labels.
pub(crate) fn classify(meta: &ObjectMeta) -> Option<(RevisionKey, ServiceType)> {
    let labels = meta.labels.as_ref()?;
    let namespace = meta.namespace.as_deref()?;
    let revision = labels.get(REVISION_LABEL).filter(|r| !r.is_empty())?;
    let kind = match labels.get(SERVICE_TYPE_LABEL)?.as_str() {
        "Private" => ServiceType::Private,
        "Public" => ServiceType::Public,
        _ => return None,
    };
    Some((RevisionKey::new(namespace, revision), kind))
}

/// The addresses of an Endpoints object, by port name: ready ones, and (for a revision's pods,
/// which are probed before kubelet calls them ready, as Knative does) not-ready ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Addresses {
    ports: Vec<Port>,
}

/// One named port of an Endpoints object with its IPs as written, sorted as text, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: Box<str>,
    number: u16,
    ready: Vec<Box<str>>,
    not_ready: Vec<Box<str>>,
}

impl Addresses {
    pub(crate) fn of(eps: &Endpoints, with_not_ready: bool) -> Self {
        let mut ports: Vec<Port> = Vec::new();
        let ips =
            |list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| -> Vec<Box<str>> {
                list.iter()
                    .flatten()
                    .map(|a| Box::from(a.ip.as_str()))
                    .collect()
            };
        for subset in eps.subsets.iter().flatten() {
            let ready = ips(&subset.addresses);
            let not_ready = if with_not_ready {
                ips(&subset.not_ready_addresses)
            } else {
                Vec::new()
            };
            if ready.is_empty() && not_ready.is_empty() {
                continue;
            }
            let named: Vec<_> = subset
                .ports
                .iter()
                .flatten()
                .filter_map(|p| named_port(p.name.as_deref(), p.port))
                .collect();
            if named.is_empty() {
                warn!(
                    endpoints = eps.metadata.name.as_deref().unwrap_or_default(),
                    namespace = eps.metadata.namespace.as_deref().unwrap_or_default(),
                    "Endpoints subset has addresses but no named port; skipped"
                );
                continue;
            }
            for (name, number) in named {
                match ports
                    .iter_mut()
                    .find(|p| &*p.name == name && p.number == number)
                {
                    Some(p) => {
                        p.ready.extend(ready.iter().cloned());
                        p.not_ready.extend(not_ready.iter().cloned());
                    }
                    None => ports.push(Port {
                        name: name.into(),
                        number,
                        ready: ready.clone(),
                        not_ready: not_ready.clone(),
                    }),
                }
            }
        }
        for p in &mut ports {
            p.ready.sort_unstable();
            p.ready.dedup();
            p.not_ready.sort_unstable();
            p.not_ready.dedup();
        }
        Self { ports }
    }

    /// Whether nothing at all is listed.
    pub(crate) fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// `ip:port` for every address (ready or not) with the port named `name`. Addresses that
    /// are not IPs (never written by Kubernetes) are skipped.
    pub(crate) fn sockets(&self, name: &str) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .ports
            .iter()
            .filter(|p| &*p.name == name)
            .flat_map(|p| {
                p.ready
                    .iter()
                    .chain(&p.not_ready)
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                    .map(move |ip| SocketAddr::new(ip, p.number))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The ready IPs with the port named `name`, sorted as text (Knative's order of
    /// activators; their number is the backend count of cluster-IP mode).
    pub(crate) fn ips(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .ports
            .iter()
            .filter(|p| &*p.name == name)
            .flat_map(|p| p.ready.iter().map(|ip| &**ip))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A revision's private Service: its cluster IP and named ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterIp {
    ip: IpAddr,
    ports: Vec<(Box<str>, u16)>,
}

impl ClusterIp {
    /// The cluster IP of a Service; `None` for a headless Service or one without an address.
    pub(crate) fn of(svc: &Service) -> Option<Self> {
        let spec = svc.spec.as_ref()?;
        let ip = spec.cluster_ip.as_deref()?.parse::<IpAddr>().ok()?;
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| named_port(p.name.as_deref(), p.port))
            .map(|(name, number)| (Box::from(name), number))
            .collect();
        Some(Self { ip, ports })
    }

    /// `cluster-ip:port` for the port named `name`.
    pub(crate) fn socket(&self, name: &str) -> Option<SocketAddr> {
        self.ports
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, port)| SocketAddr::new(self.ip, *port))
    }
}

/// The revision a private Service is for, from its labels (public Services are not needed).
pub(crate) fn private_service(svc: &Service) -> Option<RevisionKey> {
    match classify(&svc.metadata)? {
        (key, ServiceType::Private) => Some(key),
        (_, ServiceType::Public) => None,
    }
}

/// A port that can be dialled by name: named, and numbered 1–65535.
fn named_port(name: Option<&str>, port: i32) -> Option<(&str, u16)> {
    let name = name.filter(|n| !n.is_empty())?;
    let number = u16::try_from(port).ok().filter(|n| *n != 0)?;
    Some((name, number))
}

/// This activator's index among the activator IPs `sorted` (text order), Knative's
/// `inferIndex`; `None` when it is not among them.
pub(crate) fn index_of(sorted: &[&str], own: IpAddr) -> Option<usize> {
    sorted
        .iter()
        .position(|ip| ip.parse::<IpAddr>().is_ok_and(|ip| ip == own))
}
