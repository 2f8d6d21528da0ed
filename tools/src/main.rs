//! mailbackup-tools: operator and developer tools.
//!
//! * `inspect FILE [--json]`: prints a parsed cyrus.header, cyrus.index, twoskip database
//!   (mailboxes.db as the mailbox list) or mailbackup data file.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file, json } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            inspect::inspect(&file, json, &mut out).and_then(|()| Ok(out.flush()?))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailbackup-tools: {e:#}");
            ExitCode::FAILURE
        }
    }
}
