//! Upstream HTTP/1.1 connections to one pod, and the idle ones kept between requests.

use std::{
    io,
    net::SocketAddr,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::{net::TcpStream, time::Instant};

/// Idle connections kept per pod; Knative's `MAX_IDLE_PROXY_CONNS_PER_HOST`.
const MAX_IDLE_PER_POD: usize = 100;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A connection's first read buffer: a response head and a small body fit, and an idle
/// connection costs little.
const INIT_BUF: usize = 4096;
/// Largest read buffer an idle connection keeps.
const MAX_IDLE_BUF: usize = 4 * INIT_BUF;

/// One connection to a pod with its read buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    /// It has served a request before: a failure before any response byte may only mean the
    /// pod closed it while idle.
    pub(crate) reused: bool,
    idle_since: Instant,
}

impl Conn {
    /// Room for the next read: at least half a first buffer, doubling as a head grows.
    pub(crate) fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < INIT_BUF / 2 {
            self.buf.reserve(self.buf.capacity().max(INIT_BUF));
        }
    }
}

/// How a connect failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Nothing listens there: the pod is gone.
    Refused(io::Error),
    /// Timed out or unreachable: the request never left.
    Failed(io::Error),
}

impl ConnectError {
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Self::Refused(e) | Self::Failed(e) => e,
        }
    }
}

/// Opens a connection to `addr` within `timeout`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused(e));
        }
        Ok(Err(e)) => return Err(ConnectError::Failed(e)),
        Err(_) => {
            return Err(ConnectError::Failed(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            )));
        }
    };
    // Heads and small bodies go out in one segment each; Nagle would hold them back.
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(INIT_BUF),
        reused: false,
        idle_since: Instant::now(),
    })
}

/// The idle connections to one pod (most recently used first out). Dropped with the pod's
/// tracker, which closes them.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// An idle connection that is still open, if any.
    pub(crate) fn checkout(&self) -> Option<Conn> {
        loop {
            let conn = self.idle.lock().pop()?;
            if conn.idle_since.elapsed() < IDLE_TIMEOUT && still_open(&conn.stream) {
                return Some(conn);
            }
        }
    }

    /// Keeps a connection whose last exchange ended cleanly.
    pub(crate) fn checkin(&self, mut conn: Conn) {
        if !conn.buf.is_empty() {
            // Bytes after the response: the pod is out of step; do not reuse.
            return;
        }
        if conn.buf.capacity() > MAX_IDLE_BUF {
            // Grown for a large body: an idle connection keeps only a small buffer.
            conn.buf = BytesMut::with_capacity(INIT_BUF);
        }
        conn.reused = true;
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_PER_POD {
            idle.push(conn);
        }
    }

    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

/// Whether an idle connection can take a request. An idle connection has nothing to read:
/// readable means the pod closed it (or sent garbage). The readiness flag is the reactor's,
/// so the common case costs no system call.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let conn = connect(addr, Duration::from_secs(5)).await.unwrap();
        let (mut server_side, _) = listener.accept().await.unwrap();
        pool.checkin(conn);
        assert_eq!(pool.idle(), 1);
        let conn = pool.checkout().expect("open connection reused");
        assert!(conn.reused);
        pool.checkin(conn);
        server_side.shutdown().await.unwrap();
        drop(server_side);
        // The reactor sees the FIN within a few polls.
        let mut found = true;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match pool.checkout() {
                Some(conn) => pool.checkin(conn),
                None => {
                    found = false;
                    break;
                }
            }
        }
        assert!(!found, "closed connection still handed out");
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn refused_connects_are_told_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect(addr, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused(_)), "{err:?}");
    }
}
