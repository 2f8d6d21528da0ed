//! Opening a store, and what opening repairs: the crash story's reading side.
//!
//! [`LockedDir::open`], in order:
//! 1. An interrupted index switch is finished: a complete `backupstate.sqlite3.new` means
//!    a reindex or compaction had built and synced its new index and was replacing the old
//!    one; the old index's `-wal`/`-shm` are removed and the new one renamed into place. A
//!    `backupstate.sqlite3.tmp` (an index still being built) is removed.
//! 2. No index: if no data file holds a byte, a new store is created (data file first,
//!    then the index built aside and renamed into place, so neither half-exists). A data
//!    file with bytes and no index is an error: only `reindex` may rebuild an index.
//! 3. The index is opened (WAL, synchronous=FULL, migrated), its user checked. An index
//!    older than the current layout (version 2) is copied into a new one built aside and
//!    switched in as a reindex's is ([`upgrade_index`]): a kill leaves the old or the new.
//! 4. The committed length is the end of the last chunk in `chunks`. A longer data file is
//!    cut to it and synced (the torn tail of a run that never committed); a shorter one is
//!    [`StoreError::DataFileShort`], naming both lengths.
//! 5. Data files other than the one the index names are removed: they are the leftovers of
//!    a compaction (its unfinished output, or its input once the switch was made).
//!
//! The switch ([`switch_index`]) is the writing side for index replacement: take the
//! readers' lock exclusively; rename the synced `.tmp` to `.new`, sync the directory;
//! remove the old `-wal` and `-shm`; rename `.new` over the index, sync the directory.

use std::path::{Path, PathBuf};

use formats::Timestamp;
use rusqlite::{params, OptionalExtension};

use super::catalog::Catalog;
use super::datafile::{sync_dir, DataFile};
use super::error::{IoContext, ReadBlocker, Result, SqlContext, StoreError};
use super::index::{IndexDb, OpenMode, LAYOUT_VERSION};
use super::layout::{
    data_file_name, UserDir, INDEX_FILE, INDEX_NEW_FILE, INDEX_TMP_FILE, LOCK_FILE,
    READERS_LOCK_FILE,
};
use super::lock::UserLock;
use super::reindex::{rebuild_index, ReindexReport};
use super::StoreOptions;

/// What opening a store did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A new, empty store was created.
    pub created: bool,
    /// An interrupted index switch was finished.
    pub finished_switch: bool,
    /// Bytes cut off the end of the data file (a torn tail).
    pub cut_bytes: u64,
    /// Leftover files removed (data files the index does not name, unfinished indexes).
    pub removed: Vec<String>,
    /// The index was at this older layout version and was copied to the current one.
    pub upgraded_from: Option<u32>,
}

impl UserDir {
    /// Takes the user's writer lock (creating the directory if needed). A second taker
    /// gets [`StoreError::Locked`] at once.
    pub fn lock(self) -> Result<LockedDir> {
        self.create()?;
        let lock = UserLock::exclusive(&self.file(LOCK_FILE), self.user())?;
        Ok(LockedDir { dir: self, lock })
    }

    /// Takes the writer lock only if the store has a lock file, creating and writing
    /// nothing: the quiet check's lock, which most nights is all a user's backup takes.
    /// `Ok(Err(self))`: no lock file, so no store to speak of. Before writing anything,
    /// the holder calls [`LockedDir::note_holder`].
    pub fn lock_existing(self) -> Result<std::result::Result<LockedDir, UserDir>> {
        match UserLock::exclusive_existing(&self.file(LOCK_FILE), self.user())? {
            Some(lock) => Ok(Ok(LockedDir { dir: self, lock })),
            None => Ok(Err(self)),
        }
    }
}

/// A user's directory with the writer lock held: the only way to a [`Store`].
#[derive(Debug)]
pub struct LockedDir {
    dir: UserDir,
    lock: UserLock,
}

impl LockedDir {
    /// The directory.
    pub fn dir(&self) -> &UserDir {
        &self.dir
    }

    /// Writes this process's note into the lock file (taken by
    /// [`UserDir::lock_existing`], which writes none), so that another writer's error says
    /// who holds the store.
    pub fn note_holder(&mut self) {
        self.lock.write_note();
    }

