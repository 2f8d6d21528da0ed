//! Field encodings shared by every message body: big-endian integers, strings with a 16-bit
//! length, lists with a 32-bit count, stat data. The reader reports every problem with the
//! byte offset inside the body, and sizes nothing from a count it has not checked against
//! the bytes that remain.

use super::frame::EncodeError;
use crate::{FileStat, Timestamp};
use std::fmt;

/// A body that does not decode as the message its frame kind names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{frame} body: expected {expected} at byte {offset}, found {found}", frame = super::kind::name(*.kind))]
pub struct DecodeError {
    /// The frame kind whose body was being read.
    pub kind: u8,
    /// Offset inside the body.
    pub offset: usize,
    /// What the decoder was looking for.
    pub expected: &'static str,
    /// What it found instead.
    pub found: String,
}

/// Reads fields front to back from one frame body.
pub(crate) struct Reader<'a> {
    kind: u8,
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(kind: u8, body: &'a [u8]) -> Self {
        Reader { kind, body, pos: 0 }
    }

    pub(crate) fn err(
        &self,
        offset: usize,
        expected: &'static str,
        found: impl fmt::Display,
    ) -> DecodeError {
        DecodeError {
            kind: self.kind,
            offset,
            expected,
            found: found.to_string(),
        }
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    /// The next `n` bytes, or an error naming `what`.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.err(
                self.pos,
                what,
                format_args!(
                    "the end of the body ({} of {n} bytes left)",
                    self.remaining()
                ),
            ));
        }
        let out = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn bytes32(&mut self, what: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(what)
    }

    /// A u16 length then that many bytes of UTF-8.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.err(
                at + 2 + e.valid_up_to(),
                what,
                format_args!(
                    "bytes that are not UTF-8 ({:?})",
                    String::from_utf8_lossy(bytes)
                ),
            )),
        }
    }

    /// A u32 item count, checked against the bytes left: each item takes at least
    /// `min_item` bytes, so a count that cannot fit is refused before anything is allocated.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_item: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(self.err(
                at,
                what,
                format_args!(
                    "a count of {n} items, more than the {} bytes left can hold",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// A boolean byte: 0 or 1.
    pub(crate) fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.err(at, what, format_args!("byte {other} (not 0 or 1)"))),
        }
    }

    pub(crate) fn stat(&mut self, what: &'static str) -> Result<FileStat, DecodeError> {
        let size = self.u64(what)?;
        let secs = self.i64(what)?;
        let at = self.pos;
        let nanos = self.u32(what)?;
        let mtime = Timestamp::new(secs, nanos)
            .ok_or_else(|| self.err(at, "nanoseconds below 1000000000", nanos))?;
        let inode = self.u64(what)?;
        Ok(FileStat { size, mtime, inode })
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The body must end here.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.err(
                self.pos,
                "the end of the body",
                format_args!("{} more bytes", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// Bytes of an encoded [`FileStat`].
pub(crate) const STAT_LEN: usize = 28;

/// Writes fields to a body under construction.
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }
    pub(crate) fn flag(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }
    pub(crate) fn string(&mut self, what: &'static str, s: &str) -> Result<(), EncodeError> {
        let len = u16::try_from(s.len())
            .map_err(|_| EncodeError::StringTooLong { what, len: s.len() })?;
        self.u16(len);
        self.bytes(s.as_bytes());
        Ok(())
    }
    pub(crate) fn count(&mut self, what: &'static str, n: usize) -> Result<(), EncodeError> {
        let n32 = u32::try_from(n).map_err(|_| EncodeError::ListTooLong {
            what,
            len: n,
            max: u32::MAX as usize,
        })?;
        self.u32(n32);
        Ok(())
    }
    pub(crate) fn stat(&mut self, what: &'static str, s: &FileStat) -> Result<(), EncodeError> {
        if !s.mtime.is_valid() {
            return Err(EncodeError::InvalidTime {
                what,
                nanos: s.mtime.nanos,
            });
        }
        self.u64(s.size);
        self.out.extend_from_slice(&s.mtime.secs.to_be_bytes());
        self.u32(s.mtime.nanos);
        self.u64(s.inode);
        Ok(())
    }
}
