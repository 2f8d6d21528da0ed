//! The state db: every user with its server, partition, RAID set and backup times, and
//! every run. SQLite (WAL) by default; the SQL stays plain so the same schema can live in
//! PostgreSQL for fleets of several backup hosts. docs/backup-server.md has the schema.
//!
//! Times are whole unix seconds (UTC). One writer at a time: the run's coordinating
//! thread writes a row per user as each user's store has committed.

mod lifecycle;

pub use lifecycle::{PendingMove, VanishedStore};

use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema version this build writes (`PRAGMA user_version`).
pub const STATE_SCHEMA_VERSION: i64 = 4;

/// Version 1 to 2: the quiet key (a listing fingerprint and data-file stamp that lets a run
/// skip a quiet user's store; docs/store.md, "Quiet users"), then called `unchanged_key`.
const MIGRATE_1_TO_2: &str = "ALTER TABLE users ADD COLUMN unchanged_key TEXT;";

/// Version 2 to 3: the column takes the name the code and the docs use.
const MIGRATE_2_TO_3: &str = "ALTER TABLE users RENAME COLUMN unchanged_key TO quiet_key;";

/// Version 3 to 4: the user lifecycle (`state/lifecycle.rs`): a vanished user's store
/// removed after its retention, a user renamed in Cyrus, a store still to follow its user.
const MIGRATE_3_TO_4: &str = "ALTER TABLE users ADD COLUMN removed_at INTEGER;
ALTER TABLE users ADD COLUMN renamed_to TEXT;
ALTER TABLE users ADD COLUMN store_from TEXT;";

/// The schema, version 4 (version 3 lacked `removed_at`, `renamed_to` and `store_from`;
/// version 2 called `users.quiet_key` `unchanged_key`; version 1 lacked it).
pub const STATE_SCHEMA: &str = "
CREATE TABLE servers (
    name          TEXT PRIMARY KEY,
    address       TEXT NOT NULL,
    last_refresh  INTEGER,          -- last time its user list was read whole
    last_error    TEXT              -- why the last refresh failed (NULL: it did not)
);
CREATE TABLE users (
    name          TEXT PRIMARY KEY, -- the Cyrus user id (one store per name on this host)
    server        TEXT NOT NULL,
    partition     TEXT NOT NULL,    -- of the user's INBOX
    raidset       TEXT,             -- NULL: the partition is in no configured RAID set
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL, -- last refresh that listed the user
    vanished_at   INTEGER,          -- set when a refresh no longer lists the user; kept, not deleted
    last_success  INTEGER,          -- start of the last backup that committed complete
    last_commit   INTEGER,          -- start of the last backup that committed (maybe incomplete)
    last_attempt  INTEGER,          -- start of the last backup tried, whatever came of it
    last_error    TEXT,             -- what the last attempt said when it failed or was incomplete
    last_run      INTEGER,          -- runs.id of the last attempt
    backups_ok    INTEGER NOT NULL DEFAULT 0,
    backups_incomplete INTEGER NOT NULL DEFAULT 0,
    backups_failed INTEGER NOT NULL DEFAULT 0,
    skips         INTEGER NOT NULL DEFAULT 0, -- locked by another run
    messages_stored INTEGER NOT NULL DEFAULT 0, -- summed over all backups
    bytes_stored  INTEGER NOT NULL DEFAULT 0,
    quiet_key     TEXT,             -- listing fingerprint + store stamp when the last complete
                                    -- backup left nothing to do (NULL: unknown); docs/store.md
    removed_at    INTEGER,          -- the vanished user's store was removed then (retention over)
    renamed_to    TEXT,             -- renamed in Cyrus: its store is now that user's
    store_from    TEXT              -- this user's store is still under that name: to be moved
);
CREATE INDEX users_last_success ON users (last_success);
CREATE INDEX users_raidset ON users (raidset, last_success);
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    started       INTEGER NOT NULL,
    ended         INTEGER,
    status        TEXT NOT NULL,    -- running, done, incomplete, interrupted, failed
    host          TEXT,
    pid           INTEGER,
    users_planned INTEGER NOT NULL DEFAULT 0,
    users_done    INTEGER NOT NULL DEFAULT 0,
    users_incomplete INTEGER NOT NULL DEFAULT 0,
    users_skipped INTEGER NOT NULL DEFAULT 0,
    users_failed  INTEGER NOT NULL DEFAULT 0,
    messages_fetched INTEGER NOT NULL DEFAULT 0,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    messages_stored INTEGER NOT NULL DEFAULT 0,
    bytes_stored  INTEGER NOT NULL DEFAULT 0,
    message       TEXT              -- why it failed or was interrupted
);
";

