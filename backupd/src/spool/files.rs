//! How backupd opens and stats the spool's files: never following a symbolic link, and
//! reporting stat data as the protocol carries them.

use super::error::{io_err, SpoolError};
use formats::FileStat;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Opens a file for reading, not following a symbolic link.
pub(crate) fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// The stat data backupd reports for a file.
pub(crate) fn file_stat(meta: &std::fs::Metadata) -> FileStat {
    FileStat {
        size: meta.size(),
        mtime: formats::Timestamp {
            secs: meta.mtime(),
            // Always below 10^9 from the kernel.
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        inode: meta.ino(),
    }
}

/// `lstat` of one file; `None` if it does not exist.
pub(crate) fn stat_opt(path: &Path) -> Result<Option<FileStat>, SpoolError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(file_stat(&meta))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}
