//! Command line: every flag has a `KACTIVATOR_<FLAG>` environment twin.

use std::path::PathBuf;

use clap::{Parser, ValueEnum, builder::BoolishValueParser};

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
    // The environment twin takes what shells and manifests write: 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "KACTIVATOR_CHECK_CONFIG", value_parser = BoolishValueParser::new())]
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

impl std::fmt::Display for Mode {
    /// The name `--mode` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => std::fmt::Debug::fmt(self, f),
        }
    }
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
    fn boolean_environment_twins_take_1_and_0() {
        let parse = |value: &'static str| {
            let cmd = <Cli as clap::CommandFactory>::command();
            // `mut_arg` sets what the environment would, without touching the process's.
            let cmd = cmd.mut_arg("check_config", |a| a.default_value(value));
            let matches = cmd.try_get_matches_from(["kactivator"]).expect("valid");
            <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
                .expect("valid")
                .check_config
        };
        for (value, want) in [("1", true), ("0", false), ("true", true), ("no", false)] {
            assert_eq!(parse(value), want, "{value}");
        }
    }

    #[test]
    fn rejects_unknown_mode() {
        assert!(Cli::try_parse_from(["kactivator", "--mode", "proxy"]).is_err());
    }
}
