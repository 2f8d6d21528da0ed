//! `backup-server verify` and `backup-server reindex`: proving a store is good, and
//! rebuilding its index from the data file alone.
//!
//! Verify reads a store under the readers' lock (a backup may run meanwhile; only the
//! committed length the index names is read, all in one read transaction) and writes
//! nothing, so it works on a full disk ([`StoreReader`]). Two levels ([`Level`]):
//!
//! * quick (nightly): no inflating. SQLite's `quick_check` and `foreign_key_check`, the
//!   index's own rules ([`Catalog::check`](crate::store::Catalog::check): chunks tile the
//!   file, entries tile their chunks, kind tables, every current record's message stored),
//!   the data file at least as long as the committed length, and every chunk framed as the
//!   index says: a gzip header at its offset, and its trailer's ISIZE equal to its
//!   uncompressed length.
//! * full: the rules with SQLite's full `integrity_check`, then one pass over the committed
//!   data: every chunk inflates with its CRC-32 and length right; every message's SHA-1
//!   equals its GUID; every entry has its `entries` row and every row its entry; and the
//!   index the data file implies is rebuilt in memory (the ingest reindex uses, cyrus.index
//!   snapshots parsed into `snapshots` and `records`) and compared with the index table by
//!   table, row by row, both ways ([`compare`](crate::store::RowFault)).
//!
//! Each fault names the user, the file and, where one applies, the byte offset (a chunk's
//! offset in the data file; offsets inside a chunk are of its uncompressed data), the folder
//! (name and unique id) and UID, and its way out ([`Fault::way_out`]).

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use formats::archive::{ArchiveError, EntryMeta, ScanEvent, Scanner, Tail};
use formats::Guid;

use crate::store::headers::HEADER_BLOCK_MAX;

use crate::store::{
    compare_indexes, is_data_file_name, open_index_read_only, record_damage, DamageAt, IndexDb,
    IndexFault, Rebuild, ReindexReport, RowFault, StoreError, StoreOptions, StoreReader, UserDir,
    INDEX_FILE,
};

/// How much verify reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// No inflating: the index's checks and the chunks' framing (module documentation).
    Quick,
    /// Everything: every byte of the committed data read, hashed, and the index rebuilt
    /// from it and compared.
    #[default]
    Full,
}

/// What to do about a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WayOut {
    /// `backup-server repair --user U`: rebuild the index from the intact part of the data
    /// file (naming what was lost); the next run fetches again what Cyrus still has.
    Repair,
    /// `backup-server reindex --user U`: the data file is whole, only the index is gone.
    Reindex,
    /// Free space on the store's file system, then verify again.
    FreeSpace,
}

impl WayOut {
    /// The command or action, for `user`.
    pub fn for_user(self, user: &str) -> String {
        match self {
            WayOut::Repair => format!("run backup-server repair --user {user}"),
            WayOut::Reindex => format!("run backup-server reindex --user {user}"),
            WayOut::FreeSpace => "free space on the store's file system and verify again".into(),
        }
    }
}

/// A folder and message a fault concerns: a current record holding a damaged message, or
/// the folder of a damaged snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affected {
    /// The folder's unique id.
    pub uniqueid: String,
    /// Its name, when the index knows it.
    pub folder: Option<String>,
    /// The UID, for a message.
    pub uid: Option<u32>,
}

impl fmt::Display for Affected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.folder {
            Some(n) => write!(f, "folder {n:?} ({})", self.uniqueid)?,
            None => write!(f, "folder {}", self.uniqueid)?,
        }
        if let Some(u) = self.uid {
            write!(f, " UID {u}")?;
        }
        Ok(())
    }
}

/// At most this many folders and UIDs are named per fault.
const MAX_AFFECTED: usize = 20;

fn show_affected(f: &mut fmt::Formatter<'_>, affected: &[Affected]) -> fmt::Result {
    if affected.is_empty() {
        return Ok(());
    }
    f.write_str(" (")?;
    for (i, a) in affected.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{a}")?;
    }
    if affected.len() >= MAX_AFFECTED {
        f.write_str(", ...")?;
    }
    f.write_str(")")
}

/// Faults listed per user, at most; more are counted.
const MAX_FAULTS: usize = 1000;

/// An entry of the data file, where the scan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAt {
    /// Its path in the archive (`files/<guid>`, `meta/...`).
    pub path: String,
    /// Offset of its chunk in the data file.
    pub chunk: u64,
    /// Offset of its header in the chunk's uncompressed data.
    pub header_offset: u64,
    /// Offset of its data in the chunk's uncompressed data.
    pub data_offset: u64,
    /// Length of its data.
    pub data_len: u64,
    /// Its kind (`message`, `meta`, ...).
    pub kind: String,
}

