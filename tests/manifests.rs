//! Every manifest under `manifests/`, parsed into typed Kubernetes objects and checked against
//! the binary: listen ports, probe paths, the environment it reads, one image reference; and
//! the Knative overlay checked to change the image of Knative's activator and nothing else.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Container, Probe, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kactivator::{
    cli::Mode,
    config::{Config, DiscoveryKind, PodEnv, ProbeStyle},
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The one image every manifest runs: the crate's version.
fn image() -> String {
    format!(
        "ghcr.io/kactivator/kactivator:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Environment variables the binary reads (besides the `KACTIVATOR_*` twins of its flags).
const ENV_READ: &[&str] = &[
    "POD_NAME",                 // Config::resolved_pod_name: stats
    "POD_IP",                   // subsetting; in-pod detection
    "SYSTEM_NAMESPACE",         // in-pod defaults: autoscaler URL, config-logging
    "CONFIG_LOGGING_NAME",      // in-pod defaults: log level
    "CLUSTER_DOMAIN",           // in-pod defaults: autoscaler URL
    "KUBERNETES_SERVICE_HOST",  // in-pod detection, Kubernetes client
    "RUST_LOG",                 // log filter
    "GRPC_ADAPTER_CREDENTIAL",  // adapter TLS (2019 adapter's names)
    "GRPC_ADAPTER_PRIVATE_KEY", //
    "GRPC_ADAPTER_CERTIFICATE", //
];

/// The documents of a manifest file, as JSON values.
fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The typed objects of a manifest file, by kind.
#[derive(Default)]
struct Objects {
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    other: Vec<Value>,
}

fn objects(file: &str) -> Objects {
    fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }
    let mut out = Objects::default();
    for doc in documents(file) {
        match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
            (Some("v1"), Some("ConfigMap")) => out.config_maps.push(typed(doc)),
            (Some("apps/v1"), Some("Deployment")) => out.deployments.push(typed(doc)),
            (Some("v1"), Some("Service")) => out.services.push(typed(doc)),
            (Some("v1"), Some("ServiceAccount")) => out.service_accounts.push(typed(doc)),
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                out.cluster_roles.push(typed(doc));
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                out.cluster_role_bindings.push(typed(doc));
            }
            _ => out.other.push(doc),
        }
    }
    out
}

fn container<'a>(d: &'a Deployment, name: &str) -> &'a Container {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers.iter().find(|c| c.name == name).unwrap()
}

/// Ports a container declares, by name.
fn ports(c: &Container) -> BTreeMap<String, u16> {
    c.ports
        .iter()
        .flatten()
        .map(|p| {
            let name = p.name.clone().unwrap_or_default();
            (name, u16::try_from(p.container_port).unwrap())
        })
        .collect()
}

/// The (path, port) an httpGet probe asks, its named port resolved.
fn http_get(probe: Option<&Probe>, c: &Container) -> (String, u16) {
    let get = probe.unwrap().http_get.as_ref().unwrap();
    let port = match &get.port {
        IntOrString::Int(n) => u16::try_from(*n).unwrap(),
        IntOrString::String(name) => ports(c)[name],
    };
    (get.path.clone().unwrap_or_else(|| "/".into()), port)
}

fn env_names(c: &Container) -> Vec<String> {
    c.env.iter().flatten().map(|e| e.name.clone()).collect()
}

fn assert_env_is_read(c: &Container) {
    for name in env_names(c) {
        assert!(
            ENV_READ.contains(&name.as_str()) || name.starts_with("KACTIVATOR_"),
            "container {} sets {name}, which the binary does not read",
            c.name
        );
    }
}

/// The config file a Deployment mounts from its ConfigMap, checked against its args.
fn mounted_config(objs: &Objects, d: &Deployment, c: &Container) -> Config {
    let args = c.args.clone().unwrap_or_default();
    let at = args.iter().position(|a| a == "--config").unwrap();
    let file = Path::new(&args[at + 1]);
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == file.parent().unwrap())
        .unwrap();
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm_name = &volume.config_map.as_ref().unwrap().name;
    let cm = objs
        .config_maps
        .iter()
        .find(|cm| &cm.metadata.name.clone().unwrap() == cm_name)
        .unwrap();
    let key = file.file_name().unwrap().to_str().unwrap();
    let text = &cm.data.as_ref().unwrap()[key];
    Config::parse(text).unwrap_or_else(|e| panic!("{cm_name}/{key}: {e}"))
}

