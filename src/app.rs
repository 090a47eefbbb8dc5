//! Wiring: builds the shared pieces, binds every listener of the chosen mode, runs, drains.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    activator::Activator,
    adapter::Adapter,
    admin::{Admin, Readiness},
    autoscaler::LocalAutoscaler,
    autoscaler_client::{AutoscalerClient, ClientConfig, ConcurrencyReporter},
    backends::Backends,
    cli::Mode,
    config::{Config, DiscoveryKind, reload},
    context::Context,
    discovery::{self, Discovered},
    drain::Drain,
    metrics,
    revisions::Revisions,
};

/// How long the admin server's open connections get to finish once everything else has
/// stopped.
const ADMIN_CLOSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The addresses actually bound (ports may have been 0 in the config).
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    pub admin: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub h2c: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub autoscaler: Option<SocketAddr>,
}

impl std::fmt::Display for Addrs {
    /// `admin 127.0.0.1:9090, http 127.0.0.1:8012, …`: the bound listeners only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = [
            ("admin", self.admin),
            ("http", self.http),
            ("h2c", self.h2c),
            ("grpc", self.grpc),
            ("autoscaler", self.autoscaler),
        ];
        let mut sep = "";
        for (name, addr) in all {
            if let Some(addr) = addr {
                write!(f, "{sep}{name} {addr}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

/// What start-up would reject before serving, for `--check-config` and the binary's start:
/// the config's rules for this mode, and in adapter mode the TLS files, read and parsed by
/// the adapter's own loader.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Tls(#[from] crate::adapter::TlsError),
}

/// Checks `config` for a process of `mode` without binding anything.
pub fn check(mode: Mode, config: &Config) -> Result<(), CheckError> {
    config.check(mode)?;
    if mode == Mode::Adapter {
        crate::adapter::load_tls(config.adapter.tls.as_ref())?;
    }
    Ok(())
}

/// A process with every listener bound, not yet serving.
#[derive(Debug)]
pub struct App {
    ctx: Context,
    addrs: Addrs,
    admin: Admin,
    mode: Running,
    local: Option<LocalAutoscaler>,
    /// The revisions served (activator and adapter modes): the grace period reaches the
    /// longest revision timeout.
    revisions: Option<watch::Receiver<Revisions>>,
    /// Cancelled after everything has drained; stops background loops (config watch, local pods).
    exit: CancellationToken,
    /// Stops the stats client and reporter once the data path has drained, before the embedded
    /// autoscaler goes away (else the client would log the autoscaler's exit as an outage).
    stats_exit: CancellationToken,
}

#[derive(Debug)]
enum Running {
    Activator(Activator),
    Adapter(Adapter),
    Autoscaler,
}

impl App {
    /// Builds the shared pieces and binds every listener the mode needs.
    pub async fn bind(mode: Mode, config: Config, path: Option<PathBuf>) -> anyhow::Result<Self> {
        config.check(mode)?;
        let handle = metrics::install();
        let drain = Drain::new();
        let readiness = Readiness::new(drain.clone());
        let exit = CancellationToken::new();
        let stats_exit = exit.child_token();
        metrics::spawn_upkeep(handle.clone(), exit.clone());
        let pod_name: Arc<str> = config.resolved_pod_name().into();
        let listen = config.listen.clone();
        let config_rx = reload::spawn(path, config.clone(), mode, exit.clone());
        let ctx = Context {
            config: config_rx,
            drain: drain.clone(),
            readiness: readiness.clone(),
            pod_name,
        };

        let admin_addr = listen.admin(mode);
        let mode_name = match mode {
            Mode::Activator => "activator",
            Mode::Adapter => "adapter",
            Mode::Autoscaler => "autoscaler",
        };
        let mut admin = Admin::bind(admin_addr, handle, readiness, mode_name)
            .await
            .with_context(|| format!("cannot bind listen.admin {admin_addr}"))?;
        let mut addrs = Addrs {
            admin: Some(admin.local_addr()?),
            ..Addrs::default()
        };

        // The local autoscaler serves autoscaler mode, and is embedded by the other modes
        // when no external autoscaler URL is configured.
        let local = if mode == Mode::Autoscaler || config.autoscaler.url.is_none() {
            let local = LocalAutoscaler::bind(&ctx)
                .await
                .with_context(|| format!("cannot bind listen.autoscaler {}", listen.autoscaler))?;
            addrs.autoscaler = Some(local.local_addr());
            admin.status().add(local.status_source());
            Some(local)
        } else {
            None
        };

        let mut revisions = None;
        let running = match mode {
            Mode::Autoscaler => Running::Autoscaler,
            Mode::Activator | Mode::Adapter => {
                let url = match (&config.autoscaler.url, &local) {
                    (Some(url), _) => url.clone(),
                    (None, Some(local)) => format!("ws://{}", local.local_addr()),
                    (None, None) => unreachable!("a local autoscaler is bound when no URL is set"),
                };
                let client = AutoscalerClient::spawn(
                    ClientConfig {
                        url,
                        encoding: config.autoscaler.encoding,
                        pod_name: ctx.pod_name.clone(),
                        send_queue: config.autoscaler.send_queue,
                    },
                    stats_exit.clone(),
                );
                admin.status().add(Arc::new(client.clone()));
                let discovered =
                    discover(&ctx, &config, mode, local.as_ref(), exit.clone()).await?;
                revisions = Some(discovered.revisions.clone());
                let backends = Backends::spawn(
                    ctx.config.clone(),
                    discovered.revisions.clone(),
                    discovered.endpoints,
                    exit.clone(),
                );
                if mode == Mode::Activator {
                    let reporter = ConcurrencyReporter::spawn(client, stats_exit.clone());
                    let activator =
                        Activator::bind(&ctx, reporter, discovered.revisions, backends).await?;
                    admin.status().add(activator.status_source());
                    let (http, h2c) = activator.local_addrs();
                    addrs.http = Some(http);
                    addrs.h2c = Some(h2c);
                    Running::Activator(activator)
                } else {
                    let adapter =
                        Adapter::bind(&ctx, client, backends.healthy(), discovered.routes).await?;
                    admin.status().add(adapter.status_source());
                    addrs.grpc = Some(adapter.local_addr());
                    Running::Adapter(adapter)
                }
            }
        };
        Ok(Self {
            ctx,
            addrs,
            admin,
            mode: running,
            local,
            revisions,
            exit,
            stats_exit,
        })
    }

    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// The drain state, so that an embedding program (or a test) can trigger shutdown.
    pub fn drain(&self) -> &Drain {
        &self.ctx.drain
    }

    /// Serves until `shutdown` resolves, then drains: readiness fails at once, listeners keep
    /// accepting for `shutdown.drain_delay`, then stop; in-flight work gets `grace_period`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            ctx,
            addrs,
            admin,
            mode,
            local,
            revisions,
            exit,
            stats_exit,
        } = self;
        info!(listening = %addrs, "kactivator started");
        let drain = ctx.drain.clone();
        // Stopped last (at `exit`): probes and scrapes see the whole drain.
        let mut admin_task = tokio::spawn(admin.run(exit.clone()));
        // Local pods must outlive the data path: queued requests still need them while draining.
        let pods_stop = CancellationToken::new();
        let local_task: Option<JoinHandle<()>> =
            local.map(|l| tokio::spawn(l.run(pods_stop.clone())));
        let mut mode_task: JoinHandle<anyhow::Result<()>> = match mode {
            Running::Activator(a) => tokio::spawn(async move { a.run().await.map_err(Into::into) }),
            Running::Adapter(a) => tokio::spawn(async move { a.run().await.map_err(Into::into) }),
            Running::Autoscaler => {
                let drain = drain.clone();
                tokio::spawn(async move {
                    drain.closing().await;
                    Ok(())
                })
            }
        };
        ctx.readiness.set_started();

        let mut early = None;
        tokio::select! {
            () = shutdown => info!("Shutdown requested; draining"),
            res = &mut mode_task => {
                early = Some(res);
            }
        }
        let cfg = ctx.current();
        drain.start_draining();
        if early.is_none() && !cfg.shutdown.drain_delay.is_zero() {
            info!(delay = ?cfg.shutdown.drain_delay, "Readiness failing; still accepting during the drain delay");
            tokio::time::sleep(cfg.shutdown.drain_delay).await;
        }
        drain.start_closing();
        let grace = grace_period(&cfg, revisions.as_ref());
        let result = match early {
            Some(res) => flatten(res),
            None => match tokio::time::timeout(grace, &mut mode_task).await {
                Ok(res) => flatten(res),
                Err(_) => {
                    warn!(?grace, "Grace period over; abandoning in-flight requests");
                    mode_task.abort();
                    Ok(())
                }
            },
        };
        stats_exit.cancel();
        pods_stop.cancel();
        if let Some(task) = local_task {
            // The local autoscaler bounds its own SIGTERM → SIGKILL sequence.
            let _ = task.await;
        }
        exit.cancel();
        // Its open connections finish their requests, but a slow one must not hold the exit.
        match tokio::time::timeout(ADMIN_CLOSE, &mut admin_task).await {
            Ok(Ok(Err(error))) => warn!(%error, "Admin server failed"),
            Ok(Err(error)) => warn!(%error, "Admin server panicked"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => admin_task.abort(),
        }
        info!("kactivator stopped");
        result
    }
}

fn flatten(res: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match res {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("server task failed: {e}")),
    }
}

