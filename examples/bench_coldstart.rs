//! Cold-start trials from scale zero, for the activator and for the adapter architecture.
//!
//! `bench_coldstart --arch activator|adapter-retry|adapter-hold --ready-file F --trials N
//!  [--http 127.0.0.1:8012 --host H] [--grpc 127.0.0.1:6100 --api mixer|extauthz --upstream ADDR]
//!  [--delay-ms D] [--deadline-ms 30000] [--zero-timeout-ms 90000] [--csv FILE]`
//!
//! Each trial first waits until every pod recorded in the ready file (written by `bench_app`) has
//! exited, i.e. the revision is at zero, then sends one request and records, against the wall
//! clock shared with the pod:
//! `t0` request sent · `app_start` pod process entered `main` · `app_ready` pod's listener bound ·
//! `first_response` response head received. `excess = first_response − app_ready` is what the
//! architecture adds on top of the app's own readiness.
//!
//! - `activator`: a GET on a fresh connection to kactivator's activator;
//! - `adapter-retry`: the gateway EMULATOR (see `common/gateway_emulator.rs`): check, then route
//!   with Envoy's default retry back-off;
//! - `adapter-hold`: the emulator with no retries; the adapter holds the check until ready.

#[path = "common/adapter_wire.rs"]
mod adapter_wire;
#[path = "common/args.rs"]
mod args;
#[path = "common/gateway_emulator.rs"]
mod gateway_emulator;

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

const HEADER: &str = "arch,delay_ms,trial,ok,status,first_response_ms,app_start_ms,app_ready_ms,excess_ms,check_ms,attempts,cold_start_header_ms";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Activator,
    AdapterRetry,
    AdapterHold,
}

/// One line of the pod's ready file.
#[derive(Debug, Clone, Copy)]
struct PodRecord {
    pid: u32,
    start_ns: u128,
    bound_ns: u128,
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn ms(from: u128, to: u128) -> f64 {
    (to as f64 - from as f64) / 1e6
}

fn read_pods(path: &str) -> Vec<PodRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(PodRecord {
                pid: f.next()?.parse().ok()?,
                start_ns: f.next()?.parse().ok()?,
                bound_ns: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_zero(path: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    // Polls /proc every 20 ms; bounded by `timeout`.
    loop {
        if read_pods(path).iter().all(|p| !alive(p.pid)) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "the revision did not scale to zero within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One GET on a fresh connection; returns the status and the cold-start header, at response head.
async fn activator_get(addr: SocketAddr, host: &str) -> anyhow::Result<(u16, Option<f64>, u128)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let at = unix_ns();
    let status = resp.status().as_u16();
    let cold = resp
        .headers()
        .get("x-kactivator-cold-start")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok());
    let _ = resp.into_body().collect().await;
    Ok((status, cold, at))
}

fn main() -> anyhow::Result<()> {
    let a = args::Args::parse()?;
    let arch = match a.get::<String>("arch", "activator")?.as_str() {
        "activator" => Arch::Activator,
        "adapter-retry" => Arch::AdapterRetry,
        "adapter-hold" => Arch::AdapterHold,
        other => anyhow::bail!("unknown --arch {other:?}"),
    };
    let ready_file: String = a.opt("ready-file").context("--ready-file is required")?;
    let trials: u32 = a.get("trials", "30")?;
    let http: SocketAddr = a.get("http", "127.0.0.1:8012")?;
    let host: String = a.get("host", "hello.bench")?;
    let grpc: SocketAddr = a.get("grpc", "127.0.0.1:6100")?;
    let api: adapter_wire::Api = a.get("api", "mixer")?;
    let upstream: SocketAddr = a.get("upstream", "127.0.0.1:18090")?;
    let delay_ms: u64 = a.get("delay-ms", "0")?;
    let deadline = Duration::from_millis(a.get("deadline-ms", "30000")?);
    let zero_timeout = Duration::from_millis(a.get("zero-timeout-ms", "90000")?);
    let namespace: String = a.get("namespace", "default")?;
    let revision: String = a.get("revision", "hello")?;
    let csv: Option<String> = a.opt("csv");
    a.finish()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let gateway = match arch {
            Arch::Activator => None,
            Arch::AdapterRetry | Arch::AdapterHold => {
                let channel = adapter_wire::connect(grpc).await?;
                // Fail fast when the adapter does not answer at all.
                let serving = tokio::time::timeout(
                    Duration::from_secs(3),
                    adapter_wire::serving(channel.clone()),
                )
                .await
                .context("the adapter does not answer a health check within 3 s")??;
                anyhow::ensure!(serving, "the adapter is not SERVING");
                Some(gateway_emulator::Gateway {
                    channel,
                    api,
                    upstream,
                    host: host.clone(),
                    retries: arch == Arch::AdapterRetry,
                    deadline,
                })
            }
        };
        let label = match arch {
            Arch::Activator => "activator".to_owned(),
            Arch::AdapterRetry => format!("adapter-retry-{api}"),
            Arch::AdapterHold => format!("adapter-hold-{api}"),
        };
        let mut failures = 0;
        for trial in 0..trials {
            let waited = wait_zero(&ready_file, zero_timeout).await?;
            // Let the endpoints table catch up with the pod's exit before the next request.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let known = read_pods(&ready_file).len();
            let t0 = unix_ns();
            let (status, check_ms, attempts, cold_hdr, t_resp) = match &gateway {
                None => match tokio::time::timeout(deadline, activator_get(http, &host)).await {
                    Ok(Ok((s, c, at))) => (s, None, 1, c, at),
                    Ok(Err(e)) => {
                        eprintln!("trial {trial}: {e:#}");
                        (0, None, 1, None, unix_ns())
                    }
                    Err(_) => (0, None, 1, None, unix_ns()),
                },
                Some(gw) => match gw.request(&namespace, &revision).await {
                    Ok(o) => (
                        o.status,
                        Some(o.check.as_secs_f64() * 1e3),
                        o.attempts,
                        None,
                        unix_ns(),
                    ),
                    Err(e) => {
                        eprintln!("trial {trial}: {e:#}");
                        (0, None, 0, None, unix_ns())
                    }
                },
            };
            // The pod has normally recorded itself already; give it up to 5 s.
            let mut pod = None;
            for _ in 0..250 {
                if let Some(p) = read_pods(&ready_file).get(known) {
                    pod = Some(*p);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let ok = status == 200 && pod.is_some();
            if !ok {
                failures += 1;
            }
            let fmt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
            let line = format!(
                "{label},{delay_ms},{trial},{},{status},{:.3},{},{},{},{},{attempts},{}",
                u8::from(ok),
                ms(t0, t_resp),
                fmt(pod.map(|p| ms(t0, p.start_ns))),
                fmt(pod.map(|p| ms(t0, p.bound_ns))),
                fmt(pod.map(|p| ms(p.bound_ns, t_resp))),
                fmt(check_ms),
                fmt(cold_hdr),
            );
            println!("{line}  (waited {waited:?} for zero)");
            if let Some(path) = &csv {
                args::append_csv(path, HEADER, &line)?;
            }
        }
        eprintln!("{label} delay {delay_ms} ms: {trials} trials, {failures} failed");
        anyhow::Ok(())
    })
}
