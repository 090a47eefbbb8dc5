//! `hold_until_ready`: a CHECK for a revision without a ready pod is answered once one is
//! ready, when the hold runs out, or when the server closes, whichever comes first.
//!
//! A CHECK that a Route splits between revisions is held until *every* revision it can be
//! sent to has a ready pod: the split is drawn after the CHECK, so any of them may get it.

use std::time::Duration;

use tokio::sync::watch;

use crate::{
    drain::Drain,
    endpoints::{self, Endpoints},
    revision::RevisionKey,
};

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// `hold_until_ready` is 0, or the revision already had a ready pod.
    NotNeeded,
    /// A pod became ready while the call waited.
    Ready,
    /// The hold ran out first; the call is answered OK anyway.
    Expired,
    /// The server started closing; held calls are let go so the drain can finish.
    Closing,
}

/// [`hold`] for every one of `keys` in turn, all within one `limit`.
pub(crate) async fn hold_all(
    healthy: &watch::Receiver<Endpoints>,
    keys: &[RevisionKey],
    limit: Duration,
    drain: &Drain,
) -> Hold {
    if limit.is_zero() {
        return Hold::NotNeeded;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut outcome = Hold::NotNeeded;
    for key in keys {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // `hold` reads a zero limit as "do not hold": a spent one is judged here.
        let this = if left.is_zero() {
            if endpoints::count(&healthy.borrow(), key) > 0 {
                Hold::NotNeeded
            } else {
                Hold::Expired
            }
        } else {
            hold(healthy, key, left, drain).await
        };
        match this {
            Hold::NotNeeded => {}
            Hold::Ready => outcome = Hold::Ready,
            Hold::Expired | Hold::Closing => return this,
        }
    }
    outcome
}

impl Hold {
    /// Its name in traces.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::NotNeeded => "not_needed",
            Self::Ready => "ready",
            Self::Expired => "expired",
            Self::Closing => "closing",
        }
    }
}

/// Waits as described in the module docs. Never longer than `limit`.
pub(crate) async fn hold(
    healthy: &watch::Receiver<Endpoints>,
    key: &RevisionKey,
    limit: Duration,
    drain: &Drain,
) -> Hold {
    if limit.is_zero() || endpoints::count(&healthy.borrow(), key) > 0 {
        return Hold::NotNeeded;
    }
    tokio::select! {
        ready = endpoints::wait_ready(healthy, key, limit) => if ready { Hold::Ready } else { Hold::Expired },
        () = drain.closing() => Hold::Closing,
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use super::*;
    use crate::endpoints::EndpointMap;

    fn setup() -> (
        watch::Sender<Endpoints>,
        watch::Receiver<Endpoints>,
        RevisionKey,
    ) {
        let (tx, rx) = watch::channel(Endpoints::default());
        (tx, rx, RevisionKey::new("default", "hello"))
    }

    fn publish(tx: &watch::Sender<Endpoints>, key: &RevisionKey) {
        let mut map = EndpointMap::default();
        map.insert(
            key.clone(),
            Arc::from(vec![SocketAddr::from(([127, 0, 0, 1], 1))]),
        );
        tx.send_replace(Arc::new(map));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_hold_or_a_ready_pod_answers_at_once() {
        let (tx, rx, key) = setup();
        let drain = Drain::new();
        assert_eq!(
            hold(&rx, &key, Duration::ZERO, &drain).await,
            Hold::NotNeeded
        );
        publish(&tx, &key);
        assert_eq!(
            hold(&rx, &key, Duration::from_secs(5), &drain).await,
            Hold::NotNeeded
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_becoming_ready_releases_the_hold() {
        let (tx, rx, key) = setup();
        let drain = Drain::new();
        let held = tokio::spawn({
            let (rx, key, drain) = (rx.clone(), key.clone(), drain.clone());
            async move { hold(&rx, &key, Duration::from_secs(60), &drain).await }
        });
        tokio::task::yield_now().await;
        publish(&tx, &key);
        assert_eq!(held.await.unwrap(), Hold::Ready);
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_expires_and_closing_releases_it() {
        let (_tx, rx, key) = setup();
        let drain = Drain::new();
        let start = tokio::time::Instant::now();
        assert_eq!(
            hold(&rx, &key, Duration::from_secs(2), &drain).await,
            Hold::Expired
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let held = tokio::spawn({
            let (rx, key, drain) = (rx.clone(), key.clone(), drain.clone());
            async move { hold(&rx, &key, Duration::from_secs(60), &drain).await }
        });
        tokio::task::yield_now().await;
        drain.start_closing();
        assert_eq!(held.await.unwrap(), Hold::Closing);
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_is_held_until_every_revision_is_ready_within_one_limit() {
        let (tx, rx, a) = setup();
        let b = RevisionKey::new("default", "other");
        let drain = Drain::new();
        let keys = [a.clone(), b.clone()];
        // Neither ready: one limit for both, not one each.
        let start = tokio::time::Instant::now();
        assert_eq!(
            hold_all(&rx, &keys, Duration::from_secs(2), &drain).await,
            Hold::Expired
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // `a` ready, `b` not: still held, released when `b` is.
        publish(&tx, &a);
        let held = tokio::spawn({
            let (rx, keys, drain) = (rx.clone(), keys.clone(), drain.clone());
            async move { hold_all(&rx, &keys, Duration::from_secs(60), &drain).await }
        });
        tokio::task::yield_now().await;
        assert!(!held.is_finished());
        let mut map = EndpointMap::default();
        for key in [&a, &b] {
            map.insert(
                key.clone(),
                Arc::from(vec![SocketAddr::from(([127, 0, 0, 1], 1))]),
            );
        }
        tx.send_replace(Arc::new(map));
        assert_eq!(held.await.unwrap(), Hold::Ready);
        assert_eq!(
            hold_all(&rx, &keys, Duration::from_secs(5), &drain).await,
            Hold::NotNeeded
        );
        assert_eq!(
            hold_all(&rx, &keys, Duration::ZERO, &drain).await,
            Hold::NotNeeded
        );
    }
}