    /// Opens the store, creating it when the directory holds none, and recovers it (see
    /// the module documentation).
    pub fn open(self, opts: StoreOptions) -> Result<Store> {
        self.open_inner(opts, true)
    }

    /// Opens an existing store; [`StoreError::NoStore`] when there is none.
    pub fn open_existing(self, opts: StoreOptions) -> Result<Store> {
        self.open_inner(opts, false)
    }

    /// Rebuilds the index from the data file alone (invariant 3), switches it in, and opens
    /// the store. The data file is the one the old index names if it can be read, else the
    /// only data file in the directory.
    pub fn reindex(self, opts: StoreOptions) -> Result<(Store, ReindexReport)> {
        let mut report = OpenReport::default();
        cleanup(&self.dir, &mut report)?;
        let data_name = self.current_data_file()?;
        let tmp = self.dir.file(INDEX_TMP_FILE);
        let r = rebuild_index(&self.dir.file(&data_name), self.dir.user(), &tmp)?;
        switch_index(&self.dir)?;
        let store = self.open_inner(opts, false)?;
        Ok((store, r))
    }

    /// Switches the store to `data_name`, a complete, synced data file in the directory
    /// (compaction's replacement): its index is built aside from it alone, through the same
    /// ingest as [`LockedDir::reindex`], switched in atomically, and the store opened, which
    /// removes the old data file. A crash before the switch leaves the old index, and the
    /// next open removes the new file; a crash after it leaves the new index, and the next
    /// open removes the old file.
    pub fn install_data_file(
        self,
        data_name: &str,
        opts: StoreOptions,
    ) -> Result<(Store, ReindexReport)> {
        let mut report = OpenReport::default();
        cleanup(&self.dir, &mut report)?;
        let tmp = self.dir.file(INDEX_TMP_FILE);
        let r = rebuild_index(&self.dir.file(data_name), self.dir.user(), &tmp)?;
        switch_index(&self.dir)?;
        let store = self.open_inner(opts, false)?;
        Ok((store, r))
    }

    /// The data file a repair starts from: an interrupted index switch finished first,
    /// then the one the index names if the index can be read and the file exists, else the
    /// newest data file in the directory (with no index to say, a second data file can only
    /// be a complete replacement that was renamed into place but not yet switched to, or
    /// the original; a repair's own output is written under another name until complete),
    /// `None` when there is none.
    pub(crate) fn data_file_to_repair(&self) -> Result<Option<String>> {
        let mut report = OpenReport::default();
        cleanup(&self.dir, &mut report)?;
        match self.current_data_file() {
            Ok(name) => Ok(Some(name)),
            Err(StoreError::NoStore { .. }) => Ok(None),
            Err(StoreError::Invalid { .. }) => Ok(self.dir.data_files()?.pop()),
            Err(e) => Err(e),
        }
    }

