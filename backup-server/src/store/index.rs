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
//! takes a database from version `i` to `i + 1`, each in its own transaction, in place or
//! (version 3, a new layout) by a copy into a new index. A database newer than the table is
//! refused, never opened; a reader reads one older than the layout through an in-memory copy.

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
    /// Whether the step copies the index into a new one (with the old attached as `old`)
    /// rather than altering it in place.
    pub copy: bool,
}

/// Every step of the schema's history, in order. A new index is created at once with the
/// layout of [`LAYOUT_VERSION`] ([`SCHEMA_V3`]), then the in-place steps after it; an older
/// index takes the in-place steps up to the copy, and the copy ([`Migration::copy`]) is made
/// by whoever can: a writer into a new file switched in (`LockedDir::open`), a reader into
/// memory ([`IndexDb::open_read`]).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "initial schema",
        sql: SCHEMA_V1,
        copy: false,
    },
    Migration {
        version: 2,
        what: "damaged messages (healed by the next run)",
        sql: SCHEMA_V2,
        copy: false,
    },
    Migration {
        version: 3,
        what: "leaner layout: folders by integer key, records WITHOUT ROWID keyed by \
               (folder, UID, run), no origin columns, no entries(chunk, header_offset) index",
        sql: COPY_V2_TO_V3,
        copy: true,
    },
    Migration {
        version: 4,
        what: "header index (From, To/Cc, Subject, Date, Message-ID of each message)",
        sql: SCHEMA_HEADERS,
        copy: false,
    },
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: u32 = 4;

/// The header index (version 4, in place on a version 3 index): each stored message's From, To and Cc, decoded Subject,
/// Date (unix seconds) and Message-ID, for `find` (docs/store.md, `headers`). Derived
/// from the data file (reindex rebuilds it), keyed by the message's entry. An index made
/// before this step has no rows for the messages it already held: `headers_start` names
/// the first entry the table covers (the entries after those of the upgraded index; 1 for
/// an index that had the table from the start; for an index copied from version 1 or 2,
/// the entries after those copied), so verify compares only rows a rebuild and
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

/// After [`COPY_V2_TO_V3`] into a new index (which has the `headers` step already, from
/// an empty `entries`: `headers_start` 1): the copied messages have no header rows, so
/// the table covers only the entries after them.
const HEADERS_START_AFTER_COPY: &str =
    "UPDATE headers_start SET entry = (SELECT coalesce(max(id), 0) + 1 FROM entries);";

/// The version whose whole layout [`SCHEMA_V3`] creates: a new index starts there, and an
/// index older than it is copied ([`COPY_V2_TO_V3`]), not altered in place.
pub const LAYOUT_VERSION: u32 = 3;

