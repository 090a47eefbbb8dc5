//! Runs the real `kactivator` binary on fixed free ports, optionally under a descriptor limit.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::time::Instant;

/// A port that was free a moment ago (the binary binds it by number).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The binary's listeners.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: SocketAddr,
    pub h2c: SocketAddr,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
    pub autoscaler: SocketAddr,
}

impl Ports {
    pub fn free() -> Self {
        Self {
            http: free_port(),
            h2c: free_port(),
            admin: free_port(),
            grpc: free_port(),
            autoscaler: free_port(),
        }
    }

    /// The `listen:` section.
    pub fn yaml(&self) -> String {
        format!(
            "listen:\n  http: {}\n  h2c: {}\n  admin: {}\n  grpc: {}\n  autoscaler: {}\n",
            self.http, self.h2c, self.admin, self.grpc, self.autoscaler
        )
    }
}

/// A running binary, killed when dropped.
pub struct Running {
    pub child: Child,
    pub ports: Ports,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// The exit code once the process has exited, polling up to `limit`.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "process did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

/// Starts the activator with `yaml` (after the `listen:` section) in `dir`; with `nofile`, under
/// that descriptor limit (soft and hard).
pub fn start_activator(dir: &Path, yaml: &str, nofile: Option<u32>) -> Running {
    start_activator_env(dir, yaml, nofile, &[])
}

/// [`start_activator`] with extra environment variables (`KUBECONFIG`, `POD_IP`, ...); the
/// binary's stderr goes to `dir/stderr.log`, and it never sees the machine's in-cluster variables.
pub fn start_activator_env(
    dir: &Path,
    yaml: &str,
    nofile: Option<u32>,
    env: &[(&str, &str)],
) -> Running {
    start_on(Ports::free(), "activator", dir, yaml, nofile, env)
}

/// Starts the binary in `mode` on `ports` (a restart passes the ports of the run it replaces);
/// otherwise as [`start_activator_env`].
pub fn start_on(
    ports: Ports,
    mode: &str,
    dir: &Path,
    yaml: &str,
    nofile: Option<u32>,
    env: &[(&str, &str)],
) -> Running {
    let path = dir.join("kactivator.yaml");
    std::fs::write(&path, format!("{}{yaml}", ports.yaml())).unwrap();
    let bin = env!("CARGO_BIN_EXE_kactivator");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["--mode", mode, "--config"])
        .arg(&path)
        .stdout(Stdio::null());
    if env.is_empty() {
        cmd.stderr(Stdio::null());
    } else {
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        cmd.stderr(log)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("HOME", dir)
            .envs(env.iter().copied());
    }
    let child = cmd.spawn().unwrap();
    Running { child, ports }
}

/// A GET with `Connection: close`; `None` if the connection is refused, reset or slower than
/// `limit`. Returns (status, body).
pub async fn try_get(addr: SocketAddr, path: &str, limit: Duration) -> Option<(u16, String)> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    try_exchange(addr, &head, limit).await
}

/// Sends `head` (a whole request that closes the connection) and reads the answer to the end;
/// `None` if the connection is refused, reset or slower than `limit`. Returns (status, body).
pub async fn try_exchange(addr: SocketAddr, head: &str, limit: Duration) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(head.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.get(9..12)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}
