//! The command line: `backup-server --config FILE run | users refresh | ls | find | restore | verify
//! | reindex | repair | compact | report`.
//!
//! A module of the binary: one file per subcommand, each parsing its arguments, calling the
//! library (which returns what it found or did, and never prints) and printing the result.
//! Here: the arguments, the dispatch, standard output ([`Out`]) and the exit status
//! ([`Status`]).

mod compact;
mod console;
mod find;
mod hosts;
mod ls;
mod manual;
mod repair;
mod report;
mod restore;
mod run;
mod users;
mod verify;

use backup_server::config::Config;
use clap::{Parser, Subcommand};
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// The backup host's program.
#[derive(Debug, Parser)]
#[command(name = "backup-server", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short, default_value = "/etc/mailbackup/backup-server.toml")]
    pub config: PathBuf,
    /// Log filter (tracing EnvFilter syntax); the RUST_LOG variable overrides it.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The nightly job: back up every user (or those named), oldest backup first.
    Run(run::RunArgs),
    /// The state db's user list.
    Users {
        /// What to do with it.
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// The backup hosts sharing the state db: their users, last run, and whether a run is
    /// under way, idle or dead (docs/fleet.md).
    Hosts,
    /// Folders and messages of a user's backup, as of a point in time.
    Ls(ls::LsArgs),
    /// Messages of a user's backup by sender, recipient, subject, date or folder, live,
    /// expunged or in deleted folders; each with the GUID `restore --guid` takes. Exit 2
    /// when nothing matched.
    Find(find::FindArgs),
    /// The backup-age report: users by whole hours since their last complete backup; exit 2
    /// when any is at or over the limit (docs/backup-server.md).
    Report(report::ReportArgs),
    /// Check stores: every chunk inflates, every message hashes to its GUID, index and data
    /// file agree; each fault named with user, file and offset; exit 1 on any.
    Verify(verify::VerifyArgs),
    /// Rebuild a user's index (backupstate.sqlite3) from the data file alone.
    Reindex(verify::ReindexArgs),
    /// Rebuild a user's store from the intact chunks of a damaged or truncated data file,
    /// naming what was lost (folder, UID); the next run fetches it again. Exit 2 when
    /// something was lost.
    Repair(repair::RepairArgs),
    /// Remove the stores of users deleted in Cyrus longer than vanished_retention_days
    /// ago, then rewrite stores whose dirty ratio (bytes no restore inside the retention
    /// can need) passes the threshold, keeping only live entries (docs/store.md,
    /// Compaction).
    Compact(compact::CompactArgs),
    /// Restore mail from a user's backup into Maildir, mbox, .eml files, an IMAP account or
    /// Cyrus itself, as it was (docs/restore.md).
    Restore(Box<restore::RestoreArgs>),
    /// Write the manual pages (this program's and one per subcommand) into a directory.
    Manpages(manual::ManpagesArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(manual::CompletionsArgs),
    /// The support staff's web console: sign in, browse a user's backup as of any time,
    /// open a message, restore or download messages (docs/console.md).
    Console(console::ConsoleArgs),
}

/// Runs the command. `stop` is set by SIGINT/SIGTERM. An error is what to print on stderr
/// (or, when [`Status::of`] says [`Status::ReaderGone`], nothing).
pub fn execute(cli: &Cli, stop: &AtomicBool) -> anyhow::Result<Status> {
    // Generated from the definitions alone: no configuration needed (nor read).
    match &cli.command {
        Command::Manpages(a) => {
            return with(Out::new(io::stdout()), |out| manual::manpages(a, out));
        }
        Command::Completions(a) => {
            return with(Out::new(io::stdout()), |out| manual::completions(a, out));
        }
        _ => {}
    }
    // Writing an account needs no configuration file.
    if let Command::Console(a) = &cli.command {
        let mut out = Out::new(io::stdout());
        if let Some(r) = console::without_config(a, &mut out) {
            let s = r?;
            out.flush()?;
            return Ok(s);
        }
    }
    let config = Config::load(&cli.config).inspect_err(|e| tracing::error!("{e}"))?;
    // A store root or state db others can write is refused; one they can read, said.
    let warnings = backup_server::private::check_places(&config.store_root, &config.state_db)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // Locked per write, not for the whole command: no other thread may ever wait on it.
    let stdout = io::stdout();
    match &cli.command {
        Command::Run(a) => with(Out::new(stdout), |out| run::run(&config, a, stop, out)),
        Command::Users { command } => {
            with(Out::new(stdout), |out| users::run(&config, command, out))
        }
        Command::Hosts => with(Out::new(stdout), |out| hosts::run(&config, out)),
        // Many lines: written in blocks rather than a write each.
        Command::Ls(a) => with(Out::new(io::BufWriter::new(stdout)), |out| {
            ls::run(&config, a, out)
        }),
        Command::Find(a) => with(Out::new(io::BufWriter::new(stdout)), |out| {
            find::run(&config, a, out)
        }),
        Command::Report(a) => with(Out::new(stdout), |out| report::run(&config, a, out)),
        Command::Verify(a) => with(Out::new(stdout), |out| verify::verify(&config, a, out)),
        Command::Reindex(a) => with(Out::new(stdout), |out| verify::reindex(&config, a, out)),
        Command::Repair(a) => with(Out::new(stdout), |out| repair::run(&config, a, out)),
        Command::Compact(a) => with(Out::new(stdout), |out| compact::run(&config, a, out)),
        Command::Restore(a) => with(Out::new(stdout), |out| restore::run(&config, a, out)),
        Command::Manpages(_) | Command::Completions(_) => unreachable!("handled above"),
        Command::Console(a) => with(Out::new(stdout), |out| console::run(&config, a, stop, out)),
    }
}

/// Runs `f` writing to `out`, then flushes `out`.
fn with<W: Write>(
    mut out: Out<W>,
    f: impl FnOnce(&mut Out<W>) -> anyhow::Result<Status>,
) -> anyhow::Result<Status> {
    let status = f(&mut out)?;
    out.flush()?;
    Ok(status)
}

/// How a command ended. [`Status::code`] is the process's exit status: the one place an
/// outcome becomes a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: all that was asked was done, and nothing was found wrong.
    Ok,
    /// 1: the command failed, or found something wrong.
    Failed,
    /// 2: done, but not all of it (users not backed up, servers not refreshed, backups
    /// older than the limit): run it again, or look.
    Incomplete,
    /// 141: standard output's reader went away (`backup-server ls | head`), as a shell
    /// reports a death by SIGPIPE.
    ReaderGone,
}

