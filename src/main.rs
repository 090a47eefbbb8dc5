//! The `kactivator` binary: parse the CLI, load the config, run the chosen mode.
#![forbid(unsafe_code)]

use std::{fmt::Write as _, path::Path, process::ExitCode};

use clap::Parser;
use kactivator::{
    app::{self, App},
    autoscaler::{exec_pod, supervisor},
    cli::{Cli, LogFormat, Mode},
    config::{self, Config, PodEnv, Source},
    drain, telemetry,
};

/// `EX_USAGE`: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

/// How long the runtime's last tasks get to stop once `main` is done with it.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    // First: a pod's environment may well carry the demo app's variable.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == exec_pod::ARG) {
        return exec_pod::main(args);
    }
    if std::env::var_os(kactivator::demo::ENV).is_some() {
        return kactivator::demo::main();
    }
    let cli = Cli::parse();
    let env = PodEnv::read();
    // One crypto provider for every TLS user (adapter server, future clients): ring. Before
    // the check, which builds the adapter's TLS acceptor.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let loaded = config::load(cli.config.as_deref(), &env)
        .map_err(app::CheckError::from)
        .and_then(|(config, source)| app::check(cli.mode, &config).map(|()| (config, source)));
    let (mut config, source) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("kactivator: invalid config: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        print!("{}", report(cli.mode, &source, &config));
        return ExitCode::SUCCESS;
    }
    let in_pod = source.in_pod().cloned();
    let format = cli.log_format.unwrap_or(if in_pod.is_some() {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let log_level = telemetry::init(format);
    match std::env::current_exe() {
        Ok(me) => supervisor::use_exec_wrapper(me),
        Err(error) => {
            tracing::warn!(%error, "Cannot find this binary; local pods will outlive a crash")
        }
    }
    tracing::info!(mode = %cli.mode, config = %source, "Configuration loaded");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("kactivator: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if let Some(pod) = in_pod {
            // Before the listeners: their tracer is built once (at most a 3 s wait). The
            // autoscaler mode creates no spans.
            if cli.mode != kactivator::cli::Mode::Autoscaler {
                telemetry::config_observability::apply_in_pod(
                    &pod.system_namespace,
                    &mut config.tracing,
                )
                .await;
            }
            // In the background: start-up does not wait for the API server.
            telemetry::config_logging::spawn(log_level, pod.system_namespace, pod.config_logging);
        }
        let path = source.path().map(Path::to_path_buf);
        let app = App::bind(cli.mode, config, path).await?;
        app.run(async {
            let signal = drain::signal().await;
            tracing::info!(?signal, "Signal received");
        })
        .await
    });
    // Stops whatever start-up had spawned before it failed (the stats client, the config
    // watch), so that the error below is the last line, not followed by their complaints.
    runtime.shutdown_timeout(RUNTIME_STOP);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kactivator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`'s answer: where the config came from, and the settings an operator of a
/// zero-config pod most needs to see.
fn report(mode: Mode, source: &Source, cfg: &Config) -> String {
    let mut out = format!("kactivator: config ok: {source}\n");
    let l = &cfg.listen;
    let _ = writeln!(
        out,
        "  listen: http {}, h2c {}, admin {}, grpc {}, autoscaler {}",
        l.http,
        l.h2c,
        l.admin(mode),
        l.grpc,
        l.autoscaler
    );
    let binds: Vec<String> = cfg
        .listeners(mode)
        .iter()
        .map(|(key, addr)| format!("{key} {addr}"))
        .collect();
    let _ = writeln!(out, "  mode {mode} binds: {}", binds.join(", "));
    let discovery = format!("{:?}", cfg.discovery).to_lowercase();
    let _ = writeln!(out, "  discovery: {discovery}");
    let autoscaler = cfg.autoscaler.url.as_deref().unwrap_or("embedded");
    let _ = writeln!(out, "  autoscaler: {autoscaler}");
    let _ = writeln!(
        out,
        "  shutdown: drain_delay {}, grace_period {}",
        humantime::format_duration(cfg.shutdown.drain_delay),
        humantime::format_duration(cfg.shutdown.grace_period)
    );
    if let Some(pod) = source.in_pod() {
        let _ = writeln!(
            out,
            "  log level: ConfigMap {}/{} ({} or {}) unless RUST_LOG is set",
            pod.system_namespace,
            pod.config_logging,
            telemetry::config_logging::LEVEL_KEY,
            telemetry::config_logging::ZAP_KEY
        );
    }
    out
}
