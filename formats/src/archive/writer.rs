//! Appending chunks to a data file.
//!
//! A chunk is one gzip member (flate2's `GzEncoder`); entries are a PAX header block, its
//! records, a ustar header block built with `tar::Header`, then the data streamed from the
//! caller, each padded to 512 bytes. No end-of-archive blocks are ever written.
//!
//! A chunk is valid only once [`ArchiveWriter::finish_chunk`] has written its gzip trailer.
//! A chunk that is abandoned (the writer dropped, [`ArchiveWriter::into_inner`] called, or
//! an error met while it was open) gets no trailer: it is a torn tail, the same as a crash
//! leaves, and the store cuts it off. (`GzEncoder` would write a trailer when dropped; the
//! writer withholds the file from it first.)

use std::io::{self, Read, Write};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::entry::EntryMeta;
use super::pax::{padded, PaxRecords, BLOCK, MAX_PAX_LEN, USTAR_MAX_SIZE};
use super::{ArchiveError, ChunkInfo, EntryLocation};

/// Default gzip level: 1, the fastest; see docs/archive-format.md for the measurements.
pub const DEFAULT_LEVEL: u32 = 1;

/// Size of the buffer that streams entry data into the compressor.
const COPY_BUF: usize = 64 * 1024;

/// Counts compressed bytes, and lets the writer take the file back from the encoder.
struct Counter<W> {
    inner: Option<W>,
    written: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(w) => {
                let n = w.write(buf)?;
                self.written += n as u64;
                Ok(n)
            }
            None => Err(io::Error::other("chunk abandoned")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

struct OpenChunk<W: Write> {
    enc: GzEncoder<Counter<W>>,
    offset: u64,
    /// Uncompressed bytes written to the chunk so far.
    pos: u64,
    entries: u64,
}

impl<W: Write> OpenChunk<W> {
    /// Takes the file out of the encoder so that nothing more reaches it.
    fn take_file(&mut self) -> Option<W> {
        self.enc.get_mut().inner.take()
    }
}

enum Inner<W: Write> {
    /// Between chunks.
    Idle(W),
    /// A chunk is being written.
    Open(OpenChunk<W>),
    /// An error left a chunk unfinished; the writer can only give the file back.
    Broken(W),
    /// The file was given back (only inside `into_inner` and `drop`).
    Gone,
}

/// Appends chunks of entries to a data file. See the module documentation.
pub struct ArchiveWriter<W: Write> {
    inner: Inner<W>,
    file_len: u64,
    level: Compression,
    buf: Vec<u8>,
}

impl<W: Write> ArchiveWriter<W> {
    /// A writer appending to `file`, whose current length (where its next byte lands) is
    /// `file_len`. The gzip level is [`DEFAULT_LEVEL`].
    pub fn new(file: W, file_len: u64) -> Self {
        ArchiveWriter {
            inner: Inner::Idle(file),
            file_len,
            level: Compression::new(DEFAULT_LEVEL),
            buf: Vec::new(),
        }
    }

    /// Sets the gzip level (0 to 9) used for chunks started from now on.
    pub fn set_level(&mut self, level: u32) {
        self.level = Compression::new(level.min(9));
    }

    /// Length of the file once the open chunk (if any) is finished; without an open chunk,
    /// the file's length now.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Uncompressed length of the open chunk so far (`None` without one): what the caller
    /// compares with its chunk size cap.
    pub fn chunk_len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Open(c) => Some(c.pos),
            _ => None,
        }
    }

