//! The frame layer: a 9-byte header and a bounded body. Nothing here knows what a frame
//! means; [`super::message`] gives bodies their meaning.
//!
//! Decoding works on whatever bytes have arrived so far, like mini-redis's `Frame::check`
//! then `Frame::parse`: [`check`] says whether a whole frame is in the buffer (reading the
//! 9 header bytes only), and [`parse`] hands out the frame as a borrowed slice. The length
//! is checked against [`MAX_BODY`] before the caller could act on it, so no buffer is ever
//! sized from an unchecked length.

use std::fmt;

/// Bytes of a frame header: body length (u32), kind (u8), request id (u32), big-endian.
pub const HEADER_LEN: usize = 9;

/// The largest body a frame may carry: 16 MiB. Anything bigger (a message, a cyrus.index)
/// travels as several [`super::kind::DATA`] frames.
pub const MAX_BODY: u32 = 16 * 1024 * 1024;

/// A frame header as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Body length in bytes, at most [`MAX_BODY`].
    pub len: u32,
    /// What the body holds ([`super::kind`]).
    pub kind: u8,
    /// The request this frame belongs to (0 for the handshake).
    pub id: u32,
}

impl FrameHeader {
    /// Decodes the first [`HEADER_LEN`] bytes and checks the length bound. `bytes` must hold
    /// at least [`HEADER_LEN`] bytes (panics otherwise: callers check first).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = bytes[4];
        let id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        if len > MAX_BODY {
            return Err(FrameError::TooLarge { len, kind, id });
        }
        Ok(FrameHeader { len, kind, id })
    }

    /// The 9 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.len.to_be_bytes());
        out[4] = self.kind;
        out[5..9].copy_from_slice(&self.id.to_be_bytes());
        out
    }

    /// Header plus body: the bytes the frame occupies on the wire.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// A whole frame, borrowed from the buffer it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the body holds ([`super::kind`]).
    pub kind: u8,
    /// The request this frame belongs to.
    pub id: u32,
    /// The body, `len` bytes.
    pub body: &'a [u8],
}

/// A frame the frame layer refuses. After it the stream cannot be trusted to be in step, so
/// the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces a body over [`MAX_BODY`].
    #[error("frame too large: expected a body of at most {max} bytes, found a header announcing {len} bytes (kind 0x{kind:02x}, request {id})", max = MAX_BODY)]
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The frame kind in the header.
        kind: u8,
        /// The request id in the header.
        id: u32,
    },
}

/// Whether `buf` starts with a whole frame: `Ok(None)` if more bytes are needed (nothing is
/// consumed; call again when more arrived), `Ok(Some(header))` if the frame is complete, an
/// error if the header is unacceptable (as soon as the 9 header bytes are there).
pub fn check(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = FrameHeader::decode(head)?;
    Ok((buf.len() >= header.frame_len()).then_some(header))
}

/// The frame at the start of `buf` and the number of bytes it occupies, or `Ok(None)` when
/// the buffer does not yet hold a whole frame.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(header) = check(buf)? else {
        return Ok(None);
    };
    let end = header.frame_len();
    Ok(Some((
        Frame {
            kind: header.kind,
            id: header.id,
            body: &buf[HEADER_LEN..end],
        },
        end,
    )))
}

/// Appends a frame with this body to `out`. The body must fit ([`MAX_BODY`]).
pub fn write_frame(kind: u8, id: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = body_len(body.len())?;
    out.extend_from_slice(&FrameHeader { len, kind, id }.encode());
    out.extend_from_slice(body);
    Ok(())
}

/// `n` as a body length, or the error saying it is too large.
pub(crate) fn body_len(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n)
        .ok()
        .filter(|&len| len <= MAX_BODY)
        .ok_or(EncodeError::BodyTooLarge { len: n })
}

/// A message that cannot be put on the wire as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The body would exceed [`MAX_BODY`]: split it (lists go in several frames, bytes in
    /// several data frames).
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes", max = MAX_BODY)]
    BodyTooLarge {
        /// The body length.
        len: usize,
    },
    /// A string is longer than its 16-bit length prefix allows.
    #[error("{what} of {len} bytes exceeds the limit of 65535 bytes")]
    StringTooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A list has more items than its count allows (32 bits, or a lower bound the
    /// protocol sets for that list).
    #[error("{what} with {len} items exceeds the limit of {max} items")]
    ListTooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most items allowed.
        max: usize,
    },
    /// A data frame must carry at least one byte.
    #[error("a data frame must not be empty")]
    EmptyData,
    /// A timestamp with nanoseconds of a second or more.
    #[error("{what}: invalid time (nanoseconds {nanos} not below 1000000000)")]
    InvalidTime {
        /// Which field.
        what: &'static str,
        /// The nanoseconds.
        nanos: u32,
    },
}

impl fmt::Display for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame kind 0x{:02x} ({}), request {}, {} body bytes",
            self.kind,
            super::kind::name(self.kind),
            self.id,
            self.body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_incomplete() {
        let mut buf = Vec::new();
        write_frame(0x12, 7, b"abc", &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 3, 0x12, 0, 0, 0, 7, b'a', b'b', b'c']);
        for cut in 0..buf.len() {
            assert_eq!(check(&buf[..cut]), Ok(None), "cut at {cut}");
            assert_eq!(parse(&buf[..cut]), Ok(None));
        }
        let (frame, used) = parse(&buf).unwrap().unwrap();
        assert_eq!(used, 12);
        assert_eq!((frame.kind, frame.id, frame.body), (0x12, 7, &b"abc"[..]));
    }

    #[test]
    fn too_large_is_seen_from_the_header_alone() {
        let head = FrameHeader {
            len: MAX_BODY + 1,
            kind: 0x82,
            id: 3,
        }
        .encode();
        let err = check(&head).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: MAX_BODY + 1,
                kind: 0x82,
                id: 3
            }
        );
        assert!(err.to_string().contains("16777217"), "{err}");
        let max = FrameHeader {
            len: MAX_BODY,
            kind: 0x82,
            id: 3,
        };
        assert_eq!(check(&max.encode()), Ok(None));
        assert_eq!(
            write_frame(1, 1, &vec![0; MAX_BODY as usize + 1], &mut Vec::new()),
            Err(EncodeError::BodyTooLarge {
                len: MAX_BODY as usize + 1
            })
        );
    }
}
