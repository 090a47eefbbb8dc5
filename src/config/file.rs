//! The serde schema of `kactivator.yaml`, with every default in one place.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;

use super::addr;
use crate::cli::Mode;

/// The whole configuration file. Unknown keys are errors, missing keys take the defaults below.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name sent as `pod_name` in stats; default `$POD_NAME`, else the host name.
    pub pod_name: Option<String>,
    /// Cluster domain used to recognise `<rev>.<ns>.svc.<domain>` hosts.
    pub cluster_domain: String,
    pub listen: Listen,
    pub autoscaler: AutoscalerConfig,
    pub discovery: DiscoveryKind,
    pub activator: ActivatorConfig,
    pub adapter: AdapterConfig,
    pub shutdown: ShutdownConfig,
    pub revisions: Vec<RevisionConfig>,
    /// `discovery: kubernetes` settings.
    pub kubernetes: KubernetesConfig,
    /// OpenTelemetry traces (`OTEL_*` variables win over these keys).
    pub tracing: TracingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pod_name: None,
            cluster_domain: "cluster.local".into(),
            listen: Listen::default(),
            autoscaler: AutoscalerConfig::default(),
            discovery: DiscoveryKind::Static,
            activator: ActivatorConfig::default(),
            adapter: AdapterConfig::default(),
            shutdown: ShutdownConfig::default(),
            revisions: Vec::new(),
            kubernetes: KubernetesConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

/// Listen addresses. Changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// Activator: HTTP/1.1 and h2c with prior knowledge.
    #[serde(deserialize_with = "addr::one")]
    pub http: SocketAddr,
    /// Activator: h2c.
    #[serde(deserialize_with = "addr::one")]
    pub h2c: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`. Absent: [`ADMIN`], or [`ADMIN_AUTOSCALER`] in
    /// autoscaler mode, so that an activator and its autoscaler run side by side on defaults.
    #[serde(deserialize_with = "addr::optional")]
    pub admin: Option<SocketAddr>,
    /// Adapter gRPC.
    #[serde(deserialize_with = "addr::one")]
    pub grpc: SocketAddr,
    /// Autoscaler stats websocket (autoscaler mode and the embedded autoscaler).
    #[serde(deserialize_with = "addr::one")]
    pub autoscaler: SocketAddr,
}

/// `listen.admin` when absent.
pub const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// `listen.admin` when absent, in autoscaler mode.
pub const ADMIN_AUTOSCALER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9091);

impl Listen {
    /// The admin address of a process of `mode`.
    pub fn admin(&self, mode: Mode) -> SocketAddr {
        self.admin.unwrap_or(match mode {
            Mode::Autoscaler => ADMIN_AUTOSCALER,
            Mode::Activator | Mode::Adapter => ADMIN,
        })
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8012)),
            h2c: SocketAddr::from(([127, 0, 0, 1], 8013)),
            admin: None,
            grpc: SocketAddr::from(([127, 0, 0, 1], 6100)),
            autoscaler: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// Where stats go and how they are encoded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// Knative stats endpoint (`ws://host:port`). Absent: the local autoscaler is embedded.
    pub url: Option<String>,
    pub encoding: Encoding,
    /// Frames waiting to be written while connected; beyond it frames are dropped and counted.
    pub send_queue: usize,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            url: None,
            encoding: Encoding::Protobuf,
            send_queue: 1024,
        }
    }
}

/// Stats wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `WireStatMessages` (Knative Serving >= 0.17).
    Protobuf,
    /// One gob `StatMessage` per frame, v0.5/v0.6 shape (the 2019 Mixer adapter).
    Gob,
}

/// Source of revision endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    /// `revisions[].endpoints`, hot-reloaded with the file.
    Static,
    /// Pods started by the local autoscaler from `revisions[].command`.
    Local,
    /// Kubernetes EndpointSlices.
    Kubernetes,
}

/// How a pod is judged healthy by the prober.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStyle {
    /// `knative` for kubernetes discovery, `http` for static, `tcp` for local.
    Auto,
    /// Knative queue-proxy: 200 with body `queue`.
    Knative,
    /// Any 2xx on `probe_path`.
    Http,
    /// A TCP connect succeeds.
    Tcp,
}

/// Buffering activator settings (hot-reloadable).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivatorConfig {
    /// A client connection with no request in flight that sends no complete request head for
    /// this long is closed (HTTP/1.1 and HTTP/2, idle keep-alive connections included).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Client connections per listener; beyond it new connections wait in the kernel's
    /// backlog. Absent: derived from the file descriptor limit.
    pub max_connections: Option<usize>,
    /// Requests waiting per revision; beyond it 503 + Retry-After.
    pub queue_depth: usize,
    /// Longest wait for capacity; then 503.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub probe_period: Duration,
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    pub probe_path: String,
    pub probe_style: ProbeStyle,
    /// TCP connect timeout to a pod; a timed-out connect is retried on another pod.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Extra attempts for requests that never reached a pod.
    pub max_retries: u32,
    /// Largest request head accepted from clients (HTTP/1.1), in bytes.
    pub max_header_bytes: usize,
}

