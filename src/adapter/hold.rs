//! `hold_until_ready`: a CHECK for a revision without a ready pod is answered once one is
//! ready, when the hold runs out, or when the server closes, whichever comes first.

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
}
