//! `discovery: kubernetes` against a fake API server: list, watch events, reload re-planning,
//! watch reconnection, and the `kubernetes:` config keys.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kactivator::{
    config::{Config, SharedConfig},
    discovery,
    endpoints::Endpoints,
};
use support::apiserver::{FakeApiServer, slice};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

const WAIT: Duration = Duration::from_secs(10);

struct Discovery {
    api: FakeApiServer,
    config: watch::Sender<SharedConfig>,
    endpoints: watch::Receiver<Endpoints>,
    _stop: DropGuard,
}

fn config(yaml: &str) -> SharedConfig {
    Arc::new(Config::parse(&format!("discovery: kubernetes\n{yaml}")).unwrap())
}

/// Discovery over a fresh fake API server that already holds `slices`.
async fn start(yaml: &str, slices: Vec<serde_json::Value>) -> Discovery {
    let api = FakeApiServer::start().await;
    for s in slices {
        api.apply(s);
    }
    let (config, rx) = watch::channel(config(yaml));
    let stop = CancellationToken::new();
    let endpoints = discovery::spawn_kubernetes(rx, api.client(), stop.clone());
    Discovery {
        api,
        config,
        endpoints,
        _stop: stop.drop_guard(),
    }
}

/// The table as `"ns/name" → sorted "ip:port"`, for readable assertions.
fn plain(map: &Endpoints) -> BTreeMap<String, Vec<String>> {
    map.iter()
        .map(|(k, v)| {
            let mut addrs: Vec<String> = v.iter().map(ToString::to_string).collect();
            addrs.sort();
            (k.to_string(), addrs)
        })
        .collect()
}

fn table(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(ToString::to_string).collect()))
        .collect()
}

impl Discovery {
    /// Waits (bounded) until the published table is exactly `want`.
    async fn expect(&mut self, want: &[(&str, &[&str])]) {
        let want = table(want);
        let got = tokio::time::timeout(WAIT, self.endpoints.wait_for(|m| plain(m) == want))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            got,
            "table never became {want:?}; last {:?}; requests {:?}",
            plain(&self.endpoints.borrow()),
            self.api.requests()
        );
    }
}

const HELLO: &str = "revisions: [{namespace: default, name: hello}]";
const HTTP: &[(&str, u16)] = &[("http-queueadm", 8022), ("http", 8012), ("http2", 8013)];

#[tokio::test]
async fn listed_and_added_slices_publish_their_ready_endpoints() {
    let listed = slice(
        "default",
        "hello-private-a",
        "hello-private",
        HTTP,
        &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))],
    );
    let mut d = start(HELLO, vec![listed]).await;
    d.expect(&[("default/hello", &["10.0.0.1:8012"])]).await;

    // A second slice of the same Service adds to the first; `ready` absent counts as ready.
    d.api.apply(slice(
        "default",
        "hello-private-b",
        "hello-private",
        HTTP,
        &[("10.0.0.3", None), ("10.0.0.4", Some(false))],
    ));
    d.expect(&[("default/hello", &["10.0.0.1:8012", "10.0.0.3:8012"])])
        .await;

    let watch = &d.api.watch_requests()[0];
    assert!(
        watch.starts_with("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?"),
        "{watch}"
    );
    assert!(
        watch.contains("labelSelector=kubernetes.io%2Fservice-name+in+%28hello-private%29"),
        "{watch}"
    );
}

#[tokio::test]
async fn modified_slices_update_and_deleted_ones_remove() {
    let one = |endpoints: &[(&str, Option<bool>)]| {
        slice(
            "default",
            "hello-private-a",
            "hello-private",
            HTTP,
            endpoints,
        )
    };
    let mut d = start(HELLO, vec![one(&[("10.0.0.1", Some(true))])]).await;
    d.expect(&[("default/hello", &["10.0.0.1:8012"])]).await;

    // Pod 1 turns unready while pod 2 becomes ready.
    d.api
        .apply(one(&[("10.0.0.1", Some(false)), ("10.0.0.2", Some(true))]));
    d.expect(&[("default/hello", &["10.0.0.2:8012"])]).await;

    d.api.delete("default", "hello-private-a");
    d.expect(&[]).await;
}

#[tokio::test]
async fn slices_of_other_services_and_namespaces_are_not_endpoints() {
    let mut d = start(
        HELLO,
        vec![
            // The public Service of the revision, another revision, another namespace.
            slice(
                "default",
                "hello-a",
                "hello",
                HTTP,
                &[("10.0.1.1", Some(true))],
            ),
            slice(
                "default",
                "bye-private-a",
                "bye-private",
                HTTP,
                &[("10.0.1.2", Some(true))],
            ),
            slice(
                "other",
                "hello-private-a",
                "hello-private",
                HTTP,
                &[("10.0.1.3", Some(true))],
            ),
        ],
    )
    .await;
    d.api.apply(slice(
        "default",
        "hello-private-a",
        "hello-private",
        HTTP,
        &[("10.0.0.1", Some(true))],
    ));
    d.expect(&[("default/hello", &["10.0.0.1:8012"])]).await;
}

