//! The in-pod defaults: what kactivator runs with in Knative's own `activator` Deployment.
//!
//! That Deployment passes no arguments and mounts no file; all it gives is the environment
//! (`POD_NAME`, `POD_IP`, `SYSTEM_NAMESPACE`, `CONFIG_LOGGING_NAME`, the service account).
//! [`PodEnv`] is a snapshot of that environment, read once; everything after it is pure.

use std::{
    fmt,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use super::{Config, DiscoveryKind, Error};
use crate::revision::is_dns_label;

/// Where Kubernetes mounts the pod's service account token.
pub const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Knative's namespace when `SYSTEM_NAMESPACE` is unset (as in Knative's `system.Namespace()`).
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "knative-serving";
/// Knative's logging ConfigMap when `CONFIG_LOGGING_NAME` is unset.
pub const DEFAULT_CONFIG_LOGGING: &str = "config-logging";
/// Knative's `network.DefaultDrainTimeout`: its activator fails readiness and keeps serving this
/// long after SIGTERM before it stops accepting.
pub const DRAIN_DELAY: Duration = Duration::from_secs(45);
/// Knative's activator Deployment sets `terminationGracePeriodSeconds: 600`.
pub const TERMINATION_GRACE: Duration = Duration::from_secs(600);
/// Left between our own deadline and the kubelet's SIGKILL, so that we exit on our terms
/// (abandoned requests logged, admin port closed) rather than being killed mid-way.
pub const EXIT_MARGIN: Duration = Duration::from_secs(5);
/// `/etc/resolv.conf` is read up to this size; a longer one is truncated, not refused.
const RESOLV_CONF_LIMIT: u64 = 64 * 1024;

/// The environment variables and files the in-pod defaults depend on, read once.
/// Empty variables count as unset, as Kubernetes may render them empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodEnv {
    /// `KUBERNETES_SERVICE_HOST`.
    pub kubernetes_service_host: Option<String>,
    /// [`TOKEN_PATH`] could be opened for reading.
    pub token_readable: bool,
    /// `POD_IP`.
    pub pod_ip: Option<String>,
    /// `SYSTEM_NAMESPACE`.
    pub system_namespace: Option<String>,
    /// `CONFIG_LOGGING_NAME`.
    pub config_logging_name: Option<String>,
    /// `CLUSTER_DOMAIN`.
    pub cluster_domain: Option<String>,
    /// The start of `/etc/resolv.conf`, whose `search svc.<domain>` names the cluster domain.
    pub resolv_conf: Option<String>,
}

impl PodEnv {
    /// Reads the process environment and the two files.
    pub fn read() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            kubernetes_service_host: var("KUBERNETES_SERVICE_HOST"),
            token_readable: std::fs::File::open(TOKEN_PATH).is_ok(),
            pod_ip: var("POD_IP"),
            system_namespace: var("SYSTEM_NAMESPACE"),
            config_logging_name: var("CONFIG_LOGGING_NAME"),
            cluster_domain: var("CLUSTER_DOMAIN"),
            resolv_conf: read_bounded("/etc/resolv.conf"),
        }
    }

    /// Why this process is in a pod, or `None` when it is not.
    pub fn in_pod(&self) -> Option<Why> {
        let service_account = self.kubernetes_service_host.is_some() && self.token_readable;
        match (service_account, self.pod_ip.is_some()) {
            (true, true) => Some(Why::Both),
            (true, false) => Some(Why::ServiceAccount),
            (false, true) => Some(Why::PodIp),
            (false, false) => None,
        }
    }

    /// Knative's system namespace.
    pub fn system_namespace(&self) -> &str {
        self.system_namespace
            .as_deref()
            .unwrap_or(DEFAULT_SYSTEM_NAMESPACE)
    }

    /// The name of Knative's logging ConfigMap.
    pub fn config_logging_name(&self) -> &str {
        self.config_logging_name
            .as_deref()
            .unwrap_or(DEFAULT_CONFIG_LOGGING)
    }

    /// The cluster domain as Knative finds it: `CLUSTER_DOMAIN`, else the first `svc.<domain>`
    /// search domain in resolv.conf, else `cluster.local`.
    pub fn cluster_domain(&self) -> String {
        if let Some(domain) = &self.cluster_domain {
            return domain.clone();
        }
        self.resolv_conf
            .as_deref()
            .and_then(search_domain)
            .unwrap_or_else(|| Config::default().cluster_domain)
    }
}

/// What made kactivator decide it runs in a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    ServiceAccount,
    PodIp,
    Both,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ACCOUNT: &str =
            "KUBERNETES_SERVICE_HOST is set and the service account token is readable";
        match self {
            Self::ServiceAccount => f.write_str(ACCOUNT),
            Self::PodIp => f.write_str("POD_IP is set"),
            Self::Both => write!(f, "{ACCOUNT}, POD_IP is set"),
        }
    }
}