impl fmt::Display for EntryAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entry {} at offset {} of chunk {}",
            self.path, self.header_offset, self.chunk
        )
    }
}

/// A row of the index's `entries` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    /// Its id.
    pub id: i64,
    /// The data offset it records (in its chunk's uncompressed data).
    pub data_offset: u64,
    /// The data length it records.
    pub data_len: u64,
    /// The kind it records.
    pub kind: String,
}

/// One problem found in a store: the file it is in (the data file or the index), where in
/// it, and what is wrong. Displayed as `FILE at offset N: what` (without `at offset N` when
/// no offset applies; a data file's offsets are of the chunk concerned, offsets inside a
/// chunk are of its uncompressed data).
#[derive(Debug)]
pub enum Fault {
    /// A directory's data file holds bytes, but there is no index: nobody can read or
    /// back up into the store until it is reindexed.
    NoIndex {
        /// The index that is missing.
        index: PathBuf,
        /// The data file's name.
        data_file: String,
        /// Its length.
        len: u64,
    },
    /// The index does not say whose store it is.
    UnreadableUser {
        /// The index.
        index: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The store does not open.
    Unopenable {
        /// The file that stops it (the data file, or the user's directory).
        file: PathBuf,
        /// The data file's length, when it is shorter than the index committed.
        offset: Option<u64>,
        /// Why.
        source: StoreError,
    },
    /// The index breaks one of its own rules (found by
    /// [`Catalog::check`](crate::store::Catalog::check)).
    IndexRule {
        /// The index.
        index: PathBuf,
        /// The finding.
        problem: crate::store::IndexFault,
    },
    /// Checking the index's rules failed.
    IndexCheck {
        /// The index.
        index: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// Reading the index's entries (to compare them with the data file) failed.
    IndexRead {
        /// The index.
        index: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// A committed chunk does not inflate, or what it holds is not whole entries.
    DamagedChunk {
        /// The data file.
        data: PathBuf,
        /// The chunk's offset.
        chunk: u64,
        /// What is wrong with it.
        source: ArchiveError,
        /// Folders and messages with data in it (from the index), at most 20.
        affected: Vec<Affected>,
    },
    /// A message entry's bytes do not hash to its GUID.
    WrongHash {
        /// The data file.
        data: PathBuf,
        /// The entry.
        entry: EntryAt,
        /// The SHA-1 of its bytes.
        sha1: Guid,
        /// Its GUID.
        guid: Guid,
        /// The folders and UIDs holding the message now, at most 20.
        affected: Vec<Affected>,
    },
    /// A message entry's GUID has no `messages` row.
    NoMessageRow {
        /// The index.
        index: PathBuf,
        /// The GUID.
        guid: Guid,
        /// The entry holding the message.
        entry: EntryAt,
    },
    /// An entry of the data file has no `entries` row.
    NoEntryRow {
        /// The data file.
        data: PathBuf,
        /// The entry.
        entry: EntryAt,
    },
    /// An `entries` row disagrees with the entry at its place.
    RowDiffers {
        /// The index.
        index: PathBuf,
        /// The row.
        row: IndexRow,
        /// The entry the data file has there.
        entry: EntryAt,
    },
    /// The committed part of the data file does not end with a whole chunk.
    TornCommitted {
        /// The data file.
        data: PathBuf,
        /// Bytes the index committed.
        committed: u64,
        /// Where the last whole chunk ends.
        valid_end: u64,
        /// What follows it.
        tail: Tail,
        /// Folders and messages with data in the committed chunk that starts there (from
        /// the index), at most 20: a damaged gzip header makes a chunk unreadable garbage
        /// rather than a damaged chunk, and the administrator still needs to know whose.
        affected: Vec<Affected>,
    },
    /// A row of a derived table is not what the data file implies (missing, extra, or
    /// different).
    IndexRow {
        /// The index.
        index: PathBuf,
        /// The row, named by table, key, folder and UID.
        row: RowFault,
    },
    /// The index could not be compared with the data file: the data file is damaged (its
    /// own faults say where), or rebuilding from it failed.
    NotCompared {
        /// The index.
        index: PathBuf,
        /// Why.
        why: String,
    },
    /// A chunk is not framed as its `chunks` row says (quick level): no gzip header at its
    /// offset, or a trailer whose ISIZE is not its uncompressed length.
    ChunkFrame {
        /// The data file.
        data: PathBuf,
        /// The chunk's offset.
        chunk: u64,
        /// What was found.
        what: String,
    },
    /// An `entries` row points where the data file has no entry.
    NoEntry {
        /// The index.
        index: PathBuf,
        /// The row.
        row: IndexRow,
        /// The chunk it names.
        chunk: u64,
        /// The header offset it names.
        header_offset: u64,
    },
}

impl Fault {
    /// The file the fault is in.
    pub fn file(&self) -> &Path {
        match self {
            Fault::NoIndex { index, .. }
            | Fault::UnreadableUser { index, .. }
            | Fault::IndexRule { index, .. }
            | Fault::IndexCheck { index, .. }
            | Fault::IndexRead { index, .. }
            | Fault::NoMessageRow { index, .. }
            | Fault::RowDiffers { index, .. }
            | Fault::NoEntry { index, .. } => index,
            Fault::Unopenable { file, .. } => file,
            Fault::DamagedChunk { data, .. }
            | Fault::WrongHash { data, .. }
            | Fault::NoEntryRow { data, .. }
            | Fault::TornCommitted { data, .. }
            | Fault::ChunkFrame { data, .. } => data,
            Fault::IndexRow { index, .. } | Fault::NotCompared { index, .. } => index,
        }
    }

    /// What to do about it.
    pub fn way_out(&self) -> WayOut {
        match self {
            Fault::NoIndex { .. } => WayOut::Reindex,
            Fault::Unopenable {
                source: StoreError::ReadOnlyBlocked { .. },
                ..
            } => WayOut::FreeSpace,
            _ => WayOut::Repair,
        }
    }

    /// The byte offset in [`Fault::file`], where one applies (a chunk's offset for the
    /// data file).
    pub fn offset(&self) -> Option<u64> {
        match self {
            Fault::Unopenable { offset, .. } => *offset,
            Fault::DamagedChunk { chunk, .. } | Fault::ChunkFrame { chunk, .. } => Some(*chunk),
            Fault::WrongHash { entry, .. } | Fault::NoEntryRow { entry, .. } => Some(entry.chunk),
            Fault::TornCommitted { valid_end, .. } => Some(*valid_end),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file().display())?;
        if let Some(o) = self.offset() {
            write!(f, " at offset {o}")?;
        }
        f.write_str(": ")?;
        match self {
            Fault::NoIndex { data_file, len, .. } => write!(
                f,
                "no index, but data file {data_file} holds {len} bytes"
            ),
            Fault::UnreadableUser { source, .. } => {
                write!(f, "cannot read the store's user: {source}")
            }
            Fault::Unopenable { source, .. } => write!(f, "cannot open the store: {source}"),
            Fault::IndexRule { problem, .. } => problem.fmt(f),
            Fault::IndexCheck { source, .. } => write!(f, "checking the index: {source}"),
            Fault::IndexRead { source, .. } => write!(f, "reading the index: {source}"),
            Fault::DamagedChunk {
                chunk,
                source,
                affected,
                ..
            } => {
                write!(f, "chunk at {chunk} is damaged: {source}")?;
                show_affected(f, affected)
            }
            Fault::WrongHash {
                entry,
                sha1,
                guid,
                affected,
                ..
            } => {
                write!(
                    f,
                    "{entry}: SHA-1 of the data is {}, expected its GUID {}",
                    sha1.to_hex(),
                    guid.to_hex()
                )?;
                show_affected(f, affected)
            }
            Fault::IndexRow { row, .. } => row.fmt(f),
            Fault::NotCompared { why, .. } => {
                write!(f, "not compared with the data file: {why}")
            }
            Fault::ChunkFrame { chunk, what, .. } => {
                write!(f, "chunk at {chunk}: {what}")
            }
            Fault::NoMessageRow { guid, entry, .. } => write!(
                f,
                "messages: no row for GUID {} (stored as {entry} of the data file)",
                guid.to_hex()
            ),
            Fault::NoEntryRow { entry, .. } => {
                write!(f, "{entry}: expected an index row (table entries), found none")
            }
            Fault::RowDiffers { row, entry, .. } => write!(
                f,
                "entries: row {} says data at {} length {} kind {:?}; the data file has {entry} with data at {} length {} kind {:?}",
                row.id, row.data_offset, row.data_len, row.kind, entry.data_offset, entry.data_len, entry.kind
            ),
            Fault::TornCommitted {
                committed,
                valid_end,
                tail,
                affected,
                ..
            } => {
                write!(
                    f,
                    "the committed data ({committed} bytes) is not whole chunks: unreadable from offset {valid_end} ({tail:?})"
                )?;
                show_affected(f, affected)
            }
            Fault::NoEntry {
                row,
                chunk,
                header_offset,
                ..
            } => write!(
                f,
                "entries: row {} points at offset {header_offset} of chunk {chunk}: expected a {} entry there, the data file has none",
                row.id, row.kind
            ),
        }
    }
}

/// One store's verification.
#[derive(Debug, Default)]
pub struct StoreVerdict {
    /// The user whose store it is.
    pub user: String,
    /// Chunks that inflated and checked out.
    pub chunks: u64,
    /// Entries read.
    pub entries: u64,
    /// Message entries hashed.
    pub messages: u64,
    /// Data file bytes read.
    pub bytes: u64,
    /// The level it was verified at.
    pub level: Level,
    /// Index rows compared with what the data file implies (full level), both ways.
    pub rows: crate::store::CompareCounts,
    /// Whether the index was read as immutable, the writer lock held (the file system
    /// could not give SQLite its `-shm`: full).
    pub immutable: bool,
    /// The faults, at most 1,000 of them.
    pub faults: Vec<Fault>,
    /// Faults found beyond those listed.
    pub faults_not_listed: u64,
    /// Damaged messages found (a chunk that does not inflate, SHA-1 ≠ GUID): whether they
    /// were marked in the index for the next run to fetch again (`None`: none found).
    pub damage: Option<crate::store::DamageRecording>,
}

impl StoreVerdict {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.faults.is_empty() && self.faults_not_listed == 0
    }

    fn push(&mut self, fault: Fault) {
        if self.faults.len() < MAX_FAULTS {
            self.faults.push(fault);
        } else {
            self.faults_not_listed += 1;
        }
    }
}

/// A directory under the store root that holds no store anyone can read.
#[derive(Debug)]
pub struct UnreadableDir {
    /// The directory's name (the user's name as the store root encodes it).
    pub name: String,
    /// What is wrong.
    pub fault: Fault,
}

/// What verify found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Directories under the store root holding no readable store (not counted as stores).
    pub unreadable: Vec<UnreadableDir>,
    /// The stores verified, by user.
    pub stores: Vec<StoreVerdict>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.unreadable.is_empty() && self.stores.iter().all(StoreVerdict::is_clean)
    }