fn grace(d: &Deployment) -> Duration {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    Duration::from_secs(
        pod.termination_grace_period_seconds
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

/// Every `image` field anywhere in a document.
fn images(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("image", Value::String(s)) => out.push(s.clone()),
                    _ => images(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| images(v, out)),
        _ => {}
    }
}

fn manifest_files() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root.join("manifests")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_manifest_runs_the_one_image() {
    let files = manifest_files();
    assert!(files.len() >= 8, "{files:?}");
    let mut found = BTreeSet::new();
    for file in &files {
        for doc in documents(file) {
            let mut list = Vec::new();
            images(&doc, &mut list);
            for image in list {
                found.insert((image, file.clone()));
            }
        }
    }
    let images: BTreeSet<_> = found.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(images, BTreeSet::from([image()]), "{found:?}");
    // One each: the activator, the adapter, the Knative patch.
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn activator_manifest_matches_the_binary() {
    let objs = objects("manifests/activator/kactivator.yaml");
    assert!(objs.other.is_empty(), "{:?}", objs.other);
    let [d] = &objs.deployments[..] else {
        panic!("one Deployment")
    };
    let c = container(d, "kactivator");
    assert_eq!(c.image.as_deref(), Some(image().as_str()));
    let args = c.args.clone().unwrap();
    assert_eq!(args[..2], ["--mode", "activator"]);
    let cfg = mounted_config(&objs, d, c);
    assert_eq!(cfg.discovery, DiscoveryKind::Kubernetes);
    assert_eq!(cfg.probe_style(), ProbeStyle::Knative);
    assert!(
        cfg.autoscaler.url.is_some(),
        "no local autoscaler in a cluster"
    );
    for addr in [
        cfg.listen.http,
        cfg.listen.h2c,
        cfg.listen.admin(Mode::Activator),
    ] {
        assert!(
            addr.ip().is_unspecified(),
            "{addr} is not reachable from the pod network"
        );
    }
    let declared: BTreeSet<u16> = ports(c).into_values().collect();
    let listening = BTreeSet::from([
        cfg.listen.http.port(),
        cfg.listen.h2c.port(),
        cfg.listen.admin(Mode::Activator).port(),
    ]);
    assert_eq!(declared, listening);
    assert_eq!(
        http_get(c.readiness_probe.as_ref(), c),
        ("/readyz".into(), cfg.listen.admin(Mode::Activator).port())
    );
    assert_eq!(
        http_get(c.liveness_probe.as_ref(), c),
        ("/healthz".into(), cfg.listen.admin(Mode::Activator).port())
    );
    assert_env_is_read(c);
    assert!(env_names(c).contains(&"POD_NAME".into()));
    assert!(env_names(c).contains(&"POD_IP".into()), "subsetting");
    assert!(grace(d) > cfg.shutdown.drain_delay + cfg.shutdown.grace_period);
    let security = c.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    // The Service sends to ports the container declares, and selects its pods.
    let [svc] = &objs.services[..] else {
        panic!("one Service")
    };
    let spec = svc.spec.as_ref().unwrap();
    for p in spec.ports.iter().flatten() {
        let target = match p.target_port.as_ref().unwrap() {
            IntOrString::Int(n) => u16::try_from(*n).unwrap(),
            IntOrString::String(name) => ports(c)[name],
        };
        assert!(declared.contains(&target), "Service port {p:?}");
    }
    let labels = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
    for (k, v) in spec.selector.iter().flatten() {
        assert_eq!(labels.labels.as_ref().unwrap().get(k), Some(v));
    }
}

#[test]
fn activator_rbac_grants_what_kubernetes_discovery_reads() {
    let deployment = objects("manifests/activator/kactivator.yaml");
    let rbac = objects("manifests/activator/rbac.yaml");
    assert!(rbac.other.is_empty(), "{:?}", rbac.other);
    // discovery/kubernetes.rs: serving.knative.dev Revisions, core Endpoints and Services, read
    // only (what Knative's activator ClusterRole grants).
    assert_rbac(
        &deployment.deployments[0],
        &rbac,
        &["/endpoints", "/services", "serving.knative.dev/revisions"],
    );
}

#[test]
fn adapter_rbac_grants_what_its_kubernetes_discovery_reads() {
    let objs = objects("manifests/adapter/deployment.yaml");
    let d = &objs.deployments[0];
    let c = container(d, "kactivator");
    assert_eq!(
        mounted_config(&objs, d, c).discovery,
        kactivator::config::DiscoveryKind::Kubernetes
    );
    // discovery/kubernetes.rs with the KIngress watch (discovery/kingress.rs) of adapter mode.
    assert_rbac(
        d,
        &objs,
        &[
            "/endpoints",
            "/services",
            "networking.internal.knative.dev/ingresses",
            "serving.knative.dev/revisions",
        ],
    );
}

/// One ServiceAccount (the Deployment's, in its namespace), one ClusterRole granting exactly
/// get/list/watch on `want` (`group/resource`), one ClusterRoleBinding tying them.
fn assert_rbac(deployment: &Deployment, rbac: &Objects, want: &[&str]) {
    let pod = deployment.spec.clone().unwrap().template.spec.unwrap();
    let [account] = &rbac.service_accounts[..] else {
        panic!("one ServiceAccount")
    };
    assert_eq!(account.metadata.name, pod.service_account_name);
    assert_eq!(account.metadata.namespace, deployment.metadata.namespace);
    let [role] = &rbac.cluster_roles[..] else {
        panic!("one ClusterRole")
    };
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        let verbs: BTreeSet<_> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{rule:?}");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(granted, want);
    let [binding] = &rbac.cluster_role_bindings[..] else {
        panic!("one ClusterRoleBinding")
    };
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
}

#[test]
fn adapter_manifest_matches_the_binary() {
    let objs = objects("manifests/adapter/deployment.yaml");
    let [d] = &objs.deployments[..] else {
        panic!("one Deployment")
    };
    let c = container(d, "kactivator");
    assert_eq!(c.image.as_deref(), Some(image().as_str()));
    assert_eq!(c.args.clone().unwrap()[..2], ["--mode", "adapter"]);
    let cfg = mounted_config(&objs, d, c);
    let declared: BTreeSet<u16> = ports(c).into_values().collect();
    assert_eq!(
        declared,
        BTreeSet::from([
            cfg.listen.grpc.port(),
            cfg.listen.admin(Mode::Adapter).port()
        ])
    );
    assert!(
        cfg.listen.grpc.ip().is_unspecified()
            && cfg.listen.admin(Mode::Adapter).ip().is_unspecified()
    );
    assert_eq!(
        http_get(c.readiness_probe.as_ref(), c),
        ("/readyz".into(), cfg.listen.admin(Mode::Adapter).port())
    );
    assert_eq!(
        http_get(c.liveness_probe.as_ref(), c),
        ("/healthz".into(), cfg.listen.admin(Mode::Adapter).port())
    );
    assert_env_is_read(c);
    assert!(grace(d) > cfg.shutdown.drain_delay + cfg.shutdown.grace_period);
}

/// `manifests/knative/kustomization.yaml`: nothing but Knative's release and one patch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
    patches: Vec<PatchRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRef {
    path: String,
}

#[test]
fn knative_overlay_changes_only_the_activator_image() {
    let [doc] = &documents("manifests/knative/kustomization.yaml")[..] else {
        panic!("one document")
    };
    let k: Kustomization = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let [release] = &k.resources[..] else {
        panic!("one resource: Knative's release")
    };
    let version = release
        .strip_prefix("https://github.com/knative/serving/releases/download/knative-v")
        .and_then(|r| r.strip_suffix("/serving-core.yaml"))
        .unwrap_or_else(|| panic!("{release} is not Knative Serving's serving-core.yaml"));
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{version}"
    );
    let [patch] = &k.patches[..] else {
        panic!("one patch")
    };
    let [patch] = &documents(&format!("manifests/knative/{}", patch.path))[..] else {
        panic!("one document")
    };
    // The whole patch, field for field: a strategic merge of this changes the image only.
    assert_eq!(
        *patch,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "activator", "namespace": "knative-serving"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "activator", "image": image()}
            ]}}}
        })
    );
    let typed: Deployment = serde_json::from_value(patch.clone()).unwrap();
    assert_eq!(container(&typed, "activator").image, Some(image()));
}