/// What went wrong with the state db; names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state db {path}: {source}", path = .path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A newer program wrote it.
    #[error("state db {path}: schema version {found}, this program knows up to {STATE_SCHEMA_VERSION}", path = .path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// Its directory could not be made.
    #[error("state db {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A user as the state db knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// User id.
    pub name: String,
    /// Mail server.
    pub server: String,
    /// Partition of the INBOX.
    pub partition: String,
    /// RAID set, if the partition is in one.
    pub raidset: Option<String>,
    /// When a refresh stopped listing the user.
    pub vanished_at: Option<i64>,
    /// Start of the last complete backup.
    pub last_success: Option<i64>,
    /// Start of the last backup tried.
    pub last_attempt: Option<i64>,
    /// What the last attempt said when it did not succeed.
    pub last_error: Option<String>,
    /// Complete backups.
    pub backups_ok: i64,
    /// Backups committed with something missing.
    pub backups_incomplete: i64,
    /// Failed backups.
    pub backups_failed: i64,
    /// Times skipped because another run held the lock.
    pub skips: i64,
    /// The quiet key recorded by the last complete backup that left the store with
    /// nothing to do for its listing ([`crate::backup::QuietKey`]).
    pub quiet_key: Option<String>,
}

/// What a refresh of one server changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshCounts {
    /// Users listed.
    pub listed: u64,
    /// Users new to the state db.
    pub added: u64,
    /// Users whose partition, server or RAID set changed.
    pub moved: u64,
    /// Users no longer listed (marked, not deleted).
    pub vanished: u64,
    /// Users listed again after having vanished.
    pub returned: u64,
    /// Users on a partition in no RAID set (they are not backed up).
    pub unassigned: u64,
}

/// How one user's backup ended, as the state db records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Committed, complete.
    Done {
        /// Messages stored.
        messages_stored: u64,
        /// Bytes stored.
        bytes_stored: u64,
    },
    /// Committed, with something that could not be backed up.
    Incomplete {
        /// Messages stored.
        messages_stored: u64,
        /// Bytes stored.
        bytes_stored: u64,
        /// What is missing.
        message: String,
    },
    /// Another run holds the user's lock.
    Skipped,
    /// Nothing committed.
    Failed {
        /// Why.
        message: String,
    },
}

/// Totals of a run, written to its row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Users planned.
    pub users_planned: u64,
    /// Users backed up complete.
    pub users_done: u64,
    /// Users committed with something missing.
    pub users_incomplete: u64,
    /// Users skipped (locked).
    pub users_skipped: u64,
    /// Users failed.
    pub users_failed: u64,
    /// Messages fetched.
    pub messages_fetched: u64,
    /// Bytes fetched.
    pub bytes_fetched: u64,
    /// Messages stored.
    pub messages_stored: u64,
    /// Bytes stored.
    pub bytes_stored: u64,
}

