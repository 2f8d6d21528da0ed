//! The index, `backupstate.sqlite3`: its schema, its migrations, and how it is opened.
//!
//! Settings, and why:
//! * `journal_mode=WAL`: readers (ls, restore) keep a stable view while a run appends, and
//!   a run's one long write transaction does not block them.
//! * `synchronous=FULL`: a COMMIT is on disk when it returns. NORMAL would be consistent
//!   too, but could lose the last commits on power loss *after* the state db recorded the
//!   user as backed up; the data file's chunks would then be cut off as a torn tail and the
//!   state db would claim a backup the store does not hold. FULL costs one fsync per run
//!   per user, next to the data file's own.
//! * `page_size=1024` (set when the file is created; WAL fixes it after): most stores are
//!   small, and SQLite gives every table and index at least one page, so 4 KiB pages cost
//!   about 60 KiB a user in empty pages alone (143 KiB against 86 KiB for a user of 160
//!   messages: 13 % of the store on the benchmark's spool). Lookups in a 100,000-message
//!   folder stay within a few percent (docs/PERFORMANCE.md, the store bench).
//! * `foreign_keys=ON`, with every reference to an entry or chunk `DEFERRABLE INITIALLY
//!   DEFERRED`: a run writes its entry rows as it appends and the chunk row when the chunk
//!   closes; the keys are checked at COMMIT.
//! * Write transactions are `BEGIN IMMEDIATE`: the write lock is taken up front, never
//!   upgraded half-way (no SQLITE_BUSY in the middle of a run).
//!
//! Readers ([`IndexDb::open_read`]) set none of these: they open `SQLITE_OPEN_READ_ONLY`
//! and never write, checkpoint or migrate (see `StoreReader` for reading on a full disk).
//!
//! The schema version is SQLite's `user_version`. [`MIGRATIONS`] is a table: entry `i`
//! takes a database from version `i` to `i + 1`, each in its own transaction. A database
//! newer than the table is refused, never opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use formats::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::{IoContext, Result, SqlContext, StoreError};
use super::ingest::from_ns;

/// One step of the schema's history.
pub struct Migration {
    /// The version the step produces.
    pub version: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, in order. The schema of a new index is all of them applied.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "initial schema",
        sql: SCHEMA_V1,
    },
    Migration {
        version: 2,
        what: "damaged messages (healed by the next run)",
        sql: SCHEMA_V2,
    },
    Migration {
        version: 3,
        what: "header index (From, To/Cc, Subject, Date, Message-ID of each message)",
        sql: SCHEMA_HEADERS,
    },
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: u32 = 3;

/// The header index (version 3): each stored message's From, To and Cc, decoded Subject,
/// Date (unix seconds) and Message-ID, for `find` (docs/store.md, `headers`). Derived
/// from the data file (reindex rebuilds it), keyed by the message's entry. An index made
/// before this step has no rows for the messages it already held: `headers_start` names
/// the first entry the table covers (the entries after those of the upgraded index; 1 for
/// an index that had the table from the start), so verify compares only rows a rebuild and
/// the index can both have, and `find` reads the older messages' header blocks from the
/// data file (until a reindex covers them).
const SCHEMA_HEADERS: &str = r#"
CREATE TABLE headers (
    entry INTEGER PRIMARY KEY REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    from_addr TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    date INTEGER,
    message_id TEXT NOT NULL
);
CREATE TABLE headers_start (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entry INTEGER NOT NULL
);
INSERT INTO headers_start (id, entry) VALUES (1, (SELECT coalesce(max(id), 0) + 1 FROM entries));
"#;

