//! Watches the config file and publishes each valid change; an invalid, empty or unreadable
//! file keeps the old config.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use super::{Config, Document, Error, SharedConfig};
use crate::{cli::Mode, metrics};

/// Changes to a file are coalesced for this long: editors write in several steps, and a
/// Kubernetes ConfigMap update is a burst of symlink swaps.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching `path` (when there is one) and returns the receiver of the config in force.
///
/// The returned receiver always holds a validated config. Settings that need a restart
/// (listen addresses, mode-level choices) keep their old values on reload, with a warning.
pub fn spawn(
    path: Option<PathBuf>,
    initial: Config,
    mode: Mode,
    shutdown: CancellationToken,
) -> watch::Receiver<SharedConfig> {
    let (tx, rx) = watch::channel(Arc::new(initial));
    let Some(path) = path else {
        // Nothing to watch; keep the sender alive so receivers never see a closed channel.
        tokio::spawn(hold(tx, shutdown).instrument(tracing::info_span!("config_reload")));
        return rx;
    };
    // Read before the watch starts: an edit made before the task first runs must still count
    // as a change.
    let last_text = std::fs::read_to_string(&path).ok();
    let (events_tx, events_rx) = mpsc::channel::<()>(16);
    // The directory is watched, not the file: an atomic rename or a ConfigMap `..data`
    // swap replaces the inode, and a watch on the old inode would go quiet.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads (ours included) are not changes; everything else may be.
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            // Full means a reload is already pending; that one will read the latest bytes.
            let _ = events_tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    match watcher {
        Ok(watcher) => {
            let task = Task {
                path,
                mode,
                last_text,
                tx,
            };
            tokio::spawn(
                task.run(events_rx, watcher, shutdown)
                    .instrument(tracing::info_span!("config_reload")),
            );
        }
        Err(error) => {
            warn!(%error, path = %path.display(), "Cannot watch the config file; hot reload is off");
            tokio::spawn(hold(tx, shutdown).instrument(tracing::info_span!("config_reload")));
        }
    }
    rx
}

/// Keeps the sender alive until shutdown when nothing is watched, so that receivers never see
/// a closed channel.
async fn hold(tx: watch::Sender<SharedConfig>, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    drop(tx);
}

/// The reload loop's state: the only writer of the config in force.
struct Task {
    path: PathBuf,
    mode: Mode,
    /// The text last read, so that an event without a change does nothing.
    last_text: Option<String>,
    tx: watch::Sender<SharedConfig>,
}

impl Task {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<()>,
        _watcher: notify::RecommendedWatcher,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => if ev.is_none() { return },
            }
            tokio::time::sleep(DEBOUNCE).await;
            while events.try_recv().is_ok() {}
            self.reload().await;
        }
    }

    /// Reads the file once and applies it if it is a valid change. Each distinct rejected text
    /// is logged and counted once, however many events it causes.
    async fn reload(&mut self) {
        let path = &self.path;
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(error) => {
                // Mid-swap the file may briefly not exist; the next event retries.
                warn!(%error, path = %path.display(), "Cannot read the config file; keeping the current config");
                return;
            }
        };
        if self.last_text.as_deref() == Some(text.as_str()) {
            return;
        }
        let current = self.tx.borrow().clone();
        let result = accept(path, &text, &current, self.mode);
        self.last_text = Some(text);
        match result {
            Ok(new) => {
                let merged = keep_restart_only_settings(&current, new);
                if *current == merged {
                    return;
                }
                info!(path = %path.display(), revisions = merged.revisions.len(), "Config reloaded");
                ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => "applied").increment(1);
                self.tx.send_replace(Arc::new(merged));
            }
            Err(error) => {
                warn!(%error, "Config change rejected; the previous config stays in force");
                ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => "rejected").increment(1);
            }
        }
    }
}

/// The config `text` asks for, if it may replace `current`: valid, with settings, and not
/// removing every revision by leaving the key out (a file cut short would read that way).
fn accept(path: &Path, text: &str, current: &Config, mode: Mode) -> Result<Config, Error> {
    let new = Config::parse_file(path, text)?;
    new.check(mode)?;
    if new.revisions.is_empty()
        && !current.revisions.is_empty()
        && !Document::read(text).has_key("revisions")
    {
        return Err(Error::Invalid {
            key: "revisions".into(),
            message: format!(
                "absent from {}, which would remove all {} revisions; write `revisions: []` \
                 to remove them",
                path.display(),
                current.revisions.len()
            ),
        });
    }
    Ok(new)
}

/// Returns `new` with the settings that need a restart taken from `current`.
fn keep_restart_only_settings(current: &Config, mut new: Config) -> Config {
    if new.listen != current.listen {
        warn!("listen addresses changed; they take effect after a restart");
        new.listen = current.listen.clone();
    }
    if new.discovery != current.discovery {
        warn!("discovery changed; it takes effect after a restart");
        new.discovery = current.discovery;
    }
    if new.autoscaler != current.autoscaler {
        warn!("autoscaler settings changed; they take effect after a restart");
        new.autoscaler = current.autoscaler.clone();
    }
    if new.adapter.tls != current.adapter.tls {
        warn!("adapter.tls changed; it takes effect after a restart");
        new.adapter.tls = current.adapter.tls.clone();
    }
    if new.activator.max_connections != current.activator.max_connections {
        warn!("activator.max_connections changed; it takes effect after a restart");
        new.activator.max_connections = current.activator.max_connections;
    }
    if new.pod_name != current.pod_name {
        warn!("pod_name changed; it takes effect after a restart");
        new.pod_name = current.pod_name.clone();
    }
    new
}

#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) fn merge(current: &super::Config, new: super::Config) -> super::Config {
        super::keep_restart_only_settings(current, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_short_or_empty_file_never_replaces_a_working_config() {
        let path = Path::new("k.yaml");
        let current = Config::parse("revisions:\n  - name: a\n  - name: b\n").expect("valid");
        let accept = |text: &str| accept(path, text, &current, Mode::Activator);
        let e = accept("").expect_err("empty");
        assert!(
            e.to_string()
                .starts_with("k.yaml: the file holds no settings"),
            "{e}"
        );
        assert_eq!(
            accept("discovery: static\n")
                .expect_err("no revisions key")
                .to_string(),
            "revisions: absent from k.yaml, which would remove all 2 revisions; write \
             `revisions: []` to remove them"
        );
        assert!(accept("revisions: [\n").is_err(), "unparsable");
        assert!(
            accept("revisions:\n  - name: a\n    command: [x]\n").is_err(),
            "mode rule"
        );
        assert_eq!(
            accept("revisions: []\n").expect("explicit").revisions.len(),
            0
        );
        assert_eq!(
            accept("revisions:\n  - name: c\n")
                .expect("valid")
                .revisions
                .len(),
            1
        );
        let none = Config::parse("{}").expect("valid");
        assert!(super::accept(path, "discovery: static\n", &none, Mode::Activator).is_ok());
    }
}
