//! Structured logs through `tracing`: human text or one JSON object per line, at a level that
//! can be changed after start-up (Knative's `config-logging` ConfigMap, see [`config_logging`]).

pub mod config_logging;
pub mod config_observability;
pub mod otel;
pub(crate) mod propagation;

use std::{fmt, io::IsTerminal as _};

use tracing_subscriber::{
    EnvFilter, Registry, fmt as tfmt, layer::SubscriberExt as _, reload,
    util::SubscriberInitExt as _,
};

use crate::cli::LogFormat;

/// The level used when neither `RUST_LOG` nor a ConfigMap says otherwise.
pub const DEFAULT_LEVEL: Level = Level::Info;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` level, and then
/// wins over any later [`LogLevel::set`]. Calling it twice is harmless (tests start several
/// servers in one process): the second subscriber is not installed and its handle does nothing.
pub fn init(format: LogFormat) -> LogLevel {
    // An invalid `RUST_LOG` is not fatal, but it is said once, below, rather than ignored.
    let (from_env, invalid) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (Some(filter), None),
            Err(error) => (None, Some((value, error))),
        },
        _ => (None, None),
    };
    let rust_log = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| DEFAULT_LEVEL.filter());
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // Colour codes only for a person at a terminal, never into files or log collectors.
    let layer = tfmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
    if let Some((value, error)) = invalid {
        tracing::warn!(rust_log = %value, %error, "RUST_LOG is not a valid filter and is ignored; the level is {DEFAULT_LEVEL}");
    }
    LogLevel { handle, rust_log }
}

/// Changes the level of the installed subscriber. Cheap to clone.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    rust_log: bool,
}

impl fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLevel")
            .field("rust_log", &self.rust_log)
            .finish_non_exhaustive()
    }
}

impl LogLevel {
    /// Whether `RUST_LOG` chose the filter (then [`set`](Self::set) does nothing).
    pub fn from_rust_log(&self) -> bool {
        self.rust_log
    }

    /// Sets the level unless `RUST_LOG` chose the filter; `false` when nothing changed.
    pub fn set(&self, level: Level) -> bool {
        !self.rust_log && self.handle.reload(level.filter()).is_ok()
    }
}

/// A log level as Knative's components name them (zap's levels, folded onto `tracing`'s),
/// ordered from the most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// zap's level names (`zapcore.Level.UnmarshalText`): lower or upper case; `dpanic`,
    /// `panic` and `fatal` are errors here. zap reads an empty name as `info`.
    pub fn from_zap(name: &str) -> Option<Self> {
        let level = match name {
            "" => Self::Info,
            n if n.eq_ignore_ascii_case("debug") => Self::Debug,
            n if n.eq_ignore_ascii_case("info") => Self::Info,
            n if n.eq_ignore_ascii_case("warn") => Self::Warn,
            n if ["error", "dpanic", "panic", "fatal"]
                .iter()
                .any(|l| n.eq_ignore_ascii_case(l)) =>
            {
                Self::Error
            }
            _ => return None,
        };
        // zap accepts "debug" and "DEBUG" but not "Debug".
        (name == name.to_ascii_lowercase() || name == name.to_ascii_uppercase()).then_some(level)
    }

    /// The filter: the level names kactivator's own logs; `debug` does not extend to the
    /// libraries (HTTP, TLS, Kubernetes client), whose debug output would drown the rest.
    pub fn filter(self) -> EnvFilter {
        EnvFilter::new(match self {
            Self::Debug => "info,kactivator=debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zap_level_names() {
        assert_eq!(Level::from_zap("debug"), Some(Level::Debug));
        assert_eq!(Level::from_zap("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::from_zap("info"), Some(Level::Info));
        assert_eq!(Level::from_zap(""), Some(Level::Info));
        assert_eq!(Level::from_zap("WARN"), Some(Level::Warn));
        assert_eq!(Level::from_zap("dpanic"), Some(Level::Error));
        assert_eq!(Level::from_zap("fatal"), Some(Level::Error));
        assert_eq!(Level::from_zap("Debug"), None);
        assert_eq!(Level::from_zap("warning"), None);
        assert_eq!(Level::from_zap("trace"), None);
    }

    #[test]
    fn debug_is_ours_only() {
        assert_eq!(
            Level::Debug.filter().to_string(),
            "kactivator=debug,info",
            "directive order is EnvFilter's"
        );
        assert_eq!(Level::Warn.filter().to_string(), "warn");
    }
}