    /// Starts a chunk at the end of the file; returns its offset.
    pub fn start_chunk(&mut self) -> Result<u64, ArchiveError> {
        match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Idle(w) => {
                let counter = Counter {
                    inner: Some(w),
                    written: 0,
                };
                self.inner = Inner::Open(OpenChunk {
                    enc: GzEncoder::new(counter, self.level),
                    offset: self.file_len,
                    pos: 0,
                    entries: 0,
                });
                Ok(self.file_len)
            }
            other => {
                let expected = match other {
                    Inner::Open(_) => "no open chunk when starting one",
                    _ => "a writer that has not failed",
                };
                self.inner = other;
                Err(ArchiveError::WriterState { expected })
            }
        }
    }

    /// Appends an entry whose data is `data`.
    pub fn append(&mut self, meta: &EntryMeta, data: &[u8]) -> Result<EntryLocation, ArchiveError> {
        self.append_reader(meta, data.len() as u64, data)
    }

    /// Appends an entry whose data is the next `len` bytes of `data`, streamed. Exactly
    /// `len` bytes are read: `data` is never read past them (it may be a network stream).
    /// Fewer bytes is an error, and breaks the writer (the chunk is left unfinished).
    pub fn append_reader(
        &mut self,
        meta: &EntryMeta,
        len: u64,
        data: impl Read,
    ) -> Result<EntryLocation, ArchiveError> {
        let (pax_header, pax, file_header) = build_headers(meta, len)?;
        let Inner::Open(chunk) = &mut self.inner else {
            return Err(ArchiveError::WriterState {
                expected: match self.inner {
                    Inner::Idle(_) => "an open chunk (call start_chunk first)",
                    _ => "a writer that has not failed",
                },
            });
        };
        let header_offset = chunk.pos;
        let data_offset = header_offset + BLOCK + padded(pax.len() as u64) + BLOCK;
        if self.buf.len() < COPY_BUF {
            self.buf.resize(COPY_BUF, 0);
        }
        let result = write_entry(
            chunk,
            &pax_header,
            &pax,
            &file_header,
            len,
            data,
            &mut self.buf,
        );
        match result {
            Ok(()) => {
                chunk.entries += 1;
                Ok(EntryLocation {
                    chunk_offset: chunk.offset,
                    header_offset,
                    data_offset,
                    data_len: len,
                })
            }
            Err(e) => {
                self.break_chunk();
                Err(e)
            }
        }
    }

    /// Finishes the open chunk (gzip trailer written, the file flushed, not synced) and
    /// returns where it is.
    pub fn finish_chunk(&mut self) -> Result<ChunkInfo, ArchiveError> {
        let Inner::Open(chunk) = &mut self.inner else {
            return Err(ArchiveError::WriterState {
                expected: "an open chunk to finish",
            });
        };
        let result = chunk
            .enc
            .try_finish()
            .and_then(|()| chunk.enc.get_mut().flush());
        if let Err(source) = result {
            let offset = chunk.offset + chunk.enc.get_ref().written;
            self.break_chunk();
            return Err(ArchiveError::Io { offset, source });
        }
        let info = ChunkInfo {
            offset: chunk.offset,
            compressed_len: chunk.enc.get_ref().written,
            uncompressed_len: chunk.pos,
            entries: chunk.entries,
        };
        match chunk.take_file() {
            Some(w) => {
                self.inner = Inner::Idle(w);
                self.file_len = info.end();
                Ok(info)
            }
            None => {
                self.break_chunk();
                Err(ArchiveError::WriterState {
                    expected: "a writer that has not failed",
                })
            }
        }
    }

    /// Gives the file back. An open chunk is abandoned without its trailer (a torn tail
    /// for the store to cut off).
    pub fn into_inner(mut self) -> Option<W> {
        match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Idle(w) | Inner::Broken(w) => Some(w),
            Inner::Open(mut c) => c.take_file(),
            Inner::Gone => None,
        }
    }

    /// The file, when no chunk is open (to sync it, for example).
    pub fn get_mut(&mut self) -> Option<&mut W> {
        match &mut self.inner {
            Inner::Idle(w) => Some(w),
            _ => None,
        }
    }

    fn break_chunk(&mut self) {
        self.inner = match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Open(mut c) => match c.take_file() {
                Some(w) => Inner::Broken(w),
                None => Inner::Gone,
            },
            other => other,
        };
    }
}

