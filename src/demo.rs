//! The built-in demo app, so that the README demo needs nothing but this binary.
//!
//! Started as a local pod (`command: [kactivator]` with `KACTIVATOR_DEMO_APP=1`), it serves
//! HTTP/1.1 on `$PORT`: `GET /` answers `Hello from <K_REVISION>!`. `DEMO_STARTUP_DELAY_MS`
//! delays binding (a slow start), `DEMO_RESPONSE_DELAY_MS` delays every response. It exits on
//! SIGTERM or SIGINT.

use std::{convert::Infallible, net::SocketAddr, process::ExitCode, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// The environment variable that turns this binary into the demo app.
pub const ENV: &str = "KACTIVATOR_DEMO_APP";

/// Runs the demo app on a fresh runtime; the `main` hook.
pub fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("demo app: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_demo_app()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo app: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub async fn run_demo_app() -> std::io::Result<()> {
    let port: u16 = env_number("PORT").unwrap_or(8080);
    let revision = std::env::var("K_REVISION").unwrap_or_else(|_| "demo".into());
    let startup = Duration::from_millis(env_number("DEMO_STARTUP_DELAY_MS").unwrap_or(0));
    let delay = Duration::from_millis(env_number("DEMO_RESPONSE_DELAY_MS").unwrap_or(0));
    let stop = crate::drain::signal();
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => return Ok(()),
        () = tokio::time::sleep(startup) => {}
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("demo app {revision} listening on 127.0.0.1:{port}");
    let body = Bytes::from(format!("Hello from {revision}!\n"));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, body.clone(), delay));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    body: Bytes,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = match req.uri().path() {
        "/" => (StatusCode::OK, body),
        "/healthz" => (StatusCode::OK, Bytes::from_static(b"ok")),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    Ok(resp)
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}
