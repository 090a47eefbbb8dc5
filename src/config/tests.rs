use std::time::Duration;

use super::*;
use crate::cli::Mode;

fn err(text: &str) -> String {
    Config::parse(text)
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn empty_file_is_all_defaults() {
    let cfg = Config::parse("").expect("valid");
    assert_eq!(cfg, Config::default());
    assert_eq!(cfg.activator.queue_depth, 10_000);
    assert_eq!(cfg.listen.http.port(), 8012);
}

#[test]
fn design_example_parses() {
    let cfg = Config::parse(
        r#"
pod_name: kactivator-local
listen:
  http: 127.0.0.1:8012
  h2c: 127.0.0.1:8013
  admin: 127.0.0.1:9090
  grpc: 127.0.0.1:6100
  autoscaler: 127.0.0.1:8080
autoscaler:
  url: ws://127.0.0.1:8080
  encoding: protobuf
discovery: static
activator:
  queue_depth: 10000
  queue_timeout: 300s
  probe_period: 200ms
  probe_timeout: 300ms
adapter:
  poke_interval: 1s
  check_valid_duration: 1s
  hold_until_ready: 0s
revisions:
  - namespace: default
    name: hello
    hosts: [hello.example.com]
    container_concurrency: 0
    timeout: 300s
    endpoints: [127.0.0.1:9001]
    command: [./my-app]
    min_scale: 0
    max_scale: 3
    target: 10
    scale_to_zero_after: 30s
"#,
    )
    .expect("valid");
    assert_eq!(cfg.activator.probe_period, Duration::from_millis(200));
    assert_eq!(cfg.revisions[0].key().to_string(), "default/hello");
    assert_eq!(cfg.autoscaler.encoding, Encoding::Protobuf);
}

#[test]
fn unknown_key_is_named() {
    let e = err("activator:\n  queue_dept: 3\n");
    assert!(e.contains("activator") && e.contains("queue_dept"), "{e}");
}

#[test]
fn unknown_nested_revision_key_is_named() {
    let e = err("revisions:\n  - name: a\n    tmeout: 3s\n");
    assert!(e.contains("revisions[0]") && e.contains("tmeout"), "{e}");
}

#[test]
fn bad_duration_is_named() {
    let e = err("activator:\n  queue_timeout: soon\n");
    assert!(e.contains("activator.queue_timeout"), "{e}");
}

#[test]
fn invalid_values_name_their_key() {
    assert!(err("revisions:\n  - name: Bad_Name\n").contains("revisions[0].name"));
    assert!(
        err("revisions:\n  - name: a\n    min_scale: 4\n    max_scale: 2\n")
            .contains("revisions[0].min_scale")
    );
    assert!(err("revisions:\n  - name: a\n  - name: a\n").contains("revisions[1].name"));
    assert!(
        err("revisions:\n  - name: a\n    hosts: [x.com]\n  - name: b\n    hosts: [X.com]\n")
            .contains("revisions[1].hosts[0]")
    );
    assert!(err("activator:\n  queue_depth: 0\n").contains("activator.queue_depth"));
    assert!(err("activator:\n  idle_timeout: 0s\n").contains("activator.idle_timeout"));
    assert!(err("activator:\n  max_connections: 0\n").contains("activator.max_connections"));
    assert!(err("autoscaler:\n  url: http://x\n").contains("autoscaler.url"));
    assert!(err("discovery: nowhere\n").contains("discovery"));
}

#[test]
fn probe_style_auto_follows_discovery() {
    let cfg = Config::parse("discovery: static\n").expect("valid");
    assert_eq!(cfg.probe_style(), ProbeStyle::Http);
    let cfg =
        Config::parse("discovery: static\nactivator:\n  probe_style: knative\n").expect("valid");
    assert_eq!(cfg.probe_style(), ProbeStyle::Knative);
}

#[test]
fn connection_limits_parse() {
    let cfg =
        Config::parse("activator:\n  idle_timeout: 300ms\n  max_connections: 64\n").expect("valid");
    assert_eq!(cfg.activator.idle_timeout, Duration::from_millis(300));
    assert_eq!(cfg.activator.max_connections, Some(64));
    let cfg = Config::default();
    assert_eq!(cfg.activator.idle_timeout, Duration::from_secs(30));
    assert_eq!(cfg.activator.max_connections, None);
}

#[test]
fn restart_only_settings_survive_reload() {
    let current = Config::default();
    let mut new = Config::parse(
        "listen:\n  http: 127.0.0.1:1\nactivator:\n  queue_depth: 5\n  idle_timeout: 5s\n  max_connections: 9\n",
    )
    .expect("valid");
    new = reload::tests_support::merge(&current, new);
    assert_eq!(new.listen, current.listen);
    assert_eq!(new.activator.queue_depth, 5);
    assert_eq!(new.activator.idle_timeout, Duration::from_secs(5));
    assert_eq!(new.activator.max_connections, None);
}

#[test]
fn response_start_and_idle_timeouts_are_optional_and_checked() {
    let cfg = Config::parse("revisions:\n  - name: a\n").expect("valid");
    assert_eq!(cfg.revisions[0].response_start_timeout, None);
    assert_eq!(cfg.revisions[0].idle_timeout, None);
    let cfg = Config::parse(
        "revisions:\n  - name: a\n    timeout: 10s\n    response_start_timeout: 10s\n    idle_timeout: 250ms\n",
    )
    .expect("valid");
    assert_eq!(
        cfg.revisions[0].response_start_timeout,
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        cfg.revisions[0].idle_timeout,
        Some(Duration::from_millis(250))
    );
    for (field, text) in [
        ("response_start_timeout", "response_start_timeout: 0s"),
        ("response_start_timeout", "response_start_timeout: 11s"),
        ("response_start_timeout", "response_start_timeout: soon"),
        ("idle_timeout", "idle_timeout: 0s"),
        ("idle_timeout", "idle_timeout: soon"),
    ] {
        let e = err(&format!(
            "revisions:\n  - name: a\n    timeout: 10s\n    {text}\n"
        ));
        assert!(e.contains(&format!("revisions[0].{field}")), "{text}: {e}");
    }
}

fn check(mode: Mode, text: &str) -> Result<(), String> {
    Config::parse(text)
        .expect("parses")
        .check(mode)
        .map_err(|e| e.to_string())
}

#[test]
fn command_belongs_to_the_process_that_starts_pods() {
    let with_command = "revisions:\n  - name: a\n    command: [app]\n";
    assert_eq!(
        check(Mode::Activator, with_command).unwrap_err(),
        "revisions[0].command: only used with `discovery: local`"
    );
    assert!(
        check(
            Mode::Adapter,
            &format!("discovery: kubernetes\n{with_command}")
        )
        .is_err()
    );
    // The autoscaler mode starts every `command`, whatever `discovery` says.
    assert_eq!(check(Mode::Autoscaler, with_command), Ok(()));
    // The embedded autoscaler needs a command; a separate one (autoscaler.url) has its own.
    assert_eq!(
        check(
            Mode::Activator,
            "discovery: local\nrevisions:\n  - name: a\n"
        )
        .unwrap_err(),
        "revisions[0].command: is required with `discovery: local` and the embedded \
         autoscaler (no `autoscaler.url`)"
    );
    let remote = "discovery: local\nautoscaler:\n  url: ws://127.0.0.1:8080\n";
    assert_eq!(
        check(
            Mode::Activator,
            &format!("{remote}revisions:\n  - name: a\n")
        ),
        Ok(())
    );
    assert_eq!(
        check(Mode::Activator, &format!("{remote}{}", &with_command)),
        Ok(())
    );
}

#[test]
fn listeners_of_the_mode_must_not_share_an_address() {
    assert_eq!(
        check(Mode::Activator, "listen:\n  h2c: 127.0.0.1:8012\n").unwrap_err(),
        "listen.h2c: 127.0.0.1:8012 is also listen.http: each listener needs its own address"
    );
    // `0.0.0.0` covers every IPv4 address; `[::]` covers IPv4 too.
    assert!(check(Mode::Activator, "listen:\n  admin: 0.0.0.0:8013\n").is_err());
    assert!(check(Mode::Activator, "listen:\n  http: \"[::]:9090\"\n").is_err());
    assert_eq!(
        check(Mode::Activator, "listen:\n  http: \"[::1]:8013\"\n"),
        Ok(())
    );
    // Port 0 never clashes; a listener the mode does not bind does not count.
    let zero = "listen:\n  http: 127.0.0.1:0\n  h2c: 127.0.0.1:0\n";
    assert_eq!(check(Mode::Activator, zero), Ok(()));
    assert_eq!(
        check(Mode::Adapter, "listen:\n  h2c: 127.0.0.1:6100\n"),
        Ok(())
    );
    assert!(check(Mode::Adapter, "listen:\n  autoscaler: 127.0.0.1:6100\n").is_err());
    let url = "autoscaler:\n  url: ws://10.0.0.1:8080\n";
    assert_eq!(
        check(
            Mode::Adapter,
            &format!("{url}listen:\n  autoscaler: 127.0.0.1:6100\n")
        ),
        Ok(())
    );
}

#[test]
fn the_autoscaler_mode_has_its_own_admin_default() {
    let cfg = Config::parse("{}").expect("valid");
    let activator: Vec<_> = cfg.listeners(Mode::Activator);
    let autoscaler: Vec<_> = cfg.listeners(Mode::Autoscaler);
    assert_eq!(cfg.listen.admin(Mode::Activator), ADMIN);
    assert_eq!(cfg.listen.admin(Mode::Autoscaler), ADMIN_AUTOSCALER);
    // Defaults side by side: an activator with a separate autoscaler, and the autoscaler.
    let remote = Config::parse("autoscaler:\n  url: ws://127.0.0.1:8080\n").expect("valid");
    let mut all: Vec<_> = remote.listeners(Mode::Activator);
    all.extend(autoscaler.iter().copied());
    for (i, (key, addr)) in all.iter().enumerate() {
        for (other, a) in &all[..i] {
            assert!(!clash(*a, *addr), "{key} {addr} clashes with {other}");
        }
    }
    assert_eq!(activator.len(), 4, "the embedded autoscaler binds too");
    let explicit = Config::parse("listen:\n  admin: 127.0.0.1:9090\n").expect("valid");
    assert_eq!(explicit.listen.admin(Mode::Autoscaler), ADMIN);
}

#[test]
fn a_file_without_settings_is_an_error_naming_it() {
    let path = std::path::Path::new("/etc/kactivator/k.yaml");
    for text in [
        "",
        "  \n",
        "# all commented out\n#revisions: []\n",
        "---\n",
        "~\n",
    ] {
        let e = Config::parse_file(path, text).expect_err(text);
        assert!(
            e.to_string()
                .starts_with("/etc/kactivator/k.yaml: the file holds no settings"),
            "{e}"
        );
    }
    assert_eq!(
        Config::parse_file(path, "{}\n").expect("valid"),
        Config::default()
    );
}

#[test]
fn a_document_says_which_keys_it_spells_out() {
    assert!(Document::read("revisions: []\n").has_key("revisions"));
    assert!(!Document::read("discovery: static\n").has_key("revisions"));
    assert!(!Document::read("").has_settings());
    assert!(
        Document::read("discovery: [\n").has_settings(),
        "left to the parser"
    );
}

#[test]
fn parse_errors_name_the_key_once() {
    let e = err("listen:\n  http: localhost:8012\n");
    assert!(
        e.starts_with(
            "listen.http: `localhost:8012` names a host, not an IP address: use an IP address \
             such as 127.0.0.1:8012"
        ),
        "{e}"
    );
}
