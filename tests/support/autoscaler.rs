//! A fake Knative autoscaler: accepts stats websockets on 127.0.0.1 and records every frame.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use kactivator::proto::metrics::WireStatMessages;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::{net::TcpListener, sync::broadcast, task::JoinHandle, time::Instant};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

/// One binary frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub at: Instant,
    pub bytes: Vec<u8>,
}

impl Frame {
    pub fn protobuf(&self) -> WireStatMessages {
        WireStatMessages::decode(self.bytes.as_slice()).expect("frame is WireStatMessages")
    }
}

pub struct FakeAutoscaler {
    pub addr: SocketAddr,
    frames: Arc<Mutex<Vec<Frame>>>,
    connections: Arc<Mutex<u32>>,
    close: broadcast::Sender<u16>,
    task: JoinHandle<()>,
}

impl FakeAutoscaler {
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` (retrying briefly, for restarts on the same port).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (close, _) = broadcast::channel(4);
        let task = tokio::spawn({
            let (frames, connections, close) = (frames.clone(), connections.clone(), close.clone());
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (frames, connections, mut close_rx) =
                        (frames.clone(), connections.clone(), close.subscribe());
                    tokio::spawn(async move {
                        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                            return;
                        };
                        *connections.lock() += 1;
                        loop {
                            tokio::select! {
                                code = close_rx.recv() => {
                                    let code = code.unwrap_or(1000);
                                    let _ = ws.send(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "restarting".into() }))).await;
                                    return;
                                }
                                msg = ws.next() => match msg {
                                    Some(Ok(Message::Binary(b))) => frames.lock().push(Frame { at: Instant::now(), bytes: b.to_vec() }),
                                    Some(Ok(_)) => {}
                                    _ => return,
                                },
                            }
                        }
                    });
                }
            }
        });
        Self {
            addr,
            frames,
            connections,
            close,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().clone()
    }

    /// Websocket connections accepted so far.
    pub fn connections(&self) -> u32 {
        *self.connections.lock()
    }

    /// Waits (bounded) until at least `n` frames arrived.
    pub async fn wait_frames(&self, n: usize, timeout: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let frames = self.frames();
            if frames.len() >= n || Instant::now() >= deadline {
                return frames;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a Close frame with `code` (1012 = restarting) to every connected client.
    pub fn close_all(&self, code: u16) {
        let _ = self.close.send(code);
    }

    /// Stops accepting and drops every connection.
    pub fn stop(self) -> SocketAddr {
        self.close_all(1001);
        self.task.abort();
        self.addr
    }
}

/// PIDs of live processes whose environment holds `marker` (`KEY=VALUE`): a test marks the
/// pods it starts through `revisions[].env` and finds them again, however they were spawned.
pub fn pids_with_env(marker: &str) -> Vec<u32> {
    live_pids(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
    })
}

/// Kills every process marked `marker` (see [`pids_with_env`]) when dropped: a test that fails
/// while its binary still runs (the binary is then killed outright) leaves no pod behind.
pub struct Reaper(pub String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in pids_with_env(&self.0) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Direct children of `parent` that are still alive.
pub fn children_of(parent: u32) -> Vec<u32> {
    live_pids(|pid| stat_field(pid, 1).and_then(|p| p.parse::<u32>().ok()) == Some(parent))
}

/// Live processes (sorted) for which `keep` holds.
fn live_pids(mut keep: impl FnMut(u32) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|pid| keep(*pid) && is_alive(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// True when `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// Fields of /proc/<pid>/stat after the command name: 0 = state, 1 = ppid.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(n).map(str::to_owned)
}
