//! `discovery: kubernetes` at scale and its cold start, against the fake API server of tests/support, with the real binary.
//!
//! `cargo bench --bench kube_scale [-- --only scale,cold --pods-answer yes|no ...]` (or
//! `benches/run.sh --only kube`). Phases:
//!
//! - `scale`: 5,000 Revisions in 500 namespaces, 20,000 pod addresses in their private Endpoints
//!   (4 each, on 127.10.x.y, all on one port), public Endpoints naming this activator. Measures
//!   binary start → `/readyz` 200 (first full sync), RSS after sync and once every pod was probed,
//!   the steady idle CPU (the probing of 20,000 pods), and the CPU of one Endpoints update: process
//!   CPU over `--updates` paced updates minus an idle window of the same length, divided. With
//!   `--pods-answer no` nothing listens on the pod addresses (probes are refused).
//! - `cold`: time from the private Endpoints event that publishes a ready queue-proxy (the fake
//!   API server's write) to the first byte of a held request arriving at that pod, `--trials`
//!   revisions each cold once.
//! - `adapter`: the same cold start in adapter mode at a gateway: an ext_authz Check carrying only
//!   a Route's Host (no routing headers), the revision found through the fake API server's KIngress,
//!   held by `hold_until_ready`. Measures Check → poke at the autoscaler, and the private Endpoints
//!   write → the held Check answered.
//!
//! Results: a table on stdout and `benches/results/kube-scale.csv`, `kube-coldstart.csv`,
//! `kube-coldstart-adapter.csv`.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../tests/support/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;
#[path = "../tests/support/autoscaler.rs"]
#[allow(dead_code)]
mod autoscaler;
#[path = "../tests/support/binary.rs"]
#[allow(dead_code)]
mod binary;
#[path = "../tests/support/mixer.rs"]
#[allow(dead_code)]
mod mixer;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use apiserver::{
    FakeApiServer, KPath, Protocol, kingress, private_endpoints, public_endpoints, revision,
};
use autoscaler::FakeAutoscaler;
use binary::{Ports, Running, start_activator_env, start_on};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    time::Instant,
};

const POD_IP: &str = "127.0.0.1";
const POD_PORT: u16 = 18712;

struct Args {
    only: Vec<String>,
    revisions: usize,
    namespaces: usize,
    pods: usize,
    updates: usize,
    window: Duration,
    steady: Duration,
    rounds: usize,
    pods_answer: bool,
    trials: usize,
    results: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        only: vec!["scale".into(), "cold".into()],
        revisions: 5000,
        namespaces: 500,
        pods: 20_000,
        updates: 200,
        window: Duration::from_secs(5),
        steady: Duration::from_secs(60),
        rounds: 3,
        pods_answer: true,
        trials: 30,
        results: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results"),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--only" => a.only = value().split(',').map(str::to_owned).collect(),
            "--revisions" => a.revisions = value().parse().unwrap(),
            "--namespaces" => a.namespaces = value().parse().unwrap(),
            "--pods" => a.pods = value().parse().unwrap(),
            "--updates" => a.updates = value().parse().unwrap(),
            "--window-s" => a.window = Duration::from_secs(value().parse().unwrap()),
            "--rounds" => a.rounds = value().parse().unwrap(),
            "--steady-s" => a.steady = Duration::from_secs(value().parse().unwrap()),
            "--pods-answer" => a.pods_answer = value() != "no",
            "--trials" => a.trials = value().parse().unwrap(),
            "--results" => a.results = value().into(),
            // `cargo bench` passes `--bench`; anything else unknown is ignored too.
            _ => {}
        }
    }
    assert!(a.revisions > 0 && a.namespaces > 0 && a.pods >= a.revisions);
    a
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--serve-pods") {
        let from = argv.get(i + 1).and_then(|v| v.parse().ok()).unwrap();
        let count = argv.get(i + 2).and_then(|v| v.parse().ok()).unwrap();
        return serve_pods_child(from, count);
    }
    let args = args();
    raise_nofile(args.pods as u64 + 4096);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if args.only.iter().any(|p| p == "scale") {
            scale(&args).await;
        }
        if args.only.iter().any(|p| p == "cold") {
            cold(&args).await;
        }
        if args.only.iter().any(|p| p == "adapter") {
            adapter_cold(&args).await;
        }
    });
}

