//! The autoscaler websocket client: one task owns the connection; callers hold a cheap handle.
//!
//! Callers never block: [`AutoscalerClient::poke`] and [`AutoscalerClient::report`] put a
//! command on a bounded queue and return; a full queue drops and counts. The task connects to
//! `ws://…/`, writes binary frames, pings every ~3.3 s and gives up on a peer silent for 10 s,
//! then reconnects with jittered exponential backoff (at once after close code 1012).
//! While disconnected, pokes are remembered (per revision, deduplicated, bounded, expiring) and
//! re-sent after reconnecting, because a lost poke leaves a revision at zero with requests
//! waiting; periodic reports are dropped (the next second brings a fresh one).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ClientConfig, Stat, wire};
use crate::{backoff::Backoff, metrics as m, revision::RevisionKey, status};

/// Knative: ping every pongTimeout/3.
const PING_PERIOD: Duration = Duration::from_millis(3_333);
/// A peer that sent nothing (not even a pong) for this long is gone.
const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Knative's gorilla dialer handshake timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A frame that cannot be written within this long means a dead connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Knative's durable connection backoff: 100 ms × 1.3ⁿ, capped at 5 s, plus up to 50 % jitter.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), 1.3, Duration::from_secs(5));
/// Pokes remembered while disconnected are re-sent only if younger than this: a request that
/// old has timed out (the default revision timeout is 300 s).
pub const POKE_MEMORY: Duration = Duration::from_secs(300);
/// Revisions remembered while disconnected.
const MAX_PENDING_POKES: usize = 10_000;

/// Handle to the task that owns the autoscaler websocket. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct AutoscalerClient {
    tx: mpsc::Sender<Command>,
    connected: Arc<AtomicBool>,
    link: Arc<LinkTimes>,
    pod_name: Arc<str>,
    url: Arc<str>,
}

/// When the link last went up or down, for the status page; written by the connection task.
#[derive(Debug)]
struct LinkTimes {
    /// When the client started.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last change; 0 until the first.
    changed_ms: AtomicU64,
    /// Whether the link was ever up: "connecting" rather than "reconnecting".
    ever_up: AtomicBool,
}

/// The websocket's state as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub connected: bool,
    /// Never connected so far (else a down link is reconnecting).
    pub never_connected: bool,
    /// How long the link has been in this state.
    pub for_duration: Duration,
}

#[derive(Debug)]
enum Command {
    Poke(RevisionKey),
    Report(Vec<Stat>),
}

// === impl AutoscalerClient ===

impl AutoscalerClient {
    /// Starts the connection task; it runs until `exit` is cancelled.
    pub fn spawn(cfg: ClientConfig, exit: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(cfg.send_queue.max(1));
        let connected = Arc::new(AtomicBool::new(false));
        let link = Arc::new(LinkTimes {
            epoch: Instant::now(),
            changed_ms: AtomicU64::new(0),
            ever_up: AtomicBool::new(false),
        });
        let client = Self {
            tx,
            connected: connected.clone(),
            link: link.clone(),
            pod_name: cfg.pod_name.clone(),
            url: cfg.url.as_str().into(),
        };
        let conn = Connection {
            cfg,
            rx,
            connected,
            link,
            pending: PendingPokes::default(),
            exit,
        };
        tokio::spawn(conn.run());
        client
    }

    /// Scale-from-zero poke: `average_concurrent_requests=1, request_count=1`, sent at once
    /// (or re-sent after reconnecting). Never blocks; a full queue drops and counts.
    pub fn poke(&self, key: &RevisionKey) {
        if self.tx.try_send(Command::Poke(key.clone())).is_err() {
            metrics::counter!(m::POKES, "result" => "dropped").increment(1);
        }
    }

    /// One batch (one protobuf frame, or one gob frame per stat) of periodic stats.
    /// Never blocks; a full queue drops and counts.
    pub fn report(&self, stats: Vec<Stat>) {
        if stats.is_empty() {
            return;
        }
        if self.tx.try_send(Command::Report(stats)).is_err() {
            metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "out", "result" => "dropped")
                .increment(1);
        }
    }

    /// Whether the websocket is up right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The link's state and how long it has been in it.
    pub fn link(&self) -> Link {
        let changed = Duration::from_millis(self.link.changed_ms.load(Ordering::Acquire));
        Link {
            connected: self.is_connected(),
            never_connected: !self.link.ever_up.load(Ordering::Acquire),
            for_duration: self.link.epoch.elapsed().saturating_sub(changed),
        }
    }

    /// The `pod_name` this client stamps on every stat.
    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }
}