    fn current_data_file(&self) -> Result<String> {
        let index = self.dir.index_path();
        if index.exists() {
            if let Ok(db) = IndexDb::open(&index, OpenMode::Write) {
                if let Ok(Some((_, name))) = store_row(&db) {
                    if self.dir.file(&name).exists() {
                        return Ok(name);
                    }
                }
            }
        }
        let files = self.dir.data_files()?;
        match files.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::NoStore {
                user: self.dir.user().to_owned(),
                dir: self.dir.path().to_path_buf(),
            }),
            many => Err(StoreError::Invalid {
                what: "reindex",
                expected: "one data file, or an index naming one",
                found: many.join(", "),
            }),
        }
    }

    fn open_inner(self, opts: StoreOptions, create: bool) -> Result<Store> {
        let dir = &self.dir;
        let mut report = OpenReport::default();
        cleanup(dir, &mut report)?;
        let index_path = dir.index_path();
        if !index_path.exists() {
            let mut nonempty = None;
            let files = dir.data_files()?;
            for f in &files {
                let p = dir.file(f);
                let len = std::fs::metadata(&p)
                    .io(&p, "reading the data file's length")?
                    .len();
                if len > 0 {
                    nonempty = Some(f.clone());
                }
            }
            if let Some(data_file) = nonempty {
                return Err(StoreError::IndexMissing {
                    dir: dir.path().to_path_buf(),
                    data_file,
                });
            }
            if !create {
                return Err(StoreError::NoStore {
                    user: dir.user().to_owned(),
                    dir: dir.path().to_path_buf(),
                });
            }
            for f in files {
                remove(&dir.file(&f), &mut report)?;
            }
            create_store(dir, &opts)?;
            report.created = true;
        }
        let mut db = IndexDb::open(&index_path, OpenMode::Write)?;
        let version = db.version()?;
        if version < LAYOUT_VERSION {
            drop(db);
            upgrade_index(dir, version)?;
            report.upgraded_from = Some(version);
            db = IndexDb::open(&index_path, OpenMode::Write)?;
        }
        let (user, data_name) = store_row(&db)?.ok_or_else(|| StoreError::IndexInvalid {
            path: index_path.clone(),
            expected: "one row in table store",
            found: "none".into(),
        })?;
        if user != dir.user() {
            return Err(StoreError::WrongUser {
                path: index_path,
                expected: dir.user().to_owned(),
                found: user,
            });
        }
        let committed = db.committed_len()?;
        let data_path = dir.file(&data_name);
        let data = if data_path.exists() {
            DataFile::open(&data_path, true)?
        } else if committed == 0 {
            DataFile::create(&data_path)?
        } else {
            return Err(StoreError::DataFileMissing {
                path: data_path,
                committed,
            });
        };
        report.cut_bytes = cut_tail(&data, committed)?;
        let mut removed_any = false;
        for f in dir.data_files()? {
            if f != data_name {
                remove(&dir.file(&f), &mut report)?;
                removed_any = true;
            }
        }
        if removed_any {
            sync_dir(dir.path())?;
        }
        let last_time = db.last_time()?;
        let cat = Catalog::new(db, data, user, data_name);
        Ok(Store {
            dir: self.dir,
            _lock: self.lock,
            cat,
            opts,
            committed_len: committed,
            last_time,
            needs_recovery: false,
            report,
        })
    }
}

/// A store opened for writing: locked, recovered, ready for a run
/// ([`Store::begin_run`], in `run.rs`).
#[derive(Debug)]
pub struct Store {
    pub(crate) dir: UserDir,
    _lock: UserLock,
    pub(crate) cat: Catalog,
    pub(crate) opts: StoreOptions,
    pub(crate) committed_len: u64,
    pub(crate) last_time: Option<Timestamp>,
    pub(crate) needs_recovery: bool,
    report: OpenReport,
}

impl Store {
    /// Locks and opens `user`'s store under `root`, creating it if absent.
    pub fn open(root: &Path, user: &str, opts: StoreOptions) -> Result<Store> {
        UserDir::new(root, user)?.lock()?.open(opts)
    }

    /// Locks and opens `user`'s existing store under `root`.
    pub fn open_existing(root: &Path, user: &str, opts: StoreOptions) -> Result<Store> {
        let dir = UserDir::new(root, user)?;
        if !dir.exists() {
            // Not even a lock file is left behind for a user with no store.
            return Err(StoreError::NoStore {
                user: user.to_owned(),
                dir: dir.path().to_path_buf(),
            });
        }
        dir.lock()?.open_existing(opts)
    }

    /// What opening did (torn tail cut, leftovers removed, ...).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The queries.
    pub fn catalog(&self) -> &Catalog {
        &self.cat
    }

    /// The directory.
    pub fn dir(&self) -> &UserDir {
        &self.dir
    }

    /// The options it writes with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Length of the data file's committed chunks.
    pub fn committed_len(&self) -> u64 {
        self.committed_len
    }

    /// Cuts the data file back to what the index committed (after an aborted run).
    pub(crate) fn recover_tail(&mut self) -> Result<()> {
        let committed = self.cat.db.committed_len()?;
        cut_tail(&self.cat.data, committed)?;
        self.committed_len = committed;
        self.last_time = self.cat.db.last_time()?;
        self.needs_recovery = false;
        Ok(())
    }

    /// Checks the index against the store's rules (invariant 2 and the rest; see
    /// [`Catalog::check`]); `deep` adds SQLite's `integrity_check`.
    pub fn check(&self, deep: bool) -> Result<Vec<super::check::IndexFault>> {
        self.cat.check(deep)
    }

