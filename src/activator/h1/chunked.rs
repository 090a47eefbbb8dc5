//! Finds where a chunked body ends, so that it can be relayed byte for byte (trailers and
//! extensions included) without being decoded and re-encoded.

/// Longest chunk-size line (size, extensions) and trailer section accepted.
const MAX_META: usize = 16 * 1024;

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub(crate) struct Malformed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex size of a chunk; `digits` read so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: extensions or whitespace up to CR.
    Extension {
        size: u64,
    },
    /// Expecting the LF closing a size line.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        left: u64,
    },
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting the LF of a trailer line; `last` when the line was empty.
    TrailerLf {
        last: bool,
    },
    Done,
}

/// A scanner over a chunked body as it streams past.
#[derive(Debug, Clone)]
pub(crate) struct Chunked {
    state: State,
    /// Bytes of size lines and trailers seen: bounded, so a peer cannot stream metadata forever.
    meta: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            meta: 0,
        }
    }
}

impl Chunked {
    /// Whether the terminating chunk and trailers have been seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `buf`; returns how many bytes belong to the body (all of `buf` unless the body
    /// ends inside it).
    pub(crate) fn advance(&mut self, buf: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data { left } => {
                    // Data is skipped in one step.
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                _ => {}
            }
            let b = buf[i];
            i += 1;
            self.meta += 1;
            if self.meta > MAX_META && !matches!(self.state, State::DataCr | State::DataLf) {
                return Err(Malformed);
            }
            self.state = match self.state {
                State::Size { size, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < 16 => State::Size {
                        size: size << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(Malformed),
                    None if digits == 0 => return Err(Malformed),
                    None => match b {
                        b'\r' => State::SizeLf { size },
                        b';' | b' ' | b'\t' => State::Extension { size },
                        _ => return Err(Malformed),
                    },
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(Malformed),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', left) => {
                        // Data bytes are not metadata.
                        self.meta = 0;
                        State::Data { left }
                    }
                    _ => return Err(Malformed),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(Malformed),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(Malformed),
                },
                State::TrailerStart => match b {
                    b'\r' => State::TrailerLf { last: true },
                    b'\n' => return Err(Malformed),
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf { last: false },
                    b'\n' => return Err(Malformed),
                    _ => State::Trailer,
                },
                State::TrailerLf { last } => match (b, last) {
                    (b'\n', true) => State::Done,
                    (b'\n', false) => State::TrailerStart,
                    _ => return Err(Malformed),
                },
                // Handled above.
                State::Data { .. } | State::Done => return Err(Malformed),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(body: &[u8]) -> Result<(usize, bool), Malformed> {
        let mut c = Chunked::default();
        let n = c.advance(body)?;
        Ok((n, c.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_body_and_leaves_what_follows() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(scan_all(body), Ok((end, true)));
    }

    #[test]
    fn trailers_belong_to_the_body() {
        let body = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n";
        assert_eq!(scan_all(body), Ok((body.len(), true)));
    }

    #[test]
    fn any_split_gives_the_same_answer() {
        let body = b"A\r\n0123456789\r\n0\r\nx: y\r\n\r\n";
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let a = c.advance(&body[..split]).unwrap();
            assert_eq!(a, split);
            assert!(!c.is_done() || split == body.len());
            let b = c.advance(&body[split..]).unwrap();
            assert_eq!(a + b, body.len());
            assert!(c.is_done(), "split at {split}");
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"11111111111111111\r\n",
            b"0\r\nfoo\n",
        ] {
            assert_eq!(
                scan_all(bad),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut endless = b"1;".to_vec();
        endless.extend(std::iter::repeat_n(b'a', MAX_META + 1));
        assert_eq!(scan_all(&endless), Err(Malformed));
    }

    #[test]
    fn large_chunks_are_skipped_not_walked() {
        let mut c = Chunked::default();
        assert_eq!(c.advance(b"ffffffff\r\n"), Ok(10));
        let data = vec![0u8; 1 << 20];
        assert_eq!(c.advance(&data), Ok(data.len()));
        assert!(!c.is_done());
    }
}