/// `shutdown.grace_period`; with `discovery: kubernetes`, stretched to the longest revision
/// timeout: revisions (and their timeouts) come from the API, not from the operator, and a
/// request admitted just before closing may run that long (Knative's activator Deployment
/// allows 600 s for it; its `terminationGracePeriodSeconds` stays the hard bound).
fn grace_period(cfg: &Config, revisions: Option<&watch::Receiver<Revisions>>) -> Duration {
    let longest = revisions
        .filter(|_| cfg.discovery == DiscoveryKind::Kubernetes)
        .and_then(|r| crate::revisions::longest_timeout(&r.borrow()));
    match longest {
        Some(longest) if longest > cfg.shutdown.grace_period => {
            info!(
                configured = ?cfg.shutdown.grace_period,
                ?longest,
                "Grace period stretched to the longest revision timeout"
            );
            longest
        }
        _ => cfg.shutdown.grace_period,
    }
}

/// The revisions and endpoints of the configured discovery source.
async fn discover(
    ctx: &Context,
    config: &Config,
    mode: Mode,
    local: Option<&LocalAutoscaler>,
    exit: CancellationToken,
) -> anyhow::Result<Discovered> {
    let from_config = || crate::revisions::spawn_config(ctx.config.clone(), exit.clone());
    Ok(match (config.discovery, local) {
        (DiscoveryKind::Local, Some(local)) => Discovered {
            revisions: from_config(),
            endpoints: local.endpoints(),
            routes: discovery::kingress::none(),
        },
        (DiscoveryKind::Local, None) => Discovered {
            revisions: from_config(),
            endpoints: discovery::feed::remote_endpoints(
                config.autoscaler.url.clone().unwrap_or_default(),
                exit,
            ),
            routes: discovery::kingress::none(),
        },
        (DiscoveryKind::Static, _) => Discovered {
            revisions: from_config(),
            endpoints: discovery::spawn_static(ctx.config.clone(), exit),
            routes: discovery::kingress::none(),
        },
        (DiscoveryKind::Kubernetes, _) => {
            // kube's error repeats its sources in its message: print it once, not as a chain.
            let client = kube::Client::try_default().await.map_err(|error| {
                anyhow::anyhow!(
                    "discovery: kubernetes needs a service account or a kubeconfig: {error}"
                )
            })?;
            let pod_ip = pod_ip()?;
            discovery::kubernetes::spawn(
                ctx.config.clone(),
                client,
                pod_ip,
                // Only the adapter reads KIngress (and only its ClusterRole may list them).
                mode == Mode::Adapter,
                ctx.readiness.sync_gate(),
                exit,
            )
        }
    })
}

/// `$POD_IP` (Knative's Deployment sets it from `status.podIP`): this activator's address
/// among the activators of a revision. Unset: no subsetting (every pod is used).
fn pod_ip() -> anyhow::Result<Option<IpAddr>> {
    match std::env::var("POD_IP") {
        Ok(ip) if !ip.trim().is_empty() => ip
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("POD_IP: `{ip}` is not an IP address")),
        _ => {
            warn!("POD_IP is not set: this activator uses every pod of a revision (no subsetting)");
            Ok(None)
        }
    }
}
