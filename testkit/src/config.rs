//! backup-server configuration files, with the keys of contrib/backup-server.toml.example, and
//! the secret files they name. Every test and benchmark that runs backup-server writes its
//! configuration here.
//!
//! ```
//! let text = testkit::config::ServerConfig::new("store")
//!     .workers(3)
//!     .server("mail1", "127.0.0.1:2912", "mail1.secret")
//!     .raidset("a", "mail1", &["default"])
//!     .to_toml();
//! assert!(text.contains("[[raidset]]\nname = \"a\"\nserver = \"mail1\"\npartitions = [\"default\"]\n"));
//! ```

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A backup-server configuration; keys left `None` are not written (backup-server's
/// defaults apply). Relative paths are relative to the file, as backup-server reads them.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// `store_root`.
    pub store_root: PathBuf,
    /// `state_db`.
    pub state_db: Option<PathBuf>,
    /// `workers`.
    pub workers: Option<usize>,
    /// `batch_size`.
    pub batch_size: Option<usize>,
    /// `batches_per_raidset`.
    pub batches_per_raidset: Option<usize>,
    /// `retention_days`.
    pub retention_days: Option<u64>,
    /// `[[server]]` tables.
    pub servers: Vec<MailServer>,
    /// `[[raidset]]` tables.
    pub raidsets: Vec<RaidSet>,
}

/// One `[[server]]`.
#[derive(Debug, Clone, Default)]
pub struct MailServer {
    /// `name`.
    pub name: String,
    /// `address` (backupd's `host:port`).
    pub address: String,
    /// `secret_file`.
    pub secret_file: PathBuf,
    /// `connect_timeout_secs`.
    pub connect_timeout_secs: Option<u64>,
    /// `io_timeout_secs`.
    pub io_timeout_secs: Option<u64>,
    /// `tls_pin` (`sha256/...`): TLS, backupd trusted by the pin of its key.
    pub tls_pin: Option<String>,
}

/// One `[[raidset]]`.
#[derive(Debug, Clone, Default)]
pub struct RaidSet {
    /// `name`.
    pub name: String,
    /// `server`.
    pub server: String,
    /// `partitions`.
    pub partitions: Vec<String>,
}