    /// Closes the index (checkpointing its WAL) and gives back the locked directory, for
    /// work that replaces files (compaction, reindex).
    pub fn close(self) -> Result<LockedDir> {
        self.cat.db.checkpoint()?;
        Ok(LockedDir {
            dir: self.dir,
            lock: self._lock,
        })
    }
}

/// A read-only view of a store, for ls, restore and verify. Holds the readers' lock
/// (shared), so the index file is not replaced under it; does not take the writer lock, so
/// a backup run may append meanwhile (SQLite's WAL keeps this view consistent).
///
/// It writes nothing. When the ordinary read-only open fails because SQLite would have to
/// create or grow `backupstate.sqlite3-shm` (a full file system), it reads the index file
/// as immutable instead, which is exact only while nothing can change it: so only with the
/// writer lock held (taken without waiting, and kept as long as the reader lives) and the
/// WAL empty or absent. Otherwise [`StoreError::ReadOnlyBlocked`] says which and what to do.
#[derive(Debug)]
pub struct StoreReader {
    dir: UserDir,
    _lock: UserLock,
    /// The writer lock, held when the index was opened as immutable.
    _writer: Option<UserLock>,
    cat: Catalog,
}

impl StoreReader {
    /// Opens `user`'s store under `root` for reading.
    pub fn open(root: &Path, user: &str) -> Result<StoreReader> {
        Self::open_with(root, user, false)
    }

    /// Opens `user`'s store for a restore past damage: a data file shorter than the index
    /// committed (cut short) is accepted, and each message beyond its end fails to read
    /// (a restore skips it as damaged and restores the rest). Nothing is ever written.
    pub fn open_past_damage(root: &Path, user: &str) -> Result<StoreReader> {
        Self::open_with(root, user, true)
    }

    fn open_with(root: &Path, user: &str, short_ok: bool) -> Result<StoreReader> {
        let dir = UserDir::new(root, user)?;
        let index_path = dir.index_path();
        if !dir.exists() || !index_path.exists() {
            return Err(StoreError::NoStore {
                user: user.to_owned(),
                dir: dir.path().to_path_buf(),
            });
        }
        let lock = UserLock::shared(&dir.file(READERS_LOCK_FILE), user)?;
        if dir.file(INDEX_NEW_FILE).exists() {
            return Err(StoreError::Invalid {
                what: "opening for reading",
                expected: "no interrupted index switch (the next writer finishes it)",
                found: format!("{INDEX_NEW_FILE} present"),
            });
        }
        let (db, writer) = open_index_read_only(dir.path(), user)?;
        let (u, data_name) = store_row(&db)?.ok_or_else(|| StoreError::IndexInvalid {
            path: index_path.clone(),
            expected: "one row in table store",
            found: "none".into(),
        })?;
        if u != user {
            return Err(StoreError::WrongUser {
                path: index_path,
                expected: user.to_owned(),
                found: u,
            });
        }
        let committed = db.committed_len()?;
        let data_path = dir.file(&data_name);
        if !data_path.exists() {
            return Err(StoreError::DataFileMissing {
                path: data_path,
                committed,
            });
        }
        let data = DataFile::open(&data_path, false)?;
        let actual = data.len()?;
        if actual < committed && !short_ok {
            return Err(StoreError::DataFileShort {
                path: data_path,
                committed,
                actual,
            });
        }
        Ok(StoreReader {
            dir,
            _lock: lock,
            _writer: writer,
            cat: Catalog::new(db, data, u, data_name),
        })
    }

    /// Whether the index was read as immutable (the file system could not give SQLite its
    /// `-shm`), with the writer lock held: a backup of this user is refused meanwhile.
    pub fn is_immutable(&self) -> bool {
        self._writer.is_some()
    }

    /// The queries.
    pub fn catalog(&self) -> &Catalog {
        &self.cat
    }

    /// The directory.
    pub fn dir(&self) -> &UserDir {
        &self.dir
    }
}

