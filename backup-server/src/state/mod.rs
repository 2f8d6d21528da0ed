//! The state db: every user with its server, partition, RAID set, backup host and backup
//! times, every run, every backup host. SQLite (WAL) by default; PostgreSQL for a fleet of
//! backup hosts sharing one state db (docs/fleet.md). The SQL is written once for both
//! (`backend`: SQLite's spelling, numbered parameters; `schema`: the one schema text and
//! its PostgreSQL column types). docs/backup-server.md has the schema.
//!
//! Times are whole unix seconds (UTC). One writer per host at a time: the run's
//! coordinating thread writes a row per user as each user's store has committed. Hosts
//! share the work through leases (`hosts`).

pub(crate) mod backend;
mod hosts;
mod lifecycle;
pub mod postgres;
mod schema;

pub use backend::DbError;
use backend::{vals, Conn, Dialect, PgConn, Row};
pub use hosts::{HostRow, LEASE_SECS, RENEW_EVERY};
pub use lifecycle::{PendingMove, VanishedStore};
pub use postgres::PostgresTarget;
pub use schema::{current_schema, for_postgres, STATE_SCHEMA_VERSION};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the state db is: an SQLite file (the default) or a PostgreSQL database (a fleet of
/// backup hosts; docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresTarget),
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StateLocation::Postgres(t) => f.write_str(&t.url),
        }
    }
}