/// An open state db.
#[derive(Debug)]
pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl StateDb {
    /// Opens (creating when missing) the state db at `path`, in WAL mode, schema checked.
    pub fn open(path: &Path) -> Result<StateDb, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir_all(dir).map_err(|source| StateError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        // 0600 before SQLite makes it 0644: its -wal and -shm take this file's mode.
        crate::private::prepare_sqlite(path).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let mut db = StateDb {
            conn,
            path: path.to_path_buf(),
        };
        db.init()?;
        Ok(db)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn init(&mut self) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = move |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        // A second run, `report`, or an administrator's sqlite3 shell may read while a run
        // writes: WAL lets them, and the busy timeout rides out a concurrent writer.
        self.conn
            .busy_timeout(Duration::from_secs(60))
            .map_err(&e)?;
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(&e)?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(&e)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&e)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(&e)?;
        match version {
            0 => {
                tx.execute_batch(STATE_SCHEMA).map_err(&e)?;
                tx.pragma_update(None, "user_version", STATE_SCHEMA_VERSION)
                    .map_err(&e)?;
            }
            1..=3 => {
                if version == 1 {
                    tx.execute_batch(MIGRATE_1_TO_2).map_err(&e)?;
                }
                if version <= 2 {
                    tx.execute_batch(MIGRATE_2_TO_3).map_err(&e)?;
                }
                tx.execute_batch(MIGRATE_3_TO_4).map_err(&e)?;
                tx.pragma_update(None, "user_version", STATE_SCHEMA_VERSION)
                    .map_err(&e)?;
            }
            STATE_SCHEMA_VERSION => {}
            found => {
                return Err(StateError::Version {
                    path: self.path.clone(),
                    found,
                })
            }
        }
        tx.commit().map_err(&e)?;
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for queries this module does not wrap (reports, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Records a server's whole user list read at `now`: listed users are added or
    /// updated (server, partition, RAID set from `raidset_of`), users of this server that
    /// are not listed are marked vanished (kept: their backups stay restorable).
    pub fn refresh_server(
        &mut self,
        server: &str,
        address: &str,
        users: &[formats::protocol::UserEntry],
        raidset_of: &dyn Fn(&str) -> Option<String>,
        now: i64,
    ) -> Result<RefreshCounts, StateError> {
        let path = self.path.clone();
        let e = move |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&e)?;
        let mut counts = RefreshCounts::default();
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS listed (name TEXT PRIMARY KEY)",
            [],
        )
        .map_err(&e)?;
        tx.execute("DELETE FROM temp.listed", []).map_err(&e)?;
        {
            let mut get = tx
                .prepare(
                    "SELECT server, partition, raidset, vanished_at FROM users WHERE name = ?1",
                )
                .map_err(&e)?;
            let mut insert = tx
                .prepare(
                    "INSERT INTO users (name, server, partition, raidset, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )
                .map_err(&e)?;
            let mut update = tx
                .prepare(
                    "UPDATE users SET server = ?2, partition = ?3, raidset = ?4, last_seen = ?5,
                     vanished_at = NULL WHERE name = ?1",
                )
                .map_err(&e)?;
            let mut listed = tx
                .prepare("INSERT OR IGNORE INTO temp.listed (name) VALUES (?1)")
                .map_err(&e)?;
            for u in users {
                counts.listed += 1;
                let set = raidset_of(&u.partition);
                if set.is_none() {
                    counts.unassigned += 1;
                }
                listed.execute([&u.user]).map_err(&e)?;
                type Old = (String, String, Option<String>, Option<i64>);
                let old: Option<Old> = get
                    .query_row([&u.user], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()
                    .map_err(&e)?;
                match old {
                    None => {
                        counts.added += 1;
                        insert
                            .execute(params![u.user, server, u.partition, set, now])
                            .map_err(&e)?;
                    }
                    Some((os, op, oset, ovan)) => {
                        if os != server || op != u.partition || oset != set {
                            counts.moved += 1;
                        }
                        if ovan.is_some() {
                            counts.returned += 1;
                        }
                        update
                            .execute(params![u.user, server, u.partition, set, now])
                            .map_err(&e)?;
                    }
                }
            }
        }
        counts.vanished = tx
            .execute(
                "UPDATE users SET vanished_at = ?2 WHERE server = ?1 AND vanished_at IS NULL
                 AND name NOT IN (SELECT name FROM temp.listed)",
                params![server, now],
            )
            .map_err(&e)? as u64;
        tx.execute(
            "INSERT INTO servers (name, address, last_refresh, last_error) VALUES (?1, ?2, ?3, NULL)
             ON CONFLICT (name) DO UPDATE SET address = ?2, last_refresh = ?3, last_error = NULL",
            params![server, address, now],
        )
        .map_err(&e)?;
        tx.execute("DELETE FROM temp.listed", []).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(counts)
    }

    /// Records that a server's user list could not be read (its users are left as they were).
    pub fn refresh_failed(
        &mut self,
        server: &str,
        address: &str,
        message: &str,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO servers (name, address, last_refresh, last_error) VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT (name) DO UPDATE SET address = ?2, last_error = ?3",
                params![server, address, message],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// When the server's user list was last read whole.
    pub fn last_refresh(&self, server: &str) -> Result<Option<i64>, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_refresh FROM servers WHERE name = ?1",
                [server],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map_err(self.err())?
            .flatten())
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<Option<UserRow>, StateError> {
        self.conn
            .query_row(&format!("{USER_COLUMNS} WHERE name = ?1"), [name], user_row)
            .optional()
            .map_err(self.err())
    }

    /// Every user, vanished or not, by name.
    pub fn users(&self) -> Result<Vec<UserRow>, StateError> {
        let mut st = self
            .conn
            .prepare(&format!("{USER_COLUMNS} ORDER BY name"))
            .map_err(self.err())?;
        let rows = st
            .query_map([], user_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// The users of RAID set `raidset` still listed, in backup order: never backed up
    /// first, then oldest last successful backup first (ties by name, so the order is
    /// stable). A user whose store is still to be moved to its name (`store_from`, after a
    /// rename in Cyrus) waits: a backup now would start a second store.
    pub fn users_to_back_up(&self, raidset: &str) -> Result<Vec<UserRow>, StateError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "{USER_COLUMNS} WHERE raidset = ?1 AND vanished_at IS NULL AND store_from IS NULL
                 ORDER BY last_success IS NOT NULL, last_success, name"
            ))
            .map_err(self.err())?;
        let rows = st
            .query_map([raidset], user_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Starts a run row; returns its id.
    pub fn begin_run(&mut self, now: i64, users_planned: u64) -> Result<i64, StateError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string());
        self.close_dead_runs(host.as_deref(), now)?;
        self.conn
            .execute(
                "INSERT INTO runs (started, status, host, pid, users_planned)
                 VALUES (?1, 'running', ?2, ?3, ?4)",
                params![now, host, std::process::id(), i(users_planned)],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Marks `interrupted` the runs of this host still recorded as `running` whose process is
    /// gone (killed or crashed before it could close its row), so that the runs table tells
    /// the truth. A pid now used by another program counts as gone.
    fn close_dead_runs(&mut self, host: Option<&str>, now: i64) -> Result<(), StateError> {
        let dead: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, pid FROM runs WHERE status = 'running' AND host IS ?1")
                .map_err(self.err())?;
            let rows = stmt
                .query_map(params![host], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
                })
                .map_err(self.err())?;
            let mut dead = Vec::new();
            for row in rows {
                let (id, pid) = row.map_err(self.err())?;
                if !pid.is_some_and(run_process_alive) {
                    dead.push(id);
                }
            }
            dead
        };
        for id in dead {
            self.conn
                .execute(
                    "UPDATE runs SET status = 'interrupted', ended = ?2,
                     message = 'the run ended without closing its record (killed or crashed)'
                     WHERE id = ?1",
                    params![id, now],
                )
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// Records how one user's backup that started at `started` ended.
    pub fn record_attempt(
        &mut self,
        run: i64,
        user: &str,
        started: i64,
        attempt: &Attempt,
    ) -> Result<(), StateError> {
        let r = match attempt {
            Attempt::Done {
                messages_stored,
                bytes_stored,
            } => self.exec(
                "UPDATE users SET last_success = ?2, last_commit = ?2, last_attempt = ?2,
                 last_error = NULL, last_run = ?3, backups_ok = backups_ok + 1,
                 messages_stored = messages_stored + ?4, bytes_stored = bytes_stored + ?5
                 WHERE name = ?1",
                params![user, started, run, i(*messages_stored), i(*bytes_stored)],
            ),
            Attempt::Incomplete {
                messages_stored,
                bytes_stored,
                message,
            } => self.exec(
                "UPDATE users SET last_commit = ?2, last_attempt = ?2, last_error = ?6,
                 last_run = ?3, quiet_key = NULL, backups_incomplete = backups_incomplete + 1,
                 messages_stored = messages_stored + ?4, bytes_stored = bytes_stored + ?5
                 WHERE name = ?1",
                params![
                    user,
                    started,
                    run,
                    i(*messages_stored),
                    i(*bytes_stored),
                    message
                ],
            ),
            Attempt::Skipped => self.exec(
                "UPDATE users SET skips = skips + 1 WHERE name = ?1",
                params![user],
            ),
            Attempt::Failed { message } => self.exec(
                "UPDATE users SET last_attempt = ?2, last_error = ?4, last_run = ?3,
                 quiet_key = NULL, backups_failed = backups_failed + 1 WHERE name = ?1",
                params![user, started, run, message],
            ),
        };
        r.map_err(self.err())?;
        Ok(())
    }

    /// Runs one statement through the statement cache (a run writes a row per user).
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(p)
    }

    /// Records (or clears, with `None`) the user's quiet key. Written after the
    /// attempt it belongs to, once the store's state it names is durable.
    pub fn set_quiet_key(&mut self, user: &str, key: Option<&str>) -> Result<(), StateError> {
        self.conn
            .prepare_cached("UPDATE users SET quiet_key = ?2 WHERE name = ?1")
            .and_then(|mut st| st.execute(params![user, key]))
            .map_err(self.err())?;
        Ok(())
    }

    /// Starts a batch: the writes until [`StateDb::end_batch`] go into one transaction
    /// (one WAL commit instead of one per user). Nothing if a batch is already open.
    pub fn begin_batch(&mut self) -> Result<(), StateError> {
        if self.conn.is_autocommit() {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// Commits the open batch, if any.
    pub fn end_batch(&mut self) -> Result<(), StateError> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT").map_err(self.err())?;
        }
        Ok(())
    }

    /// Writes a run's totals so far (called now and then, and at the end with `ended`).
    pub fn update_run(
        &mut self,
        run: i64,
        totals: &RunTotals,
        status: &str,
        ended: Option<i64>,
        message: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET ended = ?2, status = ?3, users_planned = ?4, users_done = ?5,
                 users_incomplete = ?6, users_skipped = ?7, users_failed = ?8,
                 messages_fetched = ?9, bytes_fetched = ?10, messages_stored = ?11,
                 bytes_stored = ?12, message = ?13 WHERE id = ?1",
                params![
                    run,
                    ended,
                    status,
                    i(totals.users_planned),
                    i(totals.users_done),
                    i(totals.users_incomplete),
                    i(totals.users_skipped),
                    i(totals.users_failed),
                    i(totals.messages_fetched),
                    i(totals.bytes_fetched),
                    i(totals.messages_stored),
                    i(totals.bytes_stored),
                    message
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

const USER_COLUMNS: &str = "SELECT name, server, partition, raidset, vanished_at, last_success,
    last_attempt, last_error, backups_ok, backups_incomplete, backups_failed, skips,
    quiet_key FROM users";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        server: r.get(1)?,
        partition: r.get(2)?,
        raidset: r.get(3)?,
        vanished_at: r.get(4)?,
        last_success: r.get(5)?,
        last_attempt: r.get(6)?,
        last_error: r.get(7)?,
        backups_ok: r.get(8)?,
        backups_incomplete: r.get(9)?,
        backups_failed: r.get(10)?,
        skips: r.get(11)?,
        quiet_key: r.get(12)?,
    })
}

/// Whether `pid` is a live backup-server process on this host.
fn run_process_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| {
        comm.trim_end() == "backup-server" || pid == i64::from(std::process::id())
    })
}
