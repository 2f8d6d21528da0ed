//! What a server sends a restore target's client (IMAP, Cyrus's sync_server), cut into
//! responses within bounds (formats::imap::response): the buffer grows only with the bytes
//! the server really sent, never by a length it announced. One reader for both targets.

use std::io::Read;

use formats::imap::{parse_response, Limits, Response, ResponseError};

/// Why no response could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The socket failed.
    Io(std::io::Error),
    /// The server closed the connection.
    Closed,
    /// A response breaks a bound.
    Framing(ResponseError),
}

/// Bytes received and not yet taken as a response.
#[derive(Debug)]
pub(crate) struct Replies {
    buf: Vec<u8>,
    /// Where the next response starts in `buf`.
    start: usize,
    /// The bounds.
    pub limits: Limits,
}

impl Replies {
    pub(crate) fn new(limits: Limits) -> Replies {
        Replies {
            buf: Vec::new(),
            start: 0,
            limits,
        }
    }

    /// Whether bytes beyond the last response were received (a server that talks out of
    /// turn, e.g. before a TLS handshake).
    pub(crate) fn has_more(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Reads one response from `src` (more bytes only when needed) and hands it to `f` with
    /// its raw bytes (line ends and literals in place).
    pub(crate) fn read<R: Read, T>(
        &mut self,
        src: &mut R,
        f: impl FnOnce(Response, &[u8]) -> T,
    ) -> Result<T, ReadError> {
        loop {
            match parse_response(&self.buf[self.start..], &self.limits) {
                Ok(Some((resp, used))) => {
                    let out = f(resp, &self.buf[self.start..self.start + used]);
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(out);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Framing(e)),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = loop {
                match src.read(&mut chunk) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            };
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_come_whole_from_any_cut_and_bounds_hold() {
        let mut r = Replies::new(Limits::default());
        let mut src: &[u8] = b"* OK hi\r\nA1 OK {3}\r\nabc done\r\n";
        let a = r
            .read(&mut src, |resp, raw| (resp.text, raw.to_vec()))
            .unwrap();
        assert_eq!(a, (b"* OK hi".to_vec(), b"* OK hi\r\n".to_vec()));
        let b = r.read(&mut src, |resp, _| resp.literals).unwrap();
        assert_eq!(b, vec![b"abc".to_vec()]);
        assert!(!r.has_more());
        assert!(matches!(
            r.read(&mut src, |_, _| ()),
            Err(ReadError::Closed)
        ));
        let mut small = Replies::new(Limits {
            max_line: 8,
            max_literal: 8,
        });
        let mut long: &[u8] = b"* 0123456789\r\n";
        assert!(matches!(
            small.read(&mut long, |_, _| ()),
            Err(ReadError::Framing(_))
        ));
    }
}
