//! Process supervisor: runs one local "pod" of a revision, restarting it until told to stop.
//!
//! A pod is `command` started with `PORT=<free port>`, `K_REVISION`, `K_NAMESPACE` and
//! `revisions[].env`, in its own process group. It is ready once its port accepts a TCP
//! connection; one that is not ready within `startup_timeout`, or that exits, is killed and
//! restarted with backoff. Stopping sends SIGTERM to the group, then SIGKILL after a grace
//! period. `kill_on_drop` covers the case where the supervising task itself is dropped, and
//! the [`exec_pod`] wrapper the case where this whole process dies, SIGKILL included.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, OnceLock},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::{Child, Command},
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::exec_pod;
use crate::{backoff::Backoff, config::RevisionConfig, revision::RevisionKey};

/// SIGTERM → SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Readiness is polled (a TCP connect to the pod's port) this often, from the start to
/// `startup_timeout`. The interval is pure cold-start latency (uniform in [0, interval) after
/// the app binds), while a refused connect on loopback costs a few microseconds: 1 ms, tokio's
/// timer resolution, for the whole start. It was 1 ms doubling to 5 ms, which added ~5 ms to
/// every app that takes more than a few milliseconds to bind.
const READY_POLL: Duration = Duration::from_millis(1);
/// A connect that neither succeeds nor is refused this fast counts as not ready yet.
const READY_CONNECT_TIMEOUT: Duration = Duration::from_millis(150);
/// Restart delay: 200 ms after a pod that had been ready and after the first start that never
/// got ready, doubling per further start in a row that never got ready, capped at 10 s, plus
/// up to 50 % jitter.
pub const RESTART_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), 2.0, Duration::from_secs(10));
/// Longest line forwarded from a pod's output; longer lines are split.
const MAX_LINE: u64 = 8 * 1024;
/// The program name that means "this very binary" (the built-in demo app needs nothing else).
pub const SELF_PROGRAM: &str = "kactivator";

/// The kactivator binary that starts pods through [`exec_pod`], so that they die with us.
static EXEC_WRAPPER: OnceLock<PathBuf> = OnceLock::new();

/// Starts every pod of this process through `binary exec-pod -- CMD…` (see [`exec_pod`]).
/// The binary's `main` calls it with itself; a library user (a test running the autoscaler in
/// its own process) may pass the `kactivator` binary. Without it pods are started directly
/// and survive a SIGKILL of this process. The first call wins.
pub fn use_exec_wrapper(binary: PathBuf) {
    let _ = EXEC_WRAPPER.set(binary);
}

/// What a pod tells its revision's runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    Ready { id: u64, addr: SocketAddr, pid: u32 },
    NotReady { id: u64 },
}

