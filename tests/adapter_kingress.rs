//! Adapter mode in a mesh: the real binary learns which revisions a Host reaches from Knative's
//! networking Ingress objects (KIngress) in a fake API server, through `$KUBECONFIG`, with no
//! `revisions[]` and no routing headers on the Check (ext_authz runs before the route adds them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeSet, time::Duration};

use support::{
    apiserver::{KPath, kingress},
    app::metric_value,
    binary::{Ports, Running, start_on, try_get},
    cluster::Cluster,
    mixer::*,
    wait,
};

const NS: &str = "default";

impl Cluster {
    /// The binary in adapter mode with `discovery: kubernetes`, once `/readyz` says 200 (every
    /// watch, KIngress included, has listed).
    async fn adapter(&self) -> Running {
        let kubeconfig = self.api.write_kubeconfig(self.dir.path());
        // A short poke interval: every Check below pokes again instead of being coalesced.
        let yaml = format!(
            "discovery: kubernetes\nautoscaler:\n  url: {}\nadapter:\n  poke_interval: 1ms\n",
            self.autoscaler.url()
        );
        let a = start_on(
            Ports::free(),
            "adapter",
            self.dir.path(),
            &yaml,
            None,
            &[
                ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                ("RUST_LOG", "info,kactivator=debug"),
            ],
        );
        wait::until(
            format_args!("/readyz 200 (logs in {})", self.dir.path().display()),
            async || {
                try_get(a.ports.admin, "/readyz", Duration::from_secs(2))
                    .await
                    .map(|(s, _)| s)
                    == Some(200)
            },
        )
        .await;
        a
    }

    /// Every revision poked so far, as `ns/name`.
    fn poked(&self) -> BTreeSet<String> {
        self.autoscaler
            .frames()
            .iter()
            .flat_map(|f| f.protobuf().messages)
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .collect()
    }

    /// How many pokes `rev` got so far.
    fn pokes_of(&self, rev: &str) -> usize {
        self.autoscaler
            .frames()
            .iter()
            .flat_map(|f| f.protobuf().messages)
            .filter(|m| m.namespace == NS && m.name == rev)
            .count()
    }

    async fn wait_poked(&self, revs: &[&str]) {
        let want: Vec<String> = revs.iter().map(|r| format!("{NS}/{r}")).collect();
        wait::until(&format!("pokes for {want:?}"), async || {
            let poked = self.poked();
            want.iter().all(|w| poked.contains(w))
        })
        .await;
    }
}

const ALLOW: [u8; 4] = [0x0a, 0x00, 0x1a, 0x00];

async fn check(a: &Running, host: &str, path: &str, headers: &[(&str, &str)]) {
    let ch = channel(a.ports.grpc).await;
    let reply = raw_call(
        ch,
        EXT_AUTHZ_PATH,
        ext_authz_request_to(host, path, headers),
    )
    .await
    .unwrap();
    assert_eq!(reply, ALLOW, "every Check is allowed");
}

/// `kactivator_adapter_unknown_hosts_total{api="ext_authz"}`.
async fn unknown_hosts(a: &Running) -> Option<f64> {
    let text = try_get(a.ports.admin, "/metrics", Duration::from_secs(2))
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    metric_value(
        &text,
        "kactivator_adapter_unknown_hosts_total{api=\"ext_authz\"}",
    )
}

