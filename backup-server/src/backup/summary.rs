//! What a run did: its totals, as the run's summary prints them, and its [`Verdict`] (which
//! the binary turns into the exit status).

use super::user::{BackupError, UserOutcome};
use std::fmt;
use std::time::Duration;

/// How a run that went through ended, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every planned user was backed up complete.
    Done,
    /// Some users were skipped, failed, incomplete or not reached, or a server's user list
    /// could not be refreshed: run it again.
    Incomplete,
    /// Nothing was backed up and something went wrong (every user failed, or a server did
    /// not answer).
    Failed,
}

/// A run's totals, summed over its users as their backups end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Users the run set out to back up.
    pub users_planned: u64,
    /// Users backed up complete.
    pub users_done: u64,
    /// Users committed with some messages or folders missing.
    pub users_incomplete: u64,
    /// Users skipped because another run held their lock.
    pub users_skipped: u64,
    /// Users whose backup failed.
    pub users_failed: u64,
    /// Users not reached because the run was stopped (signal).
    pub users_not_reached: u64,
    /// Whether a signal stopped the run.
    pub interrupted: bool,
    /// Mail servers whose user list could not be refreshed (their users may be missed).
    pub servers_unreachable: u64,
    /// Sum over the users' outcomes.
    pub outcome: UserOutcome,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Skipped users with who held the lock, and failed users with why (capped, see
    /// [`MAX_LISTED`]).
    pub problems: Vec<String>,
}

/// At most this many skipped/failed/incomplete users are listed in the summary (all of
/// them are in the log and the state db).
pub const MAX_LISTED: usize = 50;

/// How one user ended, as the summary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserResult {
    /// Complete.
    Done,
    /// Committed, something missing.
    Incomplete,
    /// Locked by another run.
    Skipped,
    /// Failed.
    Failed,
}

impl RunSummary {
    /// Adds user `user`'s result; returns how it counts.
    pub fn add(&mut self, user: &str, result: &Result<UserOutcome, BackupError>) -> UserResult {
        let kind = match result {
            Ok(o) => {
                let t = &mut self.outcome;
                t.folders += o.folders;
                t.folders_changed += o.folders_changed;
                t.folders_renamed += o.folders_renamed;
                t.folders_deleted += o.folders_deleted;
                t.meta_copies += o.meta_copies;
                t.messages_fetched += o.messages_fetched;
                t.bytes_fetched += o.bytes_fetched;
                t.messages_stored += o.messages_stored;
                t.bytes_stored += o.bytes_stored;
                t.messages_gone += o.messages_gone;
                t.user_files_stored += o.user_files_stored;
                if o.incomplete.is_empty() {
                    self.users_done += 1;
                    UserResult::Done
                } else {
                    self.users_incomplete += 1;
                    UserResult::Incomplete
                }
            }
            Err(BackupError::Locked { .. }) => {
                self.users_skipped += 1;
                UserResult::Skipped
            }
            Err(_) => {
                self.users_failed += 1;
                UserResult::Failed
            }
        };
        if kind != UserResult::Done && self.problems.len() < MAX_LISTED {
            self.problems.push(match result {
                Ok(o) => format!("user {user}: incomplete: {}", o.incomplete_text()),
                Err(e) => e.to_string(),
            });
        }
        kind
    }

    /// Users whose backup ended one way or another.
    pub fn users_finished(&self) -> u64 {
        self.users_done + self.users_incomplete + self.users_skipped + self.users_failed
    }

    /// Users backed up per hour of wall-clock time (done and incomplete alike).
    pub fn users_per_hour(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s <= 0.0 {
            return 0.0;
        }
        (self.users_done + self.users_incomplete) as f64 * 3600.0 / s
    }

    /// Megabytes (10^6) fetched from backupd per second.
    pub fn mb_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s <= 0.0 {
            return 0.0;
        }
        self.outcome.bytes_fetched as f64 / 1e6 / s
    }

    /// How the run ended as a whole (see [`Verdict`]).
    pub fn verdict(&self) -> Verdict {
        let backed_up = self.users_done + self.users_incomplete;
        if backed_up == 0 && (self.users_failed > 0 || self.servers_unreachable > 0) {
            Verdict::Failed
        } else if self.users_incomplete
            + self.users_skipped
            + self.users_failed
            + self.users_not_reached
            + self.servers_unreachable
            > 0
            || self.interrupted
        {
            Verdict::Incomplete
        } else {
            Verdict::Done
        }
    }

    /// The run's status word for the state db (`runs.status`).
    pub fn status_word(&self) -> &'static str {
        match self.verdict() {
            Verdict::Done => "done",
            Verdict::Failed => "failed",
            Verdict::Incomplete if self.interrupted => "interrupted",
            Verdict::Incomplete => "incomplete",
        }
    }

    /// The totals as the state db stores them.
    pub fn totals(&self) -> crate::state::RunTotals {
        crate::state::RunTotals {
            users_planned: self.users_planned,
            users_done: self.users_done,
            users_incomplete: self.users_incomplete,
            users_skipped: self.users_skipped,
            users_failed: self.users_failed,
            messages_fetched: self.outcome.messages_fetched,
            bytes_fetched: self.outcome.bytes_fetched,
            messages_stored: self.outcome.messages_stored,
            bytes_stored: self.outcome.bytes_stored,
        }
    }
}

/// Bytes in a human unit (powers of 1024).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.outcome;
        writeln!(
            f,
            "run {}: {} users planned, {:.1} s{}",
            self.status_word(),
            self.users_planned,
            self.elapsed.as_secs_f64(),
            if self.interrupted {
                format!(
                    " (stopped by a signal; {} users not reached)",
                    self.users_not_reached
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "users: {} done, {} incomplete, {} skipped (locked by another run), {} failed",
            self.users_done, self.users_incomplete, self.users_skipped, self.users_failed
        )?;
        writeln!(
            f,
            "folders: {} listed, {} changed, {} renamed, {} deleted; {} meta copies",
            o.folders, o.folders_changed, o.folders_renamed, o.folders_deleted, o.meta_copies
        )?;
        writeln!(
            f,
            "messages: {} fetched ({}), {} stored ({}), {} gone",
            o.messages_fetched,
            human_bytes(o.bytes_fetched),
            o.messages_stored,
            human_bytes(o.bytes_stored),
            o.messages_gone
        )?;
        write!(
            f,
            "rate: {:.0} users/hour, {:.2} MB/s fetched",
            self.users_per_hour(),
            self.mb_per_sec()
        )?;
        if self.servers_unreachable > 0 {
            write!(
                f,
                "\n  mail servers that did not answer the user list refresh: {} (see the log)",
                self.servers_unreachable
            )?;
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        let listed = self.users_incomplete + self.users_skipped + self.users_failed;
        if listed > self.problems.len() as u64 {
            write!(
                f,
                "\n  ... and {} more (see the log and the state db)",
                listed - self.problems.len() as u64
            )?;
        }
        Ok(())
    }
}