/// Version 3, the layout of every new index (docs/store.md, "Tables"). What changed from
/// version 2, and why (the index was 8.6 % of the data file on the benchmark's spool):
/// * `folders`: each folder's unique id once; every other table names a folder by its
///   `folder_key` (1 or 2 bytes where the unique id took 24, in every record row and in
///   the index over it). Keys are given in the order ingest first writes a row of the
///   folder (its first `meta_files` or `names` row), so a rebuild gives the same keys.
/// * `records`: `WITHOUT ROWID`, its primary key `(folder_key, uid, from_run)` (unique:
///   one snapshot per folder per run) is the table's own order, so the old index
///   `(uniqueid, uid, valid_from)` and the row id are gone and a folder's records are
///   read in one range scan.
/// * `messages` keeps no origin (folder and UID a message was first fetched for: the data
///   file's entry header still has it; nothing read it from the index).
/// * `entries` has no `UNIQUE (chunk, header_offset)` (its index was never searched;
///   `check` proves that a chunk's entries tile it, which a duplicate would break).
/// * No `snapshots(uniqueid, time)`: a folder's snapshots are found on the primary key,
///   newest first by run (runs and times increase together). No `names(folder, time)`:
///   finding a folder by name reads `names`, a row per name event, not per message.
/// * Every table and index takes at least one page, so a small store's index has a floor
///   of 19 pages (1 KiB each): 22 in version 2.
pub const SCHEMA_V3: &str = r#"
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
    time INTEGER
);
CREATE TABLE runs (
    run INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    started INTEGER,
    start_entry INTEGER REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    ended INTEGER,
    end_entry INTEGER REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE folders (
    id INTEGER PRIMARY KEY,
    uniqueid TEXT NOT NULL UNIQUE
);
CREATE TABLE messages (
    guid BLOB PRIMARY KEY,
    entry INTEGER NOT NULL UNIQUE REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    internaldate TEXT
) WITHOUT ROWID;
CREATE TABLE names (
    entry INTEGER PRIMARY KEY REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    folder_key INTEGER NOT NULL REFERENCES folders(id),
    folder TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    run INTEGER NOT NULL,
    time INTEGER NOT NULL
);
CREATE INDEX names_by_key ON names(folder_key, time);
CREATE TABLE meta_files (
    entry INTEGER PRIMARY KEY REFERENCES entries(id) DEFERRABLE INITIALLY DEFERRED,
    folder_key INTEGER NOT NULL REFERENCES folders(id),
    run INTEGER NOT NULL,
    file TEXT NOT NULL,
    folder TEXT NOT NULL,
    partition TEXT,
    time INTEGER NOT NULL,
    stat_size INTEGER,
    stat_mtime TEXT,
    stat_ino INTEGER
);
CREATE INDEX meta_files_by_snapshot ON meta_files(folder_key, run, file);
CREATE TABLE snapshots (
    folder_key INTEGER NOT NULL REFERENCES folders(id),
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
    PRIMARY KEY (folder_key, run)
) WITHOUT ROWID;
CREATE TABLE records (
    folder_key INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    from_run INTEGER NOT NULL,
    guid BLOB NOT NULL,
    size INTEGER NOT NULL,
    internaldate TEXT NOT NULL,
    flags TEXT NOT NULL,
    expunged INTEGER NOT NULL,
    valid_from INTEGER NOT NULL,
    to_run INTEGER,
    valid_to INTEGER,
    PRIMARY KEY (folder_key, uid, from_run)
) WITHOUT ROWID;
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
CREATE TABLE damaged (
    guid BLOB PRIMARY KEY,
    entry INTEGER,
    found INTEGER NOT NULL,
    why TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// The copy of a version 2 index (attached as `old`) into a new, empty version 3 one,
/// giving exactly the rows ingesting the data file gives (verify compares them). Folder
/// keys in ingest's order: by the first row of the folder ingest writes, a `meta_files` or
/// live `names` row at its own entry, a tombstone's `names` row at its run's end marker
/// (several at one end marker in entry order). `damaged` is copied on its own
/// ([`COPY_DAMAGED`]): a version 1 index has none.
pub const COPY_V2_TO_V3: &str = r#"
INSERT INTO store (id, user, data_file) SELECT id, user, data_file FROM old.store;
INSERT INTO chunks (offset, compressed_len, uncompressed_len, entries)
    SELECT offset, compressed_len, uncompressed_len, entries FROM old.chunks ORDER BY offset;
INSERT INTO entries (id, chunk, header_offset, data_offset, data_len, kind, run, time)
    SELECT id, chunk, header_offset, data_offset, data_len, kind, run, time
    FROM old.entries ORDER BY id;
INSERT INTO runs (run, user, started, start_entry, ended, end_entry)
    SELECT run, user, started, start_entry, ended, end_entry FROM old.runs ORDER BY run;
INSERT INTO folders (uniqueid)
    SELECT uniqueid FROM (
        SELECT uniqueid, entry * 4294967296 + entry AS at FROM old.meta_files
        UNION ALL
        SELECT n.uniqueid,
               CASE WHEN n.deleted = 0 THEN n.entry
                    ELSE coalesce(r.end_entry, n.entry) END * 4294967296 + n.entry
        FROM old.names n LEFT JOIN old.runs r ON r.run = n.run)
    GROUP BY uniqueid ORDER BY min(at);
INSERT INTO messages (guid, entry, internaldate)
    SELECT guid, entry, internaldate FROM old.messages ORDER BY guid;
INSERT INTO names (entry, folder_key, folder, deleted, run, time)
    SELECT n.entry, f.id, n.folder, n.deleted, n.run, n.time
    FROM old.names n JOIN folders f ON f.uniqueid = n.uniqueid ORDER BY n.entry;
INSERT INTO meta_files (entry, folder_key, run, file, folder, partition, time, stat_size,
                        stat_mtime, stat_ino)
    SELECT m.entry, f.id, m.run, m.file, m.folder, m.partition, m.time, m.stat_size,
           m.stat_mtime, m.stat_ino
    FROM old.meta_files m JOIN folders f ON f.uniqueid = m.uniqueid ORDER BY m.entry;
INSERT INTO snapshots (folder_key, run, time, folder, partition, index_entry, minor_version,
                       uidvalidity, last_uid, highestmodseq, records, exists_count)
    SELECT f.id, s.run, s.time, s.folder, s.partition, s.index_entry, s.minor_version,
           s.uidvalidity, s.last_uid, s.highestmodseq, s.records, s.exists_count
    FROM old.snapshots s JOIN folders f ON f.uniqueid = s.uniqueid ORDER BY f.id, s.run;
INSERT INTO records (folder_key, uid, from_run, guid, size, internaldate, flags, expunged,
                     valid_from, to_run, valid_to)
    SELECT f.id, r.uid, r.from_run, r.guid, r.size, r.internaldate, r.flags, r.expunged,
           r.valid_from, r.to_run, r.valid_to
    FROM old.records r JOIN folders f ON f.uniqueid = r.uniqueid
    ORDER BY f.id, r.uid, r.from_run;
INSERT INTO user_files (entry, kind, script, active, run, time, stat_size, stat_mtime,
                        stat_ino)
    SELECT entry, kind, script, active, run, time, stat_size, stat_mtime, stat_ino
    FROM old.user_files ORDER BY entry;
"#;

/// The damage marks of a version 2 index (attached as `old`), copied with
/// [`COPY_V2_TO_V3`].
const COPY_DAMAGED: &str = "INSERT INTO damaged (guid, entry, found, why)
    SELECT guid, entry, found, why FROM old.damaged ORDER BY guid;";

/// Version 2 (in place, on a version 1 index): the messages found damaged (by verify, a restore or a repair), so the next
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

/// Version 1 (kept to read the history; a new index is [`SCHEMA_V3`]). Times named `time`, `started`, `ended`, `valid_from` and `valid_to` are
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
    "folders",
    "messages",
    "names",
    "meta_files",
    "snapshots",
    "records",
    "user_files",
    "headers",
];

/// `path` as an SQLite URI opening it read-only, and `immutable` when asked: every byte
/// but the unreserved ones and `/` percent-encoded, so no `?`, `#` or `%` in a path is
/// taken for URI syntax.
fn sqlite_uri(path: &Path, immutable: bool) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str(if immutable {
        "?mode=ro&immutable=1"
    } else {
        "?mode=ro"
    });
    uri
}

