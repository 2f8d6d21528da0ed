//! The per-user store: one directory per user holding a data file of gzip chunks
//! (formats::archive) and an SQLite index of it (`backupstate.sqlite3`).
//!
//! docs/store.md is the reference (layout, schema, crash story, queries, reindex). The
//! types follow the order things must happen in:
//!
//! * [`UserDir`]: where a user's store lives (a path; nothing opened).
//! * [`LockedDir`]: the same, with the user's writer lock held ([`UserDir::lock`]).
//! * [`Store`]: opened and recovered ([`LockedDir::open`]): an interrupted index switch
//!   finished, the torn tail cut. Only a `Store` can append, through a [`RunWriter`].
//! * [`StoreReader`]: a read-only view for ls and restore, beside a running backup.
//! * [`Catalog`]: the queries both of them answer.
//!
//! The crash story, in one paragraph: a run appends its entries to the end of the data file
//! and records them in one open SQLite write transaction; at commit it closes its last
//! chunk, fsyncs the data file, then commits the transaction. The index therefore never
//! names a byte that is not on disk, and bytes past the last committed chunk are garbage
//! of a run that did not commit: opening the store cuts them off. A data file shorter than
//! the index says is never "fixed": it is an error naming both lengths.

mod catalog;
mod check;
mod compare;
mod coverage;
mod damage;
pub use check::IndexFault;
pub(crate) use compare::compare_indexes;
pub use compare::{CompareCounts, RowDiff, RowFault, RowFolder, DERIVED_TABLES, NOT_DERIVED};
pub use damage::{record_damage, DamageAt, DamageRecording, DamagedMessage, Place};
mod datafile;
mod error;
pub mod headers;
mod index;
mod ingest;
mod layout;
mod lock;
mod open;
mod reindex;
mod rename;
mod run;
mod usage;

use std::sync::Arc;

pub use catalog::{
    Catalog, EntryRef, FolderAt, HeldFolder, HeldSnapshot, HeldUserFile, MessageAt, MessageState,
    RunInfo, SnapshotInfo, StoredMessage,
};
pub use datafile::PositionalReader;
pub use error::{ReadBlocker, Result, StoreError};
pub(crate) use index::IndexDb;
pub use index::{Migration, MIGRATIONS, SCHEMA_VERSION, TABLES};
pub(crate) use ingest::{from_ns, to_ns};
pub use layout::{
    data_file_name, data_file_secs, encode_name, is_data_file_name, UserDir, DATA_PREFIX,
    DATA_SUFFIX, INDEX_FILE, INDEX_NEW_FILE, INDEX_TMP_FILE, LOCK_FILE, READERS_LOCK_FILE,
};
pub use lock::UserLock;
pub(crate) use open::open_index_read_only;
pub use open::{LockedDir, OpenReport, Store, StoreReader};
pub(crate) use reindex::Rebuild;
pub use reindex::{rebuild_index, ReindexReport};
pub use rename::{move_store, MoveError, MoveOutcome, FORMER_NAMES_FILE};
pub use run::{Added, CommitSummary, FolderSnapshot, MessageInfo, MetaFileData, RunEnd, RunWriter};
pub use usage::{EntryState, Usage};

use formats::Timestamp;

/// Default cap on a chunk's uncompressed size: a single-message restore inflates at most
/// about this much (plus the message itself when it is larger).
pub const DEFAULT_CHUNK_CAP: u64 = 4 * 1024 * 1024;

/// Default size up to which a message is checked against its GUID in memory; larger ones
/// are spooled to an unnamed temporary file in the store's directory first.
pub const DEFAULT_VERIFY_IN_MEMORY: u64 = 2 * 1024 * 1024;

/// Where the store gets the time from: the system clock, or a test's.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(std::time::SystemTime::now()).unwrap_or(Timestamp::EPOCH)
    }
}

/// How a store writes.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A chunk is closed before an entry that would take its uncompressed size past this
    /// (an entry larger than the cap gets a chunk of its own).
    pub chunk_cap: u64,
    /// gzip level, 0 to 9.
    pub gzip_level: u32,
    /// Messages up to this size are verified in memory; larger ones through a temp file.
    pub verify_in_memory: u64,
    /// The clock entry times come from.
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            chunk_cap: DEFAULT_CHUNK_CAP,
            gzip_level: formats::archive::DEFAULT_LEVEL,
            verify_in_memory: DEFAULT_VERIFY_IN_MEMORY,
            clock: Arc::new(SystemClock),
        }
    }
}

// Workers move stores between threads.
const _: () = {
    const fn send<T: Send>() {}
    send::<Store>();
    send::<StoreReader>();
    send::<RunWriter<'static>>();
};
