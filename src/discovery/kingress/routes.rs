//! The route table: Host → the KIngress paths under it, and the lookup the adapter's hot path runs.

use std::{collections::HashMap, sync::Arc};

use regex::Regex;

use crate::revision::{RevisionKey, strip_port};

/// A published route table. Cheap to clone; never changed once published.
pub type Routes = Arc<RouteTable>;

/// One `http.paths[]` entry of a KIngress rule, compiled.
#[derive(Debug)]
pub(crate) struct PathRule {
    /// Full-match regex on the request path (no query); `None` matches every path.
    pub(crate) path: Option<Regex>,
    /// Lower-case header name → exact value; every one must match.
    pub(crate) headers: Vec<(Box<str>, Box<str>)>,
    /// The revisions the path's splits can send a request to (percent > 0), deduplicated.
    pub(crate) revisions: Arc<[RevisionKey]>,
}

impl PartialEq for PathRule {
    fn eq(&self, other: &Self) -> bool {
        self.path.as_ref().map(Regex::as_str) == other.path.as_ref().map(Regex::as_str)
            && self.headers == other.headers
            && self.revisions == other.revisions
    }
}

/// One `spec.rules[]` entry: its hosts (lower case) and its paths in order.
#[derive(Debug, PartialEq)]
pub(crate) struct HostRule {
    pub(crate) hosts: Vec<Box<str>>,
    pub(crate) paths: Vec<Arc<PathRule>>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// No KIngress rule names the host.
    UnknownHost,
    /// The host is known but none of its paths matches the path and headers.
    NoPath,
    /// The revisions the request can be sent to.
    Revisions(Arc<[RevisionKey]>),
}

/// Lower-case host → its paths, in KIngress order (objects by namespace/name, then rules,
/// then paths): the first match wins, as KIngress specifies for both hosts and paths.
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<Box<str>, Vec<Arc<PathRule>>>,
}

impl RouteTable {
    /// The table of `rules`, given in precedence order.
    pub(crate) fn build<'a>(rules: impl IntoIterator<Item = &'a HostRule>) -> Self {
        let mut hosts: HashMap<Box<str>, Vec<Arc<PathRule>>> = HashMap::new();
        for rule in rules {
            for host in &rule.hosts {
                hosts
                    .entry(host.clone())
                    .or_default()
                    .extend(rule.paths.iter().cloned());
            }
        }
        Self { hosts }
    }

    /// Number of hosts routed.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether `host` (any case, `:port` allowed) is a Route host.
    pub fn knows(&self, host: &str) -> bool {
        self.paths(host).is_some()
    }

    /// The revisions a request for `host` (any case, `:port` allowed) and `path` (query
    /// allowed) can reach; `header` returns a request header by lower-case name.
    pub fn lookup<'h>(
        &self,
        host: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Match {
        let Some(paths) = self.paths(host) else {
            return Match::UnknownHost;
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = if path.is_empty() { "/" } else { path };
        paths
            .iter()
            .find(|p| {
                p.path.as_ref().is_none_or(|re| re.is_match(path))
                    && p.headers
                        .iter()
                        .all(|(name, value)| header(name) == Some(&**value))
            })
            .map_or(Match::NoPath, |p| Match::Revisions(p.revisions.clone()))
    }

    fn paths(&self, host: &str) -> Option<&[Arc<PathRule>]> {
        let host = strip_port(host.trim()).trim_end_matches('.');
        if let Some(paths) = self.hosts.get(host) {
            return Some(paths);
        }
        // Most hosts arrive in lower case already; only the others pay for a copy.
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self
                .hosts
                .get(&*host.to_ascii_lowercase())
                .map(Vec::as_slice);
        }
        None
    }
}