/// What kactivator depends on in Knative's `activator` Deployment, from knative/serving
/// `config/core/deployments/activator.yaml` at knative-v1.23.0 (trimmed to those fields).
const KNATIVE_ACTIVATOR: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: activator, namespace: knative-serving}
spec:
  selector: {matchLabels: {app: activator, role: activator}}
  template:
    metadata: {labels: {app: activator, role: activator}}
    spec:
      serviceAccountName: activator
      containers:
      - name: activator
        image: ko://knative.dev/serving/cmd/activator
        env:
        - {name: GOGC, value: "500"}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: SYSTEM_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: CONFIG_LOGGING_NAME, value: config-logging}
        - {name: CONFIG_OBSERVABILITY_NAME, value: config-observability}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          capabilities: {drop: [ALL]}
        ports:
        - {name: metrics, containerPort: 9090}
        - {name: profiling, containerPort: 8008}
        - {name: http1, containerPort: 8012}
        - {name: h2c, containerPort: 8013}
        readinessProbe:
          httpGet: {port: 8012}
          periodSeconds: 5
          failureThreshold: 5
        livenessProbe:
          httpGet: {port: 8012}
          periodSeconds: 10
          failureThreshold: 12
          initialDelaySeconds: 15
      terminationGracePeriodSeconds: 600
