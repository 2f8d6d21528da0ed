//! The daily backup-age report: the number of users by whole hours since their last
//! complete backup, one row for users never backed up, the rows at or over a limit marked.
//!
//! The query is docs/report.sql, compiled in unchanged ([`REPORT_SQL`]) so the text an
//! administrator runs in the sqlite3 shell is the text this program runs. It takes two named
//! parameters, `:now` and `:max_age_hours`; this program always binds both (the clock is
//! injectable through `--now`), the shell leaves them NULL and the SQL falls back to
//! SQLite's clock and 24 h. Vanished users are left out. docs/backup-server.md ("The
//! backup-age report") describes the output and the exit status, which the binary decides
//! (`backup-server report` prints the rows as a table, JSON or Prometheus text, or mails the
//! table).

use crate::state::STATE_SCHEMA_VERSION;
use rusqlite::{named_params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// docs/report.sql, as the sqlite3 shell runs it.
pub const REPORT_SQL: &str = include_str!("../../docs/report.sql");

/// docs/report-postgres.sql: the same report on a PostgreSQL state db (a fleet).
pub const REPORT_POSTGRES_SQL: &str = include_str!("../../docs/report-postgres.sql");

/// Users at or over the limit (or never backed up), oldest first, with their backup host.
/// The same text on both databases (numbered parameters: now, max_age_hours).
const LATE_SQL: &str = "SELECT name, host, last_success FROM users
 WHERE vanished_at IS NULL
   AND (last_success IS NULL OR last_success <= CAST(?1 AS BIGINT) - CAST(?2 AS BIGINT) * 3600)
 ORDER BY last_success IS NOT NULL, last_success, name";

/// The limit when `--max-age-hours` is not given (also the SQL's own default).
pub const DEFAULT_MAX_AGE_HOURS: u32 = 24;

/// What went wrong making the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The state db file is not there (the report never creates one).
    #[error("state db {path}: no such file (nothing has been backed up or refreshed yet?)", path = .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// SQLite failed.
    #[error("state db {path}: {source}", path = .path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The state db could not be reached or read (the late users' query, or PostgreSQL).
    #[error("state db {location}: {message}")]
    Read {
        /// The URL.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// The file is not a state db this program knows.
    #[error("state db {path}: expected schema version 1..={STATE_SCHEMA_VERSION}, found {found}", path = .path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
    },
}

/// One row: the users whose last complete backup started `age_hours` whole hours ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeRow {
    /// Whole hours since the last complete backup started; `None`: never backed up complete.
    pub age_hours: Option<u64>,
    /// Users (vanished ones left out).
    pub users: u64,
    /// `age_hours` is at least the limit, or the users were never backed up.
    pub over: bool,
}

/// The report: rows youngest first, "never" last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeReport {
    /// The clock the ages were computed against (unix seconds).
    pub now: i64,
    /// The limit in hours.
    pub max_age_hours: u32,
    /// The rows, as docs/report.sql returns them.
    pub rows: Vec<AgeRow>,
}

