//! The command line: `backup-server --config FILE run | users refresh | ls | restore | verify | reindex | compact | report`.

use crate::config::Config;
use crate::nightly::{self, ProgressMode, RunRequest};
use crate::summary::{self, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK};
use clap::{Parser, Subcommand};
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
    Run {
        /// Only this user (repeatable).
        #[arg(long = "user", value_name = "USER")]
        users: Vec<String>,
        /// Only the users of this RAID set.
        #[arg(long, value_name = "NAME")]
        raidset: Option<String>,
        /// Read every server's user list first, however recent the last refresh.
        #[arg(long)]
        refresh: bool,
        /// Progress: auto (a bar on a terminal, log lines otherwise), log, quiet.
        #[arg(long, default_value = "auto", value_parser = ["auto", "log", "quiet"])]
        progress: String,
    },
    /// The state db's user list.
    Users {
        /// What to do with it.
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Folders and messages of a user's backup, as of a point in time.
    Ls {
        /// The user.
        #[arg(long)]
        user: String,
        /// Only this folder (its messages are listed).
        #[arg(long)]
        folder: Option<String>,
        /// The point in time: RFC 3339 (2026-11-23T04:00:00Z) or unix seconds.
        #[arg(long, value_parser = crate::point_in_time::parse_time)]
        at: Option<formats::Timestamp>,
    },
    /// The backup-age report: users by whole hours since their last complete backup; exit 2
    /// when any is at or over the limit (docs/backup-server.md).
    Report {
        /// Output: table, json or prometheus.
        #[arg(long, default_value = "table", value_parser = ["table", "json", "prometheus"])]
        format: String,
        /// Mark users whose last complete backup is this many hours old or more.
        #[arg(long, value_name = "H", default_value_t = crate::report::DEFAULT_MAX_AGE_HOURS)]
        max_age_hours: u32,
        /// Mail the table to this address with sendmail(8) instead of printing it.
        #[arg(long, value_name = "ADDR")]
        mail_to: Option<String>,
        /// The clock to compute ages against (default: now): RFC 3339 or unix seconds.
        #[arg(long, value_parser = crate::point_in_time::parse_time)]
        now: Option<formats::Timestamp>,
    },
    /// Check stores: every chunk inflates, every message hashes to its GUID, index and data
    /// file agree; each fault named with user, file and offset; exit 1 on any.
    Verify {
        /// Only this user (default: every store under the store root).
        #[arg(long)]
        user: Option<String>,
    },
    /// Rebuild a user's index (backupstate.sqlite3) from the data file alone.
    Reindex {
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Rewrite stores whose dirty ratio (bytes no restore inside the retention can need)
    /// passes the threshold, keeping only live entries (docs/store.md, Compaction).
    Compact {
        /// Only this user (default: every store under the store root).
        #[arg(long)]
        user: Option<String>,
        /// Compact when dirty / total bytes is above this.
        #[arg(long, value_name = "R", default_value_t = crate::compact::DEFAULT_THRESHOLD)]
        threshold: f64,
        /// ... and dirty bytes (uncompressed) are above this.
        #[arg(long, value_name = "N", default_value_t = crate::compact::DEFAULT_MIN_BYTES)]
        min_bytes: u64,
        /// Print each user's total, dirty bytes, ratio and decision; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The time to count retention from (default: now): RFC 3339 or unix seconds.
        #[arg(long, value_parser = crate::point_in_time::parse_time)]
        now: Option<formats::Timestamp>,
    },
    /// Restore mail from a user's backup into Maildir, mbox, .eml files or an IMAP account (docs/restore.md).
    Restore(crate::restore::RestoreArgs),
}

/// `backup-server users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Read every backupd's user list into the state db (vanished users are marked).
    Refresh,
}