impl Default for ActivatorConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_connections: None,
            queue_depth: 10_000,
            queue_timeout: Duration::from_secs(300),
            probe_period: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(300),
            probe_path: "/healthz".into(),
            probe_style: ProbeStyle::Auto,
            connect_timeout: Duration::from_secs(1),
            max_retries: 3,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Mixer / ext_authz adapter settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterConfig {
    /// At most one poke per revision per interval.
    #[serde(with = "humantime_serde")]
    pub poke_interval: Duration,
    /// `CheckResult.valid_duration` returned to Mixer.
    #[serde(with = "humantime_serde")]
    pub check_valid_duration: Duration,
    /// `CheckResult.valid_use_count` returned to Mixer.
    pub check_valid_use_count: i32,
    /// >0: CHECK / ext_authz answer only once the revision has a ready pod, or after this long.
    #[serde(with = "humantime_serde")]
    pub hold_until_ready: Duration,
    /// HTTP/2 connections are closed (GOAWAY) after this age so that Mixer re-balances.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    pub tls: Option<TlsConfig>,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            poke_interval: Duration::from_secs(1),
            check_valid_duration: Duration::from_secs(1),
            check_valid_use_count: 10_000,
            hold_until_ready: Duration::ZERO,
            max_connection_age: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// Server TLS for the adapter; with `client_ca`, clients must present a certificate (mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, keep accepting for this long while readiness fails (endpoints catch up).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Hard deadline for in-flight and queued work after the drain delay.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay: Duration::ZERO,
            grace_period: Duration::from_secs(30),
        }
    }
}

/// The protocol kactivator speaks to a revision's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The client's: HTTP/2 requests go out as h2c, others as HTTP/1.1.
    #[default]
    Auto,
    /// Always HTTP/1.1 (an HTTP/2 client's request is downgraded); Knative's default.
    Http1,
    /// Always h2c with prior knowledge (gRPC apps); Knative's `h2c` port name.
    H2c,
}

/// One Knative revision (or local service).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevisionConfig {
    pub namespace: String,
    pub name: String,
    /// Extra Host names routed to this revision.
    pub hosts: Vec<String>,
    /// Concurrent requests per pod; 0 = unlimited.
    pub container_concurrency: u32,
    /// Protocol spoken to the pods.
    pub protocol: Protocol,
    /// Whole request, queueing included; then 504.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// From arrival, queueing included, until the response head is written; then 504
    /// (Knative's `responseStartTimeoutSeconds`). Absent: off.
    #[serde(with = "humantime_serde")]
    pub response_start_timeout: Option<Duration>,
    /// Longest time with nothing written to the client (counted from arrival until the
    /// response starts); then 504, or a cut stream once it has started (Knative's
    /// `idleTimeoutSeconds`). Absent: off.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// discovery: static.
    #[serde(deserialize_with = "addr::many")]
    pub endpoints: Vec<SocketAddr>,
    /// discovery: local; started with `PORT=<port>` set.
    pub command: Vec<String>,
    /// discovery: local; extra environment for `command`.
    pub env: std::collections::BTreeMap<String, String>,
    pub min_scale: u32,
    pub max_scale: u32,
    /// Local autoscaler: target concurrency per pod.
    pub target: f64,
    #[serde(with = "humantime_serde")]
    pub scale_to_zero_after: Duration,
    /// Local autoscaler: a pod that is not ready after this long is killed and restarted.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
}

impl Default for RevisionConfig {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            name: String::new(),
            hosts: Vec::new(),
            container_concurrency: 0,
            protocol: Protocol::Auto,
            timeout: Duration::from_secs(300),
            response_start_timeout: None,
            idle_timeout: None,
            endpoints: Vec::new(),
            command: Vec::new(),
            env: Default::default(),
            min_scale: 0,
            max_scale: 3,
            target: 10.0,
            scale_to_zero_after: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// `discovery: kubernetes`: where a revision's pods are read from (hot-reloadable).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// EndpointSlice port whose number is combined with each address (a lone port is used as is).
    pub port_name: String,
    /// A revision's pods are the endpoints of the Service `<name><service_suffix>`.
    pub service_suffix: String,
    /// When set, every revision must live in this namespace (e.g. to run with a namespaced Role).
    pub namespace: Option<String>,
    /// Whether pods are reached through their private Service's cluster IP (Knative's
    /// `mesh-compatibility-mode`).
    pub mesh: MeshMode,
}

/// How the activator reaches a revision's pods under `discovery: kubernetes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MeshMode {
    /// Dial each pod; load balancing and subsetting per pod.
    #[default]
    Disabled,
    /// Dial the revision's private Service (cluster IP), as Knative does when a mesh makes pod
    /// addresses unreachable directly (e.g. Istio with STRICT mTLS); the mesh balances.
    Enabled,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            port_name: "http".into(),
            service_suffix: "-private".into(),
            namespace: None,
            mesh: MeshMode::Disabled,
        }
    }
}

/// OpenTelemetry traces, exported over OTLP/gRPC. Off while no endpoint is set here or in
/// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`; read at start-up (a change needs a restart).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Collector, `http://host:4317`.
    pub endpoint: Option<String>,
    /// Fraction of new traces kept (parent-based: a client's sampled flag is followed).
    pub sampling_rate: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Ended spans waiting for export; beyond it spans are dropped and counted.
    pub export_queue: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            sampling_rate: 1.0,
            service_name: "kactivator".into(),
            export_queue: 2048,
        }
    }
}
