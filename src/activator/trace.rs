//! A request's trace spans, the same for both HTTP paths: the server span continuing the
//! client's context, `throttler_try` (the queue wait) and one `activator_proxy` per attempt,
//! named as Knative's activator names them. Every method is a no-op when traces are off.

use std::{net::SocketAddr, sync::Arc};

use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use super::{error::Error, throttler::Revision};
use crate::telemetry::{
    otel::Traces,
    propagation::{self, B3, Parent},
};

const REVISION: &str = "kn.revision.name";
const NAMESPACE: &str = "k8s.namespace.name";
const STATUS: &str = "http.response.status_code";

/// What the server span starts from, read from the request head.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) parent: Parent,
    pub(crate) method: String,
    /// Without the query, which may carry secrets and has unbounded cardinality.
    pub(crate) path: String,
}

impl Inbound {
    pub(crate) fn new(parent: Parent, method: &str, target: &str) -> Self {
        let path = target.split('?').next().unwrap_or(target);
        Self {
            parent,
            method: method.to_owned(),
            path: path.to_owned(),
        }
    }
}

/// The spans of one request; ended when dropped (with the response, or when the client goes).
#[derive(Debug, Default)]
pub(crate) struct RequestTrace(Option<Box<On>>);

#[derive(Debug)]
struct On {
    tracer: SdkTracer,
    /// Holds the server span.
    cx: Context,
    b3: Option<B3>,
    /// The attempt that got the response: ends with the response body.
    last: Option<Span>,
    /// Attempts so far.
    attempts: u32,
    /// The server span is sampled: attributes are built only then (an unsampled span still
    /// carries its context to the pod, but nobody ever sees its attributes).
    recording: bool,
}

impl RequestTrace {
    /// The server span of a request to `rev`, child of the client's span if it sent one.
    pub(crate) fn start(traces: &Traces, inbound: &Inbound, rev: &Revision) -> Self {
        let tracer = traces.tracer().clone();
        let parent = match inbound.parent.context.clone() {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        let mut span = tracer
            .span_builder(inbound.method.clone())
            .with_kind(SpanKind::Server)
            .start_with_context(&tracer, &parent);
        let recording = span.is_recording();
        if recording {
            span.set_attributes([
                KeyValue::new("http.request.method", inbound.method.clone()),
                KeyValue::new("url.path", inbound.path.clone()),
                KeyValue::new(REVISION, rev.key.name().to_owned()),
                KeyValue::new(NAMESPACE, rev.key.namespace().to_owned()),
            ]);
        }
        Self(Some(Box::new(On {
            tracer,
            cx: Context::new().with_span(span),
            b3: inbound.parent.b3,
            last: None,
            attempts: 0,
            recording,
        })))
    }

    /// Starts `throttler_try`: the wait for capacity, with the queue depth at arrival and
    /// whether the revision had no pod (a cold start).
    pub(crate) fn queue(&self, rev: &Arc<Revision>, cold: bool) -> QueueSpan {
        QueueSpan(self.0.as_ref().map(|on| {
            let mut span = on
                .tracer
                .span_builder("throttler_try")
                .with_kind(SpanKind::Internal)
                .start_with_context(&on.tracer, &on.cx);
            if on.recording {
                span.set_attributes([
                    KeyValue::new(REVISION, rev.key.name().to_owned()),
                    KeyValue::new(NAMESPACE, rev.key.namespace().to_owned()),
                    KeyValue::new("kactivator.queue.depth", rev.breaker.waiting() as i64),
                    KeyValue::new("kactivator.cold_start", cold),
                ]);
            }
            span
        }))
    }

    /// Starts `activator_proxy` for an attempt on the pod at `addr`.
    pub(crate) fn attempt(&mut self, addr: SocketAddr) -> Attempt {
        Attempt(self.0.as_mut().map(|on| {
            let retry = on.attempts;
            on.attempts += 1;
            let mut span = on
                .tracer
                .span_builder("activator_proxy")
                .with_kind(SpanKind::Client)
                .start_with_context(&on.tracer, &on.cx);
            if on.recording {
                span.set_attributes([
                    KeyValue::new("server.address", addr.ip().to_string()),
                    KeyValue::new("server.port", i64::from(addr.port())),
                    KeyValue::new("kactivator.retry", i64::from(retry)),
                ]);
            }
            (span, on.b3)
        }))
    }

    /// Keeps the attempt that got the response, to end with the response body.
    pub(crate) fn answered(&mut self, attempt: Attempt, status: u16) {
        if let (Some(on), Some((mut span, _))) = (self.0.as_mut(), attempt.0) {
            span.set_attribute(KeyValue::new(STATUS, i64::from(status)));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
            on.last = Some(span);
        }
    }

    /// Ends every span with the request's status (`499` when the client went away).
    pub(crate) fn end(&mut self, status: u16) {
        let Some(mut on) = self.0.take() else {
            return;
        };
        drop(on.last.take());
        let span = on.cx.span();
        span.set_attribute(KeyValue::new(STATUS, i64::from(status)));
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// `throttler_try`; ends when admitted or refused.
#[derive(Debug)]
pub(crate) struct QueueSpan(Option<Span>);

impl QueueSpan {
    pub(crate) fn end(self, result: Result<(), &Error>) {
        if let Some(mut span) = self.0 {
            if let Err(e) = result {
                span.set_status(Status::error(e.to_string()));
            }
            span.end();
        }
    }
}

/// `activator_proxy`: one attempt on one pod.
#[derive(Debug)]
pub(crate) struct Attempt(Option<(Span, Option<B3>)>);

impl Attempt {
    /// The trace fields the pod gets: this attempt's span as the parent. Empty when off.
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        match &self.0 {
            Some((span, b3)) => propagation::outgoing(span.span_context(), *b3),
            None => Vec::new(),
        }
    }

    /// Ends a failed attempt.
    pub(crate) fn failed(self, error: &dyn std::fmt::Display) {
        if let Some((mut span, _)) = self.0 {
            span.set_status(Status::error(error.to_string()));
            span.end();
        }
    }
}
