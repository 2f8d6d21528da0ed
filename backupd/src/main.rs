//! backupd: the daemon that runs beside Cyrus on every mail server.
//!
//! `backupd --config FILE` serves; `backupd check --config FILE` checks the configuration
//! and the spool access and says what is wrong; `backupd keygen --dir DIR` makes the TLS
//! key and a self-signed certificate and prints the pin for the backup host. Exit status: 0
//! fine (or stopped by SIGTERM/SIGINT), 1 the configuration, the secret, the TLS files, the
//! spool or the port is unusable (the message says which), 2 bad command line.

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
    /// Check the configuration, the secret file, the TLS key and certificate, and the spool
    /// access; print what is wrong.
    Check,
    /// Make a TLS private key (DIR/tls.key, mode 0600) and a self-signed certificate for it
    /// (DIR/tls.crt); print the configuration lines for backupd and the key's pin for the
    /// backup host.
    Keygen {
        /// The directory to write into.
        #[arg(long, default_value = "/etc/backupd")]
        dir: PathBuf,
        /// A DNS name or IP address for the certificate (repeat for more). Default: this
        /// host's name. The backup host pins the key, so names only matter to a backup host
        /// that trusts a CA file instead.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Replace existing files (the old key's pin stops working on the backup host).
        #[arg(long)]
        force: bool,
    },
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
        Some(Command::Keygen { dir, names, force }) => {
            let names = if names.is_empty() {
                vec![backupd::keygen::hostname()]
            } else {
                names
            };
            match backupd::keygen::keygen(&dir, &names, force) {
                Ok(g) => {
                    println!(
                        "wrote {} (the private key, mode 0600) and {} (a self-signed certificate \
                         for {}, valid until {})",
                        g.key_file.display(),
                        g.cert_file.display(),
                        g.names.join(", "),
                        g.not_after.date()
                    );
                    println!("\nin backupd.toml:");
                    println!("tls_cert_file = {:?}", g.cert_file.display().to_string());
                    println!("tls_key_file = {:?}", g.key_file.display().to_string());
                    println!(
                        "\non the backup host, in this server's [[server]] table of backup-server.toml:"
                    );
                    println!("tls_pin = \"{}\"", g.pin);
                    0
                }
                Err(e) => {
                    eprintln!("backupd keygen: {e}");
                    1
                }
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
        // No colour codes in the journal (systemd gives stderr a socket) or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(path)?;
    // Read while still root: the secret file and the TLS key may be root's alone.
    let secret = load_secret(&config.secret_file)?;
    let tls = match config.tls_files() {
        Some(files) => Some(backupd::tls::server_config(
            &files,
            nix::unistd::geteuid().as_raw(),
        )?),
        None => {
            if config.listen.ip().is_loopback() {
                info!("TLS off: plain TCP on loopback");
            } else {
                tracing::warn!(
                    listen = %config.listen,
                    "TLS off (tls = false): mail crosses the network in clear"
                );
            }
            None
        }
    };
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
    let settings = server::Settings {
        tls,
        ..config.settings()
    };
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
