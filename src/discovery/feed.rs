//! The endpoints feed of a local autoscaler running as a separate process: its document and its client.
//!
//! `ws://<listen.autoscaler>/endpoints` (served by `crate::autoscaler`) pushes one JSON text frame per change:
//! `{"revisions":[{"namespace":"default","name":"hello","endpoints":["127.0.0.1:40123"]}]}`
//! (every revision with at least one ready pod, sorted). A plain `GET /endpoints` returns the
//! same document once.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    endpoints::{EndpointMap, Endpoints},
    revision::RevisionKey,
};

/// Where the autoscaler serves the feed (websocket) and the document (plain GET).
pub const ENDPOINTS_PATH: &str = "/endpoints";
/// The stats client's reconnect rule: 100 ms × 1.3ⁿ, capped at 5 s, plus up to 50 % jitter.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), 1.3, Duration::from_secs(5));
/// Larger documents are refused (a few thousand revisions fit easily).
const MAX_DOCUMENT: usize = 4 * 1024 * 1024;

/// The endpoints document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub revisions: Vec<RevisionEndpoints>,
}

/// Ready pods of one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionEndpoints {
    pub namespace: String,
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
}

// === impl Snapshot ===

impl Snapshot {
    pub fn from_endpoints(map: &EndpointMap) -> Self {
        let mut revisions: Vec<_> = map
            .iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(k, e)| RevisionEndpoints {
                namespace: k.namespace().to_owned(),
                name: k.name().to_owned(),
                endpoints: e.to_vec(),
            })
            .collect();
        revisions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self { revisions }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings and addresses cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"revisions":[]}"#.to_owned())
    }

    pub fn into_endpoints(self) -> Endpoints {
        let map: EndpointMap = self
            .revisions
            .into_iter()
            .filter(|r| !r.endpoints.is_empty())
            .map(|r| {
                (
                    RevisionKey::new(&r.namespace, &r.name),
                    Arc::from(r.endpoints),
                )
            })
            .collect();
        Arc::new(map)
    }
}

/// Endpoints published by a local autoscaler running as a separate process at `url`
/// (`autoscaler.url`). Reconnects until `exit`, with jittered backoff. While disconnected the
/// last table stays in force: the prober keeps checking every pod in it, so a pod that went
/// away with its autoscaler leaves the healthy table at its first failed probe, and a pod
/// still running keeps serving warm traffic. The first document after a reconnect replaces
/// the table whole.
pub fn remote_endpoints(url: String, exit: CancellationToken) -> watch::Receiver<Endpoints> {
    let (tx, rx) = watch::channel(Endpoints::default());
    let feed = format!("{}{ENDPOINTS_PATH}", url.trim_end_matches('/'));
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            let connected = tokio::select! {
                () = exit.cancelled() => return,
                c = tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(feed.as_str())) => c,
            };
            match connected {
                Ok(Ok((mut ws, _))) => {
                    info!(url = %feed, "Following the autoscaler's endpoints");
                    failures = 0;
                    loop {
                        let msg = tokio::select! {
                            () = exit.cancelled() => return,
                            msg = ws.next() => msg,
                        };
                        match msg {
                            Some(Ok(Message::Text(text))) if text.len() <= MAX_DOCUMENT => {
                                match serde_json::from_str::<Snapshot>(&text) {
                                    Ok(s) => {
                                        tx.send_replace(s.into_endpoints());
                                    }
                                    Err(error) => {
                                        warn!(%error, "Ignoring a malformed endpoints document");
                                    }
                                }
                            }
                            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        }
                    }
                    warn!(url = %feed, "Endpoints feed lost; keeping its last endpoints while they pass their probes, reconnecting");
                }
                Ok(Err(error)) => debug!(url = %feed, %error, "Endpoints feed unreachable"),
                Err(_) => debug!(url = %feed, "Endpoints feed handshake timed out"),
            }
            let delay = RECONNECT.delay(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = exit.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_is_sorted() {
        let mut map = EndpointMap::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        map.insert(RevisionKey::new("ns", "b"), Arc::from(vec![a]));
        map.insert(RevisionKey::new("ns", "a"), Arc::from(vec![a]));
        map.insert(RevisionKey::new("ns", "empty"), Arc::from(Vec::new()));
        let json = Snapshot::from_endpoints(&map).to_json();
        assert_eq!(
            json,
            r#"{"revisions":[{"namespace":"ns","name":"a","endpoints":["127.0.0.1:1"]},{"namespace":"ns","name":"b","endpoints":["127.0.0.1:1"]}]}"#
        );
        let back = serde_json::from_str::<Snapshot>(&json)
            .unwrap()
            .into_endpoints();
        assert_eq!(back.len(), 2);
    }
}