/// Version 2: the messages found damaged (by verify, a restore or a repair), so the next
/// run fetches them again while Cyrus still has them (docs/store.md, "Damage and healing").
/// Keyed by GUID: a run that stores a good copy moves `messages.entry` to it and deletes
/// the row. `entry` is the damaged entry (the one `messages` pointed at when the damage
/// was found), NULL when the store holds no entry at all for the GUID any more (a repair
/// dropped it). No foreign key: the row must outlive the entry it names, which a repair or
/// a compaction removes.
const SCHEMA_V2: &str = r#"
CREATE TABLE damaged (
    guid BLOB PRIMARY KEY,
    entry INTEGER,
    found INTEGER NOT NULL,
    why TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// Version 1. Times named `time`, `started`, `ended`, `valid_from` and `valid_to` are
/// nanoseconds since the epoch (64-bit); `stat_mtime` and `internaldate` are the archive's
/// text form (`<secs>` or `<secs>.<9 digits>`), compared only for equality. docs/store.md
/// describes every column.
const SCHEMA_V1: &str = r#"
CREATE TABLE store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    user TEXT NOT NULL,
    data_file TEXT NOT NULL
);
CREATE TABLE chunks (
    offset INTEGER PRIMARY KEY,
    compressed_len INTEGER NOT NULL,
    uncompressed_len INTEGER NOT NULL,
    entries INTEGER NOT NULL
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    chunk INTEGER NOT NULL REFERENCES chunks(offset) DEFERRABLE INITIALLY DEFERRED,
    header_offset INTEGER NOT NULL,
    data_offset INTEGER NOT NULL,
    data_len INTEGER NOT NULL,
    kind TEXT NOT NULL,
    run INTEGER,
    time INTEGER,
    UNIQUE (chunk, header_offset)
);
CREATE TABLE runs (
    run INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    started INTEGER,
    start_entry INTEGER REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    ended INTEGER,
    end_entry INTEGER REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE messages (
    guid BLOB PRIMARY KEY,
    entry INTEGER NOT NULL UNIQUE REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    internaldate TEXT,
    origin_uniqueid TEXT,
    origin_uid INTEGER
) WITHOUT ROWID;
CREATE TABLE names (
    entry INTEGER PRIMARY KEY REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    uniqueid TEXT NOT NULL,
    folder TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    run INTEGER NOT NULL,
    time INTEGER NOT NULL
);
CREATE INDEX names_by_uniqueid ON names(uniqueid, time);
CREATE INDEX names_by_folder ON names(folder, time);
CREATE TABLE meta_files (
    entry INTEGER PRIMARY KEY REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    uniqueid TEXT NOT NULL,
    run INTEGER NOT NULL,
    file TEXT NOT NULL,
    folder TEXT NOT NULL,
    partition TEXT,
    time INTEGER NOT NULL,
    stat_size INTEGER,
    stat_mtime TEXT,
    stat_ino INTEGER
);
CREATE INDEX meta_files_by_snapshot ON meta_files(uniqueid, run, file);
CREATE TABLE snapshots (
    uniqueid TEXT NOT NULL,
    run INTEGER NOT NULL,
    time INTEGER NOT NULL,
    folder TEXT NOT NULL,
    partition TEXT,
    index_entry INTEGER NOT NULL REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    minor_version INTEGER NOT NULL,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    highestmodseq INTEGER,
    records INTEGER NOT NULL,
    exists_count INTEGER NOT NULL,
    PRIMARY KEY (uniqueid, run)
) WITHOUT ROWID;
CREATE INDEX snapshots_by_time ON snapshots(uniqueid, time);
CREATE TABLE records (
    id INTEGER PRIMARY KEY,
    uniqueid TEXT NOT NULL,
    uid INTEGER NOT NULL,
    guid BLOB NOT NULL,
    size INTEGER NOT NULL,
    internaldate TEXT NOT NULL,
    flags TEXT NOT NULL,
    expunged INTEGER NOT NULL,
    from_run INTEGER NOT NULL,
    valid_from INTEGER NOT NULL,
    to_run INTEGER,
    valid_to INTEGER
);
CREATE INDEX records_by_uid ON records(uniqueid, uid, valid_from);
CREATE INDEX records_by_guid ON records(guid);
CREATE TABLE user_files (
    entry INTEGER PRIMARY KEY REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    kind TEXT NOT NULL,
    script TEXT NOT NULL,
    active INTEGER,
    run INTEGER NOT NULL,
    time INTEGER NOT NULL,
    stat_size INTEGER,
    stat_mtime TEXT,
    stat_ino INTEGER
);
CREATE INDEX user_files_by_kind ON user_files(kind, script, time);
"#;

/// Every table derived from the data file, in the order a comparison walks them: what
/// reindex rebuilds row for row. Not `damaged`: it records what verify, a restore or a
/// repair found, which the data file does not say (a rebuilt index starts without marks;
/// the next verify finds the damage again).
pub const TABLES: &[&str] = &[
    "store",
    "chunks",
    "entries",
    "runs",
    "messages",
    "names",
    "meta_files",
    "snapshots",
    "records",
    "user_files",
    "headers",
];

/// `path` as an SQLite URI opening it read-only and immutable: every byte but the
/// unreserved ones and `/` percent-encoded, so no `?`, `#` or `%` in a path is taken
/// for URI syntax.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

/// How an index is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Create it if missing, migrate it if old.
    Create,
    /// It must exist; migrate it if old.
    Write,
    /// It must exist at the current version; never written.
    Read,
}

/// An open index connection and its path (for error messages).
#[derive(Debug)]
pub(crate) struct IndexDb {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
}

