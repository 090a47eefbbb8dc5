//! Safe retries: only requests that never reached a pod, and never a body already sent.

use std::{
    error::Error as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;

/// How an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The pod refused the connection: it is gone or not listening; eject it.
    Refused,
    /// The connect did not complete (timeout, unreachable): the request never left.
    Connect,
    /// The request may have reached the pod: never retried.
    Other,
}

impl Failure {
    pub(crate) fn classify(error: &hyper_util::client::legacy::Error) -> Self {
        if !error.is_connect() {
            return Self::Other;
        }
        let mut source = error.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return Self::Refused;
            }
            source = e.source();
        }
        Self::Connect
    }

    pub(crate) fn never_reached_pod(self) -> bool {
        matches!(self, Self::Refused | Self::Connect)
    }
}

/// The client's request body, held so that an attempt that never polled it can hand it on.
#[derive(Debug)]
pub(crate) struct BodySlot(Option<Arc<Mutex<Option<Incoming>>>>);

impl BodySlot {
    /// An empty body needs no slot (and no allocation): it can always be resent.
    pub(crate) fn new(body: Incoming) -> Self {
        if body.is_end_stream() {
            Self(None)
        } else {
            Self(Some(Arc::new(Mutex::new(Some(body)))))
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
        self.0.as_ref().is_none_or(|slot| slot.lock().is_some())
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
    Waiting(Arc<Mutex<Option<Incoming>>>),
    Streaming(Incoming),
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
                    let Some(body) = slot.lock().take() else {
                        // Another attempt took it; this one must not send a partial body.
                        self.state = State::Empty;
                        return Poll::Ready(None);
                    };
                    self.state = State::Streaming(body);
                }
                State::Streaming(body) => return Pin::new(body).poll_frame(cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Empty => true,
            State::Waiting(slot) => slot.lock().as_ref().is_none_or(Body::is_end_stream),
            State::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Empty => SizeHint::with_exact(0),
            State::Waiting(slot) => slot
                .lock()
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
            State::Streaming(body) => body.size_hint(),
        }
    }
}
