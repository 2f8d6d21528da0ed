//! backup-server: the nightly job and every operation on the stores.
//!
//! Parses the arguments, sets up logging and the stop flag, runs the command ([`cli`]),
//! prints its error if it failed, and exits with its status: 0 all done, 2 done but not all
//! of it (users or messages not backed up, backups too old), 1 failed, 141 standard
//! output's reader went away.

mod cli;

use clap::Parser;
use cli::{Cli, Status};
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    // Usage errors exit 1, not clap's 2: 2 means "done, some users not backed up" here.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let status = if e.use_stderr() {
                Status::Failed
            } else {
                Status::Ok
            };
            return status.code().into();
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // SIGINT/SIGTERM: workers finish the user under way, then the run ends with its summary.
    let stop = Arc::new(AtomicBool::new(false));
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    for sig in signals {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("backup-server: cannot handle signal {sig}: {e}");
            return Status::Failed.code().into();
        }
    }
    // And say so, once the flag is set (the tests wait for this line before they let the
    // work under way end).
    if let Ok(mut taken) = signal_hook::iterator::Signals::new(signals) {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for sig in taken.forever() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!("signal {sig}: stopping after the work under way");
            }
        });
    }
    let result = cli::execute(&cli, &stop);
    let status = Status::of(&result);
    if let (Err(e), Status::Failed) = (&result, status) {
        eprintln!("backup-server: {}", cli::error_text(e));
    }
    status.code().into()
}