    /// The faults listed, with the user (or directory name) each is of: those of
    /// unreadable directories first, then each store's.
    pub fn listed(&self) -> impl Iterator<Item = (&str, &Fault)> {
        let dirs = self.unreadable.iter().map(|d| (d.name.as_str(), &d.fault));
        let stores = self
            .stores
            .iter()
            .flat_map(|s| s.faults.iter().map(move |f| (s.user.as_str(), f)));
        dirs.chain(stores)
    }

    /// Faults found beyond those listed.
    pub fn not_listed(&self) -> u64 {
        self.stores.iter().map(|s| s.faults_not_listed).sum()
    }

    /// Every fault found, listed or not.
    pub fn faults(&self) -> u64 {
        self.listed().count() as u64 + self.not_listed()
    }

    /// A sum over the stores.
    fn sum(&self, f: impl Fn(&StoreVerdict) -> u64) -> u64 {
        self.stores.iter().map(f).sum()
    }

    /// Chunks that inflated and checked out.
    pub fn chunks(&self) -> u64 {
        self.sum(|s| s.chunks)
    }

    /// Entries read.
    pub fn entries(&self) -> u64 {
        self.sum(|s| s.entries)
    }

    /// Message entries hashed.
    pub fn messages(&self) -> u64 {
        self.sum(|s| s.messages)
    }

