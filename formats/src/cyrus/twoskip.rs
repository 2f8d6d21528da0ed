//! Reader of Cyrus's twoskip key-value database file (mailboxes.db and other Cyrus databases).
//!
//! The format, as Cyrus 3.x writes it (lib/cyrusdb_twoskip.c; unchanged from 3.0 to 3.10):
//! all integers are big-endian, every record starts on an 8-byte boundary.
//!
//! ```text
//! header (64 bytes)
//!   0  magic        "\xa1\x02\x8b\x0dtwoskip file\0\0\0\0" (20 bytes)
//!  20  version      u32, 1
//!  24  generation   u64, bumped by every repack
//!  32  num_records  u64, live keys
//!  40  repack_size  u64, current_size after the last repack
//!  48  current_size u64, file length at the last commit
//!  56  flags        u32, bit 0 = dirty (a transaction was under way)
//!  60  crc32        u32, CRC-32 (zlib) of bytes 0..60
//! record
//!   type u8 ('=' dummy, '+' add, '-' delete, '$' commit), level u8 (0..=31),
//!   keylen u16, vallen u32 (0xffff / 0xffffffff: a u64 with the real length follows),
//!   level+1 pointers u64, crc32 of the head (every byte before it), crc32 of the tail
//!   (key, value and zero padding to a multiple of 8), key, value, padding.
//! ```
//!
//! The dummy record sits at offset 64 with level 31 and no key; it heads the skip list. Keys are
//! linked in order through pointers: pointer `i+1` is the next record at skip level `i` for
//! `i >= 1`, and level 0 has two pointers, 0 and 1. A writer updates the older of the two (or
//! the one already rewritten in this transaction), so one of them always holds the link as of
//! the last commit. A reader takes the higher of the two that lies below `current_size`.
//! A replaced key gets a new `+` record and the old one is simply unlinked; a deleted key is
//! unlinked and its predecessor points at a `-` record whose single pointer leads on to the
//! next live record. Commit records (`$`) and 8-byte `" BLANK\x07\xa0"` pads (which keep record
//! heads within one 512-byte disk block) are never linked; a reader following pointers never
//! meets them.
//!
//! ## What lies past `current_size`
//!
//! A writer appends records past `current_size`, rewrites heads in place, and only at commit
//! sets `current_size` to the new length and clears the dirty flag. Bytes past `current_size`
//! therefore belong to a transaction that did not commit (under a shared lock: a writer that
//! crashed). This reader ignores them, and any pointer into them: what it yields is the state
//! of the last commit, which is also what Cyrus's recovery would leave. It never writes.
//!
//! Everything is read from a `&[u8]` holding the whole file ([`Twoskip`]; keys and values are
//! borrowed from it, never copied), or through a window of a file read on demand
//! ([`TwoskipReader`], for files too large to hold: its memory is one window, not the file).
//! Every CRC on the path is checked.
//!
//! ## Seeking
//!
//! [`Twoskip::iter_from`] and [`TwoskipReader::seek`] go down the skip levels to the first key
//! at or after a prefix, reading a few dozen records instead of every one before it. Keys are
//! compared as raw bytes, the order Cyrus 3.5 and later use for mailboxes.db and (unless a
//! database is opened with `CYRUSDB_MBOXSORT`) every twoskip file; mailboxes.db of 3.0 to 3.4
//! was kept in a mailbox-name order: do not seek in those. In a dirty file the upper levels may
//! point into the uncommitted tail, so there the seek walks level 0 from the start instead.

use thiserror::Error;

/// The first 20 bytes of every twoskip file.
pub const MAGIC: &[u8; 20] = b"\xa1\x02\x8b\x0dtwoskip file\0\0\0\0";
/// Length of the file header; the dummy record starts here.
pub const HEADER_SIZE: usize = 64;
/// The only version Cyrus 3.x writes (and the highest it reads).
pub const VERSION: u32 = 1;
/// Highest skip level Cyrus uses (the dummy record has it).
const MAX_LEVEL: u8 = 31;
/// Smallest possible record: 8-byte head, one pointer, two CRCs.
const MIN_RECORD: u64 = 24;
/// The dummy record that heads the list.
const DUMMY_OFFSET: u64 = HEADER_SIZE as u64;
/// Smallest sensible `current_size`: the header and a record.
const MIN_SIZE: u64 = DUMMY_OFFSET + MIN_RECORD;

const DUMMY: u8 = b'=';
const ADD: u8 = b'+';
const DELETE: u8 = b'-';

