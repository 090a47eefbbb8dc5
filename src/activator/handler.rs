//! The request pipeline: probes → revision → throttler → load balancer → proxy (+ retry).

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version, header, uri};
use http_body_util::{Either, Full};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::{
    body::{Completion, ProxiedBody, ResponseBody},
    breaker::{Permit, Refused},
    error::Error,
    headers::{self, RequestHead, RequestRewrite},
    lb::InFlight,
    probe_handler, protocol,
    proxy::{Clients, Outbound},
    retry::{Attempts, BodySlot, Failure, Retry},
    stats::{Codes, GaugeGuard},
    throttler::{Revision, Route, Settings, Throttler},
    timeouts::Clock,
    trace::{Inbound, RequestTrace},
};
use crate::{
    admin::Readiness,
    autoscaler_client::ConcurrencyReporter,
    backends::Backends,
    telemetry::{otel::Traces, propagation},
};

static COLD_START: HeaderName = HeaderName::from_static(headers::name::COLD_START);

/// hyper's smallest HTTP/1.1 read buffer; smaller `max_header_bytes` are checked here.
pub(crate) const MIN_HEAD_BUFFER: usize = 8192;

/// A request that holds capacity but finds no endpoint with room (its pod was just ejected,
/// or capacity and endpoints are between their two update steps) waits for the next
/// healthy-endpoint change, or at most this long, before picking again.
const PICK_RETRY_PAUSE: Duration = Duration::from_millis(5);

/// The activator's request handler. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    /// Present when traces are on: off costs one check per request.
    pub(super) traces: Option<Traces>,
    pub(super) throttler: Arc<Throttler>,
    clients: Clients,
    /// Bounds each TCP connect of the HTTP/1.1 fast path (the pooled clients have their own).
    pub(super) connect_timeout: Duration,
    pub(super) reporter: ConcurrencyReporter,
    pub(super) backends: Backends,
    /// Kubelet probes on the data port answer with it, as Knative's activator does.
    pub(super) readiness: Readiness,
    /// Upgraded (websocket) tunnels, so that the drain waits for them too.
    tunnels: TaskTracker,
    /// `kactivator_requests_total` for requests that matched no revision (or were refused
    /// before routing).
    pub(super) unrouted: Codes,
}

/// What `handle` learnt of a request from its one read of the head, for the exchange.
#[derive(Debug)]
struct Facts {
    /// An HTTP/1.1 upgrade (websocket).
    upgrade: bool,
    /// `headers::replayable`.
    replayable: bool,
    /// The fields the pod gets (with the client's address in `X-Forwarded-For`).
    rewrite: RequestRewrite,
    /// With traces on: what the server span starts from.
    trace: Option<Inbound>,
}

/// A response from a pod, with what must live as long as its body.
struct Forwarded {
    resp: Response<Incoming>,
    is_head: bool,
    permit: Permit,
    in_flight: InFlight,
    active: GaugeGuard,
    cold_start: Option<Duration>,
    client_upgrade: Option<OnUpgrade>,
}

impl Handler {
    pub(crate) fn new(
        traces: Option<Traces>,
        throttler: Arc<Throttler>,
        connect_timeout: Duration,
        reporter: ConcurrencyReporter,
        backends: Backends,
        readiness: Readiness,
        tunnels: TaskTracker,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                traces,
                throttler,
                clients: Clients::new(connect_timeout),
                connect_timeout,
                reporter,
                backends,
                readiness,
                tunnels,
                unrouted: Codes::new(Vec::new()),
            }),
        }
    }

    /// What the HTTP/1.1 fast path shares with this handler.
    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Serves one request from `peer`; never fails (errors become responses).
    pub(crate) async fn handle(
        self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        let inner = &*self.inner;
        // The table guard is dropped before any await.
        let found = {
            let table = inner.throttler.load();
            let settings = table.settings;
            let head = RequestHead::read(headers::fields(req.headers()));
            if settings.max_header_bytes < MIN_HEAD_BUFFER
                && head_size(&req) > settings.max_header_bytes
            {
                Err(Error::HeadersTooLarge)
            } else if let Err(e) = head.framing(req.version()) {
                Err(e)
            } else if let Some(answer) = probe_handler::answer(req.headers(), &inner.readiness) {
                return Ok(match answer {
                    Ok(resp) => resp.map(Either::Left),
                    Err(e) => e.to_response().map(Either::Left),
                });
            } else {
                table
                    .route(req.headers(), req.uri())
                    .cloned()
                    .map(|route| {
                        let facts = Facts {
                            upgrade: req.version() == Version::HTTP_11 && head.is_upgrade(),
                            replayable: headers::replayable(
                                req.method().as_str(),
                                head.idempotency_key,
                            ),
                            rewrite: RequestRewrite::plan(&head, req.headers(), peer),
                            trace: inner.traces.as_ref().map(|_| inbound(&req)),
                        };
                        (route, settings, facts)
                    })
                    .ok_or(Error::UnknownRevision)
            }
        };
        let (route, settings, facts) = match found {
            Ok(found) => found,
            Err(e) => {
                inner.unrouted.count(e.status().as_u16());
                return Ok(e.to_response().map(Either::Left));
            }
        };
        let mut done = Completion::new(start, route.rev.clone());
        if let (Some(traces), Some(inbound)) = (&inner.traces, &facts.trace) {
            done.trace = RequestTrace::start(traces, inbound, &route.rev);
        }
        done.track(&inner.reporter);
        let clock = Clock::of(&route, start);
        // Nothing is written before the response head, so the next deadline stays put.
        let (deadline, expiry) = clock.next();
        let forwarded = tokio::time::timeout_at(
            deadline,
            inner.forward(req, &route, settings, start, facts, &mut done.trace),
        )
        .await;
        let result = forwarded.unwrap_or_else(|_| Err(expiry.error()));
        Ok(match result {
            Ok(f) => inner.respond(f, done, clock),
            Err(e) => {
                done.fail(&e);
                e.to_response().map(Either::Left)
            }
        })
    }
}