    /// Data file bytes read.
    pub fn bytes(&self) -> u64 {
        self.sum(|s| s.bytes)
    }

    /// Index rows compared with what the data file implies.
    pub fn rows(&self) -> u64 {
        self.sum(|s| s.rows.found)
    }
}

/// The store root could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {root}: {source}", root = .root.display())]
pub struct VerifyError {
    /// The store root.
    pub root: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Every user with a store under `root` (read from each index's `store` row, as user names
/// cannot always be decoded from directory names), and the directories holding no store
/// anyone can read.
pub fn store_users(root: &Path) -> std::io::Result<(Vec<String>, Vec<UnreadableDir>)> {
    let mut users = Vec::new();
    let mut unreadable = Vec::new();
    let hex2 = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let dirs = |p: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        v.sort();
        Ok(v)
    };
    let name = |u: &Path| {
        u.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for a in dirs(root)?.into_iter().filter(|p| hex2(p)) {
        for b in dirs(&a)?.into_iter().filter(|p| hex2(p)) {
            for u in dirs(&b)? {
                let index = u.join(INDEX_FILE);
                if !index.exists() {
                    // A data file with bytes and no index is a store nobody can read or
                    // back up into until it is reindexed: a fault, not an empty directory.
                    if let Some(fault) = index_missing(&u)? {
                        unreadable.push(UnreadableDir {
                            name: name(&u),
                            fault,
                        });
                    }
                    continue;
                }
                // Read-only and creating nothing, like every reader (a full disk).
                let got = open_index_read_only(&u, &name(&u)).and_then(|(db, _writer)| {
                    db.conn
                        .query_row("SELECT user FROM store WHERE id = 1", [], |r| r.get(0))
                        .map_err(|source| StoreError::Sqlite {
                            path: index.clone(),
                            source,
                        })
                });
                match got {
                    Ok(user) => users.push(user),
                    Err(source) => unreadable.push(UnreadableDir {
                        name: name(&u),
                        fault: Fault::UnreadableUser { index, source },
                    }),
                }
            }
        }
    }
    users.sort();
    Ok((users, unreadable))
}

/// The fault of a store directory without an index whose data file holds bytes (`None`
/// when it holds none: a user directory with only a lock file is not a store).
fn index_missing(dir: &Path) -> std::io::Result<Option<Fault>> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| is_data_file_name(n)) else {
            continue;
        };
        let len = e.metadata()?.len();
        if len > 0 {
            return Ok(Some(Fault::NoIndex {
                index: dir.join(INDEX_FILE),
                data_file: name.to_owned(),
                len,
            }));
        }
    }
    Ok(None)
}