/// A twoskip file that cannot be read. Every variant names the byte offset (in the file) of the
/// problem; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TwoskipError {
    /// The file is shorter than its header.
    #[error("twoskip: at byte 0: expected a 64-byte header, found a file of {len} bytes")]
    TooShort {
        /// Length of the data given.
        len: usize,
    },
    /// The magic bytes are not twoskip's (another database type, or not a database).
    #[error("twoskip: at byte 0: expected the twoskip magic, found {found:02x?}")]
    BadMagic {
        /// The first 20 bytes of the file.
        found: Vec<u8>,
    },
    /// A version this reader does not know.
    #[error("twoskip: at byte 20: expected version 1, found {found}")]
    BadVersion {
        /// The version in the header.
        found: u32,
    },
    /// The header's CRC does not match its bytes.
    #[error("twoskip: at byte 60: expected header CRC {expected:08x}, found {found:08x}")]
    HeaderCrc {
        /// CRC computed over bytes 0..60.
        expected: u32,
        /// CRC stored in the header.
        found: u32,
    },
    /// `current_size` is too small to hold the dummy record.
    #[error("twoskip: at byte 48: expected current_size of at least {min}, found {found}")]
    BadCurrentSize {
        /// Smallest sensible value (header plus a record).
        min: u64,
        /// Value in the header.
        found: u64,
    },
    /// The file ends before `current_size`: a truncated copy.
    #[error("twoskip: at byte {len}: expected the file to go on to current_size {current_size}, found its end")]
    Truncated {
        /// Value in the header.
        current_size: u64,
        /// Length of the data (or where reading stopped).
        len: u64,
    },
    /// The file could not be read (only from a [`TwoskipReader`]).
    #[error("twoskip: at byte {offset}: expected to read the file, found an error: {message}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// What the system said.
        message: String,
    },
    /// A record is malformed, points outside the committed part, or fails its CRC.
    #[error("twoskip: record at byte {offset}: expected {expected}, found {found}")]
    BadRecord {
        /// File offset of the record (for a bad pointer: of the record holding it).
        offset: u64,
        /// What the format requires there.
        expected: &'static str,
        /// What was there.
        found: String,
    },
}

/// The fields of the 64-byte file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version (1).
    pub version: u32,
    /// Repack counter: offsets are only comparable within one generation.
    pub generation: u64,
    /// Number of live keys, as the last commit recorded it.
    pub num_records: u64,
    /// `current_size` right after the last repack.
    pub repack_size: u64,
    /// Length of the file at the last commit; bytes past it are an uncommitted transaction.
    pub current_size: u64,
    /// A write transaction was started and not committed (the writer is running, or crashed).
    pub dirty: bool,
}

/// One live key and its value, borrowed from the file (or from a reader's window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key bytes.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
    /// File offset of the record holding them (for error messages upstream).
    pub offset: u64,
}

/// An opened twoskip file held in memory: header checked, records read on demand.
#[derive(Debug, Clone, Copy)]
pub struct Twoskip<'a> {
    data: &'a [u8],
    header: Header,
}

impl<'a> Twoskip<'a> {
    /// Checks the header (magic, version, CRC, `current_size`) and the dummy record.
    pub fn open(data: &'a [u8]) -> Result<Self, TwoskipError> {
        let header = parse_header(data.get(..HEADER_SIZE).unwrap_or(data))?;
        if header.current_size > data.len() as u64 {
            return Err(TwoskipError::Truncated {
                current_size: header.current_size,
                len: data.len() as u64,
            });
        }
        let mut db = Twoskip { data, header };
        check_dummy(&mut db)?;
        Ok(db)
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The live keys in the file's order, with their values. Stops at the first damaged
    /// record, yielding its error once.
    pub fn iter(&self) -> Iter<'a> {
        let mut db = *self;
        let walk = Walk::start(&mut db);
        Iter { db, walk }
    }

    /// Like [`Twoskip::iter`], from the first key at or after `prefix` in raw byte order
    /// (see the module documentation).
    pub fn iter_from(&self, prefix: &[u8]) -> Iter<'a> {
        let mut db = *self;
        let walk = Walk::seek(&mut db, prefix);
        Iter { db, walk }
    }

    fn entry(&self, rec: &Rec) -> Entry<'a> {
        let bytes = &self.data[rec.offset as usize..];
        Entry {
            key: rec.key(bytes),
            value: rec.value(bytes),
            offset: rec.offset,
        }
    }
}

