//! Safe retries: requests that never reached a pod, replayable requests that died with
//! their connection before any response byte, and never a body already sent.

use std::{
    error::Error as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;

/// How an upstream attempt failed, as both HTTP paths classify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The pod refused the connection: it is gone or not listening; eject it.
    Refused,
    /// The connect did not complete (timeout, unreachable): the request never left.
    Connect,
    /// The connection closed (or reset) before any byte of a response: typically a pooled
    /// connection the pod closed while idle, just as the request went out.
    Stale,
    /// The request may have been processed: never sent again.
    Other,
}

impl Failure {
    /// The general path's classification of a pooled client's error.
    pub(crate) fn classify(error: &hyper_util::client::legacy::Error) -> Self {
        let mut source = error.source();
        let mut stale = false;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if error.is_connect() {
                    return if io.kind() == std::io::ErrorKind::ConnectionRefused {
                        Self::Refused
                    } else {
                        Self::Connect
                    };
                }
                stale |= matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                );
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                // Closed before a response began, or the request was never written.
                stale |= h.is_incomplete_message() || h.is_canceled();
            }
            source = e.source();
        }
        match () {
            () if error.is_connect() => Self::Connect,
            () if stale => Self::Stale,
            () => Self::Other,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Pick again (another pod if there is one).
    Pick,
    /// Send the same request again, once, on a new connection.
    Resend,
    /// Answer the client with the failure.
    Fail,
}

/// The retry policy of one request, shared by both HTTP paths: attempts that never reached a
/// pod are retried up to `max_retries` times on other pods; an attempt that died on a
/// connection before any response byte is sent once more on a new connection when the
/// request is replayable (`headers::replayable`) and its body is still whole (Go's transport
/// does the same). Nothing else is ever sent twice.
#[derive(Debug)]
pub(crate) struct Attempts {
    tried: Vec<SocketAddr>,
    max_retries: usize,
    /// The request may be sent again (`headers::replayable`).
    replayable: bool,
    resent: bool,
}

impl Attempts {
    pub(crate) fn new(max_retries: u32, replayable: bool) -> Self {
        Self {
            tried: Vec::new(),
            max_retries: max_retries as usize,
            replayable,
            resent: false,
        }
    }

    /// Pods that failed to connect, avoided by the next pick.
    pub(crate) fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// Whether no failure of the next attempt could be retried (its request can then be
    /// moved into it rather than copied).
    pub(crate) fn exhausted(&self, body_whole: bool) -> bool {
        !body_whole || (self.tried.len() >= self.max_retries && (self.resent || !self.replayable))
    }

    /// Whether the next attempt must use a new connection.
    pub(crate) fn fresh(&self) -> bool {
        self.resent
    }

    /// Decides after the attempt to `addr` failed; `body_whole`: none of the request's body
    /// was consumed.
    pub(crate) fn after(&mut self, addr: SocketAddr, failure: Failure, body_whole: bool) -> Retry {
        match failure {
            Failure::Refused | Failure::Connect
                if body_whole && self.tried.len() < self.max_retries =>
            {
                self.tried.push(addr);
                Retry::Pick
            }
            Failure::Stale if self.replayable && body_whole && !self.resent => {
                self.resent = true;
                Retry::Resend
            }
            _ => Retry::Fail,
        }
    }
}

/// The client's request body, held so that an attempt that never polled it can hand it on.
#[derive(Debug)]
pub(crate) struct BodySlot(Option<Arc<Slot>>);

#[derive(Debug)]
struct Slot {
    body: Mutex<Option<Incoming>>,
    /// Reading the client's body failed (bad chunk syntax, a cut connection): the failure
    /// is the client's, not the pod's.
    client_failed: AtomicBool,
}

impl BodySlot {
    /// An empty body needs no slot (and no allocation): it can always be resent.
    pub(crate) fn new(body: Incoming) -> Self {
        if body.is_end_stream() {
            Self(None)
        } else {
            Self(Some(Arc::new(Slot {
                body: Mutex::new(Some(body)),
                client_failed: AtomicBool::new(false),
            })))
        }
    }

    /// The body for one attempt; the first attempt that polls it takes it.
    pub(crate) fn attempt(&self) -> RequestBody {
        RequestBody {
            state: match &self.0 {
                None => State::Empty,
                Some(slot) => State::Waiting(slot.clone()),
            },
        }
    }

    /// Whether no attempt has read from the body: a retry cannot replay anything.
    pub(crate) fn untouched(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|slot| slot.body.lock().is_some())
    }

    /// Whether an attempt failed because the client's body could not be read.
    pub(crate) fn client_failed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|slot| slot.client_failed.load(Ordering::Acquire))
    }
}

/// The body sent upstream: streams the client's body once, without buffering it.
#[derive(Debug)]
pub(crate) struct RequestBody {
    state: State,
}

#[derive(Debug)]
enum State {
    Empty,
    Waiting(Arc<Slot>),
    Streaming(Incoming, Arc<Slot>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            match &mut self.state {
                State::Empty => return Poll::Ready(None),
                State::Waiting(slot) => {
                    let Some(body) = slot.body.lock().take() else {
                        // Another attempt took it; this one must not send a partial body.
                        self.state = State::Empty;
                        return Poll::Ready(None);
                    };
                    let slot = slot.clone();
                    self.state = State::Streaming(body, slot);
                }
                State::Streaming(body, slot) => {
                    let polled = Pin::new(body).poll_frame(cx);
                    if let Poll::Ready(Some(Err(_))) = &polled {
                        slot.client_failed.store(true, Ordering::Release);
                    }
                    return polled;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Empty => true,
            State::Waiting(slot) => slot.body.lock().as_ref().is_none_or(Body::is_end_stream),
            State::Streaming(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Empty => SizeHint::with_exact(0),
            State::Waiting(slot) => slot
                .body
                .lock()
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
            State::Streaming(body, _) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn connect_failures_pick_again_up_to_the_limit() {
        let mut a = Attempts::new(2, false);
        assert_eq!(a.after(addr(1), Failure::Refused, true), Retry::Pick);
        assert_eq!(a.after(addr(2), Failure::Connect, true), Retry::Pick);
        assert_eq!(a.tried(), &[addr(1), addr(2)]);
        assert_eq!(a.after(addr(3), Failure::Connect, true), Retry::Fail);
        // A body already read cannot be sent again.
        let mut a = Attempts::new(2, true);
        assert_eq!(a.after(addr(1), Failure::Connect, false), Retry::Fail);
    }

    #[test]
    fn a_stale_connection_resends_a_replayable_request_once() {
        let mut a = Attempts::new(0, true);
        assert!(!a.fresh());
        assert_eq!(a.after(addr(1), Failure::Stale, true), Retry::Resend);
        assert!(a.fresh());
        assert_eq!(a.after(addr(1), Failure::Stale, true), Retry::Fail);
        let mut a = Attempts::new(3, true);
        assert_eq!(a.after(addr(1), Failure::Stale, false), Retry::Fail);
        assert_eq!(a.after(addr(1), Failure::Other, true), Retry::Fail);
        let mut a = Attempts::new(3, false);
        assert_eq!(a.after(addr(1), Failure::Stale, true), Retry::Fail);
    }
}
