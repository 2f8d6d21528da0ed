//! The store's errors. Each names what the operator needs to find the fault: the user, the
//! file (path), and where relevant the offset or the unique id.

use std::io;
use std::path::PathBuf;

use formats::archive::ArchiveError;
use formats::Guid;

/// An error of the per-user store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The user name cannot name a store.
    #[error("user name {name:?}: expected {expected}")]
    InvalidUserName {
        /// The name given (cut to 200 characters).
        name: String,
        /// What a user name must be.
        expected: &'static str,
    },
    /// Another process holds the user's lock.
    #[error("user {user}: locked by another run ({holder}; lock file {path})")]
    Locked {
        /// The user.
        user: String,
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into the lock file (pid and start time), if readable.
        holder: String,
    },
    /// A file operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The index database failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// The index file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The index was written by a newer version of mailbackup.
    #[error("{path}: expected an index schema version up to {supported}, found version {found} (written by a newer mailbackup)")]
    IndexTooNew {
        /// The index file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest version this program knows.
        supported: u32,
    },
    /// A read-only open found an index older than this program's schema.
    #[error("{path}: expected index schema version {expected}, found {found} (open the store for writing once to upgrade it)")]
    IndexTooOld {
        /// The index file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The version this program writes.
        expected: u32,
    },
    /// The index holds something that breaks the store's rules.
    #[error("{path}: expected {expected}, found {found}")]
    IndexInvalid {
        /// The index file.
        path: PathBuf,
        /// The rule.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// The data file is shorter than the chunks the index committed: data the index points
    /// at is gone. Never "fixed" silently.
    #[error("{path}: the index committed {committed} bytes of chunks, but the data file holds only {actual} bytes (backup-server repair keeps every intact chunk)")]
    DataFileShort {
        /// The data file.
        path: PathBuf,
        /// End of the last committed chunk.
        committed: u64,
        /// The file's length.
        actual: u64,
    },
    /// The data file the index names does not exist.
    #[error("{path}: missing, but the index committed {committed} bytes of chunks in it (backup-server repair makes an empty store the next run fills again)")]
    DataFileMissing {
        /// The data file.
        path: PathBuf,
        /// End of the last committed chunk.
        committed: u64,
    },
    /// Data files exist but the index does not: only `reindex` or `repair` may rebuild it.
    #[error("{dir}: data file {data_file} exists but the index backupstate.sqlite3 does not; run backup-server repair (or reindex) for this user")]
    IndexMissing {
        /// The user's directory.
        dir: PathBuf,
        /// The data file found.
        data_file: String,
    },
    /// There is no store for this user.
    #[error("{dir}: no store for user {user}")]
    NoStore {
        /// The user.
        user: String,
        /// Where it would be.
        dir: PathBuf,
    },
    /// The index or data file belongs to another user.
    #[error("{path}: expected a store of user {expected:?}, found one of user {found:?}")]
    WrongUser {
        /// The file.
        path: PathBuf,
        /// The user asked for.
        expected: String,
        /// The user it names.
        found: String,
    },
    /// A message's bytes do not hash to the GUID they were offered under: never stored.
    #[error("message {expected}: expected bytes whose SHA-1 is the GUID, found SHA-1 {found} (changed underfoot?)")]
    GuidMismatch {
        /// The GUID announced (from cyrus.index).
        expected: Guid,
        /// The SHA-1 of the bytes received.
        found: Guid,
    },
    /// A data source gave a different number of bytes than announced.
    #[error("{what}: expected {expected} bytes, found {found}")]
    LengthMismatch {
        /// What was being read.
        what: String,
        /// Announced length.
        expected: u64,
        /// Bytes available.
        found: u64,
    },
    /// Reading an entry's data from the caller's source failed.
    #[error("{what}: reading from the source: {source}")]
    Source {
        /// What was being read.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The data file could not be written or read as an archive.
    #[error("{path}: {source}")]
    Archive {
        /// The data file.
        path: PathBuf,
        /// The error, with the offsets.
        #[source]
        source: ArchiveError,
    },
    /// A folder's meta file could not be parsed.
    #[error("folder {unique_id}: {file}: {found}")]
    MetaFile {
        /// The folder's unique id.
        unique_id: String,
        /// Which file.
        file: &'static str,
        /// What the parser said (with the byte offset).
        found: String,
    },
    /// The caller asked for something the store's rules forbid.
    #[error("{what}: expected {expected}, found {found}")]
    Invalid {
        /// What was asked.
        what: &'static str,
        /// The rule.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// A time cannot be stored (the index keeps entry times as nanoseconds in 64 bits).
    #[error("time {0}: expected a time between 1678 and 2262")]
    TimeOutOfRange(formats::Timestamp),
    /// The data file is damaged before its end (reindex and verify stop there).
    #[error("{path}: damaged data: {source} (backup-server repair keeps every intact chunk)")]
    Damaged {
        /// The data file.
        path: PathBuf,
        /// What the scanner found, with the chunk offset.
        #[source]
        source: ArchiveError,
    },
    /// An earlier error left the run writer unusable; only dropping it (abort) is left.
    #[error("the run was abandoned after an earlier error; drop it and begin a new run")]
    RunBroken,
    /// The index cannot be read read-only: SQLite could not open it as it stands (most
    /// often: it must create or grow `backupstate.sqlite3-shm`, and the file system is
    /// full), and the way that creates nothing (reading the file as immutable) would not be
    /// exact now.
    #[error("{path}: cannot be read without writing a file ({source}; is its file system full?), and reading it as it stands on disk is not safe now: {blocker}")]
    ReadOnlyBlocked {
        /// The index file.
        path: PathBuf,
        /// What SQLite said to the ordinary read-only open.
        #[source]
        source: rusqlite::Error,
        /// Why the immutable read is not safe.
        blocker: ReadBlocker,
    },
}

/// Why an index cannot be read as immutable (see [`StoreError::ReadOnlyBlocked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBlocker {
    /// A writer (backup run, compaction, reindex) holds the store: the index may change.
    WriterRunning {
        /// What the holder wrote into the lock file.
        holder: String,
    },
    /// The store has no writer's lock file, so no lock keeps a writer out.
    NoLockFile {
        /// The lock file that is missing.
        path: PathBuf,
    },
    /// The WAL holds committed transactions not yet copied into the index file (a writer
    /// ended without its final checkpoint, e.g. it was killed): the file alone is stale.
    WalNotEmpty {
        /// The `-wal` file.
        wal: PathBuf,
        /// Its length.
        len: u64,
    },
}

impl std::fmt::Display for ReadBlocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadBlocker::WriterRunning { holder } => write!(
                f,
                "a writer holds the store ({holder}); retry when it has finished, or free space"
            ),
            ReadBlocker::NoLockFile { path } => write!(
                f,
                "there is no writer's lock file {} to keep a writer out; free space and retry",
                path.display()
            ),
            ReadBlocker::WalNotEmpty { wal, len } => write!(
                f,
                "{} holds {len} bytes of commits not yet in the index file (a writer was stopped before its last checkpoint); free space and retry (the next reader or writer will read them)",
                wal.display()
            ),
        }
    }
}

impl StoreError {
    /// Whether `backup-server repair` mends what this error says: a data file cut short or
    /// missing, damaged data, an index missing or not a valid index. Such a store fails
    /// every run until it is repaired, so the error text a run reports names the repair.
    pub fn repair_mends(&self) -> bool {
        match self {
            StoreError::DataFileShort { .. }
            | StoreError::DataFileMissing { .. }
            | StoreError::IndexMissing { .. }
            | StoreError::IndexInvalid { .. }
            | StoreError::Damaged { .. } => true,
            StoreError::Archive { source, .. } => !matches!(source, ArchiveError::Io { .. }),
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ),
            _ => false,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a path to I/O errors.
pub(crate) trait IoContext<T> {
    fn io(self, path: &std::path::Path, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io(self, path: &std::path::Path, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            op,
            source,
        })
    }
}

/// Attaches the index path to SQLite errors.
pub(crate) trait SqlContext<T> {
    fn sql(self, path: &std::path::Path) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn sql(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }
}