"#;

#[test]
fn in_pod_defaults_fit_knatives_activator_deployment() {
    let d: Deployment = serde_norway::from_str(KNATIVE_ACTIVATOR).unwrap();
    let c = container(&d, "activator");
    // The environment that Deployment gives the container (no service account token here:
    // POD_IP alone marks the pod).
    let mut env = PodEnv::default();
    for var in c.env.iter().flatten() {
        let value = var
            .value
            .clone()
            .unwrap_or_else(|| match var.name.as_str() {
                "POD_IP" => "10.244.1.7".into(),
                "SYSTEM_NAMESPACE" => "knative-serving".into(),
                _ => "activator-6d5c9b7f4-x2x9q".into(),
            });
        match var.name.as_str() {
            "POD_IP" => env.pod_ip = Some(value),
            "SYSTEM_NAMESPACE" => env.system_namespace = Some(value),
            "CONFIG_LOGGING_NAME" => env.config_logging_name = Some(value),
            _ => {}
        }
    }
    assert!(env.in_pod().is_some());
    let cfg = Config::in_pod(&env).unwrap();
    let p = ports(c);
    assert_eq!(cfg.listen.http.port(), p["http1"]);
    assert_eq!(cfg.listen.h2c.port(), p["h2c"]);
    assert_eq!(cfg.listen.admin(Mode::Activator).port(), p["metrics"]);
    for addr in [
        cfg.listen.http,
        cfg.listen.h2c,
        cfg.listen.admin(Mode::Activator),
    ] {
        assert!(addr.ip().is_unspecified(), "{addr}");
    }
    // Both probes go to the data port, path `/`: answered by probe_handler (kubelet User-Agent).
    assert_eq!(
        http_get(c.readiness_probe.as_ref(), c),
        ("/".into(), p["http1"])
    );
    assert_eq!(
        http_get(c.liveness_probe.as_ref(), c),
        ("/".into(), p["http1"])
    );
    // Our drain ends before the kubelet's SIGKILL.
    assert!(cfg.shutdown.drain_delay + cfg.shutdown.grace_period < grace(&d));
    assert_eq!(
        cfg.autoscaler.url.as_deref(),
        Some("ws://autoscaler.knative-serving.svc.cluster.local:8080")
    );
    // Patched as the overlay does, the Deployment runs our image and is otherwise unchanged.
    let mut patched = serde_json::to_value(&d).unwrap();
    let [patch] = &documents("manifests/knative/activator-image.yaml")[..] else {
        panic!("one document")
    };
    let new_image = &patch["spec"]["template"]["spec"]["containers"][0]["image"];
    patched["spec"]["template"]["spec"]["containers"][0]["image"] = new_image.clone();
    let patched: Deployment = serde_json::from_value(patched).unwrap();
    assert_eq!(container(&patched, "activator").image, Some(image()));
}
