//! Walking a whole data file, chunk by chunk and entry by entry, in constant memory.
//!
//! The scanner is what `reindex` and `verify` stand on, and how a store finds where valid
//! data ends. Its rules:
//!
//! * A chunk counts only when its gzip member ends with a matching CRC-32 and ISIZE and its
//!   tar stream ends on an entry boundary: [`ScanEvent::ChunkEnd`]. Entries reported before
//!   that are provisional; a caller that indexes them commits at `ChunkEnd`.
//! * A *torn tail* ends the scan normally ([`ScanEvent::End`]): the file ends inside a
//!   member ([`Tail::Truncated`]) or the bytes after the last valid member do not start a
//!   gzip member ([`Tail::Garbage`]). `valid_end` is then the end of the last valid chunk.
//! * Damage with bytes after it (a member whose deflate data, CRC or tar stream is bad) is
//!   an error naming the chunk; valid data ends at that chunk's offset.
//!
//! Sizes read from the file are never used to allocate, except a PAX header's, which is
//! bounded by [`MAX_PAX_LEN`](super::MAX_PAX_LEN).

use std::io::{self, Read};

use sha1::{Digest, Sha1};

use super::member::{copy_error, to_io, Member, Source, GZIP_MAGIC};
use super::pax::padded;
use super::{ArchiveError, ChunkInfo, EntryHeader, EntryLocation};
use crate::Guid;

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The last chunk ended exactly at the end of the file.
    Clean,
    /// The file ends inside a gzip member (a chunk was being written when the writer
    /// stopped).
    Truncated,
    /// Bytes after the last valid chunk do not start a gzip member (zeros left by a crash,
    /// or anything else).
    Garbage,
    /// The scan stopped at an error it returned earlier.
    Failed,
}

/// The end of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last valid chunk: the length to cut the file to.
    pub valid_end: u64,
    /// Offset of the end of the file (bytes the scanner consumed, for a failed scan).
    pub file_len: u64,
    /// Why the scan ended.
    pub tail: Tail,
}

/// One step of a scan.
// Returned by value once per entry and never stored: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ScanEvent<'a, R: Read> {
    /// A gzip member starts at this offset.
    ChunkStart {
        /// Offset of the member in the file.
        offset: u64,
    },
    /// An entry; its data can be read from it (what the caller leaves unread is skipped).
    Entry(ScannedEntry<'a, R>),
    /// The chunk ended and checked out: its entries are valid.
    ChunkEnd(ChunkInfo),
    /// The scan is over; every later call returns this again.
    End(ScanEnd),
}

/// An entry met by the scanner: its header and location, and its data as a [`Read`].
pub struct ScannedEntry<'a, R: Read> {
    /// The entry's metadata.
    pub header: EntryHeader,
    /// Where it is.
    pub location: EntryLocation,
    chunk: &'a mut ChunkScan<R>,
}

impl<R: Read> ScannedEntry<'_, R> {
    /// Reads the rest of the data and returns its SHA-1, as a [`Guid`]: for a message, its
    /// GUID if the data is intact. Call it before reading any data to hash all of it.
    pub fn sha1(&mut self) -> Result<Guid, ArchiveError> {
        self.sha1_keeping(&mut Vec::new(), 0)
    }

    /// [`ScannedEntry::sha1`], keeping the first `max` bytes of the data in `head`
    /// (appended): verify hashes a message and reads its header block in one pass.
    pub fn sha1_keeping(&mut self, head: &mut Vec<u8>, max: usize) -> Result<Guid, ArchiveError> {
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut kept = 0;
        loop {
            let n = self.chunk.read_data(&mut buf)?;
            if n == 0 {
                return Ok(Guid(hasher.finalize().into()));
            }
            hasher.update(&buf[..n]);
            let take = n.min(max - kept);
            head.extend_from_slice(&buf[..take]);
            kept += take;
        }
    }
}

impl<R: Read> Read for ScannedEntry<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.chunk.read_data(out).map_err(|e| to_io(&e))
    }
}

/// State inside one member.
struct ChunkScan<R: Read> {
    member: Member<R>,
    entries: u64,
    /// Data bytes of the current entry the caller has not read.
    data_left: u64,
    /// Padding after the current entry's data.
    pad_left: u64,
    /// An error met while the caller read data, reported again by the next step.
    error: Option<ArchiveError>,
}

