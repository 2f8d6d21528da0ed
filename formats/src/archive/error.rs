//! Errors of the archive format.
//!
//! Every error that comes from the file's bytes names where: `chunk` is the compressed
//! offset of the gzip member in the data file, `at` the offset inside that member's
//! uncompressed tar stream. The caller adds the file name (see `crate::InFile`).

use std::io;

/// An error reading or writing a data file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The underlying file failed.
    #[error("I/O error at byte {offset} of the data file: {source}")]
    Io {
        /// Compressed offset where it happened.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A gzip member is damaged: bad header, bad deflate data, or CRC/ISIZE mismatch.
    #[error("chunk at byte {chunk}: expected an intact gzip member, found {found}")]
    Gzip {
        /// Compressed offset of the member.
        chunk: u64,
        /// What flate2 reported.
        found: String,
    },
    /// The file ends inside the chunk before the entry asked for is complete.
    #[error("chunk at byte {chunk}: expected more data at offset {at} of the chunk, found the end of the file")]
    Truncated {
        /// Compressed offset of the member.
        chunk: u64,
        /// Uncompressed offset inside the chunk.
        at: u64,
    },
    /// A tar header block is malformed.
    #[error("chunk at byte {chunk}, offset {at}: expected {expected}, found {found}")]
    Tar {
        /// Compressed offset of the member.
        chunk: u64,
        /// Uncompressed offset of the block inside the chunk.
        at: u64,
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A PAX extended header record is malformed.
    #[error(
        "chunk at byte {chunk}, offset {at}: expected {expected} in the PAX header, found {found}"
    )]
    Pax {
        /// Compressed offset of the member.
        chunk: u64,
        /// Uncompressed offset of the record inside the chunk.
        at: u64,
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A `MAILBACKUP.*` field is missing or has a bad value.
    #[error("chunk at byte {chunk}, entry at offset {at}: expected {key} to be {expected}, found {found}")]
    Field {
        /// Compressed offset of the member.
        chunk: u64,
        /// Uncompressed offset of the entry's first header inside the chunk.
        at: u64,
        /// The PAX key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// The entry offset asked for is not inside the chunk.
    #[error("chunk at byte {chunk}: expected an entry at offset {at}, found the chunk ends at {chunk_len}")]
    EntryOutsideChunk {
        /// Compressed offset of the member.
        chunk: u64,
        /// The offset asked for.
        at: u64,
        /// Uncompressed length of the chunk.
        chunk_len: u64,
    },
    /// The writer was given metadata it must not write.
    #[error("invalid {what}: expected {expected}, found {found:?}")]
    InvalidMeta {
        /// Which field.
        what: &'static str,
        /// What is allowed.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// The writer's data source gave fewer bytes than announced.
    #[error("entry data: expected {expected} bytes, found {found}")]
    DataLength {
        /// Announced length.
        expected: u64,
        /// Bytes the source gave.
        found: u64,
    },
    /// Reading the entry's data from the caller's source failed.
    #[error("reading the entry's data from its source: {0}")]
    DataSource(#[source] io::Error),
    /// The writer was used out of order.
    #[error("archive writer: expected {expected}")]
    WriterState {
        /// What the call needs.
        expected: &'static str,
    },
}

impl ArchiveError {
    /// The compressed offset of the chunk the error is in, when it comes from the file's
    /// bytes. Valid data ends at or before this offset.
    pub fn chunk_offset(&self) -> Option<u64> {
        match self {
            ArchiveError::Gzip { chunk, .. }
            | ArchiveError::Truncated { chunk, .. }
            | ArchiveError::Tar { chunk, .. }
            | ArchiveError::Pax { chunk, .. }
            | ArchiveError::Field { chunk, .. }
            | ArchiveError::EntryOutsideChunk { chunk, .. } => Some(*chunk),
            _ => None,
        }
    }
}

/// A `MAILBACKUP.*` field problem before the location is attached.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub key: &'static str,
    pub expected: &'static str,
    pub found: String,
}

impl FieldError {
    pub(crate) fn new(key: &'static str, expected: &'static str, found: &[u8]) -> Self {
        FieldError {
            key,
            expected,
            found: format!("\"{}\"", super::pax::show(found)),
        }
    }

    pub(crate) fn missing(key: &'static str) -> Self {
        FieldError {
            key,
            expected: "present",
            found: "no such record".into(),
        }
    }

    pub(crate) fn at(self, chunk: u64, at: u64) -> ArchiveError {
        ArchiveError::Field {
            chunk,
            at,
            key: self.key,
            expected: self.expected,
            found: self.found,
        }
    }
}