impl Inner {
    /// Waits in the revision's queue for capacity.
    pub(super) async fn admit(&self, rev: &Revision, settings: Settings) -> Result<Permit, Error> {
        let _queued = GaugeGuard::new(&rev.stats.queued);
        tokio::time::timeout(
            settings.queue_timeout,
            rev.breaker.acquire(settings.queue_depth),
        )
        .await
        .map_err(|_| Error::QueueTimeout)?
        .map_err(|refused| match refused {
            Refused::QueueFull => Error::QueueFull,
            Refused::Gone => Error::RevisionGone,
        })
    }

    /// An endpoint with room, avoiding `tried`. A request that holds capacity but finds none
    /// waits for the next healthy-endpoint change (or `PICK_RETRY_PAUSE`) and picks again.
    pub(super) async fn pick(
        &self,
        rev: &Revision,
        container_concurrency: u32,
        tried: &[SocketAddr],
    ) -> InFlight {
        let policy = rev.balancer.policy(container_concurrency);
        loop {
            if let Some(in_flight) =
                policy.pick(&rev.trackers.load(), container_concurrency as usize, tried)
            {
                return in_flight;
            }
            let mut healthy = self.backends.healthy();
            tokio::select! {
                _ = healthy.changed() => {}
                () = tokio::time::sleep(PICK_RETRY_PAUSE) => {}
            }
        }
    }

    /// Waits for capacity, picks an endpoint and sends the request, retrying attempts that
    /// never reached a pod.
    async fn forward(
        &self,
        req: Request<Incoming>,
        route: &Route,
        settings: Settings,
        start: Instant,
        facts: Facts,
        trace: &mut RequestTrace,
    ) -> Result<Forwarded, Error> {
        let rev = &route.rev;
        let cold = rev.trackers.load().is_empty();
        let queue = trace.queue(rev, cold);
        let permit = self.admit(rev, settings).await;
        queue.end(permit.as_ref().map(|_| ()));
        let permit = permit?;
        // Boxed: a request waiting in the queue keeps only the small state above alive; the
        // exchange with the pod (retry loop, pooled-client future) is allocated once there is
        // capacity. Held requests are what fill memory during a cold start.
        Box::pin(self.exchange(req, route, settings, start, permit, cold, facts, trace)).await
    }

