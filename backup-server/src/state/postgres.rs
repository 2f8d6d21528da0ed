//! Where a PostgreSQL state db is and how to reach it: `state_db = "postgres://user@host:port/db"`
//! in the config, the password in `state_db_password_file` (never in the URL, so that no
//! log line or error message carries it), TLS with `state_db_ca_file` (the server's
//! certificate verified against that CA and the URL's host name; docs/fleet.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A PostgreSQL state db, as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    /// `postgres://user@host:port/db[?options]`, without a password.
    pub url: String,
    /// The role's password (a file readable by its owner only), if the server asks for one.
    pub password_file: Option<PathBuf>,
    /// The CA certificates the server's certificate must chain to; set: TLS is required.
    pub ca_file: Option<PathBuf>,
}

/// Why a `state_db` URL cannot be used (checked when the config is read).
pub fn check_url(url: &str) -> Result<(), String> {
    let config: postgres::Config = url.parse().map_err(|e| {
        format!("not a PostgreSQL URL ({e}); expected postgres://USER@HOST:PORT/DB")
    })?;
    if config.get_password().is_some() {
        return Err(
            "holds a password: put it in state_db_password_file (the URL is logged)".into(),
        );
    }
    if config.get_user().is_none() {
        return Err("names no user: expected postgres://USER@HOST:PORT/DB".into());
    }
    Ok(())
}

/// Whether a `state_db` value names PostgreSQL rather than an SQLite file.
pub fn is_postgres_url(value: &str) -> bool {
    value.starts_with("postgres://") || value.starts_with("postgresql://")
}

/// Longest wait for the connection to the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects, with TLS when a CA file is configured. Errors are text naming the file or
/// what the server said; the caller adds the URL.
pub fn connect(target: &PostgresTarget) -> Result<postgres::Client, String> {
    let mut config: postgres::Config = target.url.parse().map_err(|e| format!("{e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("backup-server");
    if let Some(file) = &target.password_file {
        let secret =
            crate::client::load_secret(file).map_err(|e| format!("state_db_password_file: {e}"))?;
        let mut pw = secret.expose().to_vec();
        while pw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            pw.pop();
        }
        config.password(pw);
    }
    let connected = match &target.ca_file {
        None => config.connect(postgres::NoTls),
        Some(ca) => {
            if config.get_ssl_mode() != postgres::config::SslMode::Disable {
                config.ssl_mode(postgres::config::SslMode::Require);
            }
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::client::tls::read_certs("state_db_ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("state_db_ca_file {}: {e}", ca.display()))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS with the ring provider: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        }
    };
    connected.map_err(|e| super::backend::DbError::from(e).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_a_plain_url_taken() {
        let e = check_url("postgres://mb:hunter2@db1:5432/mailbackup").unwrap_err();
        assert!(e.contains("state_db_password_file"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        check_url("postgres://mb@db1:5432/mailbackup?sslmode=require").unwrap();
        assert!(check_url("postgres://db1/mailbackup").is_err(), "no user");
        assert!(is_postgres_url("postgresql://mb@db1/x"));
        assert!(!is_postgres_url("/var/lib/mailbackup/state.sqlite3"));
    }
}
