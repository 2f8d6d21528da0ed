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
}

/// The late users (as [`AgeRow::over`] counts them: vanished ones left out), never backed
/// up first, then the oldest backups first, then by name; the first `limit` (`None`: all),
/// and how many there are in all.
pub fn late_users(
    conn: &Connection,
    now: i64,
    max_age_hours: u32,
    limit: Option<usize>,
) -> rusqlite::Result<(Vec<LateUser>, u64)> {
    // The same ages as docs/report.sql (a last_success after `now` counts as 0 hours).
    let age = "CASE WHEN last_success IS NULL THEN NULL
                    WHEN last_success >= :now THEN 0
                    ELSE (:now - last_success) / 3600 END";
    let late =
        format!("vanished_at IS NULL AND (last_success IS NULL OR ({age}) >= :max_age_hours)");
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM users WHERE {late}"),
        named_params! {":now": now, ":max_age_hours": max_age_hours},
        |r| r.get(0),
    )?;
    let limit = limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
    let mut st = conn.prepare(&format!(
        "SELECT name, {age} FROM users WHERE {late}
         ORDER BY last_success IS NOT NULL, last_success, name LIMIT :limit"
    ))?;
    let users = st
        .query_map(
            named_params! {":now": now, ":max_age_hours": max_age_hours, ":limit": limit},
            |r| {
                Ok(LateUser {
                    user: r.get(0)?,
                    age_hours: r.get::<_, Option<i64>>(1)?.map(|a| a.max(0) as u64),
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((users, total.max(0) as u64))
}

/// [`late_users`] from the state db at `path` (opened read-only).
pub fn late_users_in(
    path: &Path,
    now: i64,
    max_age_hours: u32,
    limit: Option<usize>,
) -> Result<(Vec<LateUser>, u64), ReportError> {
    let conn = open_state_db(path)?;
    late_users(&conn, now, max_age_hours, limit).map_err(|source| ReportError::Sqlite {
        path: path.to_path_buf(),
        source,
    })
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
