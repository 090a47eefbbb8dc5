//! Upstream clients (pooled HTTP/1.1 and h2c) and the upstream request of one attempt.

use std::{io, net::SocketAddr, time::Duration};

use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header, uri};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tracing::{Instrument as _, debug, debug_span};

use super::{lb::Tracker, retry::RequestBody, upstream};

/// Idle upstream connections kept per pod; Knative's `MAX_IDLE_PROXY_CONNS_PER_HOST`.
const MAX_IDLE_PER_POD: usize = 100;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Pool = Client<HttpConnector, RequestBody>;

/// One HTTP/1.1 pool and one h2c (prior knowledge) pool: the upstream protocol follows the
/// client's, so gRPC over h2c stays h2c end to end.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    http1: Pool,
    h2c: Pool,
    connect_timeout: Duration,
}

impl Clients {
    /// `connect_timeout` bounds each TCP connect; a timed-out connect is retryable.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_POD)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        Self {
            http1,
            h2c,
            connect_timeout,
        }
    }

    /// Sends `req` (as built by `Outbound::request`) on a new connection of its own, never
    /// pooled: the one resend after a pooled connection turned out closed, which must not
    /// land on another stale pooled connection.
    pub(crate) async fn send_fresh(
        &self,
        addr: SocketAddr,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, io::Error> {
        // The fast path's connect: the same timeout and socket options.
        let conn = upstream::connect(addr, self.connect_timeout)
            .await
            .map_err(upstream::ConnectError::into_io)?;
        let io = TokioIo::new(conn.stream);
        let span = debug_span!("upstream_connection", %addr);
        if req.version() == Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(io::Error::other)?;
            // Ends when the exchange's streams end and the sender is dropped.
            tokio::spawn(
                async move {
                    if let Err(error) = conn.await {
                        debug!(%error, "Upstream connection ended with an error");
                    }
                }
                .instrument(span),
            );
            return sender.send_request(req).await.map_err(io::Error::other);
        }
        // An HTTP/1.1 connection of one's own takes the origin form, with the Host the pooled
        // client would have written.
        if let Some(authority) = req.uri().authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(
            async move {
                if let Err(error) = conn.with_upgrades().await {
                    debug!(%error, "Upstream connection ended with an error");
                }
            }
            .instrument(span),
        );
        sender.send_request(req).await.map_err(io::Error::other)
    }

    /// The pool for a client request of `version`.
    pub(crate) fn for_version(&self, version: Version) -> &Pool {
        if version == Version::HTTP_2 {
            &self.h2c
        } else {
            &self.http1
        }
    }
}

/// The parts of a client request that every attempt reuses.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) method: Method,
    pub(crate) version: Version,
    pub(crate) path: uri::PathAndQuery,
    /// Already rewritten; taken by the last possible attempt, cloned by earlier ones.
    pub(crate) headers: HeaderMap,
}

impl Outbound {
    /// The request of one attempt to `to`. `last` moves the headers instead of cloning them.
    pub(crate) fn request(
        &mut self,
        to: &Tracker,
        body: RequestBody,
        last: bool,
    ) -> Result<Request<RequestBody>, http::Error> {
        let uri = Uri::builder()
            .scheme(uri::Scheme::HTTP)
            .authority(to.authority.clone())
            .path_and_query(self.path.clone())
            .build()?;
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = if last {
            std::mem::take(&mut self.headers)
        } else {
            self.headers.clone()
        };
        Ok(req)
    }
}
