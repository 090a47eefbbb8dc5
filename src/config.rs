//! Configuration: the file schema, validation with key-naming errors, and hot reload.

mod addr;
mod file;
pub mod pod;
pub mod reload;

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use file::{ADMIN, ADMIN_AUTOSCALER, KubernetesConfig, MeshMode, TracingConfig};
pub use file::{
    ActivatorConfig, AdapterConfig, AutoscalerConfig, Config, DiscoveryKind, Encoding, Listen,
    ProbeStyle, Protocol, RevisionConfig, ShutdownConfig, TlsConfig,
};
pub use pod::{InPod, PodEnv};

use crate::{
    cli::Mode,
    revision::{RevisionKey, is_dns_label},
};

/// The file the binary reads when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "kactivator.yaml";

/// A configuration that could not be loaded. Each message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message, not a `source()`: a chain printer (`{:#}`) would
    // print it twice.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{}: the file holds no settings (empty, or comments only) and is not applied; \
         write `{{}}` for the built-in defaults",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error("{key}: {message}")]
    Parse { key: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl Error {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A validated configuration, shared read-only. Reloads publish a new one.
pub type SharedConfig = Arc<Config>;

/// Where the configuration in force came from: a file, or one of two sets of defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--config`, or `kactivator.yaml` in the working directory. Missing keys take the
    /// built-in defaults, in a pod too.
    File(PathBuf),
    /// No file, not in a pod: loopback listeners, static discovery, embedded autoscaler.
    BuiltIn,
    /// No file, in a pod: Knative's activator settings ([`Config::in_pod`]).
    InPod(InPod),
}

impl Source {
    /// The file to watch for changes, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::BuiltIn | Self::InPod(_) => None,
        }
    }

    pub fn in_pod(&self) -> Option<&InPod> {
        match self {
            Self::InPod(pod) => Some(pod),
            Self::File(_) | Self::BuiltIn => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::BuiltIn => f.write_str("built-in defaults (no config file, not in a pod)"),
            Self::InPod(pod) => write!(f, "in-pod defaults (no config file; {})", pod.why),
        }
    }
}

/// Reads `path`, or the default file in the working directory, or else picks the defaults:
/// the in-pod ones when `env` says this is a pod, the built-in ones otherwise.
pub fn load(path: Option<&Path>, env: &PodEnv) -> Result<(Config, Source), Error> {
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = PathBuf::from(DEFAULT_FILE);
            p.exists().then_some(p)
        }
    };
    let Some(path) = path else {
        return defaults(env);
    };
    let text = std::fs::read_to_string(&path).map_err(|error| Error::Read {
        path: path.clone(),
        error,
    })?;
    Ok((Config::parse_file(&path, &text)?, Source::File(path)))
}

/// The defaults for a start without a config file.
fn defaults(env: &PodEnv) -> Result<(Config, Source), Error> {
    let Some(why) = env.in_pod() else {
        let cfg = Config::default();
        cfg.validate()?;
        return Ok((cfg, Source::BuiltIn));
    };
    let cfg = Config::in_pod(env)?;
    let pod = InPod {
        why,
        system_namespace: env.system_namespace().to_string(),
        config_logging: env.config_logging_name().to_string(),
    };
    Ok((cfg, Source::InPod(pod)))
}

impl Config {
    /// Parses and validates the text of the file at `path`. A file with no settings at all is
    /// an error: a writer that truncates the file before writing it again must never get an
    /// empty (all-defaults, no revisions) config applied; `{}` asks for the defaults.
    pub fn parse_file(path: &Path, text: &str) -> Result<Self, Error> {
        if !Document::read(text).has_settings() {
            return Err(Error::Empty {
                path: path.to_path_buf(),
            });
        }
        Self::parse(text)
    }