/// The link's line of `/status.json`.
impl status::Source for AutoscalerClient {
    fn fill(&self, doc: &mut status::Document) {
        let link = self.link();
        doc.autoscaler_link = Some(status::LinkStatus {
            url: self.url.to_string(),
            state: match (link.connected, link.never_connected) {
                (true, _) => "connected",
                (false, true) => "connecting",
                (false, false) => "reconnecting",
            },
            for_seconds: status::seconds(link.for_duration),
        });
    }
}

/// Revisions poked while disconnected, with the time of their latest poke.
#[derive(Debug, Default)]
struct PendingPokes {
    keys: HashMap<RevisionKey, Instant>,
}

impl PendingPokes {
    fn remember(&mut self, key: RevisionKey, now: Instant) {
        if self.keys.len() >= MAX_PENDING_POKES && !self.keys.contains_key(&key) {
            self.expire(now);
            if self.keys.len() >= MAX_PENDING_POKES {
                metrics::counter!(m::POKES, "result" => "dropped").increment(1);
                return;
            }
        }
        self.keys.insert(key, now);
        metrics::counter!(m::POKES, "result" => "deferred").increment(1);
    }

    fn expire(&mut self, now: Instant) {
        let before = self.keys.len();
        self.keys
            .retain(|_, at| now.duration_since(*at) < POKE_MEMORY);
        let expired = before - self.keys.len();
        if expired > 0 {
            metrics::counter!(m::POKES, "result" => "expired").increment(expired as u64);
        }
    }

    /// The live pokes, in a stable order; the set is emptied.
    fn take(&mut self, now: Instant) -> Vec<RevisionKey> {
        self.expire(now);
        let mut keys: Vec<_> = self.keys.drain().map(|(k, _)| k).collect();
        keys.sort();
        keys
    }
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// Why a connection ended.
enum Ended {
    /// `exit` fired or every handle is gone.
    Exit,
    /// The server said 1012 (restarting): reconnect at once.
    Restarting,
    Broken,
}

/// The task owning the websocket.
struct Connection {
    cfg: ClientConfig,
    rx: mpsc::Receiver<Command>,
    connected: Arc<AtomicBool>,
    link: Arc<LinkTimes>,
    pending: PendingPokes,
    exit: CancellationToken,
}

// === impl Connection ===

impl Connection {
    async fn run(mut self) {
        // The gauge exists (at 0) from the start: a link that never comes up is visible too.
        self.set_connected(false);
        let mut attempt: u32 = 0;
        let mut immediate = false;
        loop {
            if !immediate {
                let delay = RECONNECT.delay(attempt.saturating_sub(1));
                if attempt > 0 && self.absorb_until(tokio::time::sleep(delay)).await.is_none() {
                    return;
                }
            }
            immediate = false;
            let url = self.cfg.url.clone();
            let connect =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(url));
            let ws = match self.absorb_until(connect).await {
                None => return,
                Some(Ok(Ok((ws, _)))) => ws,
                Some(Ok(Err(error))) => {
                    self.connect_failed(attempt, &error.to_string());
                    attempt = attempt.saturating_add(1);
                    continue;
                }
                Some(Err(_)) => {
                    self.connect_failed(attempt, "handshake timed out");
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            };
            info!(url = %self.cfg.url, "Connected to the autoscaler");
            self.set_connected(true);
            attempt = 0;
            let ended = self.serve(ws).await;
            self.set_connected(false);
            match ended {
                Ended::Exit => return,
                Ended::Restarting => {
                    info!(url = %self.cfg.url, "Autoscaler restarting; reconnecting");
                    immediate = true;
                }
                Ended::Broken => {
                    metrics::counter!(m::STATS_CONN_ERRORS, "peer" => "autoscaler").increment(1);
                    warn!(url = %self.cfg.url, "Autoscaler connection lost; reconnecting");
                    attempt = 1;
                }
            }
        }
    }

    fn connect_failed(&self, attempt: u32, error: &str) {
        metrics::counter!(m::STATS_CONN_ERRORS, "peer" => "autoscaler").increment(1);
        // The first failure is worth a warning; the retries that follow only at debug.
        if attempt == 0 {
            warn!(url = %self.cfg.url, %error, "Autoscaler is not reachable; pokes are held until it is");
        } else {
            debug!(url = %self.cfg.url, %error, attempt, "Autoscaler still not reachable");
        }
    }