fn route<'a>(splits: &'a [(&'a str, i64)]) -> [KPath<'a>; 1] {
    [KPath {
        path: None,
        headers: &[],
        splits,
    }]
}

#[tokio::test]
async fn checks_poke_the_revisions_a_route_host_path_and_split_reach() {
    let c = Cluster::start().await;
    // Route `solo`: one revision, external and cluster-local hosts.
    c.api.apply(kingress(
        NS,
        "solo",
        &[
            (
                &["solo.default.example.com"],
                "ExternalIP",
                &route(&[("solo-00001", 100)]),
            ),
            (
                &[
                    "solo.default",
                    "solo.default.svc",
                    "solo.default.svc.cluster.local",
                ],
                "ClusterLocal",
                &route(&[("solo-00001", 100)]),
            ),
        ],
    ));
    // Route `hello`: 50/50 between two revisions, a third at 0 % reached only by its tag host.
    c.api.apply(kingress(
        NS,
        "hello",
        &[
            (
                &["hello.default.example.com"],
                "ExternalIP",
                &route(&[("hello-00001", 50), ("hello-00002", 50), ("hello-00003", 0)]),
            ),
            (
                &["latest-hello.default.example.com"],
                "ExternalIP",
                &route(&[("hello-00003", 100)]),
            ),
        ],
    ));
    // Route `paths`: selected by path.
    let v1 = [("api-v1", 100)];
    let v2 = [("api-v2", 100)];
    c.api.apply(kingress(
        NS,
        "paths",
        &[(
            &["paths.default.example.com"],
            "ExternalIP",
            &[
                KPath {
                    path: Some("/v1(/.*)?"),
                    headers: &[],
                    splits: &v1,
                },
                KPath {
                    path: Some("/v2(/.*)?"),
                    headers: &[],
                    splits: &v2,
                },
            ],
        )],
    ));
    // Route `mixer`: for Mixer's destination.service.
    c.api.apply(kingress(
        NS,
        "mixer",
        &[(
            &["mixer.default.svc.cluster.local"],
            "ClusterLocal",
            &route(&[("mixer-00001", 100)]),
        )],
    ));
    let a = c.adapter().await;

    // Host only, any case and with a port.
    check(&a, "Solo.Default.Example.com:80", "/", &[]).await;
    c.wait_poked(&["solo-00001"]).await;
    // A cluster-local host of the Route is the Route's, not a `<rev>.<ns>.svc` revision host.
    check(&a, "solo.default.svc.cluster.local", "/", &[]).await;

    // 50/50 pokes both; the 0 % revision is not poked.
    check(&a, "hello.default.example.com", "/anything?q=1", &[]).await;
    c.wait_poked(&["hello-00001", "hello-00002"]).await;
    assert!(!c.poked().contains("default/hello-00003"));
    // The tag host pokes its revision.
    check(&a, "latest-hello.default.example.com", "/", &[]).await;
    c.wait_poked(&["hello-00003"]).await;

    // The path selects the revision.
    check(&a, "paths.default.example.com", "/v2/items?x=1", &[]).await;
    c.wait_poked(&["api-v2"]).await;
    assert!(!c.poked().contains("default/api-v1"));
    // No path matches: allowed, nothing poked.
    check(&a, "paths.default.example.com", "/v3", &[]).await;
    check(&a, "paths.default.example.com", "/v1", &[]).await;
    c.wait_poked(&["api-v1"]).await;

    // Mixer CHECK with destination.service naming a Route host.
    let ch = channel(a.ports.grpc).await;
    let reply = raw_call(
        ch,
        AUTHORIZATION_PATH,
        authorization_request(NS, "mixer.default.svc.cluster.local", ""),
    )
    .await
    .unwrap();
    assert_eq!(&reply[..2], &[0x0a, 0x00]);
    c.wait_poked(&["mixer-00001"]).await;

    // An unknown host pokes nothing and is counted; a known one after it still pokes, so the
    // unknown one had its chance to (pokes travel in order on one connection).
    let solo = c.pokes_of("solo-00001");
    check(&a, "nobody.example.com", "/", &[]).await;
    check(&a, "nobody.example.com:8080", "/", &[]).await;
    check(&a, "solo.default.svc", "/", &[]).await;
    wait::until("the sentinel poke", async || {
        c.pokes_of("solo-00001") > solo
    })
    .await;
    assert_eq!(unknown_hosts(&a).await, Some(2.0));
    let want: BTreeSet<String> = [
        "solo-00001",
        "hello-00001",
        "hello-00002",
        "hello-00003",
        "api-v1",
        "api-v2",
        "mixer-00001",
    ]
    .iter()
    .map(|r| format!("{NS}/{r}"))
    .collect();
    assert_eq!(c.poked(), want, "exactly the revisions the routes reach");
}

#[tokio::test]
async fn a_kingress_update_changes_the_mapping_live() {
    let c = Cluster::start().await;
    c.api.apply(kingress(
        NS,
        "live",
        &[(
            &["live.default.example.com"],
            "ExternalIP",
            &route(&[("live-00001", 100)]),
        )],
    ));
    let a = c.adapter().await;
    check(&a, "live.default.example.com", "/", &[]).await;
    c.wait_poked(&["live-00001"]).await;

    // The route moves to a new revision: Checks poke it once the watch has delivered the update.
    c.api.apply(kingress(
        NS,
        "live",
        &[(
            &["live.default.example.com"],
            "ExternalIP",
            &route(&[("live-00002", 100)]),
        )],
    ));
    wait::until("the update to take effect", async || {
        check(&a, "live.default.example.com", "/", &[]).await;
        c.poked().contains("default/live-00002")
    })
    .await;

    // Deleted: the host is unknown again.
    c.api.delete_kind("Ingress", NS, "live");
    wait::until("the delete to take effect", async || {
        check(&a, "live.default.example.com", "/", &[]).await;
        unknown_hosts(&a).await.is_some_and(|n| n >= 1.0)
    })
    .await;
}