/// Runs the command; returns the process exit status (0, 1 or 2; see
/// [`crate::summary::RunSummary::exit_status`]). `stop` is set by SIGINT/SIGTERM.
pub fn execute(cli: &Cli, stop: &AtomicBool) -> u8 {
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("backup-server: {e}");
            return EXIT_FAILED;
        }
    };
    match &cli.command {
        Command::Run {
            users,
            raidset,
            refresh,
            progress,
        } => {
            let req = RunRequest {
                users: users.clone(),
                raidset: raidset.clone(),
                force_refresh: *refresh,
            };
            let mode = match progress.as_str() {
                "log" => ProgressMode::Log,
                "quiet" => ProgressMode::Quiet,
                _ => ProgressMode::Auto,
            };
            let result = nightly::run(&config, &req, stop, mode);
            match &result {
                Ok(s) => {
                    crate::cli::out(format_args!("{s}"));
                    tracing::info!(
                        status = s.status_word(),
                        done = s.users_done,
                        incomplete = s.users_incomplete,
                        skipped = s.users_skipped,
                        failed = s.users_failed,
                        not_reached = s.users_not_reached,
                        "run ended"
                    );
                }
                Err(e) => {
                    let e = nightly::error_chain(e);
                    tracing::error!("run failed: {e}");
                    eprintln!("backup-server: run failed: {e}");
                }
            }
            summary::exit_status(&result)
        }
        Command::Users {
            command: UsersCommand::Refresh,
        } => {
            let result = crate::state::StateDb::open(&config.state_db)
                .map_err(anyhow::Error::from)
                .and_then(|mut db| nightly::refresh(&config, &mut db, true));
            match result {
                Ok(report) => {
                    for (server, r) in &report.servers {
                        match r {
                            Ok(c) => crate::cli::out(format_args!(
                                "{server}: {} users listed, {} new, {} moved, {} vanished, {} back, {} on no RAID set",
                                c.listed, c.added, c.moved, c.vanished, c.returned, c.unassigned
                            )),
                            Err(e) => crate::cli::out(format_args!("{server}: not refreshed: {e}")),
                        }
                    }
                    match report.failed() {
                        0 => EXIT_OK,
                        n if n == report.servers.len() => EXIT_FAILED,
                        _ => EXIT_INCOMPLETE,
                    }
                }
                Err(e) => {
                    eprintln!("backup-server: users refresh: {}", nightly::error_chain(&e));
                    EXIT_FAILED
                }
            }
        }
        Command::Ls { user, folder, at } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let r = crate::ls::ls(&config.store_root, user, folder.as_deref(), *at, &mut out)
                .and_then(|()| {
                    use std::io::Write;
                    out.flush().map_err(Into::into)
                });
            match r {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("backup-server: ls: {}", nightly::error_chain(&e));
                    EXIT_FAILED
                }
            }
        }
        Command::Report {
            format,
            max_age_hours,
            mail_to,
            now,
        } => crate::report::run(
            &config,
            crate::report::Format::parse(format).unwrap_or(crate::report::Format::Table),
            *max_age_hours,
            mail_to.as_deref(),
            now.map(|t| t.secs),
        ),
        Command::Verify { user } => crate::verify::run_verify(&config.store_root, user.as_deref()),
        Command::Reindex { user } => crate::verify::run_reindex(&config.store_root, user),
        Command::Compact {
            user,
            threshold,
            min_bytes,
            dry_run,
            now,
        } => {
            let now = now.unwrap_or_else(|| crate::store::Clock::now(&crate::store::SystemClock));
            let o = crate::compact::CompactOptions {
                threshold: *threshold,
                min_bytes: *min_bytes,
                dry_run: *dry_run,
                now,
                retention_secs: i64::from(config.retention_days) * 86_400,
                store: crate::store::StoreOptions {
                    chunk_cap: config.chunk_size_cap,
                    gzip_level: config.gzip_level,
                    ..crate::store::StoreOptions::default()
                },
            };
            crate::compact::run(&config.store_root, user.as_deref(), &o)
        }
        Command::Restore(args) => crate::restore::run(&config.store_root, args),
    }
}

/// Writes one line to standard output. When the reader has gone (`backup-server ls | head`),
/// the process ends quietly with the status a shell gives a SIGPIPE death (141), where
/// `println!` would panic; every store change is already committed at a line boundary.
pub(crate) fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("backup-server: writing to standard output: {e}");
        std::process::exit(1);
    }
}