impl Fetch for Twoskip<'_> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn fetch(&mut self, at: u64, from: u64) -> Result<(Rec, &[u8]), TwoskipError> {
        check_pointer(at, from, self.header.current_size)?;
        let bytes = &self.data[at as usize..self.header.current_size as usize];
        Ok((Rec::parse(bytes, at)?, bytes))
    }
}

/// Iterator over the live entries of a [`Twoskip`] file, in key order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    db: Twoskip<'a>,
    walk: Walk,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<Entry<'a>, TwoskipError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.walk.step(&mut self.db) {
            Ok(Some(rec)) => Some(Ok(self.db.entry(&rec))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<'a> IntoIterator for &Twoskip<'a> {
    type Item = Result<Entry<'a>, TwoskipError>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Random access to a file's bytes: what [`TwoskipReader`] needs from the layer doing I/O
/// (backupd implements it for a file with `pread`).
pub trait ReadAt {
    /// Reads into `buf` from `offset`; fewer bytes than asked only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl ReadAt for &[u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset).map_or(self.len(), |o| o.min(self.len()));
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Bytes read from the file per refill of a [`TwoskipReader`]'s window. Records of a repacked
/// file lie in key order, so one read serves hundreds of them.
const WINDOW: usize = 256 * 1024;

/// A twoskip file read through a window: memory is one window (or one record, if larger),
/// whatever the size of the file. Entries borrow from the window until the next call.
#[derive(Debug)]
pub struct TwoskipReader<R> {
    src: R,
    header: Header,
    window: Vec<u8>,
    window_start: u64,
    window_size: usize,
    walk: Walk,
}

impl<R: ReadAt> TwoskipReader<R> {
    /// Reads and checks the header and the dummy record; positions before the first key.
    pub fn open(src: R) -> Result<Self, TwoskipError> {
        Self::with_window(src, WINDOW)
    }

    /// Like [`TwoskipReader::open`], reading `window_size` bytes at a time.
    pub fn with_window(src: R, window_size: usize) -> Result<Self, TwoskipError> {
        let mut head = [0u8; HEADER_SIZE];
        let n = read_full(&src, &mut head, 0)?;
        let header = parse_header(&head[..n])?;
        // The file must reach current_size: this also bounds every read to the file's size.
        let mut last = [0u8; 1];
        if read_full(&src, &mut last, header.current_size - 1)? == 0 {
            return Err(TwoskipError::Truncated {
                current_size: header.current_size,
                len: header.current_size - 1,
            });
        }
        let mut reader = TwoskipReader {
            src,
            header,
            window: Vec::new(),
            window_start: 0,
            window_size,
            walk: Walk::done(),
        };
        check_dummy(&mut reader)?;
        reader.walk = Walk::start(&mut reader);
        Ok(reader)
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Goes back to the first key.
    pub fn rewind(&mut self) {
        self.walk = Walk::start(self);
    }

    /// Positions before the first key at or after `prefix` in raw byte order (see the
    /// module documentation).
    pub fn seek(&mut self, prefix: &[u8]) {
        self.walk = Walk::seek(self, prefix);
    }

    /// The next live entry in key order, or `None` at the end. After an error, `None`.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, TwoskipError> {
        let mut walk = std::mem::replace(&mut self.walk, Walk::done());
        let step = walk.step(self);
        self.walk = walk;
        let Some(rec) = step? else {
            return Ok(None);
        };
        // The last record fetched is `rec`: the window holds it.
        let bytes = &self.window[(rec.offset - self.window_start) as usize..];
        Ok(Some(Entry {
            key: rec.key(bytes),
            value: rec.value(bytes),
            offset: rec.offset,
        }))
    }

    /// Makes the window hold `len` bytes at `offset` (fewer where the committed part ends).
    fn fill(&mut self, offset: u64, len: usize) -> Result<&[u8], TwoskipError> {
        let end = self.header.current_size;
        let want = (len as u64).min(end - offset) as usize;
        let have = offset >= self.window_start
            && offset + want as u64 <= self.window_start + self.window.len() as u64;
        if !have {
            let size = (end - offset).min(self.window_size.max(want) as u64) as usize;
            self.window.resize(size, 0);
            let n = read_full(&self.src, &mut self.window, offset)?;
            self.window.truncate(n);
            self.window_start = offset;
            if n < want {
                return Err(TwoskipError::Truncated {
                    current_size: end,
                    len: offset + n as u64,
                });
            }
        }
        let from = (offset - self.window_start) as usize;
        Ok(&self.window[from..])
    }
}

impl<R: ReadAt> Fetch for TwoskipReader<R> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn fetch(&mut self, at: u64, from: u64) -> Result<(Rec, &[u8]), TwoskipError> {
        check_pointer(at, from, self.header.current_size)?;
        let size = Rec::size(self.fill(at, MAX_HEAD)?, at)?;
        let bytes = self.fill(at, size)?;
        Ok((Rec::parse(bytes, at)?, bytes))
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full<R: ReadAt>(src: &R, buf: &mut [u8], offset: u64) -> Result<usize, TwoskipError> {
    let mut n = 0;
    while n < buf.len() {
        match src.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(TwoskipError::Io {
                    offset: offset + n as u64,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(n)
}

fn parse_header(head: &[u8]) -> Result<Header, TwoskipError> {
    if head.len() < HEADER_SIZE {
        return Err(TwoskipError::TooShort { len: head.len() });
    }
    if &head[..20] != MAGIC {
        return Err(TwoskipError::BadMagic {
            found: head[..20].to_vec(),
        });
    }
    let version = be_u32(&head[20..]);
    if version != VERSION {
        return Err(TwoskipError::BadVersion { found: version });
    }
    let stored = be_u32(&head[60..]);
    let computed = crc32fast::hash(&head[..60]);
    if stored != computed {
        return Err(TwoskipError::HeaderCrc {
            expected: computed,
            found: stored,
        });
    }
    let header = Header {
        version,
        generation: be_u64(&head[24..]),
        num_records: be_u64(&head[32..]),
        repack_size: be_u64(&head[40..]),
        current_size: be_u64(&head[48..]),
        dirty: be_u32(&head[56..]) & 1 != 0,
    };
    if header.current_size < MIN_SIZE {
        return Err(TwoskipError::BadCurrentSize {
            min: MIN_SIZE,
            found: header.current_size,
        });
    }
    Ok(header)
}

/// The record at offset 64 must be the dummy: type '=', level 31.
fn check_dummy<F: Fetch>(src: &mut F) -> Result<(), TwoskipError> {
    let (dummy, _) = src.fetch(DUMMY_OFFSET, DUMMY_OFFSET)?;
    if dummy.kind != DUMMY || dummy.level != MAX_LEVEL {
        return Err(bad(
            DUMMY_OFFSET,
            "the dummy record ('=' at level 31)",
            format!("type {:?} at level {}", dummy.kind as char, dummy.level),
        ));
    }
    Ok(())
}

/// What the level-0 walk needs: the header, and the record at an offset with the bytes from
/// there on (at least the whole record).
trait Fetch {
    fn header(&self) -> &Header;
    fn fetch(&mut self, at: u64, from: u64) -> Result<(Rec, &[u8]), TwoskipError>;
}

/// Where a pointer may lead: an aligned offset past the header whose record can fit below
/// `current_size`. `from` is the record holding the pointer, for the error.
fn check_pointer(at: u64, from: u64, end: u64) -> Result<(), TwoskipError> {
    let fits = at.checked_add(MIN_RECORD).is_some_and(|e| e <= end);
    if at < DUMMY_OFFSET || at % 8 != 0 || !fits {
        return Err(bad(
            from,
            "a pointer to an 8-byte aligned record inside the committed part",
            format!("{at} (current_size {end})"),
        ));
    }
    Ok(())
}

/// A record's layout, found by [`Rec::parse`] in bytes that start at the record.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u64,
    kind: u8,
    level: u8,
    /// Where the pointers start (8, or more with 64-bit lengths).
    ptrs_at: usize,
    key_at: usize,
    key_len: usize,
    value_len: usize,
}

/// Bytes enough to know any record's size: head and both 64-bit lengths.
const MAX_HEAD: usize = 24;

impl Rec {
    /// (keylen, vallen, where the pointers start) from the first bytes of a record.
    fn lengths(bytes: &[u8], offset: u64) -> Result<(u64, u64, usize), TwoskipError> {
        let head = take(bytes, 0, 8, offset)?;
        let mut pos = 8;
        let mut keylen = u64::from(be_u16(&head[2..]));
        let mut vallen = u64::from(be_u32(&head[4..]));
        if keylen == u64::from(u16::MAX) {
            keylen = be_u64(take(bytes, pos, 8, offset)?);
            pos += 8;
        }
        if vallen == u64::from(u32::MAX) {
            vallen = be_u64(take(bytes, pos, 8, offset)?);
            pos += 8;
        }
        Ok((keylen, vallen, pos))
    }

    /// The whole record's length, from its first bytes (up to [`MAX_HEAD`]).
    fn size(bytes: &[u8], offset: u64) -> Result<usize, TwoskipError> {
        let (keylen, vallen, ptrs_at) = Self::lengths(bytes, offset)?;
        let level = usize::from(bytes[1]);
        keylen
            .checked_add(vallen)
            .and_then(|n| n.checked_next_multiple_of(8))
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| n.checked_add(ptrs_at + 8 * (level + 1) + 8))
            .ok_or_else(|| {
                bad(
                    offset,
                    "key and value lengths",
                    format!("{keylen} + {vallen}"),
                )
            })
    }

    /// Parses and checks (level, lengths, both CRCs) the record that `bytes` starts with.
    fn parse(bytes: &[u8], offset: u64) -> Result<Rec, TwoskipError> {
        let (keylen, vallen, ptrs_at) = Self::lengths(bytes, offset)?;
        let (kind, level) = (bytes[0], bytes[1]);
        if level > MAX_LEVEL {
            return Err(bad(offset, "a level of at most 31", level.to_string()));
        }
        let crc_at = ptrs_at + 8 * (usize::from(level) + 1);
        let crcs = take(bytes, crc_at, 8, offset)?;
        let (head_crc, tail_crc) = (be_u32(crcs), be_u32(&crcs[4..]));
        let computed = crc32fast::hash(&bytes[..crc_at]);
        if computed != head_crc {
            return Err(bad(
                offset,
                "a record head matching its CRC",
                format!("CRC {computed:08x}, stored {head_crc:08x}"),
            ));
        }
        let key_at = crc_at + 8;
        let tail_len = Self::size(bytes, offset)? - key_at;
        let tail = take(bytes, key_at, tail_len, offset)?;
        let computed = crc32fast::hash(tail);
        if computed != tail_crc {
            return Err(bad(
                offset,
                "key and value matching the tail CRC",
                format!("CRC {computed:08x}, stored {tail_crc:08x}"),
            ));
        }
        // keylen + vallen <= tail_len, which fits in usize.
        Ok(Rec {
            offset,
            kind,
            level,
            ptrs_at,
            key_at,
            key_len: keylen as usize,
            value_len: vallen as usize,
        })
    }

    fn ptr(&self, bytes: &[u8], i: usize) -> u64 {
        be_u64(&bytes[self.ptrs_at + 8 * i..])
    }

    fn key<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.key_at..self.key_at + self.key_len]
    }

    fn value<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        let at = self.key_at + self.key_len;
        &bytes[at..at + self.value_len]
    }

    /// The next record at skip level `level` (Cyrus's _getloc). Level 0 has two pointers:
    /// the higher one below `current_size` is the link as of the last commit (the other
    /// may be stale, or lead into an uncommitted tail). Level i >= 1 is pointer i+1.
    /// 0 means the end of the list.
    fn next(&self, bytes: &[u8], level: u8, end: u64) -> Result<u64, TwoskipError> {
        if level >= self.level.max(1) {
            return Err(bad(
                self.offset,
                "a linked record with a pointer at this level",
                format!("level {}, asked for {level}", self.level),
            ));
        }
        if level > 0 {
            return Ok(self.ptr(bytes, usize::from(level) + 1));
        }
        let (a, b) = (self.ptr(bytes, 0), self.ptr(bytes, 1));
        match (a < end, b < end) {
            (true, true) => Ok(a.max(b)),
            (true, false) => Ok(a),
            (false, true) => Ok(b),
            (false, false) => Err(bad(
                self.offset,
                "a level-0 pointer below current_size",
                format!("{a} and {b} (current_size {end})"),
            )),
        }
    }
}

/// The level-0 walk shared by [`Iter`] and [`TwoskipReader`].
#[derive(Debug, Clone)]
struct Walk {
    cursor: Cursor,
    /// A bound on the records a sound file can link: a damaged file with a pointer loop
    /// ends in an error instead of running forever.
    steps_left: u64,
}

/// Where a [`Walk`] stands.
#[derive(Debug, Clone)]
enum Cursor {
    /// The next record to read, and the record whose pointer leads there.
    Next {
        at: u64,
        from: u64,
    },
    /// The chain is broken after the last entry yielded: report it on the next call.
    Failed(TwoskipError),
    Done,
}

impl Walk {
    fn done() -> Walk {
        Walk {
            cursor: Cursor::Done,
            steps_left: 0,
        }
    }

    fn after<F: Fetch>(src: &mut F, rec_at: u64) -> Walk {
        let end = src.header().current_size;
        let cursor = match src
            .fetch(rec_at, rec_at)
            .and_then(|(rec, bytes)| rec.next(bytes, 0, end))
        {
            Ok(next) => Cursor::Next {
                at: next,
                from: rec_at,
            },
            Err(e) => Cursor::Failed(e),
        };
        Walk {
            cursor,
            steps_left: end / MIN_RECORD,
        }
    }

    fn start<F: Fetch>(src: &mut F) -> Walk {
        Self::after(src, DUMMY_OFFSET)
    }

    /// Down the skip levels to the last record whose key is below `prefix`; the walk goes on
    /// from there. In a dirty file, along level 0 only (see the module documentation).
    fn seek<F: Fetch>(src: &mut F, prefix: &[u8]) -> Walk {
        match Self::find_before(src, prefix) {
            Ok(at) => Self::after(src, at),
            Err(e) => Walk {
                cursor: Cursor::Failed(e),
                steps_left: 0,
            },
        }
    }

    fn find_before<F: Fetch>(src: &mut F, prefix: &[u8]) -> Result<u64, TwoskipError> {
        let end = src.header().current_size;
        let top = if src.header().dirty { 1 } else { MAX_LEVEL };
        let mut steps = end / MIN_RECORD;
        let mut at = DUMMY_OFFSET;
        for level in (0..top).rev() {
            loop {
                let next = {
                    let (rec, bytes) = src.fetch(at, at)?;
                    rec.next(bytes, level, end)?
                };
                let mut probe = next;
                // Delete stand-ins exist only at level 0; step over them to a real key.
                let below = loop {
                    if probe == 0 || steps == 0 {
                        break false;
                    }
                    steps -= 1;
                    let (rec, bytes) = src.fetch(probe, at)?;
                    match rec.kind {
                        DELETE => probe = rec.ptr(bytes, 0),
                        ADD => break rec.key(bytes) < prefix,
                        other => return Err(unexpected(&rec, other)),
                    }
                };
                if !below {
                    break;
                }
                at = probe;
            }
        }
        Ok(at)
    }

    /// The next live record, following delete stand-ins.
    fn step<F: Fetch>(&mut self, src: &mut F) -> Result<Option<Rec>, TwoskipError> {
        let (mut at, from) = match std::mem::replace(&mut self.cursor, Cursor::Done) {
            Cursor::Next { at, from } => (at, from),
            Cursor::Failed(e) => return Err(e),
            Cursor::Done => return Ok(None),
        };
        let end = src.header().current_size;
        loop {
            if at == 0 {
                return Ok(None);
            }
            if self.steps_left == 0 {
                return Err(bad(
                    from,
                    "a level-0 chain that ends",
                    "more links than the file can hold records (a pointer loop)".to_string(),
                ));
            }
            self.steps_left -= 1;
            let (rec, bytes) = src.fetch(at, from)?;
            match rec.kind {
                ADD => {
                    self.cursor = match rec.next(bytes, 0, end) {
                        Ok(next) => Cursor::Next {
                            at: next,
                            from: rec.offset,
                        },
                        Err(e) => Cursor::Failed(e),
                    };
                    return Ok(Some(rec));
                }
                // A deleted key: its stand-in points on to the next live record.
                DELETE => at = rec.ptr(bytes, 0),
                other => return Err(unexpected(&rec, other)),
            }
        }
    }
}

fn unexpected(rec: &Rec, kind: u8) -> TwoskipError {
    bad(
        rec.offset,
        "an add ('+') or delete ('-') record in the level-0 chain",
        format!("type {:?}", kind as char),
    )
}

/// `len` bytes of `bytes` at `pos`, or an error naming the record at `offset`.
fn take(bytes: &[u8], pos: usize, len: usize, offset: u64) -> Result<&[u8], TwoskipError> {
    pos.checked_add(len)
        .and_then(|end| bytes.get(pos..end))
        .ok_or_else(|| {
            bad(
                offset,
                "a record that ends inside the committed part",
                format!(
                    "{len} bytes needed at byte {}, committed part ends at {}",
                    offset + pos as u64,
                    offset + bytes.len() as u64
                ),
            )
        })
}

fn bad(offset: u64, expected: &'static str, found: String) -> TwoskipError {
    TwoskipError::BadRecord {
        offset,
        expected,
        found,
    }
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
