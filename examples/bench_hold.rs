//! Buffering bench: N concurrent requests held by the activator while the revision is at zero.
//!
//! `bench_hold --addr 127.0.0.1:8012 --host H --requests 10000 --pid KACTIVATOR_PID
//!  --ready-file F [--connect-concurrency 256] [--timeout-s 120] [--csv FILE]`
//!
//! Opens `requests` connections (each one request, `Connection: close`) at up to
//! `connect-concurrency` connects in flight, samples kactivator's VmRSS from /proc every 50 ms,
//! and waits for every response. Reports failures (error or non-200), idle RSS (before the first
//! connection), held RSS (largest sample while every request was in and no pod was ready yet),
//! VmHWM at the end, memory per held request, and the drain time: from the pod's bind moment
//! (ready file written by `bench_app`) to the last response.

#[path = "common/args.rs"]
mod args;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Semaphore,
    time::Instant,
};

const HEADER: &str = "requests,ok,failed,errors_connect,errors_io,non_200,idle_rss_kib,held_rss_kib,vmhwm_kib,bytes_per_held_request,bytes_per_request_peak,connect_all_ms,all_held_before_ready,ready_after_first_ms,drain_ms,total_ms";

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `(VmRSS, VmHWM)` in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn first_bound(path: &str, after: u128) -> Option<u128> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u128>().ok())
        .filter(|&b| b >= after)
        .min()
}

#[derive(Debug, Default)]
struct Counts {
    ok: AtomicUsize,
    connect: AtomicUsize,
    io: AtomicUsize,
    non_200: AtomicUsize,
    connected: AtomicUsize,
    last_done_ns: AtomicU64,
}

async fn one(addr: SocketAddr, request: Arc<[u8]>, permits: Arc<Semaphore>, counts: Arc<Counts>) {
    let stream = {
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                counts.connect.fetch_add(1, Ordering::Relaxed);
                counts.connected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    let mut stream = stream;
    let _ = stream.set_nodelay(true);
    let sent = stream.write_all(&request).await;
    counts.connected.fetch_add(1, Ordering::Relaxed);
    if sent.is_err() {
        counts.io.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Connection: close — read to EOF, bounded to 64 KiB.
    let mut buf = Vec::with_capacity(256);
    let read = (&mut stream).take(64 * 1024).read_to_end(&mut buf).await;
    let done = u64::try_from(unix_ns() / 1000).unwrap_or(u64::MAX);
    counts.last_done_ns.fetch_max(done, Ordering::Relaxed);
    let status = buf
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok());
    match (read, status) {
        (_, Some(200)) => {
            counts.ok.fetch_add(1, Ordering::Relaxed);
        }
        (_, Some(_)) => {
            counts.non_200.fetch_add(1, Ordering::Relaxed);
        }
        (_, None) => {
            counts.io.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a = args::Args::parse()?;
    let addr: SocketAddr = a.get("addr", "127.0.0.1:8012")?;
    let host: String = a.get("host", "hold.bench")?;
    let requests: usize = a.get("requests", "10000")?;
    let pid: u32 = a.opt("pid").context("--pid is required")?.parse()?;
    let ready_file: String = a.opt("ready-file").context("--ready-file is required")?;
    let connect_concurrency: usize = a.get("connect-concurrency", "256")?;
    let timeout = Duration::from_secs(a.get("timeout-s", "120")?);
    let csv: Option<String> = a.opt("csv");
    a.finish()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (idle_rss, _) = rss(pid);
        let request: Arc<[u8]> =
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .into_bytes()
                .into();
        let counts = Arc::new(Counts::default());
        let permits = Arc::new(Semaphore::new(connect_concurrency.max(1)));
        let t0 = unix_ns();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..requests {
            tasks.spawn(one(
                addr,
                request.clone(),
                permits.clone(),
                counts.clone(),
            ));
        }
        // Sample RSS every 50 ms until all requests are written, then for 1 s more (the
        // activator has read and queued them), as long as no pod is ready; bounded by `timeout`.
        let mut held_rss = 0u64;
        let mut connect_all = None;
        while start.elapsed() < timeout {
            let (now_rss, _) = rss(pid);
            let ready = first_bound(&ready_file, t0).is_some();
            if !ready {
                held_rss = held_rss.max(now_rss);
            }
            if connect_all.is_none() && counts.connected.load(Ordering::Relaxed) >= requests {
                connect_all = Some(start.elapsed());
            }
            if let Some(c) = connect_all
                && (ready || start.elapsed() > c + Duration::from_secs(1))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_all = connect_all.unwrap_or(timeout);
        let ready_at = first_bound(&ready_file, t0);
        let all_held_before_ready = ready_at.is_none();
        let remaining = timeout.saturating_sub(start.elapsed());
        let finished = tokio::time::timeout(remaining, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !finished {
            tasks.abort_all();
        }
        let total = start.elapsed();
        let (_, hwm) = rss(pid);
        let ready_at = first_bound(&ready_file, t0);
        let last_done = u128::from(counts.last_done_ns.load(Ordering::Relaxed)) * 1000;
        let ok = counts.ok.load(Ordering::Relaxed);
        let drain_ms = ready_at.map_or(f64::NAN, |r| (last_done as f64 - r as f64) / 1e6);
        let ready_after = ready_at.map_or(f64::NAN, |r| (r as f64 - t0 as f64) / 1e6);
        let per_req = |rss_kib: u64| (rss_kib.saturating_sub(idle_rss) * 1024) / requests as u64;
        let line = format!(
            "{requests},{ok},{},{},{},{},{idle_rss},{held_rss},{hwm},{},{},{:.0},{},{ready_after:.0},{drain_ms:.1},{:.0}",
            requests - ok,
            counts.connect.load(Ordering::Relaxed),
            counts.io.load(Ordering::Relaxed),
            counts.non_200.load(Ordering::Relaxed),
            per_req(held_rss),
            per_req(hwm),
            connect_all.as_secs_f64() * 1e3,
            u8::from(all_held_before_ready),
            total.as_secs_f64() * 1e3,
        );
        println!("{HEADER}");
        println!("{line}");
        if let Some(path) = csv {
            args::append_csv(&path, HEADER, &line)?;
        }
        anyhow::Ok(())
    })
}
