use std::time::Duration;

use tokio::net::TcpListener;

use super::*;
use crate::config::Config;

fn config(style: &str, endpoints: &[SocketAddr]) -> SharedConfig {
    let eps: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    let text = format!(
        "activator:\n  probe_style: {style}\n  probe_period: 20ms\nrevisions:\n  - name: hello\n    endpoints: [{}]\n",
        eps.join(", ")
    );
    Arc::new(Config::parse(&text).unwrap())
}

fn key() -> RevisionKey {
    RevisionKey::new("default", "hello")
}

async fn wait_count(rx: &mut watch::Receiver<Endpoints>, n: usize) -> Endpoints {
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|m| crate::endpoints::count(m, &key()) == n),
    )
    .await
    .expect("healthy table reached the count")
    .expect("sender alive")
    .clone()
}

/// An HTTP server answering every request with `status` and `body`, on a fresh port.
async fn http_server(status: u16, body: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_probe_admits_a_listening_endpoint_and_eject_removes_it_until_a_probe_passes() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_cfg_tx, cfg_rx) = watch::channel(config("tcp", &[addr]));
    let discovered = crate::discovery::static_endpoints(&cfg_rx.borrow());
    let (_disc_tx, disc_rx) = watch::channel(discovered);
    let exit = CancellationToken::new();
    let b = Backends::spawn(
        cfg_rx.clone(),
        crate::revisions::spawn_config(cfg_rx, exit.clone()),
        disc_rx,
        exit.clone(),
    );
    let mut rx = b.healthy();
    let map = wait_count(&mut rx, 1).await;
    assert_eq!(&*map[&key()], &[addr]);

    // Ejection removes a dead endpoint at once (its probes fail from then on)...
    drop(l);
    b.eject(&key(), addr);
    wait_count(&mut rx, 0).await;
    // ...and a passing probe brings it back.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let _l = socket.listen(16).unwrap();
    wait_count(&mut rx, 1).await;
    exit.cancel();
}

#[tokio::test]
async fn knative_probe_needs_200_and_body_queue() {
    let good = http_server(200, "queue").await;
    let wrong_body = http_server(200, "ok").await;
    let (_cfg_tx, cfg_rx) = watch::channel(config("knative", &[good, wrong_body]));
    let discovered = crate::discovery::static_endpoints(&cfg_rx.borrow());
    let (_disc_tx, disc_rx) = watch::channel(discovered);
    let exit = CancellationToken::new();
    let mut rx = Backends::spawn(
        cfg_rx.clone(),
        crate::revisions::spawn_config(cfg_rx, exit.clone()),
        disc_rx,
        exit.clone(),
    )
    .healthy();
    let map = wait_count(&mut rx, 1).await;
    assert_eq!(&*map[&key()], &[good]);
    exit.cancel();
}

#[tokio::test]
async fn http_probe_takes_any_2xx_and_vanished_endpoints_leave() {
    let ok = http_server(204, "").await;
    let bad = http_server(503, "no").await;
    let (_cfg_tx, cfg_rx) = watch::channel(config("http", &[ok, bad]));
    let discovered = crate::discovery::static_endpoints(&cfg_rx.borrow());
    let (disc_tx, disc_rx) = watch::channel(discovered);
    let exit = CancellationToken::new();
    let mut rx = Backends::spawn(
        cfg_rx.clone(),
        crate::revisions::spawn_config(cfg_rx, exit.clone()),
        disc_rx,
        exit.clone(),
    )
    .healthy();
    let map = wait_count(&mut rx, 1).await;
    assert_eq!(&*map[&key()], &[ok]);
    disc_tx.send_replace(Endpoints::default());
    wait_count(&mut rx, 0).await;
    exit.cancel();
}

/// Serves `http2` (h2c prior knowledge) or HTTP/1.1 only on `l`, answering 200; stops when
/// the returned task is aborted.
fn serve_only(l: TcpListener, http2: bool) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (s, _) = l.accept().await.unwrap();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        bytes::Bytes,
                    >::new(
                    )))
                });
                let io = TokioIo::new(s);
                if http2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    })
}

#[tokio::test]
async fn auto_revisions_publish_what_each_pod_speaks_and_relearn_it() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = serve_only(l, false);
    let (_cfg_tx, cfg_rx) = watch::channel(config("http", &[addr]));
    let discovered = crate::discovery::static_endpoints(&cfg_rx.borrow());
    let (_disc_tx, disc_rx) = watch::channel(discovered);
    let exit = CancellationToken::new();
    let b = Backends::spawn(
        cfg_rx.clone(),
        crate::revisions::spawn_config(cfg_rx, exit.clone()),
        disc_rx,
        exit.clone(),
    );
    let mut pods = b.pods();
    let speaks_now = |want: Speaks| {
        move |m: &Pods| {
            m.get(&key())
                .is_some_and(|p| p.len() == 1 && p[0].addr == addr && p[0].speaks == want)
        }
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        pods.wait_for(speaks_now(Speaks::HTTP1)),
    )
    .await
    .expect("learned HTTP/1.1")
    .expect("sender alive");
    assert_eq!(&*b.healthy().borrow()[&key()], &[addr]);

    // The pod restarts speaking h2c only: the next probes learn it.
    server.abort();
    let _ = server.await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let _server = serve_only(socket.listen(16).unwrap(), true);
    tokio::time::timeout(
        Duration::from_secs(5),
        pods.wait_for(speaks_now(Speaks::H2C)),
    )
    .await
    .expect("learned h2c")
    .expect("sender alive");
    exit.cancel();
}

/// A cluster has tens of thousands of pods, each with a prober task: an idle prober must stay
/// small (the probe itself is boxed for as long as it runs).
#[test]
fn an_idle_prober_task_is_small() {
    let (_cfg_tx, config) = watch::channel(config("http", &[]));
    let (_rev_tx, revisions) = watch::channel(crate::revisions::Revisions::default());
    let (results, _rx) = mpsc::channel(1);
    let prober = probe_loop(
        key(),
        SocketAddr::from(([127, 0, 0, 1], 1)),
        Inputs {
            config,
            revisions,
            pacing: Arc::new(Pacing::new()),
        },
        results,
        Arc::new(AtomicU64::new(0)),
        Arc::new(Notify::new()),
        CancellationToken::new(),
    );
    let size = std::mem::size_of_val(&prober);
    assert!(size < 1024, "prober future is {size} bytes");
}

#[test]
fn probe_pace_is_knatives_for_a_few_pods_and_bounded_for_thousands() {
    let pacing = Pacing::new();
    let period = Duration::from_millis(200);
    let within = |d: Duration, lo: u64, hi: u64| {
        assert!(
            d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
            "{d:?} not in {lo}..{hi} ms"
        );
    };
    pacing.probers.store(10, Ordering::Relaxed);
    pacing.failing.store(3, Ordering::Relaxed);
    within(pacing.interval(false, period), 160, 240);
    within(pacing.interval(true, period), 800, 1200);
    pacing.probers.store(20_000, Ordering::Relaxed);
    pacing.failing.store(20_000, Ordering::Relaxed);
    // 2,000 failing probes/s and 500 healthy re-probes/s in total.
    within(pacing.interval(false, period), 8_000, 12_000);
    within(pacing.interval(true, period), 32_000, 48_000);
}
