//! The daily backup-age report: the number of users by whole hours since their last
//! complete backup, one row for users never backed up, the rows at or over a limit marked.
//!
//! The query is docs/report.sql, compiled in unchanged ([`REPORT_SQL`]) so the text an
//! administrator runs in the sqlite3 shell is the text this program runs. It takes two named
//! parameters, `:now` and `:max_age_hours`; this program always binds both (the clock is
//! injectable through `--now`), the shell leaves them NULL and the SQL falls back to
//! SQLite's clock and 24 h. Vanished users are left out. docs/backup-server.md ("The
//! backup-age report") describes the output and the exit status.

use crate::config::Config;
use crate::state::STATE_SCHEMA_VERSION;
use rusqlite::{named_params, Connection, OpenFlags};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// docs/report.sql, as the sqlite3 shell runs it.
pub const REPORT_SQL: &str = include_str!("../../docs/report.sql");

/// The limit when `--max-age-hours` is not given (also the SQL's own default).
pub const DEFAULT_MAX_AGE_HOURS: u32 = 24;

/// Exit status: every user was backed up complete less than the limit ago.
pub const EXIT_ALL_RECENT: u8 = 0;
/// Exit status: the report could not be made or mailed (state db, sendmail).
pub const EXIT_REPORT_FAILED: u8 = 1;
/// Exit status: the report was made; some user is at or over the limit, or was never
/// backed up (the same 2 as `run`'s "some users not backed up").
pub const EXIT_OVER_MAX_AGE: u8 = 2;

/// The sendmail(8) run by `--mail-to` when `MAILBACKUP_SENDMAIL` is not set.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// The environment variable naming another sendmail (tests, hosts with it elsewhere).
pub const SENDMAIL_ENV: &str = "MAILBACKUP_SENDMAIL";

/// What went wrong making or sending the report.
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
    /// The address would break the mail's header.
    #[error("--mail-to: expected one address without line breaks, found {0:?}")]
    BadAddress(String),
    /// The report could not be written to stdout.
    #[error("writing the report to stdout: {0}")]
    Output(std::io::Error),
    /// sendmail could not be started (not installed, not executable).
    #[error("cannot run {path} to mail the report: {source} (install an MTA providing sendmail(8), set {SENDMAIL_ENV}, or drop --mail-to)", path = .path.display())]
    SendmailMissing {
        /// The program.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// sendmail was started but the mail did not go.
    #[error("{path} did not take the report: {what}", path = .path.display())]
    Sendmail {
        /// The program.
        path: PathBuf,
        /// Its exit status or the write error.
        what: String,
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
pub struct Report {
    /// The clock the ages were computed against (unix seconds).
    pub now: i64,
    /// The limit in hours.
    pub max_age_hours: u32,
    /// The rows, as docs/report.sql returns them.
    pub rows: Vec<AgeRow>,
}

/// The output formats of `backup-server report --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table for people (and for the mail).
    Table,
    /// One JSON object.
    Json,
    /// Prometheus text exposition (for node_exporter's textfile collector).
    Prometheus,
}

impl Format {
    /// Parses `table`, `json` or `prometheus`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "table" => Some(Format::Table),
            "json" => Some(Format::Json),
            "prometheus" => Some(Format::Prometheus),
            _ => None,
        }
    }
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
pub fn query(conn: &Connection, now: i64, max_age_hours: u32) -> rusqlite::Result<Report> {
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
    Ok(Report {
        now,
        max_age_hours,
        rows,
    })
}

impl Report {
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

    /// [`EXIT_OVER_MAX_AGE`] when any user is over the limit, else [`EXIT_ALL_RECENT`].
    pub fn exit_status(&self) -> u8 {
        if self.over_max_age() > 0 {
            EXIT_OVER_MAX_AGE
        } else {
            EXIT_ALL_RECENT
        }
    }

