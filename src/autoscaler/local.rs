//! The local autoscaler: stats server → per-revision scaler → process supervisor → endpoints.
//!
//! Every configured revision with a `command` gets a runner task that owns its scaler and its
//! pods and is the only writer of that revision's entry in the endpoint table. Stats reach the
//! runners through one bounded queue and a router; config reloads add, update and remove
//! runners. On stop, websockets are closed with 1012 and every pod is stopped (bounded).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info};

use super::{
    scaler::{ScaleBounds, Scaler},
    server::{self, ServerState},
    status::{PodView, RunnerView, ScaleSource, ScaleTable},
    supervisor::{PodEvent, run_pod},
};
use crate::{
    autoscaler_client::wire::Received,
    config::{RevisionConfig, SharedConfig},
    context::Context,
    endpoints::Endpoints,
    metrics as m,
    revision::RevisionKey,
};

/// Stats waiting for the router (Knative's `statsCh` buffer).
const STATS_QUEUE: usize = 1000;
/// Stats waiting per revision runner.
const RUNNER_QUEUE: usize = 256;
/// Scaling decisions are re-evaluated this often (Knative: 2 s).
const TICK: Duration = Duration::from_secs(1);

/// The local autoscaler: stats server, per-revision scaler, process supervisor.
#[derive(Debug)]
pub struct LocalAutoscaler {
    addr: SocketAddr,
    listener: TcpListener,
    config: watch::Receiver<SharedConfig>,
    table: Arc<watch::Sender<Endpoints>>,
    /// Each runner's scaler and pods, for the status page.
    scale: Arc<watch::Sender<ScaleTable>>,
}

// === impl LocalAutoscaler ===

impl LocalAutoscaler {
    /// Binds `listen.autoscaler`.
    pub async fn bind(ctx: &Context) -> std::io::Result<Self> {
        let addr = ctx.current().listen.autoscaler;
        let listener = TcpListener::bind(addr).await?;
        let (tx, _) = watch::channel(Endpoints::default());
        Ok(Self {
            addr: listener.local_addr()?,
            listener,
            config: ctx.config.clone(),
            table: Arc::new(tx),
            scale: Arc::new(watch::channel(ScaleTable::default()).0),
        })
    }