impl<W: Write> Drop for ArchiveWriter<W> {
    fn drop(&mut self) {
        // Keep GzEncoder's own drop from writing a trailer after a partial entry.
        if let Inner::Open(c) = &mut self.inner {
            c.take_file();
        }
    }
}

/// The PAX header block, PAX records and file header block of one entry.
fn build_headers(
    meta: &EntryMeta,
    len: u64,
) -> Result<(tar::Header, Vec<u8>, tar::Header), ArchiveError> {
    meta.validate()?;
    let path = meta.path();
    let mtime = meta
        .time()
        .map_or(0, |t| t.secs.clamp(0, USTAR_MAX_SIZE as i64)) as u64;

    let mut records = PaxRecords::default();
    let mut file = tar::Header::new_ustar();
    if file.set_path(&path).is_err() {
        // Too long for ustar's name and prefix fields: the PAX path record carries it, the
        // header gets a cut-down name for readers without PAX.
        records.push("path", path.as_bytes());
        let mut cut = path.len().min(100);
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = &mut file.as_old_mut().name;
        name.fill(0);
        name[..cut].copy_from_slice(&path.as_bytes()[..cut]);
    }
    if len > USTAR_MAX_SIZE {
        records.push("size", len.to_string().as_bytes());
    }
    meta.to_pax(&mut records);
    let pax = records.as_bytes().to_vec();
    if pax.len() as u64 > MAX_PAX_LEN {
        return Err(ArchiveError::InvalidMeta {
            what: "PAX header",
            expected: "at most 65536 bytes of records",
            found: format!("{} bytes", pax.len()),
        });
    }
    file.set_size(len);
    file.set_mode(0o600);
    file.set_uid(0);
    file.set_gid(0);
    file.set_mtime(mtime);
    file.set_entry_type(tar::EntryType::Regular);
    file.set_cksum();

    // GNU tar names PAX headers `<dir>/PaxHeaders/<file>`; only tars without PAX support
    // ever show this name.
    let mut x = tar::Header::new_ustar();
    let base = path.rsplit('/').next().unwrap_or("");
    if x.set_path(format!("PaxHeaders/{base}")).is_err() {
        let _ = x.set_path("PaxHeaders/entry");
    }
    x.set_size(pax.len() as u64);
    x.set_mode(0o644);
    x.set_uid(0);
    x.set_gid(0);
    x.set_mtime(mtime);
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_cksum();
    Ok((x, pax, file))
}

fn write_padding<W: Write>(w: &mut W, len: u64) -> io::Result<u64> {
    let pad = (padded(len) - len) as usize;
    w.write_all(&[0u8; BLOCK as usize][..pad])?;
    Ok(pad as u64)
}

fn write_entry<W: Write>(
    chunk: &mut OpenChunk<W>,
    pax_header: &tar::Header,
    pax: &[u8],
    file_header: &tar::Header,
    len: u64,
    mut data: impl Read,
    buf: &mut [u8],
) -> Result<(), ArchiveError> {
    let io_err = |chunk: &OpenChunk<W>, source| ArchiveError::Io {
        offset: chunk.offset + chunk.enc.get_ref().written,
        source,
    };
    let enc = &mut chunk.enc;
    let headers = (|| {
        enc.write_all(pax_header.as_bytes())?;
        enc.write_all(pax)?;
        write_padding(enc, pax.len() as u64)?;
        enc.write_all(file_header.as_bytes())
    })();
    headers.map_err(|e| io_err(chunk, e))?;
    chunk.pos += 2 * BLOCK + padded(pax.len() as u64);

    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(ArchiveError::DataLength {
                    expected: len,
                    found: len - left,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::DataSource(e)),
        };
        chunk
            .enc
            .write_all(&buf[..n])
            .map_err(|e| io_err(chunk, e))?;
        left -= n as u64;
        chunk.pos += n as u64;
    }
    let pad = write_padding(&mut chunk.enc, len).map_err(|e| io_err(chunk, e))?;
    chunk.pos += pad;
    Ok(())
}