    fn now_text(&self) -> String {
        jiff::Timestamp::from_second(self.now)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|_| self.now.to_string())
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let h = self.max_age_hours;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Backup age at {}: users by whole hours since their last complete backup",
            self.now_text()
        );
        let _ = writeln!(
            s,
            "(vanished users left out; marked: {h} h or more, or never)"
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "{:>8}  {:>9}", "hours", "users");
        for r in &self.rows {
            let age = r
                .age_hours
                .map_or_else(|| "never".to_string(), |a| a.to_string());
            let mark = if r.over { "  over" } else { "" };
            let _ = writeln!(s, "{age:>8}  {:>9}{mark}", r.users);
        }
        let _ = writeln!(s, "{:>8}  {:>9}", "total", self.users());
        let _ = writeln!(s);
        let over = self.over_max_age();
        if over == 0 {
            let _ = writeln!(s, "All users backed up complete within {h} h.");
        } else {
            let _ = writeln!(
                s,
                "{over} users not backed up complete within {h} h ({} never).",
                self.never_backed_up()
            );
        }
        s
    }

    /// One JSON object (fields in docs/backup-server.md).
    pub fn json(&self) -> String {
        // Only integers, booleans and null: written by hand, no JSON crate needed.
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"now\":{},\"max_age_hours\":{},\"users\":{},\"never_backed_up\":{},\"over_max_age\":{},\"rows\":[",
            self.now,
            self.max_age_hours,
            self.users(),
            self.never_backed_up(),
            self.over_max_age()
        );
        for (i, r) in self.rows.iter().enumerate() {
            let age = r
                .age_hours
                .map_or_else(|| "null".to_string(), |a| a.to_string());
            let _ = write!(
                s,
                "{}{{\"age_hours\":{age},\"users\":{},\"over\":{}}}",
                if i == 0 { "" } else { "," },
                r.users,
                r.over
            );
        }
        s.push_str("]}\n");
        s
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let gauge = |s: &mut String, name: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} gauge");
        };
        gauge(
            &mut s,
            "mailbackup_users_by_backup_age_hours",
            "Users by whole hours since their last complete backup started (vanished users left out).",
        );
        for r in &self.rows {
            if let Some(a) = r.age_hours {
                let _ = writeln!(
                    s,
                    "mailbackup_users_by_backup_age_hours{{age=\"{a}\"}} {}",
                    r.users
                );
            }
        }
        gauge(
            &mut s,
            "mailbackup_users_never_backed_up",
            "Users never backed up complete (vanished users left out).",
        );
        let _ = writeln!(
            s,
            "mailbackup_users_never_backed_up {}",
            self.never_backed_up()
        );
        gauge(
            &mut s,
            "mailbackup_users_over_max_age",
            "Users whose last complete backup is max_age_hours or more old, or who never had one.",
        );
        let _ = writeln!(s, "mailbackup_users_over_max_age {}", self.over_max_age());
        gauge(
            &mut s,
            "mailbackup_users",
            "Users counted by the report (vanished users left out).",
        );
        let _ = writeln!(s, "mailbackup_users {}", self.users());
        gauge(
            &mut s,
            "mailbackup_report_max_age_hours",
            "The limit the report marked users against.",
        );
        let _ = writeln!(s, "mailbackup_report_max_age_hours {}", self.max_age_hours);
        gauge(
            &mut s,
            "mailbackup_report_time_seconds",
            "The clock the ages were computed against.",
        );
        let _ = writeln!(s, "mailbackup_report_time_seconds {}", self.now);
        s
    }

    /// The report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Json => self.json(),
            Format::Prometheus => self.prometheus(),
        }
    }

    /// The mail `--mail-to` sends: headers (sendmail adds From, Date, Message-ID) and the table.
    pub fn mail_message(&self, to: &str) -> String {
        let over = self.over_max_age();
        let subject = if over == 0 {
            format!(
                "mailbackup: all {} users backed up within {} h",
                self.users(),
                self.max_age_hours
            )
        } else {
            format!(
                "mailbackup: {over} users not backed up within {} h",
                self.max_age_hours
            )
        };
        format!(
            "To: {to}\nSubject: {subject}\nAuto-Submitted: auto-generated\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{}",
            self.table()
        )
    }
}

/// The sendmail to run: `$MAILBACKUP_SENDMAIL` or [`DEFAULT_SENDMAIL`].
pub fn sendmail_path() -> PathBuf {
    std::env::var_os(SENDMAIL_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SENDMAIL), PathBuf::from)
}

/// Hands the table to `sendmail -i -- TO` and waits for it to take the mail.
pub fn mail(report: &Report, to: &str, sendmail: &Path) -> Result<(), ReportError> {
    if to.trim().is_empty() || to.contains(['\r', '\n']) || to.starts_with('-') {
        return Err(ReportError::BadAddress(to.to_string()));
    }
    let mut child = Command::new(sendmail)
        .args(["-i", "--", to])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| ReportError::SendmailMissing {
            path: sendmail.to_path_buf(),
            source,
        })?;
    let failed = |what: String| ReportError::Sendmail {
        path: sendmail.to_path_buf(),
        what,
    };
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(report.mail_message(to).as_bytes()));
    // stdin is closed here (dropped), so sendmail sees the end of the message.
    let status = child.wait().map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        return Err(failed(format!("it exited with {status}")));
    }
    if let Some(Err(e)) = written {
        return Err(failed(format!("writing the message: {e}")));
    }
    Ok(())
}

/// Unix seconds now, from the system clock.
fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `backup-server report`: makes the report from the configured state db, prints it in
/// `format` (or mails the table to `mail_to`, printing nothing) and returns the exit status.
pub fn run(
    config: &Config,
    format: Format,
    max_age_hours: u32,
    mail_to: Option<&str>,
    now: Option<i64>,
) -> u8 {
    let now = now.unwrap_or_else(system_now);
    let result = open_state_db(&config.state_db).and_then(|conn| {
        query(&conn, now, max_age_hours).map_err(|source| ReportError::Sqlite {
            path: config.state_db.clone(),
            source,
        })
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backup-server: report: {e}");
            return EXIT_REPORT_FAILED;
        }
    };
    let sent = match mail_to {
        Some(to) => mail(&report, to, &sendmail_path()),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(report.render(format).as_bytes())
                .and_then(|()| out.flush())
                .map_err(ReportError::Output)
        }
    };
    match sent {
        Ok(()) => report.exit_status(),
        Err(e) => {
            eprintln!("backup-server: report: {e}");
            EXIT_REPORT_FAILED
        }
    }
}