/// Opens the state db read-only (a report never creates or changes it) and checks its
/// schema version.
pub fn open_state_db(path: &Path) -> Result<Connection, ReportError> {
    if !path.exists() {
        return Err(ReportError::Missing {
            path: path.to_path_buf(),
        });
    }
    let e = |source| ReportError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(e)?;
    // A run may be writing (WAL lets us read); ride out a checkpoint's brief lock.
    conn.busy_timeout(Duration::from_secs(60)).map_err(e)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(e)?;
    if !(1..=STATE_SCHEMA_VERSION).contains(&version) {
        return Err(ReportError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    Ok(conn)
}

/// Runs docs/report.sql with the clock `now` (unix seconds) and the limit `max_age_hours`.
pub fn query(conn: &Connection, now: i64, max_age_hours: u32) -> rusqlite::Result<AgeReport> {
    let mut stmt = conn.prepare(REPORT_SQL)?;
    let rows = stmt
        .query_map(
            named_params! {":now": now, ":max_age_hours": max_age_hours},
            |r| {
                let age: Option<i64> = r.get(0)?;
                let users: i64 = r.get(1)?;
                let over: i64 = r.get(2)?;
                Ok(AgeRow {
                    age_hours: age.map(|a| a.max(0) as u64),
                    users: users.max(0) as u64,
                    over: over != 0,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(AgeReport {
        now,
        max_age_hours,
        rows,
    })
}

impl AgeReport {
    /// Users counted (vanished ones are not).
    pub fn users(&self) -> u64 {
        self.rows.iter().map(|r| r.users).sum()
    }

    /// Users never backed up complete.
    pub fn never_backed_up(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.age_hours.is_none())
            .map(|r| r.users)
            .sum()
    }

    /// Users at or over the limit, never-backed-up ones included.
    pub fn over_max_age(&self) -> u64 {
        self.rows.iter().filter(|r| r.over).map(|r| r.users).sum()
    }

    /// Whether every counted user was backed up complete less than the limit ago (also:
    /// when there are none).
    pub fn all_recent(&self) -> bool {
        self.over_max_age() == 0
    }
}

/// A user at or over the limit, or never backed up complete: who the report names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateUser {
    /// The user.
    pub user: String,
    /// Whole hours since its last complete backup started; `None`: never.
    pub age_hours: Option<u64>,
    /// Its backup host (`None`: not assigned yet, or one SQLite host's own user).
    pub host: Option<String>,
}

/// The report from the state db at `path` (opened read-only), ages computed against `now`
/// (unix seconds) and marked at `max_age_hours`.
pub fn age_report(path: &Path, now: i64, max_age_hours: u32) -> Result<AgeReport, ReportError> {
    let conn = open_state_db(path)?;
    query(&conn, now, max_age_hours).map_err(|source| ReportError::Sqlite {
        path: path.to_path_buf(),
        source,
    })
}

/// The late users of the fleet: counted per backup host, the oldest named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LateUsers {
    /// Per host (`None`: no host yet), by name: late users.
    pub by_host: std::collections::BTreeMap<Option<String>, u64>,
    /// The oldest first (never backed up first, then by last complete backup, then by
    /// name): all of them, or the first `limit` given to [`late_users_at`].
    pub oldest: Vec<LateUser>,
    /// How many users are late in all.
    pub total: u64,
}

fn late_users(
    conn: &crate::state::backend::Conn,
    now: i64,
    max_age_hours: u32,
    limit: Option<usize>,
) -> Result<LateUsers, crate::state::DbError> {
    use crate::state::backend::vals;
    let mut late = LateUsers::default();
    for r in conn.query(LATE_SQL, vals![now, i64::from(max_age_hours)])? {
        let host = r.opt_text(1)?;
        *late.by_host.entry(host.clone()).or_default() += 1;
        late.total += 1;
        if limit.is_none_or(|l| late.oldest.len() < l) {
            // The same ages as docs/report.sql (a last_success after `now` counts as 0 hours).
            let age_hours = r
                .opt_int(2)?
                .map(|t| (now.saturating_sub(t)).max(0) as u64 / 3600);
            late.oldest.push(LateUser {
                user: r.text(0)?,
                age_hours,
                host,
            });
        }
    }
    Ok(late)
}

/// A PostgreSQL state db, connected, its schema version checked (the report creates nothing).
fn open_postgres(
    target: &crate::state::PostgresTarget,
) -> Result<crate::state::backend::Conn, ReportError> {
    use crate::state::backend::{vals, Conn, PgConn};
    let pg_err = |message: String| ReportError::Read {
        location: target.url.clone(),
        message,
    };
    let client = crate::state::postgres::connect(target).map_err(pg_err)?;
    let conn = Conn::Postgres(Box::new(std::cell::RefCell::new(PgConn::new(client))));
    let version = conn
        .query_opt("SELECT version FROM state_schema", vals![])
        .map_err(|e| {
            pg_err(format!(
                "{e} (no state db here: nothing has been backed up or refreshed yet?)"
            ))
        })?
        .map(|r| r.int(0))
        .transpose()
        .map_err(|e| pg_err(e.to_string()))?
        .unwrap_or(0);
    if !(1..=STATE_SCHEMA_VERSION).contains(&version) {
        return Err(pg_err(format!(
            "expected schema version 1..={STATE_SCHEMA_VERSION}, found {version}"
        )));
    }
    Ok(conn)
}

/// The report from the state db at `location` (SQLite: docs/report.sql; PostgreSQL:
/// docs/report-postgres.sql), ages computed against `now` and marked at `max_age_hours`.
pub fn age_report_at(
    location: &crate::state::StateLocation,
    now: i64,
    max_age_hours: u32,
) -> Result<AgeReport, ReportError> {
    use crate::state::backend::vals;
    match location {
        crate::state::StateLocation::Sqlite(path) => age_report(path, now, max_age_hours),
        crate::state::StateLocation::Postgres(target) => {
            let conn = open_postgres(target)?;
            let rows = conn
                .query(REPORT_POSTGRES_SQL, vals![now, i64::from(max_age_hours)])
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            Ok(AgeRow {
                                age_hours: r.opt_int(0)?.map(|a| a.max(0) as u64),
                                users: r.int(1)?.max(0) as u64,
                                over: r.int(2)? != 0,
                            })
                        })
                        .collect::<Result<Vec<_>, crate::state::DbError>>()
                })
                .map_err(|e| ReportError::Read {
                    location: target.url.clone(),
                    message: e.to_string(),
                })?;
            Ok(AgeReport {
                now,
                max_age_hours,
                rows,
            })
        }
    }
}

/// The late users of the state db at `location` (as [`AgeRow::over`] counts them:
/// vanished users left out), per backup host, and the oldest by name: the first `limit`
/// (`None`: all).
pub fn late_users_at(
    location: &crate::state::StateLocation,
    now: i64,
    max_age_hours: u32,
    limit: Option<usize>,
) -> Result<LateUsers, ReportError> {
    match location {
        crate::state::StateLocation::Sqlite(path) => {
            let conn = crate::state::backend::Conn::Sqlite(open_state_db(path)?);
            late_users(&conn, now, max_age_hours, limit).map_err(|e| ReportError::Read {
                location: path.display().to_string(),
                message: e.to_string(),
            })
        }
        crate::state::StateLocation::Postgres(target) => {
            let conn = open_postgres(target)?;
            late_users(&conn, now, max_age_hours, limit).map_err(|e| ReportError::Read {
                location: target.url.clone(),
                message: e.to_string(),
            })
        }
    }
}