    /// Sends the request to a pod, retrying as `retry::Attempts` decides.
    #[allow(clippy::too_many_arguments)] // the request's state, passed once from `forward`
    async fn exchange(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        settings: Settings,
        start: Instant,
        permit: Permit,
        cold: bool,
        facts: Facts,
        trace: &mut RequestTrace,
    ) -> Result<Forwarded, Error> {
        let rev = &route.rev;
        let upgrade = facts.upgrade;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let is_head = parts.method == http::Method::HEAD;
        let mut headers = parts.headers;
        let host = headers.get(header::HOST).cloned().or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        facts.rewrite.apply(&mut headers, host);
        if facts.trace.is_some() {
            // Each attempt sends its own context.
            for name in propagation::NAMES {
                headers.remove(name);
            }
        }
        let mut out = Outbound {
            method: parts.method,
            // Set per attempt: it follows what the picked pod speaks.
            version: parts.version,
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| uri::PathAndQuery::from_static("/")),
            headers,
        };
        let body = BodySlot::new(body);
        let mut attempts = Attempts::new(settings.max_retries, facts.replayable);
        let mut active = None;
        loop {
            let in_flight = self
                .pick(rev, route.container_concurrency, attempts.tried())
                .await;
            let addr = in_flight.tracker().addr;
            let speaks = in_flight.tracker().speaks();
            out.version = protocol::upstream(route.protocol, parts.version, upgrade, speaks);
            let client = self.clients.for_version(out.version);
            let last = attempts.exhausted(body.untouched());
            let attempt = trace.attempt(addr);
            for (name, value) in attempt.fields() {
                if let Ok(value) = HeaderValue::try_from(value) {
                    out.headers.insert(HeaderName::from_static(name), value);
                }
            }
            let up = out.request(in_flight.tracker(), body.attempt(), last)?;
            let sent_at = start.elapsed();
            active.get_or_insert_with(|| GaugeGuard::new(&rev.stats.active));
            let sent = if attempts.fresh() {
                self.clients.send_fresh(addr, up).await.map_err(|source| {
                    (
                        Failure::Other,
                        Error::UpstreamIo {
                            addr,
                            error: source,
                        },
                    )
                })
            } else {
                client.request(up).await.map_err(|source| {
                    (
                        Failure::classify(&source),
                        Error::Upstream {
                            addr,
                            error: source,
                        },
                    )
                })
            };
            match sent {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrade => {
                    // A switch nobody asked for: what follows is not HTTP, and must not reach
                    // the client as if it were (the fast path refuses it the same way).
                    let error = Error::UpstreamIo {
                        addr,
                        error: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "101 Switching Protocols to a request that asked for no upgrade",
                        ),
                    };
                    attempt.failed(&error);
                    return Err(error);
                }
                Ok(resp) => {
                    trace.answered(attempt, resp.status().as_u16());
                    return Ok(Forwarded {
                        resp,
                        is_head,
                        permit,
                        in_flight,
                        active: active.unwrap_or_else(|| GaugeGuard::new(&rev.stats.active)),
                        cold_start: cold.then_some(sent_at),
                        client_upgrade,
                    });
                }
                Err((failure, error)) => {
                    attempt.failed(&error);
                    if body.client_failed() {
                        // The client's body broke (bad chunk syntax, cut off): its fault, not
                        // the pod's, and nothing more can be read from it.
                        debug!(%error, revision = %rev.key, "Request body unreadable");
                        return Err(Error::BadRequest("malformed request body"));
                    }
                    if self.retry(rev, &mut attempts, addr, failure, body.untouched(), &error)
                        == Retry::Fail
                    {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Applies the retry policy after a failed attempt, for both HTTP paths: ejects a pod
    /// that refused the connection, and counts and logs the retries.
    pub(super) fn retry(
        &self,
        rev: &Revision,
        attempts: &mut Attempts,
        addr: SocketAddr,
        failure: Failure,
        body_whole: bool,
        error: &dyn std::fmt::Display,
    ) -> Retry {
        if failure == Failure::Refused {
            self.backends.eject(&rev.key, addr);
        }
        let next = attempts.after(addr, failure, body_whole);
        if next != Retry::Fail {
            debug!(%error, revision = %rev.key, %addr, ?failure, ?next, "Attempt failed; retrying");
            rev.stats.retries.increment(1);
        }
        next
    }

    /// Turns a pod's response into the client's; starts the tunnel of an upgrade.
    /// `clock` keeps running over the response body, which is cut when it runs out.
    /// Upgraded connections (websockets) are exempt, as in Knative.
    fn respond(
        &self,
        f: Forwarded,
        mut done: Completion,
        mut clock: Clock,
    ) -> Response<ResponseBody> {
        let Forwarded {
            mut resp,
            is_head,
            permit,
            in_flight,
            active,
            cold_start,
            client_upgrade,
        } = f;
        let status = resp.status();
        let upgraded = status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some();
        headers::rewrite_response(resp.headers_mut(), status.as_u16(), is_head, upgraded);
        if let Some(held) = cold_start {
            let ms = done.cold_start(held);
            resp.headers_mut()
                .insert(COLD_START.clone(), HeaderValue::from(ms));
        }
        done.code = Some(status.as_u16());
        done.permit = Some(permit);
        done.in_flight = Some(in_flight);
        done.active = Some(active);
        match client_upgrade.filter(|_| upgraded) {
            Some(client_side) => {
                let pod_side = hyper::upgrade::on(&mut resp);
                self.tunnels.spawn(tunnel(client_side, pod_side, done));
                resp.map(|_| Either::Left(Full::new(Bytes::new())))
            }
            None => {
                clock.started();
                resp.map(|body| Either::Right(ProxiedBody::new(body, done, clock)))
            }
        }
    }
}

/// Copies bytes both ways between an upgraded client connection and the pod's.
async fn tunnel(client: OnUpgrade, pod: OnUpgrade, done: Completion) {
    let (client, pod) = match tokio::join!(client, pod) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(error), _) | (_, Err(error)) => {
            debug!(%error, "Upgrade failed");
            return;
        }
    };
    let (mut client, mut pod) = (TokioIo::new(client), TokioIo::new(pod));
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut pod).await {
        debug!(%error, "Upgraded connection ended with an error");
    }
    drop(done);
}

/// What the server span of `req` starts from (traces on only).
fn inbound(req: &Request<Incoming>) -> Inbound {
    let mut incoming = propagation::Incoming::default();
    for (name, value) in headers::fields(req.headers()) {
        incoming.add(name, value);
    }
    Inbound::new(incoming.parent(), req.method().as_str(), req.uri().path())
}

/// Bytes of the request head, as HTTP/1.1 would send it (approximately).
fn head_size(req: &Request<Incoming>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}