    /// The local autoscaler's part of `/status.json`.
    pub fn status_source(&self) -> Arc<dyn crate::status::Source> {
        Arc::new(ScaleSource(self.scale.subscribe()))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ready pods per revision (discovery `local`). Wakes within a poll period (~15 ms) of
    /// a pod accepting connections.
    pub fn endpoints(&self) -> watch::Receiver<Endpoints> {
        self.table.subscribe()
    }

    /// Serves until `stop`, then stops every pod (SIGTERM, then SIGKILL after a grace period).
    pub async fn run(self, stop: CancellationToken) {
        let Self {
            addr,
            listener,
            config,
            table,
            scale,
        } = self;
        info!(%addr, "Local autoscaler listening");
        let (stats_tx, stats_rx) = mpsc::channel(STATS_QUEUE);
        let closing = CancellationToken::new();
        let server = tokio::spawn(server::serve(
            listener,
            ServerState {
                stats: stats_tx,
                endpoints: table.subscribe(),
                closing: closing.clone(),
                tasks: TaskTracker::new(),
            },
        ));
        route(
            config,
            stats_rx,
            Tables {
                endpoints: table,
                scale,
            },
            stop,
        )
        .await;
        closing.cancel();
        let _ = server.await;
        info!("Local autoscaler stopped");
    }
}

/// One revision's runner, as the router sees it.
struct Runner {
    stats: mpsc::Sender<Received>,
    spec: watch::Sender<Arc<RevisionConfig>>,
    stop: CancellationToken,
}

/// The tables runners publish to, each runner its own entry.
#[derive(Clone)]
struct Tables {
    endpoints: Arc<watch::Sender<Endpoints>>,
    scale: Arc<watch::Sender<ScaleTable>>,
}

/// Routes stats to runners and keeps the runner set in line with the config, until `stop`.
async fn route(
    mut config: watch::Receiver<SharedConfig>,
    mut stats: mpsc::Receiver<Received>,
    table: Tables,
    stop: CancellationToken,
) {
    let mut runners: HashMap<RevisionKey, Runner> = HashMap::new();
    let mut tasks = JoinSet::new();
    let current = config.borrow_and_update().clone();
    sync(&current, &mut runners, &mut tasks, &table);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = config.changed() => {
                if changed.is_err() {
                    // The config owner is gone: the process is exiting.
                    stop.cancelled().await;
                    break;
                }
                let current = config.borrow_and_update().clone();
                sync(&current, &mut runners, &mut tasks, &table);
            }
            stat = stats.recv() => match stat {
                Some(stat) => match runners.get(&stat.key) {
                    Some(r) => {
                        if r.stats.try_send(stat).is_err() {
                            metrics::counter!(m::AUTOSCALER_FRAMES, "direction" => "in", "result" => "dropped").increment(1);
                        }
                    }
                    None => debug!(revision = %stat.key, "Stat for a revision without a command"),
                },
                None => {
                    stop.cancelled().await;
                    break;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    for r in runners.values() {
        r.stop.cancel();
    }
    // Each runner bounds its own pods' SIGTERM → SIGKILL sequence.
    while tasks.join_next().await.is_some() {}
}

fn sync(
    cfg: &SharedConfig,
    runners: &mut HashMap<RevisionKey, Runner>,
    tasks: &mut JoinSet<()>,
    table: &Tables,
) {
    let wanted: BTreeMap<RevisionKey, &RevisionConfig> = cfg
        .revisions
        .iter()
        .filter(|r| !r.command.is_empty())
        .map(|r| (r.key(), r))
        .collect();
    runners.retain(|key, r| {
        let keep = wanted.contains_key(key);
        if !keep {
            info!(revision = %key, "Revision removed; stopping its pods");
            r.stop.cancel();
        }
        keep
    });
    for (key, rc) in wanted {
        if let Some(r) = runners.get(&key) {
            r.spec.send_if_modified(|cur| {
                if **cur == *rc {
                    false
                } else {
                    *cur = Arc::new(rc.clone());
                    true
                }
            });
            continue;
        }
        let (stats_tx, stats_rx) = mpsc::channel(RUNNER_QUEUE);
        let (spec_tx, spec_rx) = watch::channel(Arc::new(rc.clone()));
        let stop = CancellationToken::new();
        tasks.spawn(run_revision(
            key.clone(),
            spec_rx,
            stats_rx,
            table.clone(),
            stop.clone(),
        ));
        runners.insert(
            key,
            Runner {
                stats: stats_tx,
                spec: spec_tx,
                stop,
            },
        );
    }
}

/// A pod slot owned by a runner.
struct Pod {
    id: u64,
    stop: CancellationToken,
    ready: Option<SocketAddr>,
    pid: Option<u32>,
}

/// Scales one revision's pods and publishes its ready endpoints, until `stop`.
async fn run_revision(
    key: RevisionKey,
    mut spec: watch::Receiver<Arc<RevisionConfig>>,
    mut stats: mpsc::Receiver<Received>,
    tables: Tables,
    stop: CancellationToken,
) {
    let table = tables.endpoints.clone();
    let mut view = RunnerView::default();
    let mut scaler = Scaler::new(Instant::now());
    let mut bounds = ScaleBounds::from(&**spec.borrow_and_update());
    let mut pods: Vec<Pod> = Vec::new();
    let mut pod_tasks = JoinSet::new();
    let (events_tx, mut events) = mpsc::channel(64);
    let mut next_id = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut rescale = false;
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => rescale = true,
            Ok(()) = spec.changed() => {
                bounds = ScaleBounds::from(&**spec.borrow_and_update());
                rescale = true;
            }
            Some(stat) = stats.recv() => {
                let now = Instant::now();
                if scaler.record(now, stat.concurrency(), stat.request_count) {
                    info!(revision = %key, pod_name = %stat.pod_name, "Poked at zero; scaling to one");
                    rescale = true;
                }
            }
            Some(event) = events.recv() => {
                apply_event(&mut pods, event);
                publish(&table, &key, &pods);
            }
            Some(_) = pod_tasks.join_next(), if !pod_tasks.is_empty() => {}
        }
        if rescale {
            let before = scaler.desired();
            let desired = scaler.decide(Instant::now(), bounds) as usize;
            if desired != before as usize {
                let average = scaler.average(Instant::now());
                info!(revision = %key, from = before, to = desired, average, "Scaling");
                view.decision = Some((before, scaler.desired(), average, Instant::now()));
            }
            while pods.len() < desired {
                next_id += 1;
                let pod = Pod {
                    id: next_id,
                    stop: CancellationToken::new(),
                    ready: None,
                    pid: None,
                };
                pod_tasks.spawn(run_pod(
                    pod.id,
                    key.clone(),
                    spec.clone(),
                    events_tx.clone(),
                    pod.stop.clone(),
                ));
                pods.push(pod);
            }
            if pods.len() > desired {
                // Newest first: the oldest pods are the warmest.
                for pod in pods.drain(desired..) {
                    pod.stop.cancel();
                }
                publish(&table, &key, &pods);
            }
        }
        view.min_scale = bounds.min_scale;
        view.max_scale = bounds.max_scale;
        view.desired = scaler.desired();
        view.pods = pods
            .iter()
            .map(|p| PodView {
                id: p.id,
                pid: p.pid,
                ready: p.ready,
            })
            .collect();
        super::status::publish(&tables.scale, &key, Some(view.clone()));
    }
    super::status::publish(&tables.scale, &key, None);
    for pod in pods.drain(..) {
        pod.stop.cancel();
    }
    publish(&table, &key, &pods);
    // Pod tasks send NotReady while stopping; keep draining so none blocks on a full queue.
    drop(events_tx);
    loop {
        tokio::select! {
            joined = pod_tasks.join_next() => if joined.is_none() { break },
            Some(_) = events.recv() => {}
        }
    }
}

fn apply_event(pods: &mut [Pod], event: PodEvent) {
    match event {
        PodEvent::Ready { id, addr, pid } => {
            if let Some(p) = pods.iter_mut().find(|p| p.id == id) {
                p.ready = Some(addr);
                p.pid = Some(pid);
            }
        }
        PodEvent::NotReady { id } => {
            if let Some(p) = pods.iter_mut().find(|p| p.id == id) {
                p.ready = None;
                p.pid = None;
            }
        }
    }
}

/// Writes this revision's entry, only when it changed (every publish wakes every reader).
fn publish(table: &watch::Sender<Endpoints>, key: &RevisionKey, pods: &[Pod]) {
    let ready: Vec<SocketAddr> = pods.iter().filter_map(|p| p.ready).collect();
    table.send_if_modified(|cur| {
        let now: &[SocketAddr] = cur.get(key).map_or(&[], |e| e);
        if now == ready.as_slice() {
            return false;
        }
        let mut next = (**cur).clone();
        if ready.is_empty() {
            next.remove(key);
        } else {
            next.insert(key.clone(), Arc::from(ready.clone()));
        }
        *cur = Arc::new(next);
        true
    });
}
