//! mailbackup's data file: gzip members back to back, each one chunk of tar entries.
//!
//! A user's `backupdata-<unix time>.tar.gz` is a run of gzip members. Each member (a
//! *chunk*) holds whole tar entries (POSIX ustar, each preceded by a PAX extended header
//! whose `MAILBACKUP.*` records carry the entry's metadata) and no end-of-archive blocks, so
//! chunks can be appended forever and GNU tar still lists and extracts the whole file.
//! docs/archive-format.md describes the bytes.
//!
//! * [`ArchiveWriter`] appends chunks to the end of a file and reports where each entry went.
//! * [`open_entry`] reads one entry by location, inflating only its own chunk.
//! * [`Scanner`] walks a whole file in constant memory, checks every chunk and finds where
//!   valid data ends (a torn tail after a crash).
//!
//! The crash story, as far as this layer goes: a chunk is valid only once its gzip trailer
//! (CRC-32 and length) is written and checks out. Bytes after the last valid chunk are a
//! torn tail; the store cuts them off at the length its index committed. Everything the
//! scanner reports inside a chunk is provisional until that chunk's [`ScanEvent::ChunkEnd`].

mod entry;
mod error;
mod member;
mod pax;
mod reader;
mod scan;
mod writer;

// The shared types, here too so that `use formats::archive::*` brings everything an entry names.
pub use crate::FileStat;
pub use crate::{Guid, Timestamp};
pub use entry::{
    EntryMeta, FolderMeta, Message, MetaFile, NameLink, RunEvent, RunMarker, UserFile,
    UserFileKind, FORMAT_VERSION, MAX_NAME_LEN, MAX_SCRIPT_NAME_LEN, MAX_UNIQUE_ID_LEN,
    VENDOR_PREFIX,
};
pub use error::ArchiveError;
pub(crate) use error::FieldError;
pub use member::SOURCE_BUF;
pub use pax::{PaxRecord, BLOCK, MAX_PAX_LEN};
pub use reader::{open_entry, EntryReader};
pub use scan::{ScanEnd, ScanEvent, ScannedEntry, Scanner, Tail};
pub use writer::{ArchiveWriter, DEFAULT_LEVEL};

/// Where an entry is: enough to read it back with [`open_entry`] and to index it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryLocation {
    /// Offset in the data file of the gzip member (chunk) holding the entry.
    pub chunk_offset: u64,
    /// Offset of the entry's first header block (its PAX header) in the chunk's
    /// uncompressed tar stream.
    pub header_offset: u64,
    /// Offset of the entry's data in the chunk's uncompressed tar stream.
    pub data_offset: u64,
    /// Length of the entry's data in bytes.
    pub data_len: u64,
}

/// One closed chunk: where it is and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkInfo {
    /// Offset of the gzip member in the data file.
    pub offset: u64,
    /// Length of the gzip member in the file (header, deflate data and trailer).
    pub compressed_len: u64,
    /// Length of the uncompressed tar stream (a multiple of 512).
    pub uncompressed_len: u64,
    /// Number of entries in it.
    pub entries: u64,
}

impl ChunkInfo {
    /// Offset in the file just past the member: where the next chunk starts.
    pub fn end(&self) -> u64 {
        self.offset + self.compressed_len
    }
}

/// What a reader learns from an entry's header blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The typed metadata.
    pub meta: EntryMeta,
    /// The tar path (from the PAX `path` record when there is one).
    pub path: String,
    /// Length of the data.
    pub size: u64,
    /// PAX records this version does not interpret, kept for the caller.
    pub unknown: Vec<PaxRecord>,
}
