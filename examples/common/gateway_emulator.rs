//! EMULATOR of an Istio gateway (Envoy + Mixer) in front of kactivator's adapter. Not Envoy.
//!
//! What it reproduces, per request, of the 2019 "Mixer adapter for Knative" data path:
//! 1. the policy check: Envoy → Mixer → adapter, collapsed here into one gRPC call to the adapter
//!    (`HandleAuthorization`, or ext_authz `Check` for the Istio >= 1.9 CUSTOM policy);
//! 2. routing to the upstream (the revision's Service address) with Envoy's default retry back-off:
//!    fully jittered exponential, base 25 ms, cap 250 ms — retry `N` (from 1) waits a uniform
//!    random time in `[0, min((2^N − 1) × 25 ms, 250 ms))` — on connect failure or a 5xx, until a
//!    response arrives or the deadline passes. With `retries = false` a single attempt is made
//!    (the `hold_until_ready` architecture, where the check itself waits for a ready pod).
//!
//! What it leaves out: Mixer's check cache, TLS, Envoy's connection pool and EDS (the upstream
//! is a fixed address that refuses connections until the pod binds it).

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};
use tonic::transport::Channel;

use crate::adapter_wire::{self, Api};

/// Envoy's default retry base interval.
pub(crate) const BASE: Duration = Duration::from_millis(25);
/// Envoy's default retry cap (10 × base).
pub(crate) const CAP: Duration = Duration::from_millis(250);

/// The emulated gateway's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    /// A persistent HTTP/2 connection to the adapter, as Mixer (or Envoy) keeps one.
    pub(crate) channel: Channel,
    pub(crate) api: Api,
    pub(crate) upstream: SocketAddr,
    pub(crate) host: String,
    pub(crate) retries: bool,
    pub(crate) deadline: Duration,
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// HTTP status of the final attempt (0: no response before the deadline).
    pub(crate) status: u16,
    /// Time the policy check took.
    pub(crate) check: Duration,
    /// Upstream attempts made.
    pub(crate) attempts: u32,
}

/// Upper bound of the back-off before retry `n` (n >= 1).
pub(crate) fn backoff_bound(n: u32) -> Duration {
    let factor = (1u64 << n.min(16)) - 1;
    (BASE * u32::try_from(factor).unwrap_or(u32::MAX)).min(CAP)
}

impl Gateway {
    /// Handles one request: check, then route with retries.
    pub(crate) async fn request(&self, namespace: &str, revision: &str) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        let deadline = start + self.deadline;
        let code = tokio::time::timeout_at(
            deadline,
            adapter_wire::check(self.channel.clone(), self.api, namespace, revision),
        )
        .await??;
        anyhow::ensure!(code == 0, "the adapter denied the request (code {code})");
        let check = start.elapsed();
        let mut attempts = 0u32;
        let mut status = 0u16;
        // Bounded by the deadline (and by the attempt count, as a second guard).
        while attempts < 10_000 {
            attempts += 1;
            if let Ok(Ok(s)) = tokio::time::timeout_at(deadline, self.attempt()).await {
                status = s;
                if s < 500 {
                    break;
                }
            }
            if !self.retries || Instant::now() >= deadline {
                break;
            }
            let bound = backoff_bound(attempts);
            let wait = rand::random_range(0..u64::try_from(bound.as_micros()).unwrap_or(1).max(1));
            tokio::time::sleep_until((Instant::now() + Duration::from_micros(wait)).min(deadline))
                .await;
        }
        Ok(Outcome {
            status,
            check,
            attempts,
        })
    }

    async fn attempt(&self) -> anyhow::Result<u16> {
        let stream = TcpStream::connect(self.upstream).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header(http::header::HOST, &self.host)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Ok(status)
    }
}