/// Verifies `user`'s store, or every store under `root` when `user` is `None`, at `level`.
pub fn verify(root: &Path, user: Option<&str>, level: Level) -> Result<VerifyReport, VerifyError> {
    let mut rep = VerifyReport::default();
    let users = match user {
        Some(u) => vec![u.to_owned()],
        None => {
            let (users, unreadable) = store_users(root).map_err(|source| VerifyError {
                root: root.to_path_buf(),
                source,
            })?;
            rep.unreadable = unreadable;
            users
        }
    };
    rep.stores = users
        .iter()
        .map(|u| verify_user_at(root, u, level))
        .collect();
    Ok(rep)
}

/// Verifies one user's store at the full level. Never fails: what cannot be read is a
/// fault.
pub fn verify_user(root: &Path, user: &str) -> StoreVerdict {
    verify_user_at(root, user, Level::Full)
}

/// Verifies one user's store at `level`. Never fails: what cannot be read is a fault.
pub fn verify_user_at(root: &Path, user: &str, level: Level) -> StoreVerdict {
    let mut v = StoreVerdict {
        user: user.to_owned(),
        level,
        ..StoreVerdict::default()
    };
    let reader = match StoreReader::open(root, user) {
        Ok(r) => r,
        Err(source) => {
            let (file, offset) = match &source {
                StoreError::DataFileShort { path, actual, .. } => (path.clone(), Some(*actual)),
                StoreError::DataFileMissing { path, .. } => (path.clone(), None),
                _ => (
                    UserDir::new(root, user)
                        .map(|d| d.path().to_path_buf())
                        .unwrap_or_else(|_| root.to_path_buf()),
                    None,
                ),
            };
            v.push(Fault::Unopenable {
                file,
                offset,
                source,
            });
            return v;
        }
    };
    v.immutable = reader.is_immutable();
    let cat = reader.catalog();
    let index = cat.index_path().to_path_buf();
    // One read transaction: every query sees the same committed state while a backup
    // appends and commits beside us.
    if let Err(source) = cat.db.conn.execute_batch("BEGIN") {
        v.push(Fault::IndexRead {
            index,
            source: sql_err(cat.index_path(), source),
        });
        return v;
    }
    match level {
        Level::Quick => quick(&reader, &mut v),
        Level::Full => full(&reader, &mut v),
    }
    let _ = cat.db.conn.execute_batch("COMMIT");
    // Damaged messages are marked so the next run fetches them again (store/damage.rs); a
    // lock held by a run or an index that cannot be written is a note, not a fault. Only
    // the listed faults are marked: a later verify marks the rest.
    let damage: Vec<DamageAt> = v
        .faults
        .iter()
        .filter_map(|f| match f {
            Fault::DamagedChunk { chunk, .. } => Some(DamageAt::Chunk { offset: *chunk }),
            Fault::WrongHash { entry, .. } => Some(DamageAt::Entry {
                chunk: entry.chunk,
                header_offset: entry.header_offset,
            }),
            _ => None,
        })
        .collect();
    if !damage.is_empty() {
        drop(reader);
        v.damage = Some(record_damage(root, user, &damage, "found by verify"));
    }
    v
}