/// Opens the index in the store directory `dir` (of `user`, for messages) read-only,
/// creating no file (see [`StoreReader`]): the ordinary read-only open, or, when that fails
/// for want of a file SQLite cannot create, the immutable one with the writer lock, which is
/// returned to be held meanwhile.
pub(crate) fn open_index_read_only(dir: &Path, user: &str) -> Result<(IndexDb, Option<UserLock>)> {
    let index = dir.join(INDEX_FILE);
    let source = match IndexDb::open_read(&index, false) {
        Ok(db) => return Ok((db, None)),
        Err(StoreError::Sqlite { source, .. }) if wants_a_file(&source) => source,
        Err(e) => return Err(e),
    };
    let blocked = |blocker, source| StoreError::ReadOnlyBlocked {
        path: index.clone(),
        source,
        blocker,
    };
    let lock_path = dir.join(LOCK_FILE);
    let writer = match UserLock::exclusive_existing(&lock_path, user) {
        Ok(Some(l)) => l,
        Ok(None) => return Err(blocked(ReadBlocker::NoLockFile { path: lock_path }, source)),
        Err(StoreError::Locked { holder, .. }) => {
            return Err(blocked(ReadBlocker::WriterRunning { holder }, source))
        }
        Err(e) => return Err(e),
    };
    let wal = with_suffix(&index, "-wal");
    let len = match std::fs::metadata(&wal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).io(&wal, "reading the WAL's length"),
    };
    if len > 0 {
        return Err(blocked(ReadBlocker::WalNotEmpty { wal, len }, source));
    }
    let db = IndexDb::open_read(&index, true)?;
    Ok((db, Some(writer)))
}

/// Whether an SQLite error of a read-only open is SQLite wanting to create or grow a file
/// (the `-shm` or `-wal`): what a full file system (or a read-only one) causes.
fn wants_a_file(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(CannotOpen | SystemIoFailure | DiskFull | ReadOnly)
    )
}