#[tokio::test]
async fn reloaded_revisions_are_watched_and_removed_ones_dropped() {
    let mut d = start(
        HELLO,
        vec![
            slice(
                "default",
                "hello-private-a",
                "hello-private",
                HTTP,
                &[("10.0.0.1", Some(true))],
            ),
            slice(
                "default",
                "world-private-a",
                "world-private",
                HTTP,
                &[("10.0.0.2", Some(true))],
            ),
            slice(
                "other",
                "third-private-a",
                "third-private",
                HTTP,
                &[("10.0.0.3", Some(true))],
            ),
        ],
    )
    .await;
    d.expect(&[("default/hello", &["10.0.0.1:8012"])]).await;

    // Re-planning `default` swaps its watcher; `hello` must never blink out meanwhile.
    let mut seen = d.endpoints.clone();
    let stopped = CancellationToken::new();
    let gaps = tokio::spawn({
        let stopped = stopped.clone();
        async move {
            let mut gaps = 0;
            loop {
                tokio::select! {
                    () = stopped.cancelled() => return gaps,
                    changed = seen.changed() => if changed.is_err() { return gaps },
                }
                if !plain(&seen.borrow_and_update()).contains_key("default/hello") {
                    gaps += 1;
                }
            }
        }
    });
    d.config.send_replace(config(
        "revisions:
  - {namespace: default, name: hello}
  - {namespace: default, name: world}
  - {namespace: other, name: third}
",
    ));
    d.expect(&[
        ("default/hello", &["10.0.0.1:8012"]),
        ("default/world", &["10.0.0.2:8012"]),
        ("other/third", &["10.0.0.3:8012"]),
    ])
    .await;
    stopped.cancel();
    let gaps = tokio::time::timeout(WAIT, gaps).await.unwrap().unwrap();
    assert_eq!(gaps, 0, "hello vanished while its namespace was re-planned");
    let watches = d.api.watch_requests();
    assert!(
        watches
            .iter()
            .any(|w| w.contains("in+%28hello-private%2Cworld-private%29")),
        "default was not re-watched with both services: {watches:?}"
    );

    d.config
        .send_replace(config("revisions: [{namespace: default, name: world}]"));
    d.expect(&[("default/world", &["10.0.0.2:8012"])]).await;
    // `other` is no longer watched; `world` still is.
    d.api.apply(slice(
        "other",
        "third-private-a",
        "third-private",
        HTTP,
        &[("10.0.0.4", Some(true))],
    ));
    d.api.apply(slice(
        "default",
        "world-private-a",
        "world-private",
        HTTP,
        &[("10.0.0.5", Some(true))],
    ));
    d.expect(&[("default/world", &["10.0.0.5:8012"])]).await;
}

#[tokio::test]
async fn the_watch_resumes_after_the_server_drops_it() {
    let mut d = start(
        HELLO,
        vec![slice(
            "default",
            "hello-private-a",
            "hello-private",
            HTTP,
            &[("10.0.0.1", Some(true))],
        )],
    )
    .await;
    d.expect(&[("default/hello", &["10.0.0.1:8012"])]).await;
    d.api.wait_watches(1).await;

    d.api.drop_watches();
    // Made while (possibly) disconnected: the re-watch from the last resource version replays it.
    d.api.apply(slice(
        "default",
        "hello-private-a",
        "hello-private",
        HTTP,
        &[("10.0.0.2", Some(true))],
    ));
    d.expect(&[("default/hello", &["10.0.0.2:8012"])]).await;
    d.api.wait_watches(2).await;

    // And the resumed watch carries live events too.
    d.api.delete("default", "hello-private-a");
    d.expect(&[]).await;
}

#[tokio::test]
async fn an_expired_watch_lists_again_and_forgets_what_was_deleted_meanwhile() {
    let mut d = start(
        HELLO,
        vec![
            slice(
                "default",
                "hello-private-a",
                "hello-private",
                HTTP,
                &[("10.0.0.1", Some(true))],
            ),
            slice(
                "default",
                "hello-private-b",
                "hello-private",
                HTTP,
                &[("10.0.0.2", Some(true))],
            ),
        ],
    )
    .await;
    d.expect(&[("default/hello", &["10.0.0.1:8012", "10.0.0.2:8012"])])
        .await;
    d.api.wait_watches(1).await;

    // While the watch is down the history is compacted away: only a new list can tell that
    // slice b went and slice c came.
    // (The test runtime is single-threaded: the client cannot re-watch before `compact`.)
    d.api.drop_watches();
    d.api.delete("default", "hello-private-b");
    d.api.apply(slice(
        "default",
        "hello-private-c",
        "hello-private",
        HTTP,
        &[("10.0.0.3", Some(true))],
    ));
    d.api.compact();
    d.expect(&[("default/hello", &["10.0.0.1:8012", "10.0.0.3:8012"])])
        .await;
    assert_eq!(d.api.list_requests().len(), 2, "{:?}", d.api.requests());
}