/// The in-pod defaults chosen, with what they were derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPod {
    pub why: Why,
    /// Where Knative's autoscaler and ConfigMaps live.
    pub system_namespace: String,
    /// Knative's logging ConfigMap, in `system_namespace`.
    pub config_logging: String,
}

impl Config {
    /// The configuration for a pod without a config file, from the environment snapshot only:
    /// listeners on every address, revisions from the Kubernetes API, stats to Knative's
    /// autoscaler, and Knative's drain (see docs/operations.md).
    pub fn in_pod(env: &PodEnv) -> Result<Self, Error> {
        let namespace = env.system_namespace();
        if !is_dns_label(namespace) {
            return Err(Error::invalid(
                "SYSTEM_NAMESPACE",
                format!("`{namespace}` is not a DNS label"),
            ));
        }
        let mut cfg = Config {
            cluster_domain: env.cluster_domain(),
            discovery: DiscoveryKind::Kubernetes,
            ..Config::default()
        };
        // An IPv6 pod may have no IPv4 stack; `[::]` also takes IPv4 where there is one.
        let any = match env.pod_ip.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(IpAddr::V6(_))) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let l = &mut cfg.listen;
        for addr in [&mut l.http, &mut l.h2c, &mut l.grpc, &mut l.autoscaler] {
            *addr = SocketAddr::new(any, addr.port());
        }
        // Knative's metrics port, in every mode (each mode runs in a pod of its own).
        l.admin = Some(SocketAddr::new(any, super::file::ADMIN.port()));
        cfg.autoscaler.url = Some(format!(
            "ws://autoscaler.{namespace}.svc.{}:8080",
            cfg.cluster_domain
        ));
        cfg.shutdown.drain_delay = DRAIN_DELAY;
        cfg.shutdown.grace_period = TERMINATION_GRACE - DRAIN_DELAY - EXIT_MARGIN;
        cfg.validate().map_err(|e| match e {
            // Only the cluster domain comes from outside; name its source.
            Error::Invalid { key, message } if key == "cluster_domain" => Error::Invalid {
                key: "CLUSTER_DOMAIN (or resolv.conf's svc.<domain> search domain)".into(),
                message,
            },
            e => e,
        })?;
        Ok(cfg)
    }
}

/// `search ... svc.<domain> ...` → `<domain>`, as Knative's `network.GetClusterDomainName`.
fn search_domain(resolv_conf: &str) -> Option<String> {
    resolv_conf
        .lines()
        .filter_map(|line| line.strip_prefix("search "))
        .flat_map(|domains| domains.split(' '))
        .find_map(|d| d.strip_prefix("svc."))
        .map(|d| d.trim_end_matches('.').to_string())
}