/// 20,000 listeners and the activator's probe connections need more than the usual 1,024 (or
/// this sandbox's 20,000) descriptors; as root the hard limit can be raised too.
fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let hard = if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        want
    } else {
        hard
    };
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

/// Pod `i`'s address: 127.10.x.y, distinct for up to 62,500 pods.
fn pod_ip(i: usize) -> Ipv4Addr {
    let (x, y) = (i / 250, i % 250);
    Ipv4Addr::new(
        127,
        10 + u8::try_from(x / 250).unwrap(),
        (x % 250) as u8,
        y as u8 + 1,
    )
}

/// Queue-proxy-like pods, cheap enough for 20,000: the probe (`K-Network-Probe: queue`) gets
/// 200 `queue`, any other request 200 `ok`; each pod counts its probes, and the arrival time of
/// every other request is recorded with its path.
#[derive(Default)]
struct Pods {
    probes: Vec<AtomicU32>,
    requests: Mutex<Vec<(Instant, String)>>,
    connections: AtomicUsize,
}

impl Pods {
    fn probed(&self) -> usize {
        self.probes
            .iter()
            .filter(|p| p.load(Ordering::Relaxed) > 0)
            .count()
    }

    fn total_probes(&self) -> u64 {
        self.probes
            .iter()
            .map(|p| u64::from(p.load(Ordering::Relaxed)))
            .sum()
    }
}

async fn start_pods(addrs: &[SocketAddr]) -> Arc<Pods> {
    let pods = Arc::new(Pods {
        probes: (0..addrs.len()).map(|_| AtomicU32::new(0)).collect(),
        ..Pods::default()
    });
    for (i, addr) in addrs.iter().enumerate() {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind pod {addr}: {e}"));
        let pods = pods.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(serve_pod(stream, i, pods.clone()));
            }
        });
    }
    pods
}

async fn serve_pod(mut stream: tokio::net::TcpStream, i: usize, pods: Arc<Pods>) {
    pods.connections.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() > 64 * 1024 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let at = Instant::now();
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end + 4);
        let reply: &[u8] = if head.contains("\r\nk-network-probe: queue") {
            pods.probes[i].fetch_add(1, Ordering::Relaxed);
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nqueue"
        } else {
            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
            pods.requests.lock().push((at, path));
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Most pod listeners one process holds: this sandbox's hard descriptor limit is 20,000, so
/// 20,000 pods are served by two child processes.
const PODS_PER_PROCESS: usize = 10_000;

/// Child mode (`--serve-pods FROM COUNT`): serves pods FROM..FROM+COUNT and prints
/// `<pods probed> <probes>` every 100 ms (the first line once every listener is bound) until its
/// stdin closes.
fn serve_pods_child(from: usize, count: usize) {
    raise_nofile(count as u64 + 4096);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addrs: Vec<SocketAddr> = (from..from + count)
            .map(|i| SocketAddr::from((pod_ip(i), POD_PORT)))
            .collect();
        let pods = start_pods(&addrs).await;
        let parent_gone = tokio::spawn(async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        });
        let mut out = tokio::io::stdout();
        loop {
            let line = format!("{} {}\n", pods.probed(), pods.total_probes());
            if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if parent_gone.is_finished() {
                return;
            }
        }
    });
}

/// Pods served by child processes, with their latest counters.
struct PodProcesses {
    /// (pods probed, probes) per child.
    counters: Vec<Arc<[std::sync::atomic::AtomicU64; 2]>>,
    _children: Vec<tokio::process::Child>,
}