#[tokio::test]
async fn a_refused_list_is_retried() {
    let api = FakeApiServer::start().await;
    // Forbidden until an operator fixes RBAC: the watcher backs off and tries again.
    api.forbid_next(1);
    api.apply(slice(
        "default",
        "hello-private-a",
        "hello-private",
        HTTP,
        &[("10.0.0.1", Some(true))],
    ));
    let (_config, rx) = watch::channel(config(HELLO));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let mut endpoints = discovery::spawn_kubernetes(rx, api.client(), stop);
    let listed = tokio::time::timeout(WAIT, endpoints.wait_for(|m| !m.is_empty())).await;
    assert!(listed.is_ok(), "requests {:?}", api.requests());
    assert_eq!(api.list_requests().len(), 2, "{:?}", api.requests());
}

#[tokio::test]
async fn port_name_and_service_suffix_come_from_the_reloadable_config() {
    let mut d = start(
        "kubernetes: {port_name: http2}
revisions: [{namespace: default, name: hello}]",
        vec![
            slice(
                "default",
                "hello-private-a",
                "hello-private",
                HTTP,
                &[("10.0.0.1", Some(true))],
            ),
            slice(
                "default",
                "hello-pods-a",
                "hello-pods",
                &[("web", 9000)],
                &[("10.0.0.2", Some(true))],
            ),
        ],
    )
    .await;
    d.expect(&[("default/hello", &["10.0.0.1:8013"])]).await;

    // A lone port is used whatever its name.
    d.config.send_replace(config(
        "kubernetes: {service_suffix: -pods}
revisions: [{namespace: default, name: hello}]",
    ));
    d.expect(&[("default/hello", &["10.0.0.2:9000"])]).await;
}

#[test]
fn kubernetes_keys_are_validated() {
    let ok = Config::parse(
        "discovery: kubernetes
kubernetes: {namespace: apps, port_name: http2, service_suffix: ''}
revisions: [{namespace: apps, name: hello}]",
    )
    .unwrap();
    assert_eq!(ok.kubernetes.port_name, "http2");
    let defaults = Config::parse("discovery: kubernetes").unwrap();
    assert_eq!(defaults.kubernetes.port_name, "http");
    assert_eq!(defaults.kubernetes.service_suffix, "-private");
    assert_eq!(defaults.kubernetes.namespace, None);

    for (yaml, key) in [
        ("kubernetes: {port_name: HTTP}", "kubernetes.port_name"),
        (
            "kubernetes: {port_name: a-very-long-port-name}",
            "kubernetes.port_name",
        ),
        ("kubernetes: {namespace: Apps}", "kubernetes.namespace"),
        ("kubernetes: {watch: all}", "kubernetes"),
        (
            "kubernetes: {service_suffix: _private}\nrevisions: [{name: hello}]",
            "kubernetes.service_suffix",
        ),
        (
            "kubernetes: {namespace: apps}\nrevisions: [{namespace: default, name: hello}]",
            "revisions[0].namespace",
        ),
    ] {
        let err = Config::parse(&format!("discovery: kubernetes\n{yaml}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(key), "{yaml}: {err}");
    }
    // The Service name only matters when discovery reads it.
    Config::parse("kubernetes: {service_suffix: _x}\nrevisions: [{name: hello, endpoints: []}]")
        .unwrap();
}

/// The binary in activator mode, its Kubernetes client found through `$KUBECONFIG`.
fn kactivator(dir: &std::path::Path, kubeconfig: &std::path::Path) -> tokio::process::Command {
    let config = dir.join("kactivator.yaml");
    std::fs::write(
        &config,
        "listen: {http: 127.0.0.1:0, h2c: 127.0.0.1:0, admin: 127.0.0.1:0, grpc: 127.0.0.1:0, autoscaler: 127.0.0.1:0}
discovery: kubernetes
revisions: [{namespace: apps, name: hello}]
",
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kactivator"));
    cmd.args(["--mode", "activator", "--config"])
        .arg(&config)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        // Not in a pod, whatever the machine running the tests is.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_binary_watches_the_configured_revisions_through_its_kubeconfig() {
    let api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let mut child = kactivator(dir.path(), &kubeconfig).spawn().unwrap();

    api.wait_watches(1).await;
    let watch = &api.watch_requests()[0];
    assert!(
        watch.starts_with("/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices?"),
        "{watch}"
    );
    assert!(watch.contains("hello-private"), "{watch}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_without_a_kubernetes_client() {
    let dir = tempfile::tempdir().unwrap();
    let child = kactivator(dir.path(), &dir.path().join("missing-kubeconfig"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("discovery: kubernetes needs a service account or a kubeconfig"),
        "{stderr}"
    );
}