    /// Parses and validates YAML text; a text with no settings is the built-in defaults.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if !Document::read(text).has_settings() {
            let cfg = Config::default();
            cfg.validate()?;
            return Ok(cfg);
        }
        let de = serde_norway::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "config".into() } else { key };
            let message = e.into_inner().to_string();
            // The YAML parser starts its message with the path it was at, which `key` already
            // says (and better: with list indices); say it once.
            let message = match message.split_once(": ") {
                Some((path, rest)) if key.starts_with(path) => rest.to_string(),
                _ => message,
            };
            Error::Parse { key, message }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: names, ranges, cross-field rules.
    pub fn validate(&self) -> Result<(), Error> {
        if !is_dns_name(&self.cluster_domain) {
            return Err(Error::invalid("cluster_domain", "must be a DNS name"));
        }
        // Knative's stats endpoint is plain ws:// inside the cluster; no TLS client is built in.
        if let Some(url) = self
            .autoscaler
            .url
            .as_ref()
            .filter(|u| !u.starts_with("ws://"))
        {
            return Err(Error::invalid(
                "autoscaler.url",
                format!("`{url}` must start with ws://"),
            ));
        }
        if self.autoscaler.send_queue == 0 {
            return Err(Error::invalid(
                "autoscaler.send_queue",
                "must be at least 1",
            ));
        }
        let a = &self.activator;
        if a.queue_depth == 0 {
            return Err(Error::invalid(
                "activator.queue_depth",
                "must be at least 1",
            ));
        }
        if a.max_connections == Some(0) {
            return Err(Error::invalid(
                "activator.max_connections",
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("activator.idle_timeout", a.idle_timeout),
            ("activator.queue_timeout", a.queue_timeout),
            ("activator.probe_period", a.probe_period),
            ("activator.probe_timeout", a.probe_timeout),
            ("activator.connect_timeout", a.connect_timeout),
            ("adapter.poke_interval", self.adapter.poke_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(key, "must be greater than 0"));
            }
        }
        if !a.probe_path.starts_with('/') {
            return Err(Error::invalid("activator.probe_path", "must start with /"));
        }
        if a.max_retries > 10 {
            return Err(Error::invalid(
                "activator.max_retries",
                "must be at most 10",
            ));
        }
        if a.max_header_bytes < 1024 {
            return Err(Error::invalid(
                "activator.max_header_bytes",
                "must be at least 1024",
            ));
        }
        if self.adapter.check_valid_use_count < 0 {
            return Err(Error::invalid(
                "adapter.check_valid_use_count",
                "must not be negative",
            ));
        }
        let mut names: HashMap<(&str, &str), usize> = HashMap::new();
        let mut hosts: HashMap<String, usize> = HashMap::new();
        for (i, r) in self.revisions.iter().enumerate() {
            let at = |field: &str| format!("revisions[{i}].{field}");
            if !is_dns_label(&r.namespace) {
                return Err(Error::invalid(
                    at("namespace"),
                    format!("`{}` is not a DNS label", r.namespace),
                ));
            }
            if !is_dns_label(&r.name) {
                return Err(Error::invalid(
                    at("name"),
                    format!("`{}` is not a DNS label", r.name),
                ));
            }
            if let Some(j) = names.insert((&r.namespace, &r.name), i) {
                return Err(Error::invalid(
                    at("name"),
                    format!(
                        "{}/{} is also defined by revisions[{j}]",
                        r.namespace, r.name
                    ),
                ));
            }
            for (k, h) in r.hosts.iter().enumerate() {
                let host = h.to_ascii_lowercase();
                if !is_dns_name(&host) {
                    return Err(Error::invalid(
                        format!("revisions[{i}].hosts[{k}]"),
                        format!("`{h}` is not a host name"),
                    ));
                }
                if let Some(j) = hosts.insert(host, i) {
                    return Err(Error::invalid(
                        format!("revisions[{i}].hosts[{k}]"),
                        format!("`{h}` is also a host of revisions[{j}]"),
                    ));
                }
            }
            if r.timeout.is_zero() {
                return Err(Error::invalid(at("timeout"), "must be greater than 0"));
            }
            if let Some(t) = r.response_start_timeout {
                if t.is_zero() {
                    return Err(Error::invalid(
                        at("response_start_timeout"),
                        "must be greater than 0 (leave it out to turn it off)",
                    ));
                }
                if t > r.timeout {
                    return Err(Error::invalid(
                        at("response_start_timeout"),
                        "must not exceed timeout",
                    ));
                }
            }
            if r.idle_timeout.is_some_and(|t| t.is_zero()) {
                return Err(Error::invalid(
                    at("idle_timeout"),
                    "must be greater than 0 (leave it out to turn it off)",
                ));
            }
            if r.max_scale == 0 {
                return Err(Error::invalid(at("max_scale"), "must be at least 1"));
            }
            if r.min_scale > r.max_scale {
                return Err(Error::invalid(at("min_scale"), "must not exceed max_scale"));
            }
            if !(r.target.is_finite() && r.target > 0.0) {
                return Err(Error::invalid(
                    at("target"),
                    "must be a number greater than 0",
                ));
            }
            if r.startup_timeout.is_zero() {
                return Err(Error::invalid(
                    at("startup_timeout"),
                    "must be greater than 0",
                ));
            }
        }
        // Last, so that a bad revision name is reported as such rather than as a bad Service name.
        self.validate_kubernetes()
    }

    /// The rules that depend on the mode the file is used in: what this process binds and
    /// whether it starts pods. Checked at start-up, by `--check-config` and on every reload.
    pub fn check(&self, mode: Mode) -> Result<(), Error> {
        self.check_listeners(mode)?;
        // Activator and adapter: `discovery` says where pods come from. The autoscaler mode
        // starts every revision's `command`, whatever `discovery` says.
        if mode == Mode::Autoscaler {
            return Ok(());
        }
        for (i, r) in self.revisions.iter().enumerate() {
            if self.discovery != DiscoveryKind::Local && !r.command.is_empty() {
                // Else the embedded autoscaler would start a pod no request ever reaches.
                return Err(Error::invalid(
                    format!("revisions[{i}].command"),
                    "only used with `discovery: local`",
                ));
            }
            if self.discovery == DiscoveryKind::Local
                && self.autoscaler.url.is_none()
                && r.command.is_empty()
            {
                return Err(Error::invalid(
                    format!("revisions[{i}].command"),
                    "is required with `discovery: local` and the embedded autoscaler \
                     (no `autoscaler.url`)",
                ));
            }
        }
        Ok(())
    }

    /// Two listeners of the mode on one address would fail at bind time; say which keys.
    fn check_listeners(&self, mode: Mode) -> Result<(), Error> {
        let listeners = self.listeners(mode);
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| clash(*a, *addr)) {
                return Err(Error::invalid(
                    *key,
                    format!("{addr} is also {other}: each listener needs its own address"),
                ));
            }
        }
        Ok(())
    }

    /// The listeners a process of `mode` binds, by key. The local autoscaler is embedded in
    /// the activator and adapter modes when `autoscaler.url` is absent.
    pub fn listeners(&self, mode: Mode) -> Vec<(&'static str, SocketAddr)> {
        let l = &self.listen;
        let mut out = vec![("listen.admin", l.admin(mode))];
        match mode {
            Mode::Activator => out.extend([("listen.http", l.http), ("listen.h2c", l.h2c)]),
            Mode::Adapter => out.push(("listen.grpc", l.grpc)),
            Mode::Autoscaler => {}
        }
        if mode == Mode::Autoscaler || self.autoscaler.url.is_none() {
            out.push(("listen.autoscaler", l.autoscaler));
        }
        out
    }

    /// The `kubernetes:` section; revisions are checked against it only with `discovery: kubernetes`.
    fn validate_kubernetes(&self) -> Result<(), Error> {
        let k = &self.kubernetes;
        // A Service port name is an IANA_SVC_NAME: at most 15 characters, lowercase, digits, `-`.
        if !(is_dns_label(&k.port_name) && k.port_name.len() <= 15) {
            return Err(Error::invalid(
                "kubernetes.port_name",
                format!("`{}` is not a Service port name", k.port_name),
            ));
        }
        if let Some(ns) = k.namespace.as_ref().filter(|ns| !is_dns_label(ns)) {
            return Err(Error::invalid(
                "kubernetes.namespace",
                format!("`{ns}` is not a DNS label"),
            ));
        }
        if self.discovery != DiscoveryKind::Kubernetes {
            return Ok(());
        }
        for (i, r) in self.revisions.iter().enumerate() {
            let service = format!("{}{}", r.name, k.service_suffix);
            if !is_dns_label(&service) {
                return Err(Error::invalid(
                    "kubernetes.service_suffix",
                    format!("revisions[{i}]: `{service}` is not a Service name"),
                ));
            }
            if let Some(ns) = k.namespace.as_ref().filter(|ns| **ns != r.namespace) {
                return Err(Error::invalid(
                    format!("revisions[{i}].namespace"),
                    format!("must be `{ns}` (kubernetes.namespace)"),
                ));
            }
        }
        Ok(())
    }

    /// The pod name sent in stats: the file, else `$POD_NAME`, else the host name.
    pub fn resolved_pod_name(&self) -> String {
        if let Some(name) = self.pod_name.as_ref().filter(|n| !n.is_empty()) {
            return name.clone();
        }
        if let Some(name) = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()) {
            return name;
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "kactivator".into())
    }

    /// Looks up a configured revision.
    pub fn revision(&self, key: &RevisionKey) -> Option<&RevisionConfig> {
        self.revisions
            .iter()
            .find(|r| r.name == key.name() && r.namespace == key.namespace())
    }

    /// The probe style in force for the configured discovery.
    pub fn probe_style(&self) -> ProbeStyle {
        match (self.activator.probe_style, self.discovery) {
            (ProbeStyle::Auto, DiscoveryKind::Kubernetes) => ProbeStyle::Knative,
            (ProbeStyle::Auto, DiscoveryKind::Static) => ProbeStyle::Http,
            (ProbeStyle::Auto, DiscoveryKind::Local) => ProbeStyle::Tcp,
            (style, _) => style,
        }
    }
}

/// The top level of a config file as plain YAML: what it spells out, as opposed to what the
/// defaults fill in.
#[derive(Debug)]
pub struct Document(Option<serde_norway::Value>);

impl Document {
    /// Reads `text`; text that is not YAML reads as a document whose keys are unknown.
    pub fn read(text: &str) -> Self {
        Self(serde_norway::from_str(text).ok())
    }

    /// False for empty text, whitespace, comments only, or a lone `null`/`~`.
    pub fn has_settings(&self) -> bool {
        !matches!(self.0, Some(serde_norway::Value::Null))
    }

    /// Whether the top level spells out `key` (`revisions: []` does, an absent key does not).
    pub fn has_key(&self, key: &str) -> bool {
        match &self.0 {
            Some(value) => value.get(key).is_some(),
            // Unreadable as YAML: the parser reports it; assume the key is there.
            None => true,
        }
    }
}

impl RevisionConfig {
    /// The key of this revision.
    pub fn key(&self) -> RevisionKey {
        RevisionKey::new(&self.namespace, &self.name)
    }
}

/// Whether binding both addresses would fail: the same port (not 0) on the same IP, or on an
/// unspecified IP that covers the other (`0.0.0.0` covers IPv4, `[::]` covers both on Linux).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests;