impl PodProcesses {
    async fn start(pods: usize) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut counters = Vec::new();
        let mut children = Vec::new();
        let mut bound = Vec::new();
        for from in (0..pods).step_by(PODS_PER_PROCESS) {
            let count = PODS_PER_PROCESS.min(pods - from);
            let mut child = tokio::process::Command::new(&exe)
                .args(["--serve-pods", &from.to_string(), &count.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let counter: Arc<[std::sync::atomic::AtomicU64; 2]> = Arc::default();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let c = counter.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                let mut tx = Some(tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut f = line.split(' ').map(|v| v.parse::<u64>().unwrap_or(0));
                    c[0].store(f.next().unwrap_or(0), Ordering::Relaxed);
                    c[1].store(f.next().unwrap_or(0), Ordering::Relaxed);
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            });
            counters.push(counter);
            children.push(child);
            bound.push(rx);
        }
        for rx in bound {
            tokio::time::timeout(Duration::from_secs(120), rx)
                .await
                .expect("pod listeners bound")
                .expect("pod process alive");
        }
        Self {
            counters,
            _children: children,
        }
    }

    fn probed(&self) -> usize {
        self.counters
            .iter()
            .map(|c| c[0].load(Ordering::Relaxed) as usize)
            .sum()
    }

    fn total_probes(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c[1].load(Ordering::Relaxed))
            .sum()
    }
}

/// CPU time of `pid`, all threads: (schedstat ns summed over live threads, utime+stime ticks as
/// ns). The first has ns resolution; the second also counts exited threads.
fn cpu_ns(pid: u32) -> (u64, u64) {
    let mut sched = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                sched += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
    // CLK_TCK is 100 on Linux.
    (sched, ticks * 10_000_000)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn readyz(a: &Running) -> bool {
    binary::try_get(a.ports.admin, "/readyz", Duration::from_secs(2))
        .await
        .is_some_and(|(s, _)| s == 200)
}

/// Starts the activator against `api` (`discovery: kubernetes`, POD_IP 127.0.0.1).
fn activator(dir: &Path, api: &FakeApiServer, autoscaler: &FakeAutoscaler) -> Running {
    let kubeconfig = api.write_kubeconfig(dir);
    let yaml = format!(
        "discovery: kubernetes\nautoscaler:\n  url: {}\n",
        autoscaler.url()
    );
    start_activator_env(
        dir,
        &yaml,
        None,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_IP", POD_IP),
            ("RUST_LOG", "warn"),
        ],
    )
}