impl Status {
    /// The exit status.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Failed => 1,
            Status::Incomplete => 2,
            Status::ReaderGone => 141,
        }
    }

    /// The status of a command's result: an error is a failure, unless standard output's
    /// reader went away.
    pub fn of(result: &anyhow::Result<Status>) -> Status {
        match result {
            Ok(s) => *s,
            Err(e) if reader_gone(e) => Status::ReaderGone,
            Err(_) => Status::Failed,
        }
    }
}

/// Whether the error is standard output's reader going away (printed as nothing).
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<OutputError>(),
            Some(OutputError::ReaderGone)
        )
    })
}

/// An error and its causes on one line, leaving out a cause its parent already quotes
/// (the library's errors name their cause in their own text).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Writing a command's results failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader went away (a closed pipe).
    #[error("standard output is closed")]
    ReaderGone,
    /// Any other write error.
    #[error("writing to standard output: {0}")]
    Write(#[source] io::Error),
}

impl From<io::Error> for OutputError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            OutputError::ReaderGone
        } else {
            OutputError::Write(e)
        }
    }
}

/// Where a command's results go: standard output (any writer in tests). A closed pipe is
/// [`OutputError::ReaderGone`], where `println!` would panic; what a command changes is
/// committed before the line saying so is written, so stopping there loses nothing.
pub struct Out<W: Write> {
    w: W,
}

impl<W: Write> Out<W> {
    /// Results written to `w`.
    pub fn new(w: W) -> Self {
        Out { w }
    }

    /// Writes one line (the line end is added).
    pub fn line(&mut self, args: fmt::Arguments<'_>) -> Result<(), OutputError> {
        self.w.write_fmt(args)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    /// Writes text as it is.
    pub fn text(&mut self, s: &str) -> Result<(), OutputError> {
        Ok(self.w.write_all(s.as_bytes())?)
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        Ok(self.w.flush()?)
    }

    /// The writer (tests read what was written).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn statuses_are_the_documented_numbers() {
        let codes: Vec<u8> = [
            Status::Ok,
            Status::Failed,
            Status::Incomplete,
            Status::ReaderGone,
        ]
        .into_iter()
        .map(Status::code)
        .collect();
        assert_eq!(codes, [0, 1, 2, 141]);
    }

    #[test]
    fn a_closed_pipe_is_141_and_other_errors_1() {
        let mut out = Out::new(ClosedPipe);
        let e = out.line(format_args!("x")).unwrap_err();
        assert!(matches!(e, OutputError::ReaderGone));
        // However deep in a command's error it sits.
        let r: anyhow::Result<Status> = Err(anyhow::Error::from(e).context("ls"));
        assert_eq!(Status::of(&r), Status::ReaderGone);
        assert_eq!(Status::of(&r).code(), 141);
        let r: anyhow::Result<Status> = Err(anyhow::anyhow!("no such user"));
        assert_eq!(Status::of(&r), Status::Failed);
        let r: anyhow::Result<Status> =
            Err(OutputError::from(io::Error::other("disk full")).into());
        assert_eq!(Status::of(&r), Status::Failed);
        assert_eq!(Status::of(&Ok(Status::Incomplete)).code(), 2);
    }

    #[test]
    fn lines_end_in_a_newline_and_causes_are_not_repeated() {
        let mut out = Out::new(Vec::new());
        out.line(format_args!("a\t{}", 1)).unwrap();
        out.text("b\n").unwrap();
        assert_eq!(out.into_inner(), b"a\t1\nb\n");
        let e = anyhow::Error::from(io::Error::other("gone"))
            .context("reading /x: gone")
            .context("verify");
        assert_eq!(error_text(&e), "verify: reading /x: gone");
    }
}
