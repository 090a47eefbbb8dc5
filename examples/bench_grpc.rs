//! gRPC load generator for the adapter: fixed concurrency over a few HTTP/2 connections.
//!
//! `bench_grpc --addr 127.0.0.1:6100 --api mixer|extauthz --connections 4 --concurrency 64
//!  --duration-s 10 --warmup-s 1 --revisions 1 [--csv FILE] [--label TEXT]`
//!
//! Each of `concurrency` workers sends one call at a time on connection `worker % connections`;
//! calls are spread over `revisions` revision names (`bench-0` …). Prints (and appends to the
//! CSV) requests, errors, calls/s and latency percentiles measured after the warm-up.

#[path = "common/adapter_wire.rs"]
mod adapter_wire;
#[path = "common/args.rs"]
mod args;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use adapter_wire::Api;
use tokio::time::Instant;

fn main() -> anyhow::Result<()> {
    let a = args::Args::parse()?;
    let addr: SocketAddr = a.get("addr", "127.0.0.1:6100")?;
    let api: Api = a.get("api", "mixer")?;
    let connections: usize = a.get("connections", "4")?;
    let concurrency: usize = a.get("concurrency", "64")?;
    let duration = Duration::from_secs_f64(a.get("duration-s", "10")?);
    let warmup = Duration::from_secs_f64(a.get("warmup-s", "1")?);
    let revisions: usize = a.get("revisions", "1")?;
    let threads: usize = a.get("threads", "1")?;
    let csv: Option<String> = a.opt("csv");
    let label: String = a.get("label", "")?;
    a.finish()?;
    anyhow::ensure!(connections > 0 && concurrency > 0 && revisions > 0 && threads > 0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(adapter_wire::connect(addr).await?);
        }
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + duration;
        let names: Arc<[String]> = (0..revisions).map(|i| format!("bench-{i}")).collect();
        let mut tasks = Vec::with_capacity(concurrency);
        for w in 0..concurrency {
            let channel = channels[w % connections].clone();
            let names = names.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat_us: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                let mut i = w;
                // Bounded by the deadline; every call also has its own timeout.
                while Instant::now() < end {
                    let name = &names[i % names.len()];
                    i += 1;
                    let t = Instant::now();
                    let call = adapter_wire::check(channel.clone(), api, "default", name);
                    let ok = matches!(
                        tokio::time::timeout(Duration::from_secs(5), call).await,
                        Ok(Ok(0))
                    );
                    if t >= measure_from {
                        if ok {
                            let us = t.elapsed().as_micros();
                            lat_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat_us, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await?;
            all.extend(l);
            errors += e;
        }
        anyhow::Ok((all, errors))
    })?;
    let (mut lat, errors) = result;
    lat.sort_unstable();
    let n = lat.len();
    let rps = n as f64 / duration.as_secs_f64();
    let line = format!(
        "{label},{api},{connections},{concurrency},{revisions},{:.1},{n},{errors},{rps:.0},{},{},{},{},{}",
        duration.as_secs_f64(),
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        lat.last().copied().unwrap_or(0),
    );
    println!(
        "label,api,connections,concurrency,revisions,duration_s,requests,errors,rps,p50_us,p90_us,p99_us,p999_us,max_us"
    );
    println!("{line}");
    if let Some(path) = csv {
        args::append_csv(
            &path,
            "label,api,connections,concurrency,revisions,duration_s,requests,errors,rps,p50_us,p90_us,p99_us,p999_us,max_us",
            &line,
        )?;
    }
    Ok(())
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
