//! The log level from Knative's logging ConfigMap, followed live as Knative's activator does.
//!
//! Knative's rule (knative.dev/pkg `logging.UpdateLevelFromConfigMap`): `loglevel.<component>`
//! when set and not empty, else the `level` of the JSON in `zap-logger-config`, else `info`.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};
use tracing::{debug, info, warn};

use super::{DEFAULT_LEVEL, Level, LogLevel};

/// The key of kactivator's level: it stands in for Knative's activator.
pub const LEVEL_KEY: &str = "loglevel.activator";
/// Knative's logger configuration, whose `level` applies when [`LEVEL_KEY`] is absent.
pub const ZAP_KEY: &str = "zap-logger-config";
/// A `zap-logger-config` longer than this is refused rather than parsed.
const ZAP_LIMIT: usize = 64 * 1024;

/// A ConfigMap whose level cannot be used; the level in force is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "{LEVEL_KEY}: `{0}` is not a zap level (debug, info, warn, error, dpanic, panic, fatal)"
    )]
    BadLevel(String),
    #[error("{ZAP_KEY}: {0}")]
    BadZapConfig(String),
}

/// The level a ConfigMap's data names.
pub fn level_from_data(data: &BTreeMap<String, String>) -> Result<Level, Error> {
    if let Some(name) = data.get(LEVEL_KEY).filter(|v| !v.is_empty()) {
        return Level::from_zap(name).ok_or_else(|| Error::BadLevel(bounded(name)));
    }
    let Some(json) = data.get(ZAP_KEY).filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_LEVEL);
    };
    if json.len() > ZAP_LIMIT {
        return Err(Error::BadZapConfig(format!(
            "longer than {ZAP_LIMIT} bytes"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Zap {
        #[serde(default)]
        level: Option<String>,
    }
    let zap: Zap =
        serde_json::from_str(json).map_err(|e| Error::BadZapConfig(format!("not JSON: {e}")))?;
    match zap.level {
        // zap's production config, which Knative starts from, is at info.
        None => Ok(DEFAULT_LEVEL),
        Some(name) => Level::from_zap(&name)
            .ok_or_else(|| Error::BadZapConfig(format!("`{}` is not a zap level", bounded(&name)))),
    }
}

/// What following the ConfigMap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The ConfigMap exists and names this level.
    Level(Level),
    /// The ConfigMap exists but its level cannot be used.
    Invalid(Error),
    /// The ConfigMap does not exist (or was deleted).
    Missing,
    /// The API server could not be read (denied, unreachable); retried with backoff.
    Unreadable(String),
}

/// Follows ConfigMap `namespace/name` (get/list/watch on configmaps, which Knative's activator
/// Role grants), calling `on` for every change. Returns only if the watch stream ends.
pub async fn follow(client: kube::Client, namespace: &str, name: &str, mut on: impl FnMut(Update)) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut listed = false;
    while let Some(event) = events.next().await {
        let from = |cm: ConfigMap| match level_from_data(&cm.data.unwrap_or_default()) {
            Ok(level) => Update::Level(level),
            Err(e) => Update::Invalid(e),
        };
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                listed = true;
                on(from(cm));
            }
            Ok(watcher::Event::InitDone) if !listed => on(Update::Missing),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => on(Update::Missing),
            // kube's errors repeat their sources in their message: Display once, no chain.
            Err(e) => on(Update::Unreadable(e.to_string())),
        }
    }
}

/// Spawns the follower for the in-pod defaults: `RUST_LOG` wins, an unreadable ConfigMap
/// keeps the level in force and is logged once per outage.
pub fn spawn(level: LogLevel, namespace: String, name: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let source = format!("ConfigMap {namespace}/{name}");
        if level.from_rust_log() {
            info!(%source, "RUST_LOG is set; the log level is not read from the ConfigMap");
            return;
        }
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(error) => {
                warn!(%source, %error, log_level = %DEFAULT_LEVEL, "No Kubernetes client; the log level stays at its default");
                return;
            }
        };
        let mut state = State::default();
        follow(client, &namespace, &name, |update| match state.step(update) {
            Step::Same => {}
            Step::Change { from, to } => change(&level, from, to, &source),
            Step::Invalid(error) => {
                warn!(%source, %error, log_level = %state.current, "Log level not changed");
            }
            Step::Missing => {
                info!(%source, log_level = %state.current, "ConfigMap not found; log level unchanged");
            }
            Step::Unreadable { first: true, error } => {
                warn!(%source, %error, log_level = %state.current, "Cannot read the log level; keeping it (retrying quietly)");
            }
            Step::Unreadable { first: false, error } => {
                debug!(%source, %error, "Still cannot read the log level");
            }
        })
        .await;
    })
}

/// The follower's memory: the level in force, and whether the API is unreadable right now.
#[derive(Debug)]
struct State {
    current: Level,
    outage: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            current: DEFAULT_LEVEL,
            outage: false,
        }
    }
}

