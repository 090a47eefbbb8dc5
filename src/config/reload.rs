//! Watches the config file and publishes each valid change; an invalid edit keeps the old config.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Config, SharedConfig};
use crate::metrics;

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
    shutdown: CancellationToken,
) -> watch::Receiver<SharedConfig> {
    let (tx, rx) = watch::channel(Arc::new(initial));
    let Some(path) = path else {
        // Nothing to watch; keep the sender alive so receivers never see a closed channel.
        tokio::spawn(async move {
            shutdown.cancelled().await;
            drop(tx);
        });
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
            tokio::spawn(run(path, last_text, tx, events_rx, watcher, shutdown));
        }
        Err(error) => {
            warn!(%error, path = %path.display(), "Cannot watch the config file; hot reload is off");
            tokio::spawn(async move {
                shutdown.cancelled().await;
                drop(tx);
            });
        }
    }
    rx
}

async fn run(
    path: PathBuf,
    mut last_text: Option<String>,
    tx: watch::Sender<SharedConfig>,
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
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(error) => {
                // Mid-swap the file may briefly not exist; the next event retries.
                warn!(%error, path = %path.display(), "Cannot read the config file; keeping the current config");
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_text = Some(text.clone());
        match Config::parse(&text) {
            Ok(new) => {
                let current = tx.borrow().clone();
                let merged = keep_restart_only_settings(&current, new);
                if *current == merged {
                    continue;
                }
                info!(path = %path.display(), revisions = merged.revisions.len(), "Config reloaded");
                ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => "applied").increment(1);
                tx.send_replace(Arc::new(merged));
            }
            Err(error) => {
                warn!(%error, path = %path.display(), "Config change rejected; the previous config stays in force");
                ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => "rejected").increment(1);
            }
        }
    }
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
