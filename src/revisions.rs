//! The revisions table: every revision kactivator serves, with its settings, from one source.
//!
//! A *revision source* owns the table and publishes snapshots on a `watch`: the config file
//! (`static` and `local` discovery, see [`spawn_config`]) or the Kubernetes API (Knative's
//! Revisions, see `discovery::kubernetes`). Lookup and the throttler read snapshots and do not
//! care where a revision came from.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Protocol, RevisionConfig, SharedConfig},
    revision::{KeyMap, RevisionKey},
};

/// What kactivator needs to know to serve one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionSpec {
    pub key: RevisionKey,
    /// Extra Host names routed to it (lowercase).
    pub hosts: Vec<String>,
    /// Concurrent requests per pod; 0 = unlimited.
    pub container_concurrency: u32,
    /// Whole request, queueing included.
    pub timeout: Duration,
    /// From arrival until the response head; `None` = off.
    pub response_start_timeout: Option<Duration>,
    /// Longest silence towards the client; `None` = off.
    pub idle_timeout: Option<Duration>,
    pub protocol: Protocol,
    /// This activator's place among the activators in the revision's path (Knative's public
    /// Endpoints); `None` when unknown, and then every pod is used.
    pub activators: Option<Subset>,
    /// Set when the pods are reached through the revision's private Service (Knative's
    /// cluster-IP mode, `kubernetes.mesh: enabled`) rather than one by one.
    pub cluster_ip: Option<ClusterRoute>,
}

/// Knative's cluster-IP mode for one revision: one destination, balanced by the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterRoute {
    /// The private Service's cluster IP and port.
    pub addr: std::net::SocketAddr,
    /// Ready pods behind it (Knative's backend count): capacity is containerConcurrency × this,
    /// shared among the activators.
    pub backends: usize,
}

/// Where this activator stands among `count` activators sharing a revision (Knative's
/// activator index and count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subset {
    pub index: usize,
    pub count: usize,
}

impl RevisionSpec {
    /// A revision as the config file describes it.
    pub fn from_config(r: &RevisionConfig) -> Self {
        Self {
            key: r.key(),
            hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            container_concurrency: r.container_concurrency,
            timeout: r.timeout,
            response_start_timeout: r.response_start_timeout,
            idle_timeout: r.idle_timeout,
            protocol: r.protocol,
            activators: None,
            cluster_ip: None,
        }
    }
}

/// Every known revision.
pub type RevisionMap = KeyMap<Arc<RevisionSpec>>;

/// A published snapshot of a [`RevisionMap`].
pub type Revisions = Arc<RevisionMap>;

/// The revisions a config lists.
pub fn from_config(cfg: &Config) -> RevisionMap {
    cfg.revisions
        .iter()
        .map(|r| (r.key(), Arc::new(RevisionSpec::from_config(r))))
        .collect()
}

/// The longest total timeout among `revisions` (the drain's grace period must reach it).
pub fn longest_timeout(revisions: &RevisionMap) -> Option<Duration> {
    revisions.values().map(|r| r.timeout).max()
}

/// The config file as a revision source: republished on every reload that changes it.
pub fn spawn_config(
    mut config: watch::Receiver<SharedConfig>,
    exit: CancellationToken,
) -> watch::Receiver<Revisions> {
    let (tx, rx) = watch::channel(Arc::new(from_config(&config.borrow_and_update())));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = exit.cancelled() => return,
                changed = config.changed() => if changed.is_err() { return },
            }
            let next = from_config(&config.borrow_and_update());
            publish(&tx, next);
        }
    });
    rx
}

/// Publishes `next` unless it equals the table in force: every publish makes readers re-plan.
pub fn publish(tx: &watch::Sender<Revisions>, next: RevisionMap) {
    tx.send_if_modified(|cur| {
        if **cur == next {
            false
        } else {
            *cur = Arc::new(next);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn config_source_republishes_only_real_changes() {
        let cfg = |yaml: &str| Arc::new(Config::parse(yaml).expect("config"));
        let (tx, rx) = watch::channel(cfg(
            "discovery: static\nrevisions:\n  - name: a\n    hosts: [A.example.com]\n",
        ));
        let exit = CancellationToken::new();
        let mut revs = spawn_config(rx, exit.clone());
        let a = RevisionKey::new("default", "a");
        assert_eq!(revs.borrow_and_update()[&a].hosts, ["a.example.com"]);
        // A change elsewhere in the file publishes nothing.
        tx.send_replace(cfg(
            "discovery: static\nactivator:\n  queue_depth: 7\nrevisions:\n  - name: a\n    hosts: [A.example.com]\n",
        ));
        tokio::task::yield_now().await;
        assert!(!revs.has_changed().expect("open"));
        tx.send_replace(cfg(
            "discovery: static\nrevisions:\n  - name: a\n    container_concurrency: 3\n    timeout: 9s\n",
        ));
        revs.changed().await.expect("published");
        let spec = revs.borrow_and_update()[&a].clone();
        assert_eq!(spec.container_concurrency, 3);
        assert_eq!(
            longest_timeout(&revs.borrow()),
            Some(Duration::from_secs(9))
        );
        exit.cancel();
    }
}
