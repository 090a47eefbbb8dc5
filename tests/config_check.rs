//! What the binary says about its config, through the real binary: `--check-config` rejects
//! what start-up would reject (exit 64, the key named), start-up errors say each thing once and
//! name the listener, and start-up log lines are plain text with addresses.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Command, Output, Stdio},
};

use support::binary::Ports;

const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

/// The binary with `yaml` as its config file in `dir`, and none of the environment that would
/// change what it reads.
fn kactivator(dir: &Path, yaml: &str) -> Command {
    let path = dir.join("k.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&path).current_dir(dir);
    for var in [
        "RUST_LOG",
        "KACTIVATOR_MODE",
        "KACTIVATOR_CHECK_CONFIG",
        "KACTIVATOR_LOG_FORMAT",
        "KUBERNETES_SERVICE_HOST",
        "POD_IP",
        "GRPC_ADAPTER_CREDENTIAL",
        "GRPC_ADAPTER_PRIVATE_KEY",
        "GRPC_ADAPTER_CERTIFICATE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `--check-config` in `mode` on `yaml`; returns (exit code, stdout, stderr).
fn check(mode: &str, yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = kactivator(dir.path(), yaml)
        .args(["--check-config", "--mode", mode])
        .output()
        .unwrap();
    texts(&out)
}

fn texts(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts exit 64 and exactly `line` on stderr.
fn rejected(mode: &str, yaml: &str, line: &str) {
    let (code, _, err) = check(mode, yaml);
    assert_eq!(code, Some(64), "{err}");
    assert_eq!(err, format!("kactivator: invalid config: {line}\n"));
}

#[test]
fn two_listeners_on_one_address() {
    rejected(
        "activator",
        "listen:\n  h2c: 127.0.0.1:8012\n",
        "listen.h2c: 127.0.0.1:8012 is also listen.http: each listener needs its own address",
    );
    // `0.0.0.0` covers the loopback address too; the embedded autoscaler binds in adapter mode.
    rejected(
        "adapter",
        "listen:\n  autoscaler: 0.0.0.0:6100\n",
        "listen.autoscaler: 0.0.0.0:6100 is also listen.grpc: each listener needs its own address",
    );
    // A listener the mode does not bind does not clash.
    assert_eq!(
        check("adapter", "listen:\n  h2c: 127.0.0.1:6100\n").0,
        Some(0)
    );
}

#[test]
fn tls_files_that_do_not_exist_or_do_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let tls = |cert: &Path, key: &Path| {
        format!(
            "adapter:\n  tls:\n    cert: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
    };
    rejected(
        "adapter",
        &tls(&missing, &garbage),
        &format!(
            "adapter.tls.cert {}: No such file or directory (os error 2)",
            missing.display()
        ),
    );
    rejected(
        "adapter",
        &tls(&garbage, &garbage),
        &format!(
            "adapter.tls.cert {}: no PEM certificate found",
            garbage.display()
        ),
    );
    // The same files from the 2019 adapter's environment variables.
    let out = kactivator(dir.path(), "{}\n")
        .args(["--check-config", "--mode", "adapter"])
        .env("GRPC_ADAPTER_CREDENTIAL", &missing)
        .env("GRPC_ADAPTER_PRIVATE_KEY", &garbage)
        .output()
        .unwrap();
    let (code, _, err) = texts(&out);
    assert_eq!(code, Some(64), "{err}");
    assert_eq!(
        err,
        format!(
            "kactivator: invalid config: GRPC_ADAPTER_CREDENTIAL {}: No such file or directory \
             (os error 2)\n",
            missing.display()
        )
    );
    // Only the adapter serves TLS: the activator does not read the files.
    assert_eq!(check("activator", &tls(&missing, &missing)).0, Some(0));
}

#[test]
fn unknown_keys() {
    let (code, _, err) = check("activator", "revisions:\n  - name: a\n    endpoint: []\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.starts_with(
            "kactivator: invalid config: revisions[0].endpoint: unknown field `endpoint`, \
             expected one of"
        ),
        "{err}"
    );
}

#[test]
fn a_command_under_static_discovery() {
    rejected(
        "activator",
        "revisions:\n  - name: hello\n    endpoints: [127.0.0.1:9001]\n  - name: app\n    \
         command: [./app]\n",
        "revisions[1].command: only used with `discovery: local`",
    );
    rejected(
        "adapter",
        "discovery: kubernetes\nrevisions:\n  - name: app\n    command: [./app]\n",
        "revisions[0].command: only used with `discovery: local`",
    );
    // The autoscaler mode starts every revision's command.
    let (code, out, err) = check(
        "autoscaler",
        "revisions:\n  - name: app\n    command: [./app]\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(
            "mode autoscaler binds: listen.admin 127.0.0.1:9091, listen.autoscaler 127.0.0.1:8080"
        ),
        "{out}"
    );
}

#[test]
fn an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "\n\n", "# everything commented out\n# revisions: []\n"] {
        let out = kactivator(dir.path(), text)
            .arg("--check-config")
            .output()
            .unwrap();
        let (code, _, err) = texts(&out);
        assert_eq!(code, Some(64), "{err}");
        assert_eq!(
            err,
            format!(
                "kactivator: invalid config: {}: the file holds no settings (empty, or comments \
                 only) and is not applied; write `{{}}` for the built-in defaults\n",
                dir.path().join("k.yaml").display()
            )
        );
        // Not only the check: start-up refuses it the same way.
        let out = kactivator(dir.path(), text).output().unwrap();
        assert_eq!(texts(&out).0, Some(64));
    }
    assert_eq!(check("activator", "{}\n").0, Some(0));
}