/// Runs pod `id` until `stop`; then stops its process (bounded by [`STOP_GRACE`]).
pub async fn run_pod(
    id: u64,
    key: RevisionKey,
    spec: watch::Receiver<Arc<RevisionConfig>>,
    events: mpsc::Sender<PodEvent>,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        let cfg = spec.borrow().clone();
        let outcome = run_once(id, &key, &cfg, &events, &stop).await;
        let _ = events.send(PodEvent::NotReady { id }).await;
        match outcome {
            Outcome::Stopped => return,
            Outcome::WasReady => failures = 0,
            Outcome::NeverReady => failures = failures.saturating_add(1),
        }
        // The first restart in a row waits the base, whichever way the pod ended.
        let delay = RESTART_BACKOFF.delay(failures.saturating_sub(1));
        warn!(revision = %key, pod = id, ?delay, "Pod exited; restarting");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

enum Outcome {
    Stopped,
    WasReady,
    NeverReady,
}

async fn run_once(
    id: u64,
    key: &RevisionKey,
    cfg: &RevisionConfig,
    events: &mpsc::Sender<PodEvent>,
    stop: &CancellationToken,
) -> Outcome {
    let port = match free_port() {
        Ok(p) => p,
        Err(error) => {
            warn!(revision = %key, %error, "No free port for a pod");
            return Outcome::NeverReady;
        }
    };
    let mut child = match spawn(key, cfg, port) {
        Ok(c) => c,
        Err(error) => {
            warn!(revision = %key, pod = id, %error, command = ?cfg.command, "Cannot start pod");
            return Outcome::NeverReady;
        }
    };
    let pid = child.id().unwrap_or(0);
    info!(revision = %key, pod = id, pid, port, "Pod started");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let started = Instant::now();
    let ready = tokio::select! {
        () = stop.cancelled() => {
            terminate(&mut child, key).await;
            return Outcome::Stopped;
        }
        status = child.wait() => {
            warn!(revision = %key, pod = id, ?status, "Pod exited before it was ready");
            sweep_group(pid);
            return Outcome::NeverReady;
        }
        ready = wait_port(addr, cfg.startup_timeout) => ready,
    };
    if !ready {
        warn!(revision = %key, pod = id, timeout = ?cfg.startup_timeout, "Pod not ready in time; killing it");
        terminate(&mut child, key).await;
        return Outcome::NeverReady;
    }
    info!(revision = %key, pod = id, %addr, startup = ?started.elapsed(), "Pod ready");
    if events
        .send(PodEvent::Ready { id, addr, pid })
        .await
        .is_err()
    {
        terminate(&mut child, key).await;
        return Outcome::Stopped;
    }
    tokio::select! {
        () = stop.cancelled() => {
            terminate(&mut child, key).await;
            Outcome::Stopped
        }
        status = child.wait() => {
            warn!(revision = %key, pod = id, ?status, "Pod exited");
            sweep_group(pid);
            Outcome::WasReady
        }
    }
}

fn spawn(key: &RevisionKey, cfg: &RevisionConfig, port: u16) -> std::io::Result<Child> {
    let (program, args) = cfg
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("command is empty"))?;
    let program = if program == SELF_PROGRAM {
        std::env::current_exe()?
    } else {
        PathBuf::from(program)
    };
    // The wrapper arms the parent-death signal, which Linux sends when the *thread* that
    // forked exits. This fork happens right here, on the thread polling this task: a tokio
    // worker (or the runtime's `block_on` thread), which lives as long as the runtime. Never
    // move it to `spawn_blocking` or `block_in_place`: those threads exit after 10 s idle and
    // would take the pods with them.
    let mut cmd = match EXEC_WRAPPER.get() {
        Some(wrapper) => {
            let mut cmd = Command::new(wrapper);
            cmd.arg(exec_pod::ARG)
                .arg("--")
                .arg(program)
                .env(exec_pod::PARENT_ENV, std::process::id().to_string());
            cmd
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .env("PORT", port.to_string())
        .env("K_REVISION", key.name())
        .env("K_NAMESPACE", key.namespace())
        .envs(&cfg.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: signals reach the pod's own children too, and a Ctrl-C in our
        // terminal does not hit the pod before we stop it in order.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, key.clone(), "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, key.clone(), "stderr"));
    }
    Ok(child)
}

/// Forwards a pod's output to our log, line by line (bounded line length).
async fn forward(stream: impl AsyncRead + Unpin, key: RevisionKey, name: &'static str) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if !text.is_empty() {
                    info!(revision = %key, stream = name, line = %text, "Pod output");
                }
            }
        }
    }
}

/// Polls until `addr` accepts a connection, or `timeout` passes.
async fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    // Ticks on the timer's millisecond boundaries: a `sleep(1 ms)` after each attempt would
    // round up to 2 ms. A slow attempt skips the ticks it missed rather than bursting.
    let mut tick = tokio::time::interval(READY_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let attempt =
            tokio::time::timeout(READY_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr));
        if let Ok(Ok(_)) = attempt.await {
            return true;
        }
        if Instant::now() + READY_POLL >= deadline {
            return false;
        }
    }
}

/// SIGTERM to the group, SIGKILL after [`STOP_GRACE`], then reap.
async fn terminate(child: &mut Child, key: &RevisionKey) {
    let Some(pid) = child.id() else {
        // Already reaped.
        return;
    };
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        warn!(revision = %key, pid, grace = ?STOP_GRACE, "Pod ignored SIGTERM; killing it");
        signal_group(pid, Signal::SIGKILL);
        let _ = child.kill().await;
    }
    sweep_group(pid);
    info!(revision = %key, pid, "Pod stopped");
}

/// Kills whatever the pod left behind in its group once its leader is gone.
fn sweep_group(pid: u32) {
    signal_group(pid, Signal::SIGKILL);
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // The group id is the leader's pid (process_group(0)). ESRCH: nothing left, fine.
        let _ = kill(Pid::from_raw(-pid), signal);
    }
}

/// A port the kernel considers free right now.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_and_is_capped() {
        assert_eq!(RESTART_BACKOFF.nominal(0), Duration::from_millis(200));
        assert_eq!(RESTART_BACKOFF.nominal(1), Duration::from_millis(400));
        assert_eq!(RESTART_BACKOFF.nominal(40), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn wait_port_sees_a_listener_and_times_out_without_one() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(wait_port(addr, Duration::from_secs(5)).await);
        drop(l);
        assert!(!wait_port(addr, Duration::from_millis(60)).await);
    }
}