/// `sql` with every run of white space made one space, and none after `(` or `,` or before
/// `)`: SQLite keeps each CREATE statement's text in the file, and on a small store the
/// indentation alone took pages. For schema text only (no string literal holds those).
fn compact_sql(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let mut out = words.join(" ");
    for (from, to) in [("( ", "("), (" )", ")"), (", ", ",")] {
        out = out.replace(from, to);
    }
    out
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
            Connection::open_with_flags(sqlite_uri(path, true), flags)
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
        if v < LAYOUT_VERSION {
            // An index no writer has upgraded yet (a quiet user's, say): read a copy of it
            // at the current layout, made in memory (never written anywhere), so ls,
            // restore and verify read old and new stores alike.
            drop(db);
            let mem = IndexDb::in_memory(path)?;
            mem.copy_from(path, v, Some(immutable))?;
            return Ok(mem);
        }
        // Version 3 lacks only the header index, which a writer adds empty (its
        // `headers_start` one past the last entry): read it as a store with no header rows
        // (empty tables of the session's own, in memory), so ls, restore, verify and find
        // work on stores no run has upgraded yet.
        if v < SCHEMA_VERSION {
            db.conn
                .execute_batch(&SCHEMA_HEADERS.replace("CREATE TABLE", "CREATE TEMP TABLE"))
                .sql(path)?;
        }
        Ok(db)
    }

    /// Fills this new, empty index (at the current version) with the rows of the index
    /// at `old` (version `version`, 1 or 2: older than [`LAYOUT_VERSION`]), in one
    /// transaction. `read_only`: `Some(immutable)` attaches `old` read-only (a reader; see
    /// [`IndexDb::open_read`] for `immutable`), `None` as it is (a writer holding the
    /// store's lock).
    pub(crate) fn copy_from(
        &self,
        old: &Path,
        version: u32,
        read_only: Option<bool>,
    ) -> Result<()> {
        let name = match read_only {
            Some(immutable) => sqlite_uri(old, immutable),
            None => old.to_string_lossy().into_owned(),
        };
        self.conn
            .execute("ATTACH DATABASE ?1 AS old", [&name])
            .sql(old)?;
        let damaged = if version >= 2 { COPY_DAMAGED } else { "" };
        let sql = format!(
            "BEGIN IMMEDIATE; {COPY_V2_TO_V3} {damaged} {HEADERS_START_AFTER_COPY} COMMIT;"
        );
        let copied = self.conn.execute_batch(&sql).sql(old);
        if copied.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let detached = self.conn.execute_batch("DETACH DATABASE old").sql(old);
        copied.and(detached)
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

    /// Applies the migrations the database lacks, one transaction each: a new database
    /// gets [`SCHEMA_V3`] and the in-place steps after it; an older one the in-place steps
    /// up to the first copy, which it stops before (the caller makes the copy: see
    /// [`MIGRATIONS`]).
    fn migrate(&self) -> Result<()> {
        let v = self.version()?;
        if v > SCHEMA_VERSION {
            return Err(StoreError::IndexTooNew {
                path: self.path.clone(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        // Compacted, as every step's schema text is kept in the file (the in-place steps
        // hold no string literal either).
        let mut steps: Vec<(String, u32)> = Vec::new();
        if v == 0 {
            steps.push((compact_sql(SCHEMA_V3), LAYOUT_VERSION));
        }
        let from = v.max(if v == 0 { LAYOUT_VERSION } else { 0 });
        for m in MIGRATIONS.iter().filter(|m| m.version > from) {
            if m.copy {
                break;
            }
            steps.push((compact_sql(m.sql), m.version));
        }
        for (sql, version) in steps {
            let sql = format!("BEGIN IMMEDIATE; {sql} PRAGMA user_version = {version}; COMMIT;");
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
    fn the_schema_is_kept_compact() {
        let sql = compact_sql(SCHEMA_V3);
        assert!(!sql.contains("  ") && !sql.contains('\n') && !sql.contains(", "));
        assert!(sql.starts_with("CREATE TABLE store (id INTEGER PRIMARY KEY CHECK (id = 1),user"));
        let dir = tempfile::tempdir().unwrap();
        let db = IndexDb::open(&dir.path().join("i.sqlite3"), OpenMode::Create).unwrap();
        let stored: i64 = db
            .conn
            .query_row("SELECT sum(length(sql)) FROM sqlite_master", [], |r| {
                r.get(0)
            })
            .unwrap();
        // The version 3 layout and the header index (version 4).
        assert!(stored < 3300, "{stored} bytes of schema text");
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

    /// A version 1 or 2 index at `p`, with `sql` run after its schema.
    fn old_index(p: &Path, version: u32, sql: &str) {
        let conn = Connection::open(p).unwrap();
        let v2 = if version >= 2 { SCHEMA_V2 } else { "" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; BEGIN; {SCHEMA_V1} {v2} {sql} PRAGMA user_version = {version}; COMMIT;"
        ))
        .unwrap();
    }

    #[test]
    fn a_version_1_index_is_read_as_a_copy_and_stepped_to_2_by_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.sqlite3");
        old_index(&p, 1, "INSERT INTO store VALUES (1, 'u', 'd');");
        let r = IndexDb::open(&p, OpenMode::Read).unwrap();
        assert_eq!(r.version().unwrap(), SCHEMA_VERSION);
        let n: i64 = r
            .conn
            .query_row("SELECT count(*) FROM damaged", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let user: String = r
            .conn
            .query_row("SELECT user FROM store", [], |r| r.get(0))
            .unwrap();
        assert_eq!(user, "u");
        drop(r);
        // The in-place step; the copy to version 3 is the opener's (LockedDir::open).
        let w = IndexDb::open(&p, OpenMode::Write).unwrap();
        assert_eq!(w.version().unwrap(), 2);
        w.conn
            .execute(
                "INSERT INTO damaged (guid, entry, found, why) VALUES (x'00', NULL, 0, 'x')",
                [],
            )
            .unwrap();
        drop(w);
        let new = IndexDb::open(&dir.path().join("n.sqlite3"), OpenMode::Create).unwrap();
        new.copy_from(&p, 2, None).unwrap();
        assert_eq!(new.version().unwrap(), SCHEMA_VERSION);
        let why: String = new
            .conn
            .query_row("SELECT why FROM damaged", [], |r| r.get(0))
            .unwrap();
        assert_eq!(why, "x");
    }

    #[test]
    fn the_copy_keys_folders_in_the_order_ingest_first_writes_them() {
        // Folder a: first row its meta file (entry 4). Folder b: a live name (entry 2).
        // Folder c: only a tombstone (entry 3), trusted at its run's end marker (entry 9),
        // so keyed after a. Folder d: a tombstone applied at the same end marker, entry 5.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.sqlite3");
        old_index(
            &p,
            2,
            "INSERT INTO store VALUES (1, 'u', 'd');
             INSERT INTO chunks VALUES (0, 10, 512, 9);
             INSERT INTO entries (id, chunk, header_offset, data_offset, data_len, kind)
               VALUES (1, 0, 512, 512, 0, 'x'), (2, 0, 1024, 1024, 0, 'x'), (3, 0, 1536, 1536, 0, 'x'), (4, 0, 2048, 2048, 0, 'x'), (5, 0, 2560, 2560, 0, 'x'), (6, 0, 3072, 3072, 0, 'x'), (7, 0, 3584, 3584, 0, 'x'), (8, 0, 4096, 4096, 0, 'x'), (9, 0, 4608, 4608, 0, 'x');
             INSERT INTO runs VALUES (1, 'u', 0, 1, 9, 9);
             INSERT INTO names VALUES (2, 'b', 'B', 0, 1, 2);
             INSERT INTO names VALUES (3, 'c', 'C', 1, 1, 3);
             INSERT INTO names VALUES (5, 'd', 'D', 1, 1, 5);
             INSERT INTO meta_files VALUES (4, 'a', 1, 'cyrus.header', 'A', NULL, 4, NULL, NULL, NULL);
             INSERT INTO records VALUES (1, 'a', 1, x'01', 1, '1', '', 0, 1, 4, NULL, NULL);",
        );
        let new = IndexDb::open(&dir.path().join("n.sqlite3"), OpenMode::Create).unwrap();
        new.copy_from(&p, 2, None).unwrap();
        let keys: Vec<String> = new
            .conn
            .prepare("SELECT uniqueid FROM folders ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keys, ["b", "a", "c", "d"]);
        let rec: (i64, u32) = new
            .conn
            .query_row("SELECT folder_key, uid FROM records", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(rec, (2, 1));
    }
}