/// What went wrong with the state db; names the file or the URL.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite or PostgreSQL failed.
    #[error("state db {location}: {source}")]
    Db {
        /// The file or the URL (never with a password).
        location: String,
        /// What the database said.
        source: DbError,
    },
    /// The PostgreSQL server could not be reached or refused the role.
    #[error("state db {location}: cannot connect: {message}")]
    Connect {
        /// The URL.
        location: String,
        /// Why.
        message: String,
    },
    /// A newer program wrote it.
    #[error("state db {location}: schema version {found}, this program knows up to {STATE_SCHEMA_VERSION}")]
    Version {
        /// The file or the URL.
        location: String,
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
    /// A user named to `users assign` that the state db does not know.
    #[error("state db {location}: no user {user} (run `backup-server users refresh` first?)")]
    UnknownUser {
        /// The file or the URL.
        location: String,
        /// The user.
        user: String,
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
    /// The backup host its store lives on (docs/fleet.md); `None`: not assigned yet (the
    /// next refresh or run on any host takes it).
    pub host: Option<String>,
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
    conn: Conn,
    /// The file or the URL, for error messages.
    location: String,
    /// The SQLite file (for [`StateDb::path`]); for PostgreSQL, the URL as a path.
    path: PathBuf,
    /// This backup host's name (`host_name`; default the machine's hostname).
    host: String,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The machine's hostname, the default `host_name`.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl StateDb {
    /// Opens (creating when missing) the SQLite state db at `path`, in WAL mode, schema
    /// checked; this host is named by the machine's hostname.
    pub fn open(path: &Path) -> Result<StateDb, StateError> {
        Self::open_sqlite(path, &machine_hostname())
    }

    /// Opens the state db at `location` for the backup host `host` (schema created or
    /// migrated when needed).
    pub fn open_at(location: &StateLocation, host: &str) -> Result<StateDb, StateError> {
        match location {
            StateLocation::Sqlite(path) => Self::open_sqlite(path, host),
            StateLocation::Postgres(target) => Self::open_postgres(target, host),
        }
    }

    fn open_sqlite(path: &Path, host: &str) -> Result<StateDb, StateError> {
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
        let location = path.display().to_string();
        let db_err = |source: rusqlite::Error| StateError::Db {
            location: location.clone(),
            source: source.into(),
        };
        let conn = rusqlite::Connection::open(path).map_err(db_err)?;
        // A second run, `report`, or an administrator's sqlite3 shell may read while a run
        // writes: WAL lets them, and the busy timeout rides out a concurrent writer.
        conn.busy_timeout(Duration::from_secs(60)).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        let db = StateDb {
            conn: Conn::Sqlite(conn),
            location,
            path: path.to_path_buf(),
            host: host.to_string(),
        };
        db.init()?;
        Ok(db)
    }

    fn open_postgres(target: &PostgresTarget, host: &str) -> Result<StateDb, StateError> {
        let client = postgres::connect(target).map_err(|message| StateError::Connect {
            location: target.url.clone(),
            message,
        })?;
        let db = StateDb {
            conn: Conn::Postgres(Box::new(std::cell::RefCell::new(PgConn::new(client)))),
            location: target.url.clone(),
            path: PathBuf::from(&target.url),
            host: host.to_string(),
        };
        db.init()?;
        Ok(db)
    }

    fn err(&self) -> impl Fn(DbError) -> StateError + '_ {
        move |source| StateError::Db {
            location: self.location.clone(),
            source,
        }
    }

    /// Creates the schema in a new state db, or migrates an older one, in one transaction.
    /// On PostgreSQL an advisory lock makes hosts starting at once take turns.
    fn init(&self) -> Result<(), StateError> {
        let e = self.err();
        let c = &self.conn;
        c.transaction(&e, |c| -> Result<(), StateError> {
            let version = match c.dialect() {
                Dialect::Sqlite => c
                    .query_opt("PRAGMA user_version", vals![])
                    .map_err(&e)?
                    .map_or(Ok(0), |r| r.int(0))
                    .map_err(|x| e(x.into()))?,
                Dialect::Postgres => {
                    // Any fixed number: the lock is the state db's, held to commit.
                    c.execute("SELECT pg_advisory_xact_lock(2912)", vals![])
                        .map_err(&e)?;
                    c.batch(schema::POSTGRES_VERSION_TABLE).map_err(&e)?;
                    c.query_opt("SELECT version FROM state_schema", vals![])
                        .map_err(&e)?
                        .map_or(Ok(0), |r| r.int(0))
                        .map_err(|x| e(x.into()))?
                }
            };
            let spell = |sql: &str| match c.dialect() {
                Dialect::Sqlite => sql.to_string(),
                Dialect::Postgres => schema::for_postgres(sql),
            };
            match version {
                STATE_SCHEMA_VERSION => return Ok(()),
                0 => c.batch(&spell(&current_schema())).map_err(&e)?,
                v if (1..STATE_SCHEMA_VERSION).contains(&v) => {
                    for m in &schema::MIGRATIONS[(v - 1) as usize..] {
                        c.batch(&spell(m)).map_err(&e)?;
                    }
                }
                found => {
                    return Err(StateError::Version {
                        location: self.location.clone(),
                        found,
                    })
                }
            }
            match c.dialect() {
                Dialect::Sqlite => c
                    .batch(&format!("PRAGMA user_version = {STATE_SCHEMA_VERSION}"))
                    .map_err(&e)?,
                Dialect::Postgres => {
                    c.execute("DELETE FROM state_schema", vals![]).map_err(&e)?;
                    c.execute(
                        "INSERT INTO state_schema (version) VALUES (?1)",
                        vals![STATE_SCHEMA_VERSION],
                    )
                    .map_err(&e)?;
                }
            }
            Ok(())
        })
    }

    /// The file (for PostgreSQL: the URL).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file or the URL, as error messages name it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// This backup host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether this is a PostgreSQL state db.
    pub fn is_postgres(&self) -> bool {
        self.conn.dialect() == Dialect::Postgres
    }

    /// The SQLite connection, for queries this module does not wrap (reports, tests).
    ///
    /// # Panics
    ///
    /// On a PostgreSQL state db, which has no such connection.
    pub fn connection(&self) -> &rusqlite::Connection {
        match &self.conn {
            Conn::Sqlite(c) => c,
            Conn::Postgres(_) => panic!("StateDb::connection: {} is PostgreSQL", self.location),
        }
    }

    /// Runs a statement of the state db's SQL (SQLite spelling, `?1` parameters) on either
    /// backend; returns the rows changed. For tests and tools that look past this module.
    pub fn execute_sql(&self, sql: &str, params: &[i64]) -> Result<u64, StateError> {
        let params: Vec<backend::Value> = params.iter().map(|v| (*v).into()).collect();
        self.conn.execute(sql, &params).map_err(self.err())
    }

    /// Runs a query of the state db's SQL on either backend; every column read as an
    /// integer (NULL: `None`). For tests and tools that look past this module.
    pub fn query_ints(
        &self,
        sql: &str,
        params: &[i64],
    ) -> Result<Vec<Vec<Option<i64>>>, StateError> {
        let params: Vec<backend::Value> = params.iter().map(|v| (*v).into()).collect();
        let rows = self.conn.query(sql, &params).map_err(self.err())?;
        rows.iter()
            .map(|r| {
                (0..r.0.len())
                    .map(|i| r.opt_int(i).map_err(|x| self.err()(x.into())))
                    .collect()
            })
            .collect()
    }

    /// Records a server's whole user list read at `now`: listed users are added or
    /// updated (server, partition, RAID set from `raidset_of`), users of this server that
    /// are not listed are marked vanished (kept: their backups stay restorable). Users of
    /// the server that belong to no backup host yet are given to this one.
    pub fn refresh_server(
        &mut self,
        server: &str,
        address: &str,
        users: &[formats::protocol::UserEntry],
        raidset_of: &dyn Fn(&str) -> Option<String>,
        now: i64,
    ) -> Result<RefreshCounts, StateError> {
        let e = self.err();
        let host = self.host.clone();
        self.conn
            .transaction(&e, |c| -> Result<RefreshCounts, StateError> {
                let mut counts = RefreshCounts::default();
                c.batch("CREATE TEMP TABLE IF NOT EXISTS listed (name TEXT PRIMARY KEY)")
                    .map_err(&e)?;
                c.execute("DELETE FROM listed", vals![]).map_err(&e)?;
                for u in users {
                    counts.listed += 1;
                    let set = raidset_of(&u.partition);
                    if set.is_none() {
                        counts.unassigned += 1;
                    }
                    c.execute(
                        "INSERT INTO listed (name) VALUES (?1) ON CONFLICT DO NOTHING",
                        vals![&u.user],
                    )
                    .map_err(&e)?;
                    let old = c
                    .query_opt(
                        "SELECT server, partition, raidset, vanished_at FROM users WHERE name = ?1",
                        vals![&u.user],
                    )
                    .map_err(&e)?;
                    match old {
                        None => {
                            counts.added += 1;
                            c.execute(
                                "INSERT INTO users (name, server, partition, raidset, first_seen,
                             last_seen, host) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                                vals![&u.user, server, &u.partition, set, now, &host],
                            )
                            .map_err(&e)?;
                        }
                        Some(row) => {
                            let col = |x: backend::ColumnError| e(x.into());
                            let (os, op, oset, ovan) = (
                                row.text(0).map_err(col)?,
                                row.text(1).map_err(col)?,
                                row.opt_text(2).map_err(col)?,
                                row.opt_int(3).map_err(col)?,
                            );
                            if os != server || op != u.partition || oset != set {
                                counts.moved += 1;
                            }
                            if ovan.is_some() {
                                counts.returned += 1;
                            }
                            c.execute(
                                "UPDATE users SET server = ?2, partition = ?3, raidset = ?4,
                             last_seen = ?5, vanished_at = NULL, host = COALESCE(host, ?6)
                             WHERE name = ?1",
                                vals![&u.user, server, &u.partition, set, now, &host],
                            )
                            .map_err(&e)?;
                        }
                    }
                }
                counts.vanished = c
                .execute(
                    "UPDATE users SET vanished_at = ?2 WHERE server = ?1 AND vanished_at IS NULL
                     AND name NOT IN (SELECT name FROM listed)",
                    vals![server, now],
                )
                .map_err(&e)?;
                c.execute(
                    "INSERT INTO servers (name, address, last_refresh, last_error)
                 VALUES (?1, ?2, ?3, NULL) ON CONFLICT (name) DO UPDATE
                 SET address = ?2, last_refresh = ?3, last_error = NULL",
                    vals![server, address, now],
                )
                .map_err(&e)?;
                c.execute("DELETE FROM listed", vals![]).map_err(&e)?;
                Ok(counts)
            })
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
                "INSERT INTO servers (name, address, last_refresh, last_error)
                 VALUES (?1, ?2, NULL, ?3) ON CONFLICT (name) DO UPDATE
                 SET address = ?2, last_error = ?3",
                vals![server, address, message],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// When the server's user list was last read whole.
    pub fn last_refresh(&self, server: &str) -> Result<Option<i64>, StateError> {
        let row = self
            .conn
            .query_opt(
                "SELECT last_refresh FROM servers WHERE name = ?1",
                vals![server],
            )
            .map_err(self.err())?;
        match row {
            None => Ok(None),
            Some(r) => r.opt_int(0).map_err(|x| self.err()(x.into())),
        }
    }

    fn user_rows(&self, sql: &str, params: &[backend::Value]) -> Result<Vec<UserRow>, StateError> {
        let rows = self.conn.query(sql, params).map_err(self.err())?;
        rows.iter()
            .map(|r| user_row(r).map_err(|x| self.err()(x.into())))
            .collect()
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<Option<UserRow>, StateError> {
        Ok(self
            .user_rows(&format!("{USER_COLUMNS} WHERE name = ?1"), vals![name])?
            .into_iter()
            .next())
    }

    /// Every user, vanished or not, by name.
    pub fn users(&self) -> Result<Vec<UserRow>, StateError> {
        self.user_rows(&format!("{USER_COLUMNS} ORDER BY name"), vals![])
    }

    /// The users of RAID set `raidset` still listed that are this host's (on PostgreSQL:
    /// assigned to it or to no host yet; on SQLite, one host: all), in backup order: never
    /// backed up first, then oldest last successful backup first (ties by name, so the
    /// order is stable). A user whose store is still to be moved to its name (`store_from`,
    /// after a rename in Cyrus) waits: a backup now would start a second store.
    pub fn users_to_back_up(&self, raidset: &str) -> Result<Vec<UserRow>, StateError> {
        let (_, mine) = self.ownership("?2");
        self.user_rows(
            &format!(
                "{USER_COLUMNS} WHERE raidset = ?1 AND vanished_at IS NULL AND store_from IS NULL
                 AND {mine} ORDER BY last_success IS NOT NULL, last_success, name"
            ),
            vals![raidset, &self.host],
        )
    }

    /// Starts a run row for this host and records the host's heartbeat; returns the run's id.
    pub fn begin_run(&mut self, now: i64, users_planned: u64) -> Result<i64, StateError> {
        self.close_dead_runs(now)?;
        let pid = i64::from(std::process::id());
        let row = self
            .conn
            .query_opt(
                "INSERT INTO runs (started, status, host, pid, users_planned)
                 VALUES (?1, 'running', ?2, ?3, ?4) RETURNING id",
                vals![now, &self.host, pid, i(users_planned)],
            )
            .map_err(self.err())?
            .expect("INSERT ... RETURNING returns a row");
        let id = row.int(0).map_err(|x| self.err()(x.into()))?;
        self.host_heartbeat(Some(id), now)?;
        Ok(id)
    }

    /// Marks `interrupted` the runs of this host still recorded as `running` whose process is
    /// gone (killed or crashed before it could close its row), so that the runs table tells
    /// the truth and their leases are free at once. A pid now used by another program counts
    /// as gone.
    fn close_dead_runs(&mut self, now: i64) -> Result<(), StateError> {
        let rows = self
            .conn
            .query(
                "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?1",
                vals![&self.host],
            )
            .map_err(self.err())?;
        let mut dead = Vec::new();
        for r in &rows {
            let col = |x: backend::ColumnError| self.err()(x.into());
            let (id, pid) = (r.int(0).map_err(col)?, r.opt_int(1).map_err(col)?);
            if !pid.is_some_and(run_process_alive) {
                dead.push(id);
            }
        }
        for id in dead {
            self.conn
                .execute(
                    "UPDATE runs SET status = 'interrupted', ended = ?2,
                     message = 'the run ended without closing its record (killed or crashed)'
                     WHERE id = ?1",
                    vals![id, now],
                )
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// Records how one user's backup that started at `started` ended, and frees the user's
    /// lease.
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
            } => self.conn.execute(
                "UPDATE users SET last_success = ?2, last_commit = ?2, last_attempt = ?2,
                 last_error = NULL, last_run = ?3, backups_ok = backups_ok + 1,
                 messages_stored = messages_stored + ?4, bytes_stored = bytes_stored + ?5,
                 lease_run = NULL, lease_until = NULL
                 WHERE name = ?1",
                vals![user, started, run, i(*messages_stored), i(*bytes_stored)],
            ),
            Attempt::Incomplete {
                messages_stored,
                bytes_stored,
                message,
            } => self.conn.execute(
                "UPDATE users SET last_commit = ?2, last_attempt = ?2, last_error = ?6,
                 last_run = ?3, quiet_key = NULL, backups_incomplete = backups_incomplete + 1,
                 messages_stored = messages_stored + ?4, bytes_stored = bytes_stored + ?5,
                 lease_run = NULL, lease_until = NULL
                 WHERE name = ?1",
                vals![
                    user,
                    started,
                    run,
                    i(*messages_stored),
                    i(*bytes_stored),
                    message
                ],
            ),
            // Another process held the store's lock: this run's lease goes, another's stays.
            Attempt::Skipped => self.conn.execute(
                "UPDATE users SET skips = skips + 1,
                 lease_until = CASE WHEN lease_run = ?2 THEN NULL ELSE lease_until END,
                 lease_run = CASE WHEN lease_run = ?2 THEN NULL ELSE lease_run END
                 WHERE name = ?1",
                vals![user, run],
            ),
            Attempt::Failed { message } => self.conn.execute(
                "UPDATE users SET last_attempt = ?2, last_error = ?4, last_run = ?3,
                 quiet_key = NULL, backups_failed = backups_failed + 1,
                 lease_run = NULL, lease_until = NULL WHERE name = ?1",
                vals![user, started, run, message],
            ),
        };
        r.map_err(self.err())?;
        Ok(())
    }

    /// Records (or clears, with `None`) the user's quiet key. Written after the
    /// attempt it belongs to, once the store's state it names is durable.
    pub fn set_quiet_key(&mut self, user: &str, key: Option<&str>) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE users SET quiet_key = ?2 WHERE name = ?1",
                vals![user, key],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Starts a batch: the writes until [`StateDb::end_batch`] go into one transaction
    /// (one WAL commit instead of one per user). Nothing if a batch is already open.
    pub fn begin_batch(&mut self) -> Result<(), StateError> {
        if !self.conn.in_transaction() {
            self.conn.begin().map_err(self.err())?;
        }
        Ok(())
    }

    /// Commits the open batch, if any.
    pub fn end_batch(&mut self) -> Result<(), StateError> {
        if self.conn.in_transaction() {
            self.conn.commit().map_err(self.err())?;
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
                vals![
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
    quiet_key, host FROM users";

fn user_row(r: &Row) -> Result<UserRow, backend::ColumnError> {
    Ok(UserRow {
        name: r.text(0)?,
        server: r.text(1)?,
        partition: r.text(2)?,
        raidset: r.opt_text(3)?,
        vanished_at: r.opt_int(4)?,
        last_success: r.opt_int(5)?,
        last_attempt: r.opt_int(6)?,
        last_error: r.opt_text(7)?,
        backups_ok: r.int(8)?,
        backups_incomplete: r.int(9)?,
        backups_failed: r.int(10)?,
        skips: r.int(11)?,
        quiet_key: r.opt_text(12)?,
        host: r.opt_text(13)?,
    })
}

/// Whether `pid` is a live backup-server process on this host.
fn run_process_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| {
        comm.trim_end() == "backup-server" || pid == i64::from(std::process::id())
    })
}
