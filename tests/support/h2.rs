//! A raw HTTP/2 client that shows every frame: the preface, SETTINGS and GETs are written by
//! hand, so a test can stop at any step (preface only, no SETTINGS ack) and see GOAWAYs.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Ends its stream (DATA or HEADERS with END_STREAM).
    pub fn ends_stream(&self, stream: u32) -> bool {
        self.stream == stream
            && (self.kind == DATA || self.kind == HEADERS)
            && self.flags & END_STREAM != 0
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal, not Huffman-coded (short strings only).
fn literal(out: &mut Vec<u8>, s: &str) {
    out.push(u8::try_from(s.len()).ok().filter(|n| *n < 127).unwrap());
    out.extend_from_slice(s.as_bytes());
}

pub struct RawH2 {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawH2 {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The preface and an empty SETTINGS frame.
    pub async fn handshake(&mut self) {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        self.send(&out).await;
    }

    /// A GET for `path` at `authority` on `stream` (odd, increasing), with END_STREAM.
    pub async fn get(&mut self, stream: u32, authority: &str, path: &str) {
        // :method GET, :scheme http (static table), then :path and :authority as literals
        // without indexing, names from the static table.
        let mut block = vec![0x82, 0x86, 0x04];
        literal(&mut block, path);
        block.push(0x01);
        literal(&mut block, authority);
        self.send(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
            .await;
    }

    /// The next frame, or `None` when the connection is closed (or reset). The server's
    /// SETTINGS are acknowledged (PINGs are not, as a silent client's would not be).
    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::try_from(u32::from_be_bytes([
                    0,
                    self.buf[0],
                    self.buf[1],
                    self.buf[2],
                ]))
                .unwrap();
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    if f.kind == SETTINGS && f.flags & ACK == 0 {
                        let _ = self.stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                    }
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until `stream` ends; panics if the connection closes first or after `limit`.
    pub async fn until_end_of(&mut self, stream: u32, limit: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let f = tokio::time::timeout_at(deadline, self.frame())
                .await
                .unwrap_or_else(|_| panic!("stream {stream} did not end in {limit:?}: {seen:?}"))
                .unwrap_or_else(|| panic!("closed before stream {stream} ended: {seen:?}"));
            let end = f.ends_stream(stream);
            seen.push(f);
            if end {
                return seen;
            }
        }
    }

    /// Reads frames until the server closes the connection; the frames seen, or `None` if it
    /// was still open after `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> Option<Vec<Frame>> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.frame()).await {
                Err(_) => return None,
                Ok(None) => return Some(seen),
                Ok(Some(f)) => seen.push(f),
            }
        }
    }
}

/// Whether the frames include a GOAWAY.
pub fn has_goaway(frames: &[Frame]) -> bool {
    frames.iter().any(|f| f.kind == GOAWAY)
}