/// The index's rules, with SQLite's `quick_check` (quick) or `integrity_check` (full).
fn rules(reader: &StoreReader, v: &mut StoreVerdict, level: Level) {
    let cat = reader.catalog();
    let index = cat.index_path().to_path_buf();
    let sqlite = match level {
        Level::Quick => cat.db.quick_check(),
        Level::Full => cat.db.integrity_check(),
    };
    let found = sqlite.and_then(|mut out| {
        let rules = cat.check(false)?;
        let mut all: Vec<IndexFault> = out.drain(..).map(IndexFault::Sqlite).collect();
        all.extend(rules);
        Ok(all)
    });
    match found {
        Ok(problems) => {
            for problem in problems {
                v.push(Fault::IndexRule {
                    index: index.clone(),
                    problem,
                });
            }
        }
        Err(source) => v.push(Fault::IndexCheck { index, source }),
    }
}

/// The quick level: the rules, then each chunk's framing, by two small reads a chunk.
fn quick(reader: &StoreReader, v: &mut StoreVerdict) {
    rules(reader, v, Level::Quick);
    let cat = reader.catalog();
    let data = cat.data_path().to_path_buf();
    let chunks: crate::store::Result<Vec<(i64, i64, i64)>> = cat
        .db
        .conn
        .prepare("SELECT offset, compressed_len, uncompressed_len FROM chunks ORDER BY offset")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(|e| sql_err(cat.index_path(), e));
    let chunks = match chunks {
        Ok(c) => c,
        Err(source) => {
            v.push(Fault::IndexRead {
                index: cat.index_path().to_path_buf(),
                source,
            });
            return;
        }
    };
    let file = &cat.data.file;
    for (off, clen, ulen) in chunks {
        // Lengths the rules already refuse would only repeat their fault here.
        if off < 0 || clen < 18 || ulen <= 0 {
            continue;
        }
        let (off, clen) = (off as u64, clen as u64);
        v.chunks += 1;
        let mut head = [0u8; 3];
        let mut tail = [0u8; 4];
        let read = file
            .read_exact_at(&mut head, off)
            .and_then(|()| file.read_exact_at(&mut tail, off + clen - 4));
        let what = match read {
            Err(e) => Some(format!(
                "expected {clen} bytes of gzip member, reading them failed: {e}"
            )),
            Ok(()) if head != [0x1f, 0x8b, 0x08] => Some(format!(
                "expected a gzip header (1f 8b 08), found {}",
                hex::encode(head)
            )),
            Ok(()) if u32::from_le_bytes(tail) != ulen as u32 => Some(format!(
                "expected the gzip trailer at {} to give the uncompressed length {ulen} (mod 2^32), found {}",
                off + clen - 8,
                u32::from_le_bytes(tail)
            )),
            Ok(()) => None,
        };
        if let Some(what) = what {
            v.push(Fault::ChunkFrame {
                data: data.clone(),
                chunk: off,
                what,
            });
        }
    }
}

/// The full level: the rules, one pass over the committed data (inflate, hash, entries
/// against rows, rebuilding in memory), then the rebuilt index against the index.
fn full(reader: &StoreReader, v: &mut StoreVerdict) {
    let cat = reader.catalog();
    let index = cat.index_path().to_path_buf();
    rules(reader, v, Level::Full);
    let label = PathBuf::from(format!("{} (rebuilt in memory)", index.display()));
    let mem = match IndexDb::in_memory(&label) {
        Ok(m) => m,
        Err(source) => {
            v.push(Fault::IndexRead { index, source });
            return;
        }
    };
    let mut found = Vec::new();
    let r = scan(reader, &mem, &mut found, v);
    let rebuilt = match r {
        Ok(rebuilt) => rebuilt,
        Err(source) => {
            v.push(Fault::IndexRead {
                index: index.clone(),
                source,
            });
            Err("reading the index failed".to_owned())
        }
    };
    for f in found {
        v.push(f);
    }
    match rebuilt {
        Ok(()) => {
            let mut rows = Vec::new();
            match compare_indexes(&mem, &cat.db, |row| rows.push(row)) {
                Ok(counts) => v.rows = counts,
                Err(source) => v.push(Fault::IndexRead {
                    index: index.clone(),
                    source,
                }),
            }
            for row in rows {
                v.push(Fault::IndexRow {
                    index: index.clone(),
                    row,
                });
            }
        }
        Err(why) => v.push(Fault::NotCompared { index, why }),
    }
}

/// Folders and UIDs holding `guid` now (current records), from the index; at most
/// [`MAX_AFFECTED`], none when the index cannot say.
fn holders(reader: &StoreReader, guid: &Guid) -> Vec<Affected> {
    reader
        .catalog()
        .places(guid)
        .unwrap_or_default()
        .into_iter()
        .take(MAX_AFFECTED)
        .map(|p| Affected {
            uniqueid: p.uniqueid,
            folder: p.folder,
            uid: Some(p.uid),
        })
        .collect()
}