async fn scale(args: &Args) {
    let per_rev = args.pods / args.revisions;
    let addrs: Vec<SocketAddr> = (0..args.revisions * per_rev)
        .map(|i| SocketAddr::from((pod_ip(i), POD_PORT)))
        .collect();
    let pods = if args.pods_answer {
        eprintln!("[kube-scale] binding {} pod listeners", addrs.len());
        Some(PodProcesses::start(addrs.len()).await)
    } else {
        None
    };
    let api = FakeApiServer::start().await;
    let autoscaler = FakeAutoscaler::start().await;
    let ns = |k: usize| format!("ns-{:03}", k % args.namespaces);
    let name = |k: usize| format!("rev-{k:05}-00001");
    let ips = |k: usize, n: usize| -> Vec<String> {
        (k * per_rev..k * per_rev + n)
            .map(|i| pod_ip(i).to_string())
            .collect()
    };
    let private = |k: usize, n: usize| {
        let ips = ips(k, n);
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        private_endpoints(&ns(k), &name(k), &ips, &[], "http", POD_PORT)
    };
    eprintln!(
        "[kube-scale] {} revisions in {} namespaces, {} pods",
        args.revisions,
        args.namespaces,
        addrs.len()
    );
    for k in 0..args.revisions {
        api.apply(revision(&ns(k), &name(k), 10, Protocol::Http1));
        api.apply(private(k, per_rev));
        api.apply(public_endpoints(&ns(k), &name(k), &[POD_IP]));
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let a = activator(dir.path(), &api, &autoscaler);
    let pid = a.child.id();
    while !readyz(&a).await {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no first sync in 120 s; see {}",
            dir.path().join("stderr.log").display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sync = started.elapsed();
    let rss_sync = status_kib(pid, "VmRSS:");
    eprintln!(
        "[kube-scale] first sync {:.0} ms, RSS {:.1} MiB",
        sync.as_secs_f64() * 1e3,
        mib(rss_sync)
    );

    // Probing: every pod probed once (when they answer), bounded.
    let mut all_probed = None;
    if let Some(p) = &pods {
        let deadline = Instant::now() + Duration::from_secs(120);
        while p.probed() < addrs.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if p.probed() == addrs.len() {
            all_probed = Some(started.elapsed());
        }
        eprintln!(
            "[kube-scale] {} of {} pods probed at {:?}",
            p.probed(),
            addrs.len(),
            started.elapsed()
        );
    }
    // Let the first probe wave and its publishing settle before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_probed = status_kib(pid, "VmRSS:");
    let probes = || pods.as_ref().map_or(0, |p| p.total_probes());

    // Rounds of an idle window then an update window of the same length (the machine is
    // shared: alternating makes a busy spell hit both). Updates: half take a revision's last
    // pod out, half put it back, evenly paced; distinct revisions, spread over the namespaces.
    // With 20,000 pods the rounds end before the first re-probe wave (~40 s after the first).
    let step = args.window / u32::try_from(args.updates).unwrap();
    let mut per_update = Vec::new();
    let mut idle_cores = Vec::new();
    let mut idle_probes = 0;
    for round in 0..args.rounds {
        let (p0, (i0, _)) = (probes(), cpu_ns(pid));
        tokio::time::sleep(args.window).await;
        let (p1, (i1, _)) = (probes(), cpu_ns(pid));
        idle_probes += p1 - p0;
        let t0 = Instant::now();
        for j in 0..args.updates {
            let k = ((round * args.updates + j) / 2 * 7919) % args.revisions;
            let n = if j % 2 == 0 { per_rev - 1 } else { per_rev };
            api.apply(private(k, n));
            tokio::time::sleep_until(t0 + step * u32::try_from(j + 1).unwrap()).await;
        }
        let (u1, _) = cpu_ns(pid);
        let (idle, updating) = (i1 - i0, u1 - i1);
        idle_cores.push(idle as f64 / 1e9 / args.window.as_secs_f64());
        per_update.push(updating.saturating_sub(idle) as f64 / args.updates as f64 / 1e3);
        eprintln!(
            "[kube-scale] round {round}: idle {:.1} ms CPU, {} updates {:.1} ms CPU",
            idle as f64 / 1e6,
            args.updates,
            updating as f64 / 1e6
        );
    }
    let rounds_end = started.elapsed();

    // Steady state: healthy pods are re-probed one interval (about pods / 500 s, at least 1 s)
    // after their last probe, so re-probes come in waves; one long window averages them.
    let p0 = probes();
    let ((s0, _), steady_t0) = (cpu_ns(pid), Instant::now());
    tokio::time::sleep(args.steady).await;
    let (s1, _) = cpu_ns(pid);
    let steady_secs = steady_t0.elapsed().as_secs_f64();
    let steady_probes = probes() - p0;
    let rss_end = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);

    // The table is live after the updates: a routed request reaches a pod (when pods answer).
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        get(a.ports.http, &ns(1), &name(1), "/check"),
    )
    .await
    .ok()
    .flatten();

    let list = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut row = BTreeMap::new();
    row.insert("revisions", args.revisions.to_string());
    row.insert("namespaces", args.namespaces.to_string());
    row.insert("pods", addrs.len().to_string());
    row.insert("pods_answer", args.pods_answer.to_string());
    row.insert("sync_ms", format!("{:.0}", sync.as_secs_f64() * 1e3));
    row.insert(
        "all_probed_ms",
        all_probed.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)),
    );
    row.insert("rss_sync_mib", format!("{:.1}", mib(rss_sync)));
    row.insert("rss_probed_mib", format!("{:.1}", mib(rss_probed)));
    row.insert("rss_end_mib", format!("{:.1}", mib(rss_end)));
    row.insert("hwm_mib", format!("{:.1}", mib(hwm)));
    row.insert("threads", threads.to_string());
    row.insert("window_s", format!("{}", args.window.as_secs_f64()));
    row.insert("updates_per_round", args.updates.to_string());
    row.insert("rounds_end_s", format!("{:.1}", rounds_end.as_secs_f64()));
    row.insert("idle_cores_rounds", list(&idle_cores, 4));
    row.insert(
        "idle_probes_per_s",
        format!(
            "{:.0}",
            idle_probes as f64 / args.window.as_secs_f64() / args.rounds as f64
        ),
    );
    row.insert("update_cpu_us_rounds", list(&per_update, 1));
    row.insert(
        "update_cpu_us_median",
        format!("{:.1}", median(&per_update)),
    );
    row.insert("steady_window_s", format!("{steady_secs:.1}"));
    row.insert(
        "steady_cores",
        format!("{:.4}", (s1 - s0) as f64 / 1e9 / steady_secs),
    );
    row.insert(
        "steady_probes_per_s",
        format!("{:.0}", steady_probes as f64 / steady_secs),
    );
    row.insert(
        "check_request_status",
        served.map_or("-".into(), |s| s.to_string()),
    );
    report("kube-scale", &args.results, &row);
    drop(a);
}