impl IndexDb {
    /// Opens (or creates) the index at `path`, sets the pragmas, migrates. A
    /// [`OpenMode::Read`] open is [`IndexDb::open_read`] without `immutable`.
    pub(crate) fn open(path: &Path, mode: OpenMode) -> Result<IndexDb> {
        if mode == OpenMode::Read {
            return Self::open_read(path, false);
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if mode == OpenMode::Create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
            // 0600 before SQLite makes it 0644: its -wal and -shm take this file's mode.
            crate::private::prepare_sqlite(path).io(path, "creating the index")?;
        }
        let conn = Connection::open_with_flags(path, flags).sql(path)?;
        let db = IndexDb {
            conn,
            path: path.to_path_buf(),
        };
        db.conn.busy_timeout(Duration::from_secs(30)).sql(path)?;
        if mode == OpenMode::Create {
            // Only takes effect on a new, empty file; a no-op on an existing one.
            db.conn.execute_batch("PRAGMA page_size=1024").sql(path)?;
        }
        let mode_now: String = db
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .sql(path)?;
        if !mode_now.eq_ignore_ascii_case("wal") {
            return Err(StoreError::IndexInvalid {
                path: path.to_path_buf(),
                expected: "a database in WAL mode",
                found: format!("journal mode {mode_now}"),
            });
        }
        db.conn
            .execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .sql(path)?;
        db.conn.set_prepared_statement_cache_capacity(64);
        db.migrate()?;
        Ok(db)
    }

