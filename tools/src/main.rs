//! mailbackup-tools: operator and developer tools.
//!
//! * `inspect FILE [--json]`: prints a parsed cyrus.header, cyrus.index, twoskip database
//!   (mailboxes.db as the mailbox list) or mailbackup data file.
//! * `bench [...]`: every workload for us and for tar, rsync, restic, borg and Cyrus's own
//!   backups, side by side on one spool (docs/PERFORMANCE.md).

mod bench;
mod inspect;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailbackup-tools",
    version,
    about = "mailbackup's operator and developer tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what mailbackup reads from a cyrus.header, cyrus.index, twoskip database
    /// (mailboxes.db is shown as the mailbox list) or mailbackup data file.
    Inspect {
        /// The file. Its kind is recognised from its magic bytes, or by the name cyrus.index.
        file: PathBuf,
        /// One JSON document instead of text (fields described in docs/inspect.md).
        #[arg(long)]
        json: bool,
    },
    /// Benchmark every workload (full, no-change and churn nights, one-message restore,
    /// compaction, report) against tar, rsync, restic, borg and Cyrus Backups on a spool
    /// built by tests/cyrus/bulk.py; run as root from the repository.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file, json } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            inspect::inspect(&file, json, &mut out).and_then(|()| Ok(out.flush()?))
        }
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailbackup-tools: {e:#}");
            ExitCode::FAILURE
        }
    }
}