    fn set_connected(&self, up: bool) {
        let ms = u64::try_from(self.link.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.link.changed_ms.store(ms, Ordering::Release);
        if up {
            self.link.ever_up.store(true, Ordering::Release);
        }
        self.connected.store(up, Ordering::Release);
        metrics::gauge!(m::STATS_CONN_REACHABLE, "peer" => "autoscaler").set(if up {
            1.0
        } else {
            0.0
        });
    }

    /// Runs `fut` while handling commands as a disconnected client does. `None` on exit.
    async fn absorb_until<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                () = self.exit.cancelled() => return None,
                out = &mut fut => return Some(out),
                cmd = self.rx.recv() => match cmd {
                    None => return None,
                    Some(Command::Poke(key)) => self.pending.remember(key, Instant::now()),
                    Some(Command::Report(_)) => {
                        metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "out", "result" => "dropped").increment(1);
                    }
                },
            }
        }
    }

    async fn serve(
        &mut self,
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Ended {
        let (mut sink, mut stream) = ws.split();
        let resend = self.pending.take(Instant::now());
        if !resend.is_empty() {
            info!(
                count = resend.len(),
                "Re-sending pokes held while disconnected"
            );
            for key in resend {
                if !self.send_poke(&mut sink, key, "resent").await {
                    return Ended::Broken;
                }
            }
        }
        let mut ping = tokio::time::interval_at(Instant::now() + PING_PERIOD, PING_PERIOD);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = self.exit.cancelled() => {
                    let close = Message::Close(Some(CloseFrame { code: CloseCode::Away, reason: "".into() }));
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
                    return Ended::Exit;
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code));
                        debug!(?code, "Autoscaler closed the connection");
                        return if code == Some(1012) { Ended::Restarting } else { Ended::Broken };
                    }
                    // Pongs, pings (answered by tungstenite) and data all prove the peer alive.
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(error)) => {
                        debug!(%error, "Autoscaler websocket read failed");
                        return Ended::Broken;
                    }
                    None => return Ended::Broken,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > PONG_TIMEOUT {
                        warn!(timeout = ?PONG_TIMEOUT, "Autoscaler did not answer pings");
                        return Ended::Broken;
                    }
                    if !write(&mut sink, Message::Ping(Default::default())).await {
                        return Ended::Broken;
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    None => return Ended::Exit,
                    Some(Command::Poke(key)) => {
                        if !self.send_poke(&mut sink, key, "sent").await {
                            return Ended::Broken;
                        }
                    }
                    Some(Command::Report(stats)) => {
                        for frame in wire::encode(self.cfg.encoding, &stats, &self.cfg.pod_name) {
                            if !write(&mut sink, Message::Binary(frame.into())).await {
                                metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "out", "result" => "failed").increment(1);
                                return Ended::Broken;
                            }
                        }
                    }
                },
            }
        }
    }

    /// Sends one poke; if the write fails the poke is remembered for the next connection.
    async fn send_poke(&mut self, sink: &mut Sink, key: RevisionKey, result: &'static str) -> bool {
        let stat = Stat::poke(key.clone());
        for frame in wire::encode(
            self.cfg.encoding,
            std::slice::from_ref(&stat),
            &self.cfg.pod_name,
        ) {
            if !write(sink, Message::Binary(frame.into())).await {
                metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "out", "result" => "failed")
                    .increment(1);
                self.pending.remember(key, Instant::now());
                return false;
            }
        }
        metrics::counter!(m::POKES, "result" => result).increment(1);
        true
    }
}

/// Writes one message (bounded); `false` when the connection is unusable.
async fn write(sink: &mut Sink, msg: Message) -> bool {
    let binary = matches!(msg, Message::Binary(_));
    let ok = matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await,
        Ok(Ok(()))
    );
    if ok && binary {
        metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "out", "result" => "sent")
            .increment(1);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pending_pokes_are_deduplicated_and_expire() {
        let mut p = PendingPokes::default();
        let a = RevisionKey::new("ns", "a");
        let b = RevisionKey::new("ns", "b");
        let t0 = Instant::now();
        p.remember(a.clone(), t0);
        p.remember(a.clone(), t0);
        p.remember(b.clone(), t0 + Duration::from_secs(200));
        assert_eq!(
            p.take(t0 + Duration::from_secs(250)),
            vec![a.clone(), b.clone()]
        );
        assert!(p.take(t0).is_empty(), "take empties the set");
        p.remember(a, t0);
        p.remember(b.clone(), t0 + Duration::from_secs(200));
        assert_eq!(p.take(t0 + POKE_MEMORY + Duration::from_secs(1)), vec![b]);
    }
}