/// What one update means: a change to apply, or something to say (once per outage for an
/// unreadable API, so that a long outage does not flood the log).
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Same,
    Change { from: Level, to: Level },
    Invalid(Error),
    Missing,
    Unreadable { first: bool, error: String },
}

impl State {
    fn step(&mut self, update: Update) -> Step {
        let outage = matches!(update, Update::Unreadable(_));
        let step = match update {
            Update::Level(to) if to == self.current => Step::Same,
            Update::Level(to) => {
                let from = std::mem::replace(&mut self.current, to);
                Step::Change { from, to }
            }
            Update::Invalid(error) => Step::Invalid(error),
            Update::Missing => Step::Missing,
            Update::Unreadable(error) => Step::Unreadable {
                first: !self.outage,
                error,
            },
        };
        self.outage = outage;
        step
    }
}

/// Applies a change, logged at info whichever side of it info is enabled on.
fn change(level: &LogLevel, from: Level, to: Level, source: &str) {
    let log = || info!(%source, %from, %to, "Log level changed");
    if to < from {
        level.set(to);
        log();
    } else {
        log();
        level.set(to);
    }
}

/// A value from the ConfigMap, shortened for an error message.
fn bounded(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn component_key_wins_then_zap_config_then_info() {
        assert_eq!(level_from_data(&data(&[])), Ok(Level::Info));
        // Knative's shipped ConfigMap: only the example block.
        assert_eq!(
            level_from_data(&data(&[("_example", "loglevel.activator: \"debug\"")])),
            Ok(Level::Info)
        );
        assert_eq!(
            level_from_data(&data(&[
                ("loglevel.activator", "debug"),
                ("zap-logger-config", r#"{"level": "error"}"#)
            ])),
            Ok(Level::Debug)
        );
        assert_eq!(
            level_from_data(&data(&[
                ("loglevel.activator", ""),
                ("loglevel.autoscaler", "debug"),
                (
                    "zap-logger-config",
                    "{\n  \"level\": \"warn\",\n  \"encoding\": \"json\"\n}"
                )
            ])),
            Ok(Level::Warn)
        );
        assert_eq!(
            level_from_data(&data(&[("zap-logger-config", r#"{"encoding": "json"}"#)])),
            Ok(Level::Info)
        );
        assert_eq!(
            level_from_data(&data(&[("zap-logger-config", "  \n")])),
            Ok(Level::Info)
        );
    }

    #[test]
    fn bad_levels_are_errors_naming_the_key() {
        let e = level_from_data(&data(&[("loglevel.activator", "verbose")])).unwrap_err();
        assert!(
            e.to_string().starts_with("loglevel.activator: `verbose`"),
            "{e}"
        );
        let e = level_from_data(&data(&[("zap-logger-config", "{level: debug")])).unwrap_err();
        assert!(
            e.to_string().starts_with("zap-logger-config: not JSON"),
            "{e}"
        );
        let e = level_from_data(&data(&[("zap-logger-config", r#"{"level": 3}"#)])).unwrap_err();
        assert!(
            e.to_string().starts_with("zap-logger-config: not JSON"),
            "{e}"
        );
        let e =
            level_from_data(&data(&[("zap-logger-config", r#"{"level": "loud"}"#)])).unwrap_err();
        assert!(e.to_string().contains("`loud`"), "{e}");
        let huge = format!(
            "{{\"level\": \"debug\", \"x\": \"{}\"}}",
            "a".repeat(ZAP_LIMIT)
        );
        assert!(level_from_data(&data(&[("zap-logger-config", &huge)])).is_err());
        let long = "x".repeat(10_000);
        let e = level_from_data(&data(&[("loglevel.activator", &long)])).unwrap_err();
        assert!(e.to_string().len() < 200);
    }

    #[test]
    fn an_outage_is_reported_once_and_changes_only_when_the_level_does() {
        let mut state = State::default();
        let unreadable = || Update::Unreadable("connection refused".into());
        let first = |first| Step::Unreadable {
            first,
            error: "connection refused".into(),
        };
        assert_eq!(state.step(unreadable()), first(true));
        assert_eq!(state.step(unreadable()), first(false));
        assert_eq!(state.step(unreadable()), first(false));
        assert_eq!(state.step(Update::Level(Level::Info)), Step::Same);
        assert_eq!(
            state.step(Update::Level(Level::Debug)),
            Step::Change {
                from: Level::Info,
                to: Level::Debug
            }
        );
        assert_eq!(state.step(Update::Level(Level::Debug)), Step::Same);
        // A new outage after a good read is reported again.
        assert_eq!(state.step(unreadable()), first(true));
        assert_eq!(state.step(Update::Missing), Step::Missing);
        assert_eq!(state.step(unreadable()), first(true));
        assert_eq!(state.current, Level::Debug, "kept through outages");
    }

    #[test]
    fn levels_order_by_verbosity() {
        assert!(Level::Debug < Level::Info && Level::Info < Level::Warn);
        assert!(Level::Warn < Level::Error);
    }
}
