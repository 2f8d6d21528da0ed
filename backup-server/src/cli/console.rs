//! `backup-server console`: the support staff's web console ([`backup_server::console`]),
//! and `backup-server console add-account NAME`, which writes a password hash into the
//! accounts file (the password read from standard input, one line).
//!
//! Once listening it prints `console: listening on http://ADDR/` and serves until
//! SIGINT/SIGTERM.

use super::{Out, Status};
use anyhow::{bail, Context};
use backup_server::config::Config;
use backup_server::console::{ProxyAuth, Settings};
use backup_server::restore::imap::IntoFolder;
use backup_server::restore::Target;
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// `backup-server console` arguments.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConsoleArgs {
    /// Account management instead of serving.
    #[command(subcommand)]
    command: Option<ConsoleCommand>,
    /// Serving.
    #[command(flatten)]
    serve: ServeArgs,
}

/// `backup-server console` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConsoleCommand {
    /// Write NAME's password hash (Argon2id) into the accounts file, creating it 0600 or
    /// replacing NAME's line; the password is read from standard input (one line).
    AddAccount {
        /// The account name (letters, digits, '.', '_', '-', '@').
        name: String,
        /// The accounts file.
        #[arg(long, default_value = "/etc/mailbackup/console-accounts")]
        accounts: PathBuf,
    },
}

/// How the console serves.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on (plain HTTP; loopback unless --public-url is https://).
    #[arg(long, default_value = "127.0.0.1:8025")]
    listen: SocketAddr,
    /// The accounts file (NAME:ARGON2-HASH lines; `console add-account` writes them).
    #[arg(long)]
    accounts: Option<PathBuf>,
    /// The append-only audit log (JSON lines; created 0600).
    #[arg(long, default_value = "/var/log/mailbackup/console-audit.log")]
    audit_log: PathBuf,
    /// The URL staff reach the console by, through an HTTPS reverse proxy
    /// (https://console.example.com/): the session cookie is then Secure.
    #[arg(long)]
    public_url: Option<String>,
    /// Sign-in by the reverse proxy: the header it puts the authenticated name in (e.g.
    /// X-Remote-User). Requires --proxy-from.
    #[arg(long, requires = "proxy_from")]
    proxy_user_header: Option<String>,
    /// The reverse proxy's address: only its requests are served when --proxy-user-header
    /// is given.
    #[arg(long, requires = "proxy_user_header")]
    proxy_from: Option<IpAddr>,
    /// Where restores go: imap://ADMIN@HOST:PORT/ or cyrus://ADMIN@HOST:PORT; repeat for
    /// several (the page offers each).
    #[arg(long = "restore-to")]
    restore_to: Vec<Target>,
    /// The file holding the restore targets' admin password (not readable by others).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// cyrus:// targets: STARTTLS, the certificate checked against this PEM file.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// Restore targets that are not loopback: send the password and mail in clear.
    #[arg(long)]
    plaintext: bool,
}

/// Account management, which needs no configuration file; `None` for serving.
pub fn without_config(
    a: &ConsoleArgs,
    out: &mut Out<impl Write>,
) -> Option<anyhow::Result<Status>> {
    let ConsoleCommand::AddAccount { name, accounts } = a.command.as_ref()?;
    Some((|| {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(2048)
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']);
        backup_server::console::accounts::set_password(accounts, name, password)?;
        out.line(format_args!(
            "account {name} written to {}",
            accounts.display()
        ))?;
        Ok(Status::Ok)
    })())
}

/// Serves until SIGINT/SIGTERM.
pub fn run(
    config: &Config,
    a: &ConsoleArgs,
    stop: &AtomicBool,
    out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    let s = &a.serve;
    let mut targets = Vec::new();
    for t in &s.restore_to {
        let mut t = t.clone();
        match &mut t {
            Target::Imap(i) => {
                i.password_file = s.password_file.clone();
                i.plaintext = s.plaintext;
                i.into = IntoFolder::default();
            }
            Target::Cyrus(c) => {
                c.password_file = s.password_file.clone();
                c.plaintext = s.plaintext;
                c.tls_ca_file = s.tls_ca_file.clone();
                c.into = IntoFolder::Original;
            }
            _ => bail!("--restore-to takes imap:// or cyrus:// targets (downloads cover files)"),
        }
        targets.push(t);
    }
    let proxy = match (&s.proxy_user_header, s.proxy_from) {
        (Some(header), Some(from)) => Some(ProxyAuth {
            header: header.to_ascii_lowercase(),
            from,
        }),
        _ => None,
    };
    let settings = Settings {
        listen: s.listen,
        public_url: s.public_url.clone(),
        accounts: s.accounts.clone(),
        proxy,
        audit_log: s.audit_log.clone(),
        store_root: config.store_root.clone(),
        state_db: config.state_db.clone(),
        targets,
    };
    let mut said = Ok(());
    backup_server::console::serve(settings, stop, |addr| {
        said = out
            .line(format_args!("console: listening on http://{addr}/"))
            .and_then(|_| out.flush());
    })?;
    said?;
    Ok(Status::Ok)
}
