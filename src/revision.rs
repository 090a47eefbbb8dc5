//! `RevisionKey`: the namespace/name pair every table in kactivator is keyed by.

use std::{fmt, sync::Arc};

/// The header naming the revision a request is for (Knative's routing headers; the mesh sets
/// them, the activator and the adapter read them).
pub const REVISION_HEADER: &str = "knative-serving-revision";
/// The header naming the revision's namespace.
pub const NAMESPACE_HEADER: &str = "knative-serving-namespace";

/// The hasher of the tables keyed by [`RevisionKey`]: a cluster has thousands of revisions and
/// every endpoint update walks them, so SipHash's cost shows; seeded per process.
pub type KeyHasher = foldhash::fast::RandomState;

/// A map keyed by revision, with [`KeyHasher`].
pub type KeyMap<V> = std::collections::HashMap<RevisionKey, V, KeyHasher>;

/// A published table keyed by revision: a persistent B-tree, so that publishing a copy after
/// one revision changed costs O(log n) rather than a copy of thousands of entries, and a reader
/// finds what changed between two snapshots (`diff`) without visiting what they share.
pub type SharedKeyMap<V> = imbl::OrdMap<RevisionKey, V>;

/// A Knative revision, `namespace/name`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionKey {
    namespace: Arc<str>,
    name: Arc<str>,
}

impl RevisionKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An RFC 1123 label, as Kubernetes names namespaces and revisions.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `host` without a trailing `:port`; an IPv6 literal loses its brackets.
pub fn strip_port(host: &str) -> &str {
    // An IPv6 literal keeps its colons inside brackets.
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `(namespace, name)` from a cluster-local Service host: `<rev>.<ns>`, `<rev>.<ns>.svc` or
/// `<rev>.<ns>.svc.<cluster_domain>`. `host` is lowercase and has no port.
pub fn from_service_host<'a>(host: &'a str, cluster_domain: &str) -> Option<(&'a str, &'a str)> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut parts = host.splitn(4, '.');
    let name = parts.next().filter(|s| !s.is_empty())?;
    let namespace = parts.next().filter(|s| !s.is_empty())?;
    match (parts.next(), parts.next()) {
        (None, None) => {}
        (Some("svc"), None) => {}
        (Some("svc"), Some(domain)) if domain.eq_ignore_ascii_case(cluster_domain) => {}
        _ => return None,
    }
    Some((namespace, name))
}

impl fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