    /// Opens the existing index at `path` read-only (`SQLITE_OPEN_READ_ONLY`: it never
    /// writes, checkpoints or migrates), and checks its schema version, which is also the
    /// first read: an index SQLite cannot read as it stands fails here, not later.
    ///
    /// `immutable`: opened as `file:...?mode=ro&immutable=1`, which reads the database file
    /// alone, with no locking and no `-wal`/`-shm`, so it needs to create nothing (a full
    /// disk). It is exact only while nobody can write the index and its WAL holds nothing:
    /// the caller ([`StoreReader::open`](super::StoreReader::open)) makes sure of both.
    pub(crate) fn open_read(path: &Path, immutable: bool) -> Result<IndexDb> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = if immutable {
            Connection::open_with_flags(immutable_uri(path), flags)
        } else {
            // A plain name is not parsed as a URI even with SQLITE_OPEN_URI.
            Connection::open_with_flags(path, flags)
        }
        .sql(path)?;
        let db = IndexDb {
            conn,
            path: path.to_path_buf(),
        };
        db.conn.busy_timeout(Duration::from_secs(30)).sql(path)?;
        // Sorts and temporary tables a query needs stay in memory: no temporary file on a
        // full disk.
        db.conn
            .execute_batch("PRAGMA temp_store=MEMORY")
            .sql(path)?;
        db.conn.set_prepared_statement_cache_capacity(64);
        let v = db.version()?;
        if v > SCHEMA_VERSION {
            return Err(StoreError::IndexTooNew {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        if v == 0 {
            return Err(StoreError::IndexTooOld {
                path: path.to_path_buf(),
                found: v,
                expected: SCHEMA_VERSION,
            });
        }
        // Versions 1 and 2 lack only tables a writer adds empty (or nearly): read them as
        // a store with no damage recorded and no header rows (empty tables of the
        // session's own, in memory), so ls, restore, verify and find work on stores no run
        // has upgraded yet.
        if v < 2 {
            db.conn
                .execute_batch(&SCHEMA_V2.replace("CREATE TABLE", "CREATE TEMP TABLE"))
                .sql(path)?;
        }
        if v < 3 {
            db.conn
                .execute_batch(&SCHEMA_HEADERS.replace("CREATE TABLE", "CREATE TEMP TABLE"))
                .sql(path)?;
        }
        Ok(db)
    }

    /// A new, empty index in memory, at the current schema: what verify rebuilds from the
    /// data file to compare with the index on disk. Needs no disk space (a full disk) and
    /// leaves nothing behind. `label` names it in errors.
    pub(crate) fn in_memory(label: &Path) -> Result<IndexDb> {
        let conn = Connection::open_in_memory().sql(label)?;
        let db = IndexDb {
            conn,
            path: label.to_path_buf(),
        };
        db.conn
            .execute_batch("PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;")
            .sql(label)?;
        db.conn.set_prepared_statement_cache_capacity(64);
        db.migrate()?;
        Ok(db)
    }

    /// The schema version (`PRAGMA user_version`).
    pub(crate) fn version(&self) -> Result<u32> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .sql(&self.path)
    }

    /// Applies the migrations the database lacks, one transaction each.
    fn migrate(&self) -> Result<()> {
        let v = self.version()?;
        if v > SCHEMA_VERSION {
            return Err(StoreError::IndexTooNew {
                path: self.path.clone(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > v) {
            let sql = format!(
                "BEGIN IMMEDIATE; {} PRAGMA user_version = {}; COMMIT;",
                m.sql, m.version
            );
            if let Err(e) = self.conn.execute_batch(&sql) {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(StoreError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// End of the last committed chunk (0 for a store without chunks).
    pub(crate) fn committed_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT offset + compressed_len FROM chunks ORDER BY offset DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .sql(&self.path)?
            .unwrap_or(0);
        Ok(n as u64)
    }

    /// The time of the newest entry, if any.
    pub(crate) fn last_time(&self) -> Result<Option<Timestamp>> {
        // Entry times increase in file order (a run starts after the previous entry), so
        // the last timed entry has the newest: a few steps down the primary key, not a scan
        // (an unknown kind, written by a newer version, has no time and is stepped over).
        let t: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT time FROM entries WHERE time IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .sql(&self.path)?;
        Ok(t.flatten().map(from_ns))
    }

    /// Runs `PRAGMA integrity_check` and `PRAGMA foreign_key_check`; returns what they
    /// report (empty when both are clean).
    pub(crate) fn integrity_check(&self) -> Result<Vec<String>> {
        self.sqlite_check("integrity_check")
    }

    /// Runs `PRAGMA quick_check` (integrity_check without the checks that indexes match
    /// their tables and that text is well-formed: about the cost of reading every page
    /// once) and `PRAGMA foreign_key_check`; returns what they report.
    pub(crate) fn quick_check(&self) -> Result<Vec<String>> {
        self.sqlite_check("quick_check")
    }

    fn sqlite_check(&self, pragma: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut st = self
            .conn
            .prepare(&format!("PRAGMA {pragma}"))
            .sql(&self.path)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .sql(&self.path)?;
        for r in rows {
            let r = r.sql(&self.path)?;
            if r != "ok" {
                out.push(format!("{pragma}: {r}"));
            }
        }
        let mut st = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .sql(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(format!(
                    "foreign key: table {} row {:?} points at a missing row of {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })
            .sql(&self.path)?;
        for r in rows {
            out.push(r.sql(&self.path)?);
        }
        Ok(out)
    }

    /// Checkpoints the WAL into the database file and empties it.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .sql(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_immutable_read_takes_any_path_and_writes_nothing() {
        // URI syntax in a directory name must not cut the file name short.
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a?b#c%41 d");
        std::fs::create_dir(&sub).unwrap();
        let p = sub.join("i.sqlite3");
        drop(IndexDb::open(&p, OpenMode::Create).unwrap());
        let before: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let db = IndexDb::open_read(&p, true).unwrap();
        assert_eq!(db.version().unwrap(), SCHEMA_VERSION);
        assert!(
            db.conn.execute_batch("CREATE TABLE x (y)").is_err(),
            "writable"
        );
        drop(db);
        let after: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after, "the immutable read created a file");
        assert!(matches!(
            IndexDb::open_read(&sub.join("absent"), true),
            Err(StoreError::Sqlite { .. })
        ));
    }

    #[test]
    fn creates_migrates_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.sqlite3");
        let db = IndexDb::open(&p, OpenMode::Create).unwrap();
        assert_eq!(db.version().unwrap(), SCHEMA_VERSION);
        assert!(db.integrity_check().unwrap().is_empty());
        for t in TABLES {
            let n: i64 = db
                .conn
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0);
        }
        db.conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(db);
        assert!(matches!(
            IndexDb::open(&p, OpenMode::Write),
            Err(StoreError::IndexTooNew { found: 99, .. })
        ));
        assert!(matches!(
            IndexDb::open(&dir.path().join("absent"), OpenMode::Write),
            Err(StoreError::Sqlite { .. })
        ));
    }

    #[test]
    fn a_version_1_index_is_read_without_damage_and_upgraded_by_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.sqlite3");
        {
            let conn = Connection::open(&p).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA journal_mode=WAL; BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
            ))
            .unwrap();
        }
        let r = IndexDb::open(&p, OpenMode::Read).unwrap();
        assert_eq!(r.version().unwrap(), 1);
        let n: i64 = r
            .conn
            .query_row("SELECT count(*) FROM damaged", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        drop(r);
        let w = IndexDb::open(&p, OpenMode::Write).unwrap();
        assert_eq!(w.version().unwrap(), SCHEMA_VERSION);
        w.conn
            .execute(
                "INSERT INTO damaged (guid, entry, found, why) VALUES (x'00', NULL, 0, 'x')",
                [],
            )
            .unwrap();
    }
}
