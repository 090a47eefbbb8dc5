//! Knative's networking Ingress objects (KIngress), read into the adapter's route table.
//!
//! Knative Serving writes one `networking.internal.knative.dev/v1alpha1` Ingress per Route:
//! `spec.rules[]` with `hosts` (the Route's URLs, tag hosts among them), `visibility`, and
//! `http.paths[]` with a `path` regex, exact `headers` matches and `splits[]` naming the
//! revisions (`serviceName`/`serviceNamespace`, `percent`, and `appendHeaders` carrying
//! `Knative-Serving-Revision`/`-Namespace`). At an Istio gateway ext_authz runs before routing,
//! so the adapter learns the revisions a request can reach from this table, not from headers.
//!
//! Objects are decoded leniently, like Revisions: a rule, path or split that does not make
//! sense is logged and skipped; the rest of the object and of the list still count.

mod routes;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use regex::RegexBuilder;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, warn};

use self::routes::{HostRule, PathRule};
pub use self::routes::{Match, RouteTable, Routes};
use crate::revision::{NAMESPACE_HEADER, REVISION_HEADER, RevisionKey, is_dns_label};

/// Compiled size limit of one path regex: Knative writes short paths (`/.well-known/...`);
/// a pathological one is skipped rather than allowed to cost memory on every lookup.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Percentages add up to 100, so no path can send traffic to more revisions than this.
const MAX_SPLITS: usize = 100;

/// A `networking.internal.knative.dev/v1alpha1` Ingress; `spec` is kept loose and read by
/// [`rules_of`].
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct KIngress {
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: Value,
}

impl kube::Resource for KIngress {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Ingress".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "networking.internal.knative.dev".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "ingresses".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// An empty table on a channel nobody writes: what the adapter reads without KIngress.
pub fn none() -> watch::Receiver<Routes> {
    watch::channel(Routes::default()).1
}

/// The rules of a KIngress `spec`, in order. `name` is the object's `namespace/name` (for logs).
pub(crate) fn rules_of(name: &RevisionKey, spec: &Value) -> Vec<HostRule> {
    let Some(rules) = spec.get("rules").and_then(Value::as_array) else {
        return Vec::new();
    };
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let hosts: Vec<Box<str>> = rule
                .get("hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|h| match h.as_str().map(normalize_host) {
                    Some(h) if !h.is_empty() => Some(h.into()),
                    _ => {
                        warn!(ingress = %name, rule = i, host = %h, "KIngress host is not a host name; skipped");
                        None
                    }
                })
                .collect();
            let paths: Vec<Arc<PathRule>> = rule
                .pointer("/http/paths")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, p)| path_of(name, (i, j), p).map(Arc::new))
                .collect();
            (!hosts.is_empty() && !paths.is_empty()).then_some(HostRule { hosts, paths })
        })
        .collect()
}

/// One `http.paths[]` entry; `None` (logged) when its regex does not compile or it has no
/// split at all.
fn path_of(name: &RevisionKey, (rule, index): (usize, usize), p: &Value) -> Option<PathRule> {
    let skip = |why: &str| {
        warn!(ingress = %name, rule, path = index, why, "KIngress path skipped");
    };
    let path = match p.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        // KIngress paths are matched whole, as the Istio and Envoy route matches they become.
        Some(Value::String(s)) => match RegexBuilder::new(&format!("^(?:{s})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(re) => Some(re),
            Err(error) => {
                skip(&format!("path regex `{s}`: {error}"));
                return None;
            }
        },
        Some(other) => {
            skip(&format!("path is not text: {other}"));
            return None;
        }
    };
    let mut headers: Vec<(Box<str>, Box<str>)> = Vec::new();
    if let Some(map) = p.get("headers").and_then(Value::as_object) {
        for (header, matcher) in map {
            match matcher.get("exact").and_then(Value::as_str) {
                Some(exact) => headers.push((header.to_ascii_lowercase().into(), exact.into())),
                None => {
                    // A match we cannot evaluate must not widen the path to every request.
                    skip(&format!("header `{header}` has no exact match"));
                    return None;
                }
            }
        }
    }
    let splits = p.get("splits").and_then(Value::as_array);
    let splits = splits.map(Vec::as_slice).unwrap_or_default();
    let mut revisions: Vec<RevisionKey> = Vec::new();
    for split in splits {
        // Knative: "If only one split is specified, we default to 100."
        let percent = match split.get("percent") {
            None | Some(Value::Null) if splits.len() == 1 => 100,
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().unwrap_or(0),
        };
        if percent <= 0 {
            continue;
        }
        match split_revision(split) {
            Some(key) if revisions.len() < MAX_SPLITS => {
                if !revisions.contains(&key) {
                    revisions.push(key);
                }
            }
            Some(_) => {
                skip("more than 100 splits");
                return None;
            }
            None => {
                debug!(ingress = %name, rule, path = index, split = %split, "KIngress split names no revision; skipped")
            }
        }
    }
    if revisions.is_empty() {
        skip("no split with a revision and a percent above 0");
        return None;
    }
    Some(PathRule {
        path,
        headers,
        revisions: revisions.into(),
    })
}