#[test]
fn a_host_name_where_an_address_is_needed() {
    rejected(
        "activator",
        "listen:\n  http: localhost:8012\n",
        "listen.http: `localhost:8012` names a host, not an IP address: use an IP address such \
         as 127.0.0.1:8012 (host names are not resolved) at line 2 column 3",
    );
    rejected(
        "activator",
        "listen:\n  admin: 127.0.0.1\n",
        "listen.admin: `127.0.0.1` has no port: write it as `127.0.0.1:PORT` at line 2 column 3",
    );
}

#[test]
fn boolean_environment_twins_take_1_and_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = kactivator(dir.path(), "{}\n")
        .env("KACTIVATOR_CHECK_CONFIG", "1")
        .output()
        .unwrap();
    let (code, stdout, err) = texts(&out);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        stdout.starts_with("kactivator: config ok: file"),
        "{stdout}"
    );
}

/// Holds `addr` so that the binary cannot bind it.
fn occupy() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[test]
fn a_listener_that_cannot_bind_is_named_once() {
    for (mode, key) in [
        ("activator", "http"),
        ("activator", "h2c"),
        ("activator", "admin"),
        ("activator", "autoscaler"),
        ("adapter", "grpc"),
        ("autoscaler", "autoscaler"),
    ] {
        let (_held, taken) = occupy();
        let ports = Ports::free();
        let yaml = ports.yaml().replace(
            &format!("  {key}: {}", field(&ports, key)),
            &format!("  {key}: {taken}"),
        );
        let dir = tempfile::tempdir().unwrap();
        let out = kactivator(dir.path(), &yaml)
            .args(["--mode", mode])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let (code, _, err) = texts(&out);
        assert_eq!(code, Some(1), "{mode} {key}: {err}");
        assert_eq!(
            err.lines().last(),
            Some(
                format!(
                    "kactivator: cannot bind listen.{key} {taken}: Address already in use \
                     (os error 98)"
                )
                .as_str()
            ),
            "{mode} {key}: {err}"
        );
    }
}

fn field(ports: &Ports, key: &str) -> SocketAddr {
    match key {
        "http" => ports.http,
        "h2c" => ports.h2c,
        "admin" => ports.admin,
        "grpc" => ports.grpc,
        _ => ports.autoscaler,
    }
}

#[tokio::test]
async fn start_up_logs_are_plain_text_with_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let log = dir.path().join("stderr.log");
    let mut child = kactivator(dir.path(), &ports.yaml())
        .args(["--mode", "adapter"])
        .env("RUST_LOG", "info,kactivator=loud")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = support::wait::until_some("the adapter's start-up line", async || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.contains("Adapter serving gRPC").then_some(text)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes into a file:\n{text}"
    );
    assert!(
        !text.contains("Some(") && !text.contains("Addrs {"),
        "{text}"
    );
    let started = text
        .lines()
        .find(|l| l.contains("kactivator started"))
        .unwrap();
    assert!(
        started.ends_with(&format!(
            "kactivator started listening=admin {}, grpc {}, autoscaler {}",
            ports.admin, ports.grpc, ports.autoscaler
        )),
        "{started}"
    );
    assert!(
        text.contains(&format!("Adapter serving gRPC addr={}", ports.grpc)),
        "{text}"
    );
    let invalid: Vec<_> = text.lines().filter(|l| l.contains("RUST_LOG")).collect();
    assert_eq!(invalid.len(), 1, "reported once:\n{text}");
    assert!(
        invalid[0].contains("RUST_LOG is not a valid filter and is ignored; the level is info")
            && invalid[0].contains("rust_log=info,kactivator=loud"),
        "{}",
        invalid[0]
    );
}
