//! Benchmark pod: a tiny HTTP/1.1 + h2c server that records the moment it became ready.
//!
//! Started by the local autoscaler (`revisions[].command`) with `PORT` set. Environment:
//! - `DEMO_STARTUP_DELAY_MS`: sleep before binding (the app's own start-up time), as the demo app;
//! - `DEMO_RESPONSE_DELAY_MS`: delay every response;
//! - `BENCH_READY_FILE`: after binding, append `pid start_unix_ns bound_unix_ns port` to this file.
//!   `bound` is taken right after `listen()` returned, i.e. the first moment the kernel accepts a
//!   connection: the app's own readiness moment that cold-start excess is measured against;
//! - `BENCH_GATEWAY_PORT`: also listen here, bound in the same instant as `PORT`. The gateway
//!   emulator sends to this fixed port, standing in for the Kubernetes Service VIP Envoy would use.
//!
//! Every request gets `200 hello`.

use std::{
    convert::Infallible,
    io::Write as _,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn env_ms(name: &str) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

fn env_port(name: &str) -> Option<u16> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() -> anyhow::Result<()> {
    let started = unix_ns();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(serve(started))
}

async fn serve(started: u128) -> anyhow::Result<()> {
    let port = env_port("PORT").context("PORT must be set")?;
    let startup = env_ms("DEMO_STARTUP_DELAY_MS");
    let response_delay = env_ms("DEMO_RESPONSE_DELAY_MS");
    if !startup.is_zero() {
        tokio::time::sleep(startup).await;
    }
    let main = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let gateway = match env_port("BENCH_GATEWAY_PORT") {
        Some(p) => Some(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).await?),
        None => None,
    };
    let bound = unix_ns();
    if let Ok(path) = std::env::var("BENCH_READY_FILE") {
        let line = format!("{} {started} {bound} {port}\n", std::process::id());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("cannot append to {path}"))?;
    }
    if let Some(gateway) = gateway {
        tokio::spawn(accept_loop(gateway, response_delay));
    }
    tokio::select! {
        () = accept_loop(main, response_delay) => {}
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
    Ok(())
}

async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn accept_loop(listener: TcpListener, delay: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<Incoming>| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
