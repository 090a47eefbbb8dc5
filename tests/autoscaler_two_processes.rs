//! docs/autoscaler.md's two-process setup, run exactly as written (on free ports): an activator
//! with `autoscaler.url` and no `command`, and a separate `--mode autoscaler` that starts the pod.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeSet, process::Command, time::Duration};

use support::{
    binary::{Ports, start_on, try_exchange},
    wait::until_some,
};

const BIN: &str = env!("CARGO_BIN_EXE_kactivator");

/// The fenced YAML block of docs/autoscaler.md whose first line is `# <name>:`.
fn documented(name: &str) -> String {
    let doc = include_str!("../docs/autoscaler.md");
    doc.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.starts_with(&format!("# {name}:")))
        .unwrap_or_else(|| panic!("docs/autoscaler.md has no `# {name}:` block"))
        .to_string()
}

/// What `--check-config` says `mode` binds with the file as documented (default ports).
fn binds(mode: &str, yaml: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{mode}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["--check-config", "--mode", mode, "--config"])
        .arg(&path)
        .env_remove("KACTIVATOR_CHECK_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("  mode {mode} binds: ")))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    line.split(", ")
        .map(|b| b.rsplit_once(' ').unwrap().1.to_string())
        .collect()
}

#[test]
fn the_documented_processes_do_not_collide_on_default_ports() {
    let autoscaler = binds("autoscaler", &documented("autoscaler.yaml"));
    let activator = binds("activator", &documented("activator.yaml"));
    assert_eq!(
        autoscaler,
        BTreeSet::from(["127.0.0.1:8080".into(), "127.0.0.1:9091".into()])
    );
    assert_eq!(
        activator,
        BTreeSet::from([
            "127.0.0.1:8012".into(),
            "127.0.0.1:8013".into(),
            "127.0.0.1:9090".into()
        ])
    );
}

#[tokio::test]
async fn an_activator_with_a_separate_autoscaler_serves_a_request() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut autoscaler = start_on(
        Ports::free(),
        "autoscaler",
        a_dir.path(),
        &documented("autoscaler.yaml"),
        None,
        &[],
    );
    // The documented URL, pointed at the port this test's autoscaler listens on.
    let activator_yaml = documented("activator.yaml").replace(
        "ws://127.0.0.1:8080",
        &format!("ws://{}", autoscaler.ports.autoscaler),
    );
    assert!(activator_yaml.contains(&autoscaler.ports.autoscaler.to_string()));
    let mut activator = start_on(
        Ports::free(),
        "activator",
        b_dir.path(),
        &activator_yaml,
        None,
        &[],
    );

    let get = "GET / HTTP/1.1\r\nHost: hello.example.com\r\nConnection: close\r\n\r\n";
    let answer = until_some("an answer from the activator", async || {
        assert!(!activator.has_exited(), "the activator exited");
        // A refused connection is the activator still starting; a request once it listens
        // waits for the cold start (the autoscaler starts the pod, the feed brings it).
        try_exchange(activator.ports.http, get, Duration::from_secs(15)).await
    })
    .await;
    assert_eq!(answer, (200, "Hello from hello!\n".into()));

    // SIGTERM, not the drop's SIGKILL: the autoscaler stops its pod before it exits.
    for process in [&mut activator, &mut autoscaler] {
        nix::sys::signal::kill(process.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        assert_eq!(process.exit_code(Duration::from_secs(15)).await, Some(0));
    }
}