fn read_bounded(path: &str) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(RESOLV_CONF_LIMIT)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> PodEnv {
        let mut env = PodEnv::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "KUBERNETES_SERVICE_HOST" => env.kubernetes_service_host = v,
                "token" => env.token_readable = true,
                "POD_IP" => env.pod_ip = v,
                "SYSTEM_NAMESPACE" => env.system_namespace = v,
                "CONFIG_LOGGING_NAME" => env.config_logging_name = v,
                "CLUSTER_DOMAIN" => env.cluster_domain = v,
                "resolv.conf" => env.resolv_conf = v,
                other => panic!("unknown key {other}"),
            }
        }
        env
    }

    #[test]
    fn pod_is_detected_by_service_account_or_pod_ip() {
        assert_eq!(env(&[]).in_pod(), None);
        // A host without a token is a workstation with a stray variable, not a pod.
        assert_eq!(
            env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]).in_pod(),
            None
        );
        assert_eq!(env(&[("token", "")]).in_pod(), None);
        assert_eq!(
            env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("token", "")]).in_pod(),
            Some(Why::ServiceAccount)
        );
        assert_eq!(env(&[("POD_IP", "10.1.2.3")]).in_pod(), Some(Why::PodIp));
        assert_eq!(
            env(&[
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("token", ""),
                ("POD_IP", "10.1.2.3")
            ])
            .in_pod(),
            Some(Why::Both)
        );
    }

    #[test]
    fn knative_activator_deployment_env_gives_the_knative_defaults() {
        let cfg = Config::in_pod(&env(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("token", ""),
            ("POD_IP", "10.244.1.7"),
            ("SYSTEM_NAMESPACE", "knative-serving"),
            ("CONFIG_LOGGING_NAME", "config-logging"),
        ]))
        .expect("valid");
        assert_eq!(cfg.discovery, DiscoveryKind::Kubernetes);
        let l = &cfg.listen;
        let admin = l.admin(crate::cli::Mode::Activator);
        let all = [l.http, l.h2c, admin, l.grpc, l.autoscaler].map(|a| a.to_string());
        assert_eq!(
            all,
            [
                "0.0.0.0:8012",
                "0.0.0.0:8013",
                "0.0.0.0:9090",
                "0.0.0.0:6100",
                "0.0.0.0:8080"
            ]
        );
        assert_eq!(
            cfg.autoscaler.url.as_deref(),
            Some("ws://autoscaler.knative-serving.svc.cluster.local:8080")
        );
        assert_eq!(cfg.shutdown.drain_delay, Duration::from_secs(45));
        assert!(cfg.shutdown.drain_delay + cfg.shutdown.grace_period < TERMINATION_GRACE);
        assert_eq!(cfg.shutdown.grace_period, Duration::from_secs(550));
        assert_eq!(cfg.probe_style(), super::super::ProbeStyle::Knative);
        // Everything else is the ordinary default.
        assert_eq!(cfg.activator, Config::default().activator);
        assert_eq!(cfg.revisions, Vec::new());
        assert_eq!(cfg.pod_name, None);
    }

    #[test]
    fn namespace_and_cluster_domain_shape_the_autoscaler_url() {
        let url = |pairs: &[(&str, &str)]| {
            Config::in_pod(&env(pairs))
                .expect("valid")
                .autoscaler
                .url
                .expect("set")
        };
        assert_eq!(
            url(&[("POD_IP", "10.0.0.9"), ("SYSTEM_NAMESPACE", "kn")]),
            "ws://autoscaler.kn.svc.cluster.local:8080"
        );
        let resolv = "nameserver 10.96.0.10\nsearch knative-serving.svc.corp.example svc.corp.example. corp.example\noptions ndots:5\n";
        assert_eq!(
            url(&[("POD_IP", "10.0.0.9"), ("resolv.conf", resolv)]),
            "ws://autoscaler.knative-serving.svc.corp.example:8080"
        );
        // The variable wins over resolv.conf, as in Knative.
        assert_eq!(
            url(&[
                ("POD_IP", "10.0.0.9"),
                ("resolv.conf", resolv),
                ("CLUSTER_DOMAIN", "other.test")
            ]),
            "ws://autoscaler.knative-serving.svc.other.test:8080"
        );
        assert_eq!(
            url(&[("POD_IP", "10.0.0.9"), ("resolv.conf", "search a b\n")]),
            "ws://autoscaler.knative-serving.svc.cluster.local:8080"
        );
    }

    #[test]
    fn an_ipv6_pod_listens_on_every_ipv6_address() {
        let cfg = Config::in_pod(&env(&[("POD_IP", "fd00::17")])).expect("valid");
        assert_eq!(cfg.listen.http.to_string(), "[::]:8012");
        assert_eq!(
            cfg.listen.admin(crate::cli::Mode::Activator).to_string(),
            "[::]:9090"
        );
        // Not an address at all: still a pod, IPv4 listeners.
        let cfg = Config::in_pod(&env(&[("POD_IP", "pod")])).expect("valid");
        assert_eq!(cfg.listen.http.to_string(), "0.0.0.0:8012");
    }

    #[test]
    fn bad_environment_is_an_error_naming_the_variable() {
        let e = Config::in_pod(&env(&[("SYSTEM_NAMESPACE", "Not_A_Label")]))
            .expect_err("invalid")
            .to_string();
        assert!(e.starts_with("SYSTEM_NAMESPACE:"), "{e}");
        let e = Config::in_pod(&env(&[("CLUSTER_DOMAIN", "bad domain")]))
            .expect_err("invalid")
            .to_string();
        assert!(e.starts_with("CLUSTER_DOMAIN"), "{e}");
    }

    #[test]
    fn the_environment_picks_the_defaults_and_a_file_wins_over_both() {
        use super::super::{Source, defaults, load};
        let (cfg, source) = defaults(&env(&[])).expect("valid");
        assert_eq!((cfg, source), (Config::default(), Source::BuiltIn));
        let pod = env(&[("POD_IP", "10.0.0.1"), ("SYSTEM_NAMESPACE", "kn")]);
        let (cfg, source) = defaults(&pod).expect("valid");
        assert_eq!(cfg, Config::in_pod(&pod).expect("valid"));
        let want = InPod {
            why: Why::PodIp,
            system_namespace: "kn".into(),
            config_logging: "config-logging".into(),
        };
        assert_eq!(source, Source::InPod(want));
        assert!(source.to_string().contains("in-pod defaults"), "{source}");
        assert!(source.to_string().contains("POD_IP is set"), "{source}");
        assert_eq!(source.path(), None);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("k.yaml");
        std::fs::write(&path, "shutdown:\n  drain_delay: 1s\n").expect("write");
        let (cfg, source) = load(Some(&path), &pod).expect("valid");
        assert_eq!(source, Source::File(path.clone()));
        assert_eq!(source.path(), Some(path.as_path()));
        assert_eq!(cfg.discovery, DiscoveryKind::Static);
        assert_eq!(cfg.listen, Config::default().listen);
    }

    #[test]
    fn names_default_as_in_knative() {
        let e = env(&[]);
        assert_eq!(e.system_namespace(), "knative-serving");
        assert_eq!(e.config_logging_name(), "config-logging");
        let e = env(&[("CONFIG_LOGGING_NAME", "my-logging")]);
        assert_eq!(e.config_logging_name(), "my-logging");
    }
}
