//! The data file on disk: opening, appending position, syncing, cutting, and reading at an
//! offset without moving anyone else's file position.
//!
//! The bytes are formats::archive's (docs/archive-format.md). This module only knows the
//! file: its length, `fsync`, `ftruncate`, and positional reads ([`PositionalReader`]) so that
//! several readers of one store never share a seek position.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{IoContext, Result};

/// An open data file.
#[derive(Debug)]
pub(crate) struct DataFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
}

impl DataFile {
    /// Opens an existing data file for reading and writing (`write` true) or reading.
    pub(crate) fn open(path: &Path, write: bool) -> Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .io(path, "opening the data file")?;
        Ok(DataFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Creates a new, empty data file, 0600 (failing if it exists), synced with its
    /// directory.
    pub(crate) fn create(path: &Path) -> Result<DataFile> {
        let file = crate::private::create_new(path).io(path, "creating the data file")?;
        file.sync_all().io(path, "syncing the new data file")?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(DataFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file's length now.
    pub(crate) fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .io(&self.path, "reading the data file's length")?
            .len())
    }

    /// Cuts the file to `len` bytes and syncs it.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .io(&self.path, "cutting the data file's torn tail")?;
        self.file
            .sync_all()
            .io(&self.path, "syncing the cut data file")
    }

    /// A second handle on the file, positioned at `offset`, for an appender.
    pub(crate) fn appender(&self, offset: u64) -> Result<File> {
        let mut f = self
            .file
            .try_clone()
            .io(&self.path, "duplicating the data file handle")?;
        f.seek(SeekFrom::Start(offset))
            .io(&self.path, "seeking to the end of the committed data")?;
        Ok(f)
    }

    /// A reader at `offset` that does not move any shared position.
    pub(crate) fn reader(&self, offset: u64) -> PositionalReader<'_> {
        PositionalReader {
            file: &self.file,
            pos: offset,
        }
    }
}

/// `fsync` of a directory, so that a file created or renamed in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .io(dir, "syncing the directory")
}

/// A positional reader over a file: `pread` at its own offset. Many can read one file at
/// once, and none disturbs an appender's position.
#[derive(Debug)]
pub struct PositionalReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PositionalReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.file.metadata()?.len().checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}