/// The store row: (user, data file name).
fn store_row(db: &IndexDb) -> Result<Option<(String, String)>> {
    db.conn
        .query_row("SELECT user, data_file FROM store WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .sql(&db.path)
}

/// Invariant 1: cuts the data file to `committed`; a shorter file is an error.
fn cut_tail(data: &DataFile, committed: u64) -> Result<u64> {
    let actual = data.len()?;
    if actual < committed {
        return Err(StoreError::DataFileShort {
            path: data.path.clone(),
            committed,
            actual,
        });
    }
    if actual > committed {
        data.truncate(committed)?;
    }
    Ok(actual - committed)
}

fn remove(path: &Path, report: &mut OpenReport) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            report.removed.push(
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).io(path, "removing a leftover file"),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Removes an index being built, and finishes an interrupted switch.
fn cleanup(dir: &UserDir, report: &mut OpenReport) -> Result<()> {
    let tmp = dir.file(INDEX_TMP_FILE);
    for p in [with_suffix(&tmp, "-wal"), with_suffix(&tmp, "-shm"), tmp] {
        remove(&p, report)?;
    }
    if dir.file(INDEX_NEW_FILE).exists() {
        finish_switch(dir)?;
        report.finished_switch = true;
    }
    Ok(())
}

/// Replaces the index with the synced `backupstate.sqlite3.tmp` (see the module docs).
pub(crate) fn switch_index(dir: &UserDir) -> Result<()> {
    let _readers = UserLock::exclusive(&dir.file(READERS_LOCK_FILE), dir.user())?;
    let tmp = dir.file(INDEX_TMP_FILE);
    let new = dir.file(INDEX_NEW_FILE);
    std::fs::rename(&tmp, &new).io(&new, "renaming the new index into place")?;
    sync_dir(dir.path())?;
    finish_switch_locked(dir)
}

fn finish_switch(dir: &UserDir) -> Result<()> {
    let _readers = UserLock::exclusive(&dir.file(READERS_LOCK_FILE), dir.user())?;
    finish_switch_locked(dir)
}

fn finish_switch_locked(dir: &UserDir) -> Result<()> {
    let index = dir.file(INDEX_FILE);
    let mut ignored = OpenReport::default();
    // The old index's journal must not be applied to the new file.
    remove(&with_suffix(&index, "-wal"), &mut ignored)?;
    remove(&with_suffix(&index, "-shm"), &mut ignored)?;
    let new = dir.file(INDEX_NEW_FILE);
    std::fs::rename(&new, &index).io(&index, "switching to the new index")?;
    sync_dir(dir.path())
}

/// Copies the index (at layout `version`, older than [`LAYOUT_VERSION`], no connection
/// open) into a new one at the current version, built aside as `.tmp`, synced, and
/// switched in as a reindex's is. The data file is not read: the rows are the old index's,
/// in the new layout (see `COPY_V2_TO_V3`). The caller holds the writer's lock.
fn upgrade_index(dir: &UserDir, version: u32) -> Result<()> {
    let tmp = dir.file(INDEX_TMP_FILE);
    {
        let db = IndexDb::open(&tmp, OpenMode::Create)?;
        db.copy_from(&dir.index_path(), version, None)?;
        db.checkpoint()?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .io(&tmp, "syncing the upgraded index")?;
    switch_index(dir)
}

/// Creates an empty store: the data file, then the index built aside and renamed in.
///
/// A new user's store is the fixed cost of its first backup, so it is made with as few
/// syncs as its crash story allows (docs/store.md, "The crash story"): the data file is
/// created empty and not synced (an empty file has nothing to lose: if the crash takes it,
/// open finds the index's committed length 0 and makes it again); the index is this
/// process's empty index (made once by [`IndexDb::open`], so with the schema and pragmas of
/// every other index) copied into `.tmp`, its store row written with SQLite's syncs off
/// (a crash before the rename leaves a `.tmp`, which open removes), then synced once
/// before the rename; one sync of the directory makes the data file, the index and the lock
/// files durable together, and the three directories above are synced too, since they may
/// be new (on ext4 these find the journal already committed and cost a system call each).
fn create_store(dir: &UserDir, opts: &StoreOptions) -> Result<()> {
    let mut secs = opts.clock.now().secs;
    let name = loop {
        let n = data_file_name(secs);
        if !dir.file(&n).exists() {
            break n;
        }
        secs += 1;
    };
    let data = dir.file(&name);
    crate::private::create_new(&data).io(&data, "creating the data file")?;
    let tmp = dir.file(INDEX_TMP_FILE);
    write_empty_index(&tmp)?;
    {
        let conn = rusqlite::Connection::open_with_flags(
            &tmp,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .sql(&tmp)?;
        conn.execute_batch("PRAGMA synchronous=OFF").sql(&tmp)?;
        conn.execute(
            "INSERT INTO store (id, user, data_file) VALUES (1, ?1, ?2)",
            params![dir.user(), name],
        )
        .sql(&tmp)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .sql(&tmp)?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .io(&tmp, "syncing the new index")?;
    let index = dir.index_path();
    std::fs::rename(&tmp, &index).io(&index, "renaming the new index into place")?;
    sync_dir(dir.path())?;
    // The user's directory and the two fan-out levels above it may be new too: their
    // entries must survive a power loss as well, or the whole store could vanish after
    // the state db recorded a backup in it.
    let mut up = dir.path().parent();
    for _ in 0..3 {
        match up {
            Some(p) if !p.as_os_str().is_empty() => {
                sync_dir(p)?;
                up = p.parent();
            }
            _ => break,
        }
    }
    Ok(())
}

/// The bytes of an empty index (schema, pragmas, version; no store row) as
/// [`IndexDb::open`] makes one, made once per process at `path` and kept.
static EMPTY_INDEX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Writes an empty index to `path` (a new file, 0600): this process's copy of the one
/// [`IndexDb::open`] makes, so creating a store runs no CREATE TABLE and no sync.
fn write_empty_index(path: &Path) -> Result<()> {
    use std::io::Write;
    let bytes = match EMPTY_INDEX.get() {
        Some(b) => b,
        None => {
            {
                let db = IndexDb::open(path, OpenMode::Create)?;
                db.checkpoint()?;
            }
            let b = std::fs::read(path).io(path, "reading the new empty index")?;
            let mut ignored = OpenReport::default();
            for p in [
                with_suffix(path, "-wal"),
                with_suffix(path, "-shm"),
                path.to_path_buf(),
            ] {
                remove(&p, &mut ignored)?;
            }
            EMPTY_INDEX.get_or_init(|| b)
        }
    };
    let mut f = crate::private::create_new(path).io(path, "creating the new index")?;
    f.write_all(bytes).io(path, "writing the new index")
}
