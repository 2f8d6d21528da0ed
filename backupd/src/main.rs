//! backupd: the daemon that runs beside Cyrus on every mail server.
//!
//! `backupd --config FILE` serves; `backupd check --config FILE` checks the configuration
//! and the spool access and says what is wrong. Exit status: 0 fine (or stopped by
//! SIGTERM/SIGINT), 1 the configuration, the secret, the spool or the port is unusable
//! (the message says which), 2 bad command line.

use anyhow::{Context, Result};
use backupd::auth::load_secret;
use backupd::config::Config;
use backupd::privileges::{self, RunningAs};
use backupd::server;
use backupd::spool::Spool;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Serves Cyrus's spool to the mailbackup backup host.
#[derive(Debug, Parser)]
#[command(name = "backupd", version, about)]
struct Cli {
    /// The configuration file (TOML; see contrib/backupd.toml.example).
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "/etc/backupd/backupd.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration, the secret file and the spool access; print what is wrong.
    Check,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Check) => {
            let report = backupd::check::check(&cli.config);
            println!("{report}");
            if report.ok() {
                0
            } else {
                1
            }
        }
        None => match serve(&cli.config) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("backupd: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

fn serve(path: &Path) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(path)?;
    // Read while still root: the secret file may be root's alone.
    let secret = load_secret(&config.secret_file)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    match privileges::drop_to(&config.run_as).map_err(anyhow::Error::msg)? {
        RunningAs::Dropped { user, uid, gid } => {
            info!(user, uid, gid, "dropped root privileges")
        }
        RunningAs::Unchanged { uid } => info!(uid, "not started as root; running as is"),
    }
    let spool = Spool::open(&config.imapd_conf)
        .with_context(|| format!("opening the spool of {}", config.imapd_conf.display()))?
        .with_lock_timeout(Duration::from_secs(config.lock_timeout_secs));
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.blocking_threads + 4)
        .thread_name("backupd")
        .build()
        .context("starting the runtime")?;
    let settings = config.settings();
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        server::run(
            listener,
            Arc::new(spool),
            secret,
            settings,
            shutdown_signal(),
        )
        .await
    });
    // Spool reads still running are left to finish or die with the process.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result.context("serving")
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
}
