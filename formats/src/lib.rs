//! Pure parsers and writers for the bytes mailbackup reads and writes.
//!
//! Nothing in this crate touches a socket, a thread or the filesystem: every parser takes
//! `&[u8]` (or `impl Read`), every writer takes `impl Write`. The I/O lives in `backupd` and
//! `backup-server`; this crate is the layer below them, and the layer the fuzz targets test.
//!
//! * [`cyrus`]: what Cyrus IMAP 3.x keeps on disk (cyrus.header, cyrus.index, the mailbox
//!   list in mailboxes.db and the dlist notation they share).
//! * [`archive`]: mailbackup's data file, gzip members of tar entries.
//! * [`protocol`]: the frames backupd and the backup host exchange (docs/protocol.md).
//! * [`imap`]: an IMAP server's responses, as the restore's IMAP client reads them.
//! * [`Guid`] and [`Timestamp`]: the message GUID and the point in time both of them carry.

pub mod archive;
pub mod cyrus;
pub mod imap;
pub mod protocol;
mod types;

pub use types::{FileStat, Guid, ParseGuidError, ParseTimestampError, Timestamp};

use std::fmt;

/// A parse error placed in the file it came from: parsers see bytes and report offsets; the
/// caller that read the file knows its name and wraps the error with it.
#[derive(Debug)]
pub struct InFile<E> {
    /// The file the bytes came from, as the operator would name it (usually its path).
    pub file: String,
    /// What the parser found wrong, with the offset inside that file.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for InFile<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for InFile<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Attaches a file name to the error of a parse result.
pub trait InFileExt<T, E> {
    /// `Err(e)` becomes `Err(InFile { file, error: e })`.
    fn in_file(self, file: impl fmt::Display) -> Result<T, InFile<E>>;
}

impl<T, E> InFileExt<T, E> for Result<T, E> {
    fn in_file(self, file: impl fmt::Display) -> Result<T, InFile<E>> {
        self.map_err(|error| InFile {
            file: file.to_string(),
            error,
        })
    }
}
