//! Command line: every flag has a `KACTIVATOR_<FLAG>` environment twin.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// kactivator: Knative-style scale-from-zero for a service mesh.
#[derive(Debug, Clone, Parser)]
#[command(name = "kactivator", version, about, long_about = None)]
pub struct Cli {
    /// What this process does.
    #[arg(long, env = "KACTIVATOR_MODE", value_enum, default_value_t = Mode::Activator)]
    pub mode: Mode,

    /// Config file (YAML). Default: ./kactivator.yaml when present, else built-in defaults.
    #[arg(long, env = "KACTIVATOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the config and exit: 0 when valid, 64 when not.
    #[arg(long, env = "KACTIVATOR_CHECK_CONFIG")]
    pub check_config: bool,

    /// Log format. Default: json with the in-pod defaults (no config file, in a pod), else text.
    #[arg(long, env = "KACTIVATOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Knative-compatible buffering activator.
    Activator,
    /// Mixer out-of-process adapter and Envoy ext_authz server.
    Adapter,
    /// Single-machine autoscaler (Knative stats protocol, local processes).
    Autoscaler,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mode_and_flags() {
        let cli = Cli::try_parse_from([
            "kactivator",
            "--mode",
            "adapter",
            "--check-config",
            "--log-format",
            "json",
        ])
        .expect("valid");
        assert_eq!(cli.mode, Mode::Adapter);
        assert!(cli.check_config);
        assert_eq!(cli.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn no_arguments_is_the_activator_with_defaults_chosen_later() {
        // Knative's activator Deployment passes no arguments.
        let cli = Cli::try_parse_from(["kactivator"]).expect("valid");
        assert_eq!(cli.mode, Mode::Activator);
        assert_eq!(cli.config, None);
        assert_eq!(cli.log_format, None);
    }

    #[test]
    fn rejects_unknown_mode() {
        assert!(Cli::try_parse_from(["kactivator", "--mode", "proxy"]).is_err());
    }
}
