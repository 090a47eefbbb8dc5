//! Upstream clients (pooled HTTP/1.1 and h2c) and the upstream request of one attempt.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri, Version, uri};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use super::{lb::Tracker, retry::RequestBody};

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
        Self { http1, h2c }
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
