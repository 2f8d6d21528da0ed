//! backup-server: the nightly job and every operation on the stores.
//!
//! Thin: parse the arguments, set up logging and the stop flag, call the library, exit
//! with the status it decided (0 all done, 2 some users or messages not backed up, 1 the
//! run failed).

use backup_server::cli::{execute, Cli};
use clap::Parser;
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    // Usage errors exit 1, not clap's 2: 2 means "done, some users not backed up" here.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                backup_server::summary::EXIT_FAILED
            } else {
                0
            });
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
            return std::process::ExitCode::from(backup_server::summary::EXIT_FAILED);
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
    std::process::ExitCode::from(execute(&cli, &stop))
}