/// What the index says a damaged chunk held: the folders and UIDs holding its messages now,
/// and the folders of its snapshots.
fn chunk_contents(reader: &StoreReader, chunk: u64) -> Vec<Affected> {
    let conn = &reader.catalog().db.conn;
    let guids: Vec<Guid> = conn
        .prepare(
            "SELECT m.guid FROM messages m JOIN entries e ON e.id = m.entry WHERE e.chunk = ?1",
        )
        .and_then(|mut st| {
            st.query_map([chunk as i64], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| <[u8; 20]>::try_from(g).ok().map(Guid))
        .collect();
    let mut affected: Vec<Affected> = conn
        .prepare(&format!(
            "SELECT DISTINCT k.uniqueid, f.folder FROM meta_files f JOIN entries e ON e.id = f.entry
             JOIN folders k ON k.id = f.folder_key
             WHERE e.chunk = ?1 ORDER BY k.uniqueid LIMIT {MAX_AFFECTED}"
        ))
        .and_then(|mut st| {
            st.query_map([chunk as i64], |r| {
                Ok(Affected {
                    uniqueid: r.get(0)?,
                    folder: r.get(1)?,
                    uid: None,
                })
            })?
            .collect()
        })
        .unwrap_or_default();
    for g in &guids {
        if affected.len() >= MAX_AFFECTED {
            break;
        }
        affected.extend(holders(reader, g));
    }
    affected.truncate(MAX_AFFECTED);
    affected
}

/// Scans the committed part of the data file, compares its entries with the index's
/// `entries` rows, and rebuilds into `mem` the index the data implies. Faults go to
/// `found`, counts to `stats`. `Ok(Err(why))`: the data file did not
/// scan whole (its faults are in `found`) or the rebuild failed, so there is nothing to
/// compare the index with.
fn scan(
    reader: &StoreReader,
    mem: &IndexDb,
    found: &mut Vec<Fault>,
    stats: &mut StoreVerdict,
) -> crate::store::Result<Result<(), String>> {
    let cat = reader.catalog();
    let data = cat.data_path();
    let index = cat.index_path();
    let committed = cat.committed_len()?;
    let conn = &cat.db.conn;
    let mut rows: HashMap<(u64, u64), IndexRow> = HashMap::new();
    {
        let mut st = conn
            .prepare("SELECT id, chunk, header_offset, data_offset, data_len, kind FROM entries")
            .map_err(|e| sql_err(index, e))?;
        let mut q = st.query([]).map_err(|e| sql_err(index, e))?;
        while let Some(r) = q.next().map_err(|e| sql_err(index, e))? {
            let get = |i| r.get::<_, i64>(i);
            let (id, chunk, hoff, doff, dlen) =
                (|| Ok((get(0)?, get(1)?, get(2)?, get(3)?, get(4)?)))()
                    .map_err(|e| sql_err(index, e))?;
            let kind: String = r.get(5).map_err(|e| sql_err(index, e))?;
            rows.insert(
                (chunk as u64, hoff as u64),
                IndexRow {
                    id,
                    data_offset: doff as u64,
                    data_len: dlen as u64,
                    kind,
                },
            );
        }
    }
    let file = std::fs::File::open(data).map_err(|source| StoreError::Io {
        path: data.to_path_buf(),
        op: "opening the data file",
        source,
    })?;
    let mut rebuild = match Rebuild::start(mem, cat.user(), cat.data_file_name()) {
        Ok(r) => Some(r),
        Err(e) => return Ok(Err(format!("rebuilding in memory failed: {e}"))),
    };
    let mut rebuild_failed: Option<String> = None;
    let mut feed =
        |rebuild: &mut Option<Rebuild<'_>>,
         step: &mut dyn FnMut(&mut Rebuild<'_>) -> crate::store::Result<()>| {
            if let Some(r) = rebuild.as_mut() {
                if let Err(e) = step(r) {
                    rebuild_failed = Some(format!(
                        "rebuilding the index from the data file failed: {e}"
                    ));
                    *rebuild = None;
                }
            }
        };
    // Only what the index committed: a backup may be appending past it.
    let mut scanner = Scanner::new(file.take(committed));
    let mut chunk = 0u64;
    let mut buf = Vec::new();
    let scanned_to: u64;
    let mut whole = false;
    loop {
        let ev = match scanner.next_event() {
            Ok(ev) => ev,
            Err(source) => {
                let at = source.chunk_offset().unwrap_or(chunk);
                let affected = chunk_contents(reader, at);
                found.push(Fault::DamagedChunk {
                    data: data.to_path_buf(),
                    chunk: at,
                    source,
                    affected,
                });
                scanned_to = at;
                break;
            }
        };
        match ev {
            ScanEvent::ChunkStart { offset } => {
                chunk = offset;
                feed(&mut rebuild, &mut |r| r.chunk_start());
            }
            ScanEvent::Entry(mut e) => {
                stats.entries += 1;
                let loc = e.location;
                let entry = EntryAt {
                    path: e.header.path.clone(),
                    chunk: loc.chunk_offset,
                    header_offset: loc.header_offset,
                    data_offset: loc.data_offset,
                    data_len: loc.data_len,
                    kind: e.header.meta.kind().to_owned(),
                };
                let mut with_data = false;
                if let EntryMeta::Message(m) = &e.header.meta {
                    let guid = m.guid;
                    stats.messages += 1;
                    buf.clear();
                    let hashed = e.sha1_keeping(&mut buf, HEADER_BLOCK_MAX);
                    with_data = hashed.is_ok();
                    match hashed {
                        Ok(sha1) if sha1 != guid => found.push(Fault::WrongHash {
                            data: data.to_path_buf(),
                            entry: entry.clone(),
                            sha1,
                            guid,
                            affected: holders(reader, &guid),
                        }),
                        Ok(_) => {}
                        // The scanner reports the error again at its next step.
                        Err(_) => continue,
                    }
                    if !cat.has_message(&guid)? {
                        found.push(Fault::NoMessageRow {
                            index: index.to_path_buf(),
                            guid,
                            entry: entry.clone(),
                        });
                    }
                } else if Rebuild::wants_data(&e.header.meta).is_some() {
                    buf.clear();
                    if e.read_to_end(&mut buf).is_err() {
                        // As above: the scanner's next step says what it was.
                        continue;
                    }
                    with_data = true;
                }
                let data_ref = with_data.then_some(&buf[..]);
                let meta = &e.header.meta;
                feed(&mut rebuild, &mut |r| r.entry(meta, &loc, data_ref));
                match rows.remove(&(loc.chunk_offset, loc.header_offset)) {
                    None => found.push(Fault::NoEntryRow {
                        data: data.to_path_buf(),
                        entry,
                    }),
                    Some(row) => {
                        if row.data_offset != entry.data_offset
                            || row.data_len != entry.data_len
                            || row.kind != entry.kind
                        {
                            found.push(Fault::RowDiffers {
                                index: index.to_path_buf(),
                                row,
                                entry,
                            });
                        }
                    }
                }
            }
            ScanEvent::ChunkEnd(info) => {
                stats.chunks += 1;
                stats.bytes = info.end();
                feed(&mut rebuild, &mut |r| r.chunk_end(&info));
            }
            ScanEvent::End(end) => {
                if end.tail != Tail::Clean {
                    found.push(Fault::TornCommitted {
                        data: data.to_path_buf(),
                        committed,
                        valid_end: end.valid_end,
                        tail: end.tail,
                        affected: chunk_contents(reader, end.valid_end),
                    });
                } else {
                    whole = true;
                }
                feed(&mut rebuild, &mut |r| r.end(&end).map(|_| ()));
                scanned_to = end.valid_end;
                break;
            }
        }
    }
    // Index rows the data file did not have (in the part that was read).
    let mut left: Vec<(u64, u64, IndexRow)> = rows
        .into_iter()
        .filter(|((c, _), _)| *c < scanned_to)
        .map(|((c, h), r)| (c, h, r))
        .collect();
    left.sort_by_key(|(c, h, _)| (*c, *h));
    for (chunk, header_offset, row) in left {
        found.push(Fault::NoEntry {
            index: index.to_path_buf(),
            row,
            chunk,
            header_offset,
        });
    }
    let outcome = match (rebuild, rebuild_failed, whole) {
        (_, Some(why), _) => Err(why),
        (None, None, _) => Err("rebuilding the index from the data file failed".into()),
        (Some(r), None, true) => r
            .commit()
            .map_err(|e| format!("rebuilding the index from the data file failed: {e}")),
        (Some(r), None, false) => {
            r.abandon();
            Err(format!(
                "the committed data does not scan whole (see the data file's fault); the index rows the data file implies are known only up to offset {scanned_to}"
            ))
        }
    };
    Ok(outcome)
}

fn sql_err(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// `backup-server reindex --user U`: takes the user's writer lock (a running backup makes
/// this fail at once), rebuilds `backupstate.sqlite3` from the data file alone, switches it
/// in and opens the store (which cuts a torn tail). See docs/store.md, "Reindex".
pub fn reindex_user(root: &Path, user: &str) -> crate::store::Result<ReindexReport> {
    let dir = UserDir::new(root, user)?;
    if !dir.exists() {
        return Err(StoreError::NoStore {
            user: user.to_owned(),
            dir: dir.path().to_path_buf(),
        });
    }
    let (store, report) = dir.lock()?.reindex(StoreOptions::default())?;
    drop(store);
    Ok(report)
}