impl ServerConfig {
    /// A configuration with `store_root` and nothing else yet.
    pub fn new(store_root: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            store_root: store_root.into(),
            ..ServerConfig::default()
        }
    }

    /// The tests' usual minimum: store root `store`, server `mail1` at `address` with its
    /// secret in `secret` (beside the file), RAID set `a` over partition `default`.
    pub fn minimal(address: &str) -> ServerConfig {
        ServerConfig::new("store")
            .server("mail1", address, "secret")
            .raidset("a", "mail1", &["default"])
    }

    /// Adds a `[[server]]`.
    pub fn server(mut self, name: &str, address: &str, secret_file: impl Into<PathBuf>) -> Self {
        self.servers.push(MailServer {
            name: name.into(),
            address: address.into(),
            secret_file: secret_file.into(),
            ..MailServer::default()
        });
        self
    }

    /// Sets the timeouts of the last server added.
    pub fn timeouts(mut self, connect_secs: u64, io_secs: u64) -> Self {
        let s = self
            .servers
            .last_mut()
            .expect("a server to set timeouts on");
        s.connect_timeout_secs = Some(connect_secs);
        s.io_timeout_secs = Some(io_secs);
        self
    }

    /// Sets `tls_pin` of the last server added: the connection runs in TLS and backupd's
    /// key must have this pin (the tests' backupds serve TLS by default).
    pub fn tls_pin(mut self, pin: impl ToString) -> Self {
        self.servers
            .last_mut()
            .expect("a server to set the pin of")
            .tls_pin = Some(pin.to_string());
        self
    }

    /// Adds a `[[raidset]]`.
    pub fn raidset(mut self, name: &str, server: &str, partitions: &[&str]) -> Self {
        self.raidsets.push(RaidSet {
            name: name.into(),
            server: server.into(),
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
        });
        self
    }

    /// Sets `state_db`.
    pub fn state_db(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_db = Some(path.into());
        self
    }

    /// Sets `workers`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Sets `batch_size`.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// Sets `batches_per_raidset`.
    pub fn batches_per_raidset(mut self, n: usize) -> Self {
        self.batches_per_raidset = Some(n);
        self
    }

    /// Sets `retention_days`.
    pub fn retention_days(mut self, n: u64) -> Self {
        self.retention_days = Some(n);
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "store_root = {}", quote_path(&self.store_root));
        if let Some(p) = &self.state_db {
            let _ = writeln!(t, "state_db = {}", quote_path(p));
        }
        for (key, value) in [
            ("workers", self.workers),
            ("batch_size", self.batch_size),
            ("batches_per_raidset", self.batches_per_raidset),
            ("retention_days", self.retention_days.map(|d| d as usize)),
        ] {
            if let Some(v) = value {
                let _ = writeln!(t, "{key} = {v}");
            }
        }
        for s in &self.servers {
            let _ = write!(
                t,
                "\n[[server]]\nname = {}\naddress = {}\nsecret_file = {}\n",
                quote(&s.name),
                quote(&s.address),
                quote_path(&s.secret_file)
            );
            if let Some(v) = s.connect_timeout_secs {
                let _ = writeln!(t, "connect_timeout_secs = {v}");
            }
            if let Some(v) = s.io_timeout_secs {
                let _ = writeln!(t, "io_timeout_secs = {v}");
            }
            if let Some(pin) = &s.tls_pin {
                let _ = writeln!(t, "tls_pin = {}", quote(pin));
            }
        }
        for r in &self.raidsets {
            let parts: Vec<String> = r.partitions.iter().map(|p| quote(p)).collect();
            let _ = write!(
                t,
                "\n[[raidset]]\nname = {}\nserver = {}\npartitions = [{}]\n",
                quote(&r.name),
                quote(&r.server),
                parts.join(", ")
            );
        }
        t
    }

    /// Writes the file at `path` (its directory created).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.to_toml())
    }

    /// Writes the file at `path` and every server's secret file (relative to `path`'s
    /// directory) with `secret` ([`write_secret`]).
    pub fn write_with_secrets(&self, path: &Path, secret: &str) -> io::Result<()> {
        self.write(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for s in &self.servers {
            write_secret(&dir.join(&s.secret_file), secret)?;
        }
        Ok(())
    }
}

/// Writes a secret file as backupd and backup-server want it: the secret and a newline,
/// readable by its owner only.
pub fn write_secret(path: &Path, secret: &str) -> io::Result<()> {
    std::fs::write(path, format!("{secret}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_and_table() {
        let text = ServerConfig::new("/srv/a \"b\"")
            .state_db("state/state.sqlite3")
            .workers(4)
            .batch_size(3)
            .batches_per_raidset(2)
            .retention_days(14)
            .server("mail1", "127.0.0.1:9", "mail1.secret")
            .timeouts(2, 5)
            .tls_pin("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
            .raidset("a", "mail1", &["default", "p2"])
            .to_toml();
        assert_eq!(
            text,
            "store_root = \"/srv/a \\\"b\\\"\"\nstate_db = \"state/state.sqlite3\"\nworkers = 4\n\
             batch_size = 3\nbatches_per_raidset = 2\nretention_days = 14\n\n[[server]]\n\
             name = \"mail1\"\naddress = \"127.0.0.1:9\"\nsecret_file = \"mail1.secret\"\n\
             connect_timeout_secs = 2\nio_timeout_secs = 5\n\
             tls_pin = \"sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n\n[[raidset]]\nname = \"a\"\n\
             server = \"mail1\"\npartitions = [\"default\", \"p2\"]\n"
        );
    }
}
