//! The `kactivator` binary: parse the CLI, load the config, run the chosen mode.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kactivator::{app::App, cli::Cli, config, drain, telemetry};

/// `EX_USAGE`: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    if std::env::var_os(kactivator::demo::ENV).is_some() {
        return kactivator::demo::main();
    }
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let (config, path) = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("kactivator: invalid config: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        let file = path
            .as_ref()
            .map_or_else(|| "built-in defaults".into(), |p| p.display().to_string());
        println!("kactivator: config ok ({file})");
        return ExitCode::SUCCESS;
    }
    // One crypto provider for every TLS user (adapter server, future clients): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        let app = App::bind(cli.mode, config, path).await?;
        app.run(async {
            let signal = drain::signal().await;
            tracing::info!(?signal, "Signal received");
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kactivator: {error:#}");
            ExitCode::FAILURE
        }
    }
}