impl<R: Read> ChunkScan<R> {
    fn read_data(&mut self, out: &mut [u8]) -> Result<usize, ArchiveError> {
        if let Some(e) = &self.error {
            return Err(copy_error(e));
        }
        match self.member.read_entry_data(out, self.data_left) {
            Ok(n) => {
                self.data_left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = copy_error(&e);
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

enum State<R: Read> {
    /// At a member boundary.
    Between(Source<R>),
    /// Inside a member.
    InChunk(Box<ChunkScan<R>>),
    /// Over.
    Done(ScanEnd),
    /// Only while a step moves the state.
    Moving,
}

/// What a step produced, before borrowing the state for an entry.
enum Step {
    ChunkStart(u64),
    Entry(EntryHeader, EntryLocation),
    ChunkEnd(ChunkInfo),
    End(ScanEnd),
}

/// Walks a data file from a chunk boundary to its end. See the module documentation.
pub struct Scanner<R: Read> {
    state: State<R>,
    /// End of the last valid chunk.
    valid_end: u64,
}

impl<R: Read> Scanner<R> {
    /// Scans `file` from its start.
    pub fn new(file: R) -> Self {
        Self::starting_at(file, 0)
    }

    /// Scans `file`, whose next byte is at `offset` in the data file and starts a chunk (the
    /// caller has seeked there); offsets reported are file offsets.
    pub fn starting_at(file: R, offset: u64) -> Self {
        Scanner {
            state: State::Between(Source::new(file, offset)),
            valid_end: offset,
        }
    }

    /// The next event. After [`ScanEvent::End`] or an error, every call returns `End`.
    pub fn next_event(&mut self) -> Result<ScanEvent<'_, R>, ArchiveError> {
        match self.step()? {
            Step::ChunkStart(offset) => Ok(ScanEvent::ChunkStart { offset }),
            Step::ChunkEnd(info) => Ok(ScanEvent::ChunkEnd(info)),
            Step::End(end) => Ok(ScanEvent::End(end)),
            Step::Entry(header, location) => match &mut self.state {
                State::InChunk(chunk) => Ok(ScanEvent::Entry(ScannedEntry {
                    header,
                    location,
                    chunk,
                })),
                // step() leaves InChunk after an entry; this arm is never taken.
                _ => Err(ArchiveError::WriterState {
                    expected: "a scanner inside a chunk",
                }),
            },
        }
    }

    fn step(&mut self) -> Result<Step, ArchiveError> {
        match std::mem::replace(&mut self.state, State::Moving) {
            State::Done(end) => {
                self.state = State::Done(end);
                Ok(Step::End(end))
            }
            // Only reachable if a step was abandoned half-way; report it as a failed scan.
            State::Moving => Ok(Step::End(self.finish(self.valid_end, Tail::Failed))),
            State::Between(src) => self.at_boundary(src),
            State::InChunk(chunk) => self.in_chunk(chunk),
        }
    }

    fn finish(&mut self, file_len: u64, tail: Tail) -> ScanEnd {
        let end = ScanEnd {
            valid_end: self.valid_end,
            file_len,
            tail,
        };
        self.state = State::Done(end);
        end
    }

    fn fail(&mut self, file_len: u64, e: ArchiveError) -> Result<Step, ArchiveError> {
        self.finish(file_len, Tail::Failed);
        Err(e)
    }

    fn at_boundary(&mut self, mut src: Source<R>) -> Result<Step, ArchiveError> {
        let offset = src.offset();
        let head = match src.peek(GZIP_MAGIC.len()) {
            Ok(h) => h.to_vec(),
            Err(source) => return self.fail(offset, ArchiveError::Io { offset, source }),
        };
        if head.is_empty() {
            return Ok(Step::End(self.finish(offset, Tail::Clean)));
        }
        if head[..] != GZIP_MAGIC[..head.len()] || head.len() < GZIP_MAGIC.len() {
            let tail = if head[..] == GZIP_MAGIC[..head.len()] {
                Tail::Truncated
            } else {
                Tail::Garbage
            };
            return match src.drain() {
                Ok(file_len) => Ok(Step::End(self.finish(file_len, tail))),
                Err(source) => {
                    let at = src.offset();
                    self.fail(at, ArchiveError::Io { offset: at, source })
                }
            };
        }
        self.state = State::InChunk(Box::new(ChunkScan {
            member: Member::new(src),
            entries: 0,
            data_left: 0,
            pad_left: 0,
            error: None,
        }));
        Ok(Step::ChunkStart(offset))
    }

    fn in_chunk(&mut self, mut c: Box<ChunkScan<R>>) -> Result<Step, ArchiveError> {
        if let Some(e) = c.error.take() {
            return self.chunk_failed(*c, e);
        }
        let rest = c.data_left + c.pad_left;
        if rest > 0 {
            match c.member.skip(rest) {
                Ok(n) if n == rest => {}
                Ok(_) => {
                    let e = ArchiveError::Tar {
                        chunk: c.member.chunk,
                        at: c.member.pos,
                        expected: "the rest of the entry's data and padding",
                        found: "the end of the chunk".into(),
                    };
                    return self.chunk_failed(*c, e);
                }
                Err(e) => return self.chunk_failed(*c, e),
            }
            c.data_left = 0;
            c.pad_left = 0;
        }
        match c.member.read_entry_header() {
            Ok(Some((header, location))) => {
                c.entries += 1;
                c.data_left = header.size;
                c.pad_left = padded(header.size) - header.size;
                self.state = State::InChunk(c);
                Ok(Step::Entry(header, location))
            }
            Ok(None) => {
                let chunk = c.member.chunk;
                let uncompressed_len = c.member.pos;
                let src = c.member.into_source();
                let info = ChunkInfo {
                    offset: chunk,
                    compressed_len: src.offset() - chunk,
                    uncompressed_len,
                    entries: c.entries,
                };
                self.valid_end = info.end();
                self.state = State::Between(src);
                Ok(Step::ChunkEnd(info))
            }
            Err(e) => self.chunk_failed(*c, e),
        }
    }

    /// A member failed: the end of the file inside it is a torn tail, anything else an error.
    fn chunk_failed(&mut self, c: ChunkScan<R>, e: ArchiveError) -> Result<Step, ArchiveError> {
        match e {
            ArchiveError::Truncated { .. } => {
                let mut src = c.member.into_source();
                let file_len = src.drain().unwrap_or_else(|_| src.offset());
                Ok(Step::End(self.finish(file_len, Tail::Truncated)))
            }
            e => {
                let at = c.member.source().offset();
                self.fail(at, e)
            }
        }
    }
}
