//! Reading inside one gzip member: a counting buffered source, the inflating member stream
//! with its error classification, and the decoding of one entry's header blocks. Shared by
//! the single-entry reader and the scanner.

use std::io::{self, BufRead, Read};

use flate2::bufread::GzDecoder;

use super::entry::EntryMeta;
use super::pax::{decode_block, padded, show, PaxFields, BLOCK, MAX_PAX_LEN};
use super::{ArchiveError, EntryHeader, EntryLocation};

/// Buffer size for reading the compressed file. It is also how far a single-entry read may
/// read past the end of its member (never inflated).
pub const SOURCE_BUF: usize = 32 * 1024;

/// The gzip magic and the deflate method byte that start every member.
pub(crate) const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// A buffered reader over the compressed file that knows its offset in the file, whether it
/// met the end of the file and whether the file itself failed (as opposed to bad bytes).
pub(crate) struct Source<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`: everything before has been consumed.
    offset: u64,
    /// Bytes pulled from `inner` in total (read-ahead included).
    pulled: u64,
    hit_eof: bool,
    io_failed: bool,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R, offset: u64) -> Self {
        Source {
            inner,
            buf: vec![0u8; SOURCE_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            offset,
            pulled: 0,
            hit_eof: false,
            io_failed: false,
        }
    }

    /// Offset in the file of the next unconsumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes read from the underlying reader so far.
    pub(crate) fn pulled(&self) -> u64 {
        self.pulled
    }

    /// Clears the end-of-file mark: called at each member start, so that the mark says
    /// whether *this* member ran into the end of the file.
    pub(crate) fn reset_eof(&mut self) {
        self.hit_eof = false;
    }

    /// Makes up to `n` (at most the buffer size) bytes available without consuming them;
    /// fewer only at the end of the file.
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.buf.len());
        if self.end - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < n {
                let got = self.read_inner(self.end)?;
                if got == 0 {
                    break;
                }
            }
        }
        Ok(&self.buf[self.start..self.end.min(self.start + n)])
    }

    /// Reads into `buf[from..]`, retrying on interruption, recording EOF and failures.
    fn read_inner(&mut self, from: usize) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.buf[from..]) {
                Ok(0) => {
                    self.hit_eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    let n = n.min(self.buf.len() - from);
                    self.end = from + n;
                    self.pulled += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.io_failed = true;
                    return Err(e);
                }
            }
        }
    }

    /// Consumes the rest of the file; returns the offset of its end.
    pub(crate) fn drain(&mut self) -> io::Result<u64> {
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                return Ok(self.offset);
            }
            self.consume(n);
        }
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.read_inner(0)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.offset += n as u64;
    }
}

/// The uncompressed stream of one gzip member, with its position and the classification
/// of its failures.
pub(crate) struct Member<R: Read> {
    dec: GzDecoder<Source<R>>,
    /// Compressed offset of the member.
    pub(crate) chunk: u64,
    /// Uncompressed bytes produced so far.
    pub(crate) pos: u64,
}

impl<R: Read> Member<R> {
    /// Starts inflating at the source's current offset.
    pub(crate) fn new(mut src: Source<R>) -> Self {
        src.reset_eof();
        let chunk = src.offset();
        Member {
            dec: GzDecoder::new(src),
            chunk,
            pos: 0,
        }
    }

    pub(crate) fn source(&self) -> &Source<R> {
        self.dec.get_ref()
    }

    pub(crate) fn into_source(self) -> Source<R> {
        self.dec.into_inner()
    }

    /// Turns a decoder error into what it means for the file.
    fn classify(&self, e: io::Error) -> ArchiveError {
        let src = self.dec.get_ref();
        if src.io_failed {
            ArchiveError::Io {
                offset: src.offset,
                source: e,
            }
        } else if e.kind() == io::ErrorKind::UnexpectedEof || src.hit_eof {
            ArchiveError::Truncated {
                chunk: self.chunk,
                at: self.pos,
            }
        } else {
            ArchiveError::Gzip {
                chunk: self.chunk,
                found: e.to_string(),
            }
        }
    }

    /// Reads some bytes; 0 only at the end of the member, after its CRC and ISIZE matched.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> Result<usize, ArchiveError> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.dec.read(out) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    /// Fills `out`, short only at the end of the member.
    pub(crate) fn read_full(&mut self, out: &mut [u8]) -> Result<usize, ArchiveError> {
        let mut got = 0;
        while got < out.len() {
            let n = self.read(&mut out[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }

    /// Inflates and drops `n` bytes; returns how many there were before the member ended.
    pub(crate) fn skip(&mut self, mut n: u64) -> Result<u64, ArchiveError> {
        let mut scratch = [0u8; 8192];
        let mut done = 0;
        while n > 0 {
            let want = n.min(scratch.len() as u64) as usize;
            let got = self.read(&mut scratch[..want])?;
            if got == 0 {
                break;
            }
            done += got as u64;
            n -= got as u64;
        }
        Ok(done)
    }

    /// Reads some of the `left` data bytes of the current entry: 0 only when `left` or `out`
    /// is empty. The member ending (its CRC checked) before them is an error: the chunk is
    /// malformed, never a short read to pass off as the whole message.
    pub(crate) fn read_entry_data(
        &mut self,
        out: &mut [u8],
        left: u64,
    ) -> Result<usize, ArchiveError> {
        if left == 0 || out.is_empty() {
            return Ok(0);
        }
        let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match self.read(&mut out[..want])? {
            0 => Err(self.tar_error(
                self.pos,
                "the rest of the entry's data",
                "the end of the chunk".into(),
            )),
            n => Ok(n),
        }
    }

    /// Reads to the end of the member (checking CRC and ISIZE); returns the bytes skipped.
    pub(crate) fn skip_to_end(&mut self) -> Result<u64, ArchiveError> {
        self.skip(u64::MAX)
    }

    fn tar_error(&self, at: u64, expected: &'static str, found: String) -> ArchiveError {
        ArchiveError::Tar {
            chunk: self.chunk,
            at,
            expected,
            found,
        }
    }

    /// Reads one block, or nothing at the end of the member.
    fn read_block(&mut self, what: &'static str) -> Result<Option<[u8; 512]>, ArchiveError> {
        let at = self.pos;
        let mut raw = [0u8; BLOCK as usize];
        match self.read_full(&mut raw)? {
            0 => Ok(None),
            512 => Ok(Some(raw)),
            n => Err(self.tar_error(at, what, format!("the chunk ending after {n} bytes"))),
        }
    }

    /// Reads the header blocks of the next entry (PAX header, its records, the file header)
    /// and decodes its metadata. `None` at the end of the member.
    pub(crate) fn read_entry_header(
        &mut self,
    ) -> Result<Option<(EntryHeader, EntryLocation)>, ArchiveError> {
        let chunk = self.chunk;
        let at = self.pos;
        let Some(raw) = self.read_block("a whole tar header block")? else {
            return Ok(None);
        };
        let mut block = decode_block(&raw).map_err(|e| self.tar_error(at, e.expected, e.found))?;
        let mut fields = PaxFields::default();
        if block.kind == b'x' {
            if block.size > MAX_PAX_LEN {
                return Err(self.tar_error(
                    at,
                    "a PAX header of at most 65536 bytes",
                    format!("{} bytes", block.size),
                ));
            }
            let pax_at = self.pos;
            let mut data = vec![0u8; padded(block.size) as usize];
            let got = self.read_full(&mut data)?;
            if got < data.len() {
                return Err(self.tar_error(
                    pax_at,
                    "the whole PAX header data",
                    format!("the chunk ending after {got} bytes"),
                ));
            }
            data.truncate(block.size as usize);
            fields = PaxFields::decode(&data).map_err(|e| ArchiveError::Pax {
                chunk,
                at: pax_at + e.at as u64,
                expected: e.expected,
                found: e.found,
            })?;
            let file_at = self.pos;
            let raw = self
                .read_block("the file header after a PAX header")?
                .ok_or_else(|| {
                    self.tar_error(
                        file_at,
                        "the file header after a PAX header",
                        "the end of the chunk".into(),
                    )
                })?;
            block = decode_block(&raw).map_err(|e| self.tar_error(file_at, e.expected, e.found))?;
            if block.kind != b'0' && block.kind != 0 {
                return Err(self.tar_error(
                    file_at,
                    "a regular file header (type '0') after a PAX header",
                    format!("type {}", show(&[block.kind])),
                ));
            }
        } else if block.kind != b'0' && block.kind != 0 {
            return Err(self.tar_error(
                at,
                "a PAX header (type 'x') or a regular file header (type '0')",
                format!("type {}", show(&[block.kind])),
            ));
        }
        let size = match fields.get("size") {
            None => block.size,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ArchiveError::Pax {
                    chunk,
                    at,
                    expected: "a decimal size in the PAX size record",
                    found: show(v),
                })?,
        };
        let path = match fields.get("path") {
            Some(p) => String::from_utf8_lossy(p).into_owned(),
            None => String::from_utf8_lossy(&block.path).into_owned(),
        };
        let meta = EntryMeta::from_pax(&fields).map_err(|e| e.at(chunk, at))?;
        let header = EntryHeader {
            meta,
            path,
            size,
            unknown: fields.unknown(),
        };
        let location = EntryLocation {
            chunk_offset: chunk,
            header_offset: at,
            data_offset: self.pos,
            data_len: size,
        };
        Ok(Some((header, location)))
    }
}

/// An [`ArchiveError`] as an `io::Error`, for `Read` impls.
pub(crate) fn to_io(e: &ArchiveError) -> io::Error {
    let kind = match e {
        ArchiveError::Io { source, .. } => source.kind(),
        ArchiveError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e.to_string())
}

/// A copy of an error for a second recipient (io errors keep their kind and message).
pub(crate) fn copy_error(e: &ArchiveError) -> ArchiveError {
    match e {
        ArchiveError::Io { offset, source } => ArchiveError::Io {
            offset: *offset,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        ArchiveError::Gzip { chunk, found } => ArchiveError::Gzip {
            chunk: *chunk,
            found: found.clone(),
        },
        ArchiveError::Truncated { chunk, at } => ArchiveError::Truncated {
            chunk: *chunk,
            at: *at,
        },
        ArchiveError::Tar {
            chunk,
            at,
            expected,
            found,
        } => ArchiveError::Tar {
            chunk: *chunk,
            at: *at,
            expected,
            found: found.clone(),
        },
        ArchiveError::Pax {
            chunk,
            at,
            expected,
            found,
        } => ArchiveError::Pax {
            chunk: *chunk,
            at: *at,
            expected,
            found: found.clone(),
        },
        ArchiveError::Field {
            chunk,
            at,
            key,
            expected,
            found,
        } => ArchiveError::Field {
            chunk: *chunk,
            at: *at,
            key,
            expected,
            found: found.clone(),
        },
        ArchiveError::EntryOutsideChunk {
            chunk,
            at,
            chunk_len,
        } => ArchiveError::EntryOutsideChunk {
            chunk: *chunk,
            at: *at,
            chunk_len: *chunk_len,
        },
        ArchiveError::InvalidMeta {
            what,
            expected,
            found,
        } => ArchiveError::InvalidMeta {
            what,
            expected,
            found: found.clone(),
        },
        ArchiveError::DataLength { expected, found } => ArchiveError::DataLength {
            expected: *expected,
            found: *found,
        },
        ArchiveError::DataSource(e) => {
            ArchiveError::DataSource(io::Error::new(e.kind(), e.to_string()))
        }
        ArchiveError::WriterState { expected } => ArchiveError::WriterState { expected },
    }
}
