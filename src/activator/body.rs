//! The response body handed to the client, and the accounting done when a request ends.

use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    breaker::Permit,
    error::Error,
    lb::InFlight,
    stats::GaugeGuard,
    throttler::Revision,
    timeouts::{Alarm, Clock},
    trace::RequestTrace,
};
use crate::autoscaler_client::{ConcurrencyReporter, RequestGuard};

/// What the activator answers with: a short local body, or the pod's streamed body.
pub(crate) type ResponseBody = Either<Full<Bytes>, ProxiedBody>;

/// Status recorded for a client that went away before its response completed.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// Everything held for one request from arrival to completion. Dropped once: records the
/// status (499 if none was set: the client went away) and the duration, and releases the
/// concurrency report, the breaker permit and the endpoint slot.
#[derive(Debug)]
pub(crate) struct Completion {
    start: Instant,
    rev: Arc<Revision>,
    pub(crate) code: Option<u16>,
    pub(crate) request: Option<RequestGuard>,
    pub(crate) permit: Option<Permit>,
    pub(crate) in_flight: Option<InFlight>,
    pub(crate) active: Option<GaugeGuard>,
    /// Its spans, ended with the status.
    pub(crate) trace: RequestTrace,
}

impl Completion {
    pub(crate) fn new(start: Instant, rev: Arc<Revision>) -> Self {
        Self {
            start,
            rev,
            code: None,
            request: None,
            permit: None,
            in_flight: None,
            active: None,
            trace: RequestTrace::default(),
        }
    }

    /// Records the request's arrival with the concurrency reporter (before queueing: the
    /// autoscaler must see queued requests as concurrency), counting the poke it caused.
    pub(crate) fn track(&mut self, reporter: &ConcurrencyReporter) {
        let guard = reporter.track(&self.rev.key);
        if guard.poked() {
            self.rev.pokes.fetch_add(1, Ordering::Relaxed);
        }
        self.request = Some(guard);
    }

    /// Records that the request was held `held` for a cold start; the milliseconds for the
    /// `X-Kactivator-Cold-Start` header, which both HTTP paths write.
    pub(crate) fn cold_start(&self, held: Duration) -> u64 {
        self.rev.stats.cold_start.record(held.as_secs_f64());
        self.rev.cold_starts.record(Instant::now(), held);
        super::headers::cold_start_ms(held)
    }

    /// Ends the request with `e` instead of a pod's response: counts a queue rejection, logs
    /// (a warning for a failed pod, debug for a refusal) and records the status.
    pub(crate) fn fail(&mut self, e: &Error) {
        let rev = &self.rev;
        if let Some(reason) = e.rejection() {
            rev.stats.rejected(reason);
        }
        match e {
            Error::Upstream { .. } | Error::UpstreamIo { .. } => {
                warn!(error = %e, revision = %rev.key, "Upstream request failed");
            }
            _ => debug!(error = %e, revision = %rev.key, "Request refused"),
        }
        self.code = Some(e.status().as_u16());
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let stats = &self.rev.stats;
        let code = self.code.unwrap_or(CLIENT_CLOSED);
        stats.codes.count(code);
        self.trace.end(code);
        stats.duration.record(self.start.elapsed().as_secs_f64());
    }
}

/// Errors a streamed response body ends with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pod's response body, streamed as is (trailers included); completes the request when
/// it ends, or counts 499 if it is dropped first.
///
/// The revision timeout covers the whole response, as Knative's does, and the idle timeout
/// each wait for the pod's next frame: a body still streaming at the deadline is cut (the
/// client sees a reset; the request is counted as 504). Each frame handed on is a write.
#[derive(Debug)]
pub(crate) struct ProxiedBody {
    inner: Incoming,
    done: Option<Completion>,
    /// Started: the head is out.
    clock: Clock,
    alarm: Alarm,
}

impl ProxiedBody {
    pub(crate) fn new(inner: Incoming, done: Completion, clock: Clock) -> Self {
        // An empty body may never be polled: complete now.
        let done = (!inner.is_end_stream()).then_some(done);
        Self {
            inner,
            done,
            clock,
            alarm: Alarm::default(),
        }
    }
}

impl Body for ProxiedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin (the alarm's timer is boxed).
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            // The end of the stream, or the pod breaking it (the client has the status already).
            Poll::Ready(None | Some(Err(_))) => {
                this.done.take();
            }
            Poll::Ready(Some(Ok(_))) => this.clock.wrote(),
            Poll::Pending if this.done.is_some() => {
                if let Poll::Ready(expiry) = this.alarm.poll(&this.clock, cx) {
                    let e = expiry.error();
                    if let Some(mut done) = this.done.take() {
                        done.code = Some(e.status().as_u16());
                    }
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
            Poll::Pending => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ProxiedBody {
    fn drop(&mut self) {
        if let Some(done) = &mut self.done
            && !self.inner.is_end_stream()
        {
            done.code = Some(CLIENT_CLOSED);
        }
    }
}