async fn cold(args: &Args) {
    let api = FakeApiServer::start().await;
    let autoscaler = FakeAutoscaler::start().await;
    let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 0));
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let pod_addr = listener.local_addr().unwrap();
    drop(listener);
    let pods = start_pods(&[pod_addr]).await;
    let ns = "cold";
    let name = |t: usize| format!("cold-{t:03}-00001");
    for t in 0..args.trials {
        api.apply(revision(ns, &name(t), 0, Protocol::Http1));
        api.apply(pod_endpoints(ns, &name(t), pod_addr, false));
        api.apply(public_endpoints(ns, &name(t), &[POD_IP]));
    }
    let dir = tempfile::tempdir().unwrap();
    let a = activator(dir.path(), &api, &autoscaler);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !readyz(&a).await {
        assert!(Instant::now() < deadline, "no first sync");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut rows = Vec::new();
    for t in 0..args.trials {
        let rev = name(t);
        let http = a.ports.http;
        let path = format!("/trial/{t}");
        let (r, p) = (rev.clone(), path.clone());
        let sent = Instant::now();
        let request = tokio::spawn(async move { get(http, ns, &r, &p).await });
        // Held: the autoscaler was poked for this revision (the request reached the queue).
        let poke_deadline = Instant::now() + Duration::from_secs(10);
        let mut poked = true;
        while !autoscaler
            .frames()
            .iter()
            .any(|f| f.protobuf().messages.iter().any(|m| m.name == rev))
        {
            if Instant::now() > poke_deadline || request.is_finished() {
                poked = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !poked {
            // A failed trial, not a failed bench: say what happened and go on.
            let answered = request.is_finished();
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            eprintln!(
                "[kube-cold] trial {t}: no poke for {rev} (request answered: {answered}, \
                 {} frames so far); log tail {tail:?}",
                autoscaler.frames().len()
            );
            request.abort();
            rows.push((false, None, f64::NAN, f64::NAN));
            continue;
        }
        // Let the poke settle so that the request is surely waiting, then publish the pod.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let published = Instant::now();
        api.apply(pod_endpoints(ns, &rev, pod_addr, true));
        let status = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let answered = Instant::now();
        let arrived = pods
            .requests
            .lock()
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(at, _)| *at);
        let ok = status == Some(200) && arrived.is_some();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        rows.push((
            ok,
            arrived.map(|at| ms(at.saturating_duration_since(published))),
            ms(answered - published),
            ms(published - sent),
        ));
    }
    let failed = rows.iter().filter(|r| !r.0).count();
    let mut upstream: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
    let mut response: Vec<f64> = rows.iter().filter(|r| r.0).map(|r| r.2).collect();
    upstream.sort_by(f64::total_cmp);
    response.sort_by(f64::total_cmp);
    let mut row = BTreeMap::new();
    row.insert("trials", args.trials.to_string());
    row.insert("failed", failed.to_string());
    row.insert(
        "first_byte_upstream_p50_ms",
        format!("{:.2}", pct(&upstream, 50.0)),
    );
    row.insert(
        "first_byte_upstream_p90_ms",
        format!("{:.2}", pct(&upstream, 90.0)),
    );
    row.insert(
        "first_byte_upstream_p99_ms",
        format!("{:.2}", pct(&upstream, 99.0)),
    );
    row.insert(
        "first_byte_upstream_max_ms",
        format!("{:.2}", upstream.last().copied().unwrap_or(f64::NAN)),
    );
    row.insert("response_p50_ms", format!("{:.2}", pct(&response, 50.0)));
    row.insert("response_p99_ms", format!("{:.2}", pct(&response, 99.0)));
    report("kube-coldstart", &args.results, &row);
    // Per-trial figures for the record.
    let csv: String = rows
        .iter()
        .enumerate()
        .map(|(t, r)| {
            format!(
                "{t},{},{},{:.3},{:.3}\n",
                r.0,
                r.1.map_or("".into(), |v| format!("{v:.3}")),
                r.2,
                r.3
            )
        })
        .collect();
    std::fs::write(
        args.results.join("kube-coldstart-trials.csv"),
        format!("trial,ok,first_byte_upstream_ms,response_ms,held_before_publish_ms\n{csv}"),
    )
    .unwrap();
}

async fn adapter_cold(args: &Args) {
    let api = FakeApiServer::start().await;
    let autoscaler = FakeAutoscaler::start().await;
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let pod_addr = listener.local_addr().unwrap();
    drop(listener);
    // The adapter only probes the pod (hold_until_ready waits for a healthy one).
    let _pods = start_pods(&[pod_addr]).await;
    let ns = "kcold";
    let name = |t: usize| format!("route-{t:03}-00001");
    let host = |t: usize| format!("route-{t:03}.{ns}.example.com");
    for t in 0..args.trials {
        let rev = name(t);
        api.apply(revision(ns, &rev, 0, Protocol::Http1));
        api.apply(pod_endpoints(ns, &rev, pod_addr, false));
        let splits = [(rev.as_str(), 100)];
        let paths = [KPath {
            path: None,
            headers: &[],
            splits: &splits,
        }];
        let hosts = [host(t)];
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        api.apply(kingress(
            ns,
            &format!("route-{t:03}"),
            &[(&hosts, "ExternalIP", &paths)],
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let yaml = format!(
        "discovery: kubernetes\nautoscaler:\n  url: {}\nadapter:\n  hold_until_ready: 30s\n",
        autoscaler.url()
    );
    let a = start_on(
        Ports::free(),
        "adapter",
        dir.path(),
        &yaml,
        None,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUST_LOG", "warn"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !readyz(&a).await {
        assert!(Instant::now() < deadline, "no first sync");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ch = mixer::channel(a.ports.grpc).await;
    // (ok, Check → poke ms, Endpoints write → Check answered ms)
    let mut rows: Vec<(bool, f64, f64)> = Vec::new();
    for t in 0..args.trials {
        let rev = name(t);
        let sent = Instant::now();
        let check = tokio::spawn(mixer::raw_call(
            ch.clone(),
            mixer::EXT_AUTHZ_PATH,
            mixer::ext_authz_request(&host(t), &[]),
        ));
        let poke_deadline = Instant::now() + Duration::from_secs(10);
        let mut poked = None;
        while poked.is_none() && Instant::now() < poke_deadline && !check.is_finished() {
            if autoscaler
                .frames()
                .iter()
                .any(|f| f.protobuf().messages.iter().any(|m| m.name == rev))
            {
                poked = Some(sent.elapsed());
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let Some(poked) = poked else {
            eprintln!(
                "[kube-adapter-cold] trial {t}: no poke for {rev} (Check answered: {})",
                check.is_finished()
            );
            check.abort();
            rows.push((false, f64::NAN, f64::NAN));
            continue;
        };
        // The Check is held (no pod yet); publish one.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held = !check.is_finished();
        let published = Instant::now();
        api.apply(pod_endpoints(ns, &rev, pod_addr, true));
        let reply = tokio::time::timeout(Duration::from_secs(10), check)
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(Result::ok);
        let answered = published.elapsed();
        let ok = held && reply.as_deref() == Some(&[0x0a, 0x00, 0x1a, 0x00][..]);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        rows.push((ok, ms(poked), ms(answered)));
    }
    let failed = rows.iter().filter(|r| !r.0).count();
    let mut poke: Vec<f64> = rows.iter().filter(|r| r.0).map(|r| r.1).collect();
    let mut answer: Vec<f64> = rows.iter().filter(|r| r.0).map(|r| r.2).collect();
    poke.sort_by(f64::total_cmp);
    answer.sort_by(f64::total_cmp);
    let mut row = BTreeMap::new();
    row.insert("trials", args.trials.to_string());
    row.insert("failed", failed.to_string());
    row.insert("check_to_poke_p50_ms", format!("{:.2}", pct(&poke, 50.0)));
    row.insert("check_to_poke_p99_ms", format!("{:.2}", pct(&poke, 99.0)));
    row.insert(
        "endpoints_to_check_answered_p50_ms",
        format!("{:.2}", pct(&answer, 50.0)),
    );
    row.insert(
        "endpoints_to_check_answered_p90_ms",
        format!("{:.2}", pct(&answer, 90.0)),
    );
    row.insert(
        "endpoints_to_check_answered_p99_ms",
        format!("{:.2}", pct(&answer, 99.0)),
    );
    row.insert(
        "endpoints_to_check_answered_max_ms",
        format!("{:.2}", answer.last().copied().unwrap_or(f64::NAN)),
    );
    report("kube-coldstart-adapter", &args.results, &row);
}

/// Nearest-rank percentile of sorted values.
/// The private Endpoints of a cold-start revision on `pod`'s port: with `pod` ready, or with no
/// address yet (the port stays, as Knative's Service keeps it).
fn pod_endpoints(ns: &str, rev: &str, pod: SocketAddr, ready: bool) -> serde_json::Value {
    let ip = pod.ip().to_string();
    let ready: &[&str] = if ready { &[&ip] } else { &[] };
    private_endpoints(ns, rev, ready, &[], "http", pod.port())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A GET routed by the `Knative-Serving-*` headers; the status, or `None`.
async fn get(addr: SocketAddr, ns: &str, rev: &str, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {rev}.{ns}.svc.cluster.local\r\nKnative-Serving-Revision: {rev}\r\nKnative-Serving-Namespace: {ns}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf).get(9..12)?.parse().ok()
}

/// Prints `row` as a two-column table and appends it to `<results>/<name>.csv` (with a header
/// when the file is new), stamped with the time and commit.
fn report(name: &str, results: &Path, row: &BTreeMap<&str, String>) {
    let commit = std::process::Command::new("git")
        .args(["log", "-1", "--format=%h"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!("\n{name} (commit {commit})\n\n| metric | value |\n|---|---|");
    for (k, v) in row {
        println!("| {k} | {v} |");
    }
    std::fs::create_dir_all(results).unwrap();
    let path = results.join(format!("{name}.csv"));
    let header: Vec<&str> = ["unix_time", "commit"]
        .into_iter()
        .chain(row.keys().copied())
        .collect();
    let values: Vec<String> = [now.to_string(), commit]
        .into_iter()
        .chain(row.values().cloned())
        .collect();
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    // A file of another layout (an older version of this bench) starts over.
    if text.lines().next() != Some(header.join(",").as_str()) {
        text = format!("{}\n", header.join(","));
    }
    text.push_str(&format!("{}\n", values.join(",")));
    std::fs::write(&path, text).unwrap();
}