/// The revision a split sends to: its `appendHeaders` `Knative-Serving-Revision`/`-Namespace`
/// (what Knative's route reconciler writes), else `serviceName`/`serviceNamespace` (Knative
/// names each revision's public Service after the revision).
fn split_revision(split: &Value) -> Option<RevisionKey> {
    let appended = |want: &str| {
        split
            .get("appendHeaders")
            .and_then(Value::as_object)?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(want))
            .and_then(|(_, v)| v.as_str())
    };
    let text = |field: &str| split.get(field).and_then(Value::as_str);
    let name = appended(REVISION_HEADER).or_else(|| text("serviceName"))?;
    let namespace = appended(NAMESPACE_HEADER).or_else(|| text("serviceNamespace"))?;
    let (name, namespace) = (name.trim(), namespace.trim());
    (is_dns_label(name) && is_dns_label(namespace)).then(|| RevisionKey::new(namespace, name))
}

/// Lower case, no port, no trailing dot: the form the table is keyed by.
fn normalize_host(host: &str) -> String {
    crate::revision::strip_port(host.trim())
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Every KIngress the watch has told, by `namespace/name`, and the table they make. Written by
/// the Kubernetes discovery task only.
#[derive(Debug, Default)]
pub(crate) struct Ingresses {
    current: HashMap<RevisionKey, Arc<[HostRule]>>,
    relist: Option<HashMap<RevisionKey, Arc<[HostRule]>>>,
    listed: bool,
    /// Objects changed since the table was last built.
    dirty: HashSet<RevisionKey>,
}

impl Ingresses {
    pub(crate) fn listed(&self) -> bool {
        self.listed
    }

    pub(crate) fn on_event(
        &mut self,
        event: Result<kube::runtime::watcher::Event<KIngress>, kube::runtime::watcher::Error>,
    ) {
        use kube::runtime::watcher::Event;
        let event = match event {
            Ok(e) => e,
            Err(error) => return super::kubernetes::watch_failed("ingresses", &error),
        };
        let entry = |ing: &KIngress| {
            let key = super::kubernetes::key_of(&ing.metadata)?;
            let rules: Arc<[HostRule]> = rules_of(&key, &ing.spec).into();
            Some((key, rules))
        };
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(ing) => {
                if let (Some(buf), Some((key, rules))) = (self.relist.as_mut(), entry(&ing)) {
                    buf.insert(key, rules);
                }
            }
            Event::InitDone => {
                if let Some(buf) = self.relist.take() {
                    super::kubernetes::swap_in(&mut self.current, buf, &mut self.dirty);
                }
                self.listed = true;
            }
            Event::Apply(ing) => {
                if let Some((key, rules)) = entry(&ing) {
                    // A status update leaves the rules as they were: no rebuild.
                    if self.current.get(&key).is_none_or(|old| **old != *rules) {
                        self.current.insert(key.clone(), rules);
                        self.dirty.insert(key);
                    }
                }
            }
            Event::Delete(ing) => {
                if let Some(key) = super::kubernetes::key_of(&ing.metadata)
                    && self.current.remove(&key).is_some()
                {
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// A new table when any object changed since the last one.
    pub(crate) fn rebuild(&mut self) -> Option<Routes> {
        if self.dirty.is_empty() {
            return None;
        }
        self.dirty.clear();
        let mut objects: Vec<_> = self.current.iter().collect();
        objects.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let table = RouteTable::build(objects.into_iter().flat_map(|(_, rules)| rules.iter()));
        debug!(
            ingresses = self.current.len(),
            hosts = table.len(),
            "KIngress route table rebuilt"
        );
        Some(Arc::new(table))
    }
}

#[cfg(test)]
mod tests;
