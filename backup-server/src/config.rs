//! The backup host's configuration file (TOML). contrib/backup-server.toml.example shows
//! every key with its default; docs/backup-server.md describes them.
//!
//! Relative paths are taken relative to the directory of the configuration file, so a test
//! (or an administrator) can keep a self-contained directory.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration as read from the file, defaults filled in and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (error messages name it).
    pub path: PathBuf,
    /// Where the per-user stores live.
    pub store_root: PathBuf,
    /// The SQLite state db. Default `<store_root>/state.sqlite3`; unused when `state` is
    /// PostgreSQL.
    pub state_db: PathBuf,
    /// Where the state db is: the SQLite file `state_db`, or the PostgreSQL database a
    /// `state_db = "postgres://..."` names (docs/fleet.md).
    pub state: crate::state::StateLocation,
    /// This backup host's name in the state db (`host_name`; default: the machine's hostname).
    pub host_name: String,
    /// Worker threads backing up users at once. Default 8.
    pub workers: usize,
    /// Users handed out to a worker at once from one RAID set. Default 50.
    pub batch_size: usize,
    /// Batches of one RAID set in flight at once, each with its own worker. Default 1: one
    /// backup per set of drives, which spinning-disk RAID sets need; sets on SSDs (or a mail
    /// server with few partitions and many cores) may take more.
    pub batches_per_raidset: usize,
    /// A chunk is closed before it grows past this many uncompressed bytes.
    pub chunk_size_cap: u64,
    /// gzip level of new chunks, 0 to 9.
    pub gzip_level: u32,
    /// Days an expunged message or deleted folder stays restorable.
    pub retention_days: u32,
    /// Days the store of a user deleted in Cyrus (vanished from its server's user list) is
    /// kept, restorable, before compaction removes it. Default 30.
    pub vanished_retention_days: u32,
    /// `run` refreshes a server's user list when it is older than this. Default 24 h.
    pub refresh_after: Duration,
    /// Seconds between progress lines in the log when not on a terminal.
    pub log_interval: Duration,
    /// The mail servers, by name, in file order.
    pub servers: Vec<Server>,
    /// The RAID sets, in file order.
    pub raidsets: Vec<RaidSet>,
}

/// A mail server running backupd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its name in this file and in the state db.
    pub name: String,
    /// backupd's `host:port`.
    pub address: String,
    /// The shared secret (a file of mode 0600).
    pub secret_file: PathBuf,
    /// Longest wait for the TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for one read or write once connected.
    pub io_timeout: Duration,
    /// TLS: how backupd is trusted (`tls_pin` or `tls_ca_file`), the client certificate;
    /// plain TCP only on loopback or with `tls = false`.
    pub tls: crate::client::TlsSettings,
}

/// A set of drives on one mail server: the Cyrus partitions on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidSet {
    /// Its name.
    pub name: String,
    /// The server it belongs to ([`Server::name`]).
    pub server: String,
    /// The Cyrus partitions on it.
    pub partitions: Vec<String>,
}

/// A configuration that cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type (the message names the
    /// key and the line).
    #[error("{path}: {message}", path = .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{path}: key {key}: {message}", path = .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, as a dotted path (`raidset[2].server`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store_root: PathBuf,
    state_db: Option<PathBuf>,
    state_db_password_file: Option<PathBuf>,
    state_db_ca_file: Option<PathBuf>,
    host_name: Option<String>,
    #[serde(default = "default_workers")]
    workers: usize,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    #[serde(default = "default_batches_per_raidset")]
    batches_per_raidset: usize,
    #[serde(default = "default_chunk_cap")]
    chunk_size_cap: u64,
    #[serde(default = "default_gzip_level")]
    gzip_level: u32,
    #[serde(default = "default_retention_days")]
    retention_days: u32,
    #[serde(default = "default_vanished_retention_days")]
    vanished_retention_days: u32,
    #[serde(default = "default_refresh_hours")]
    refresh_after_hours: u64,
    #[serde(default = "default_log_interval")]
    log_interval_secs: u64,
    #[serde(default)]
    server: Vec<RawServer>,
    #[serde(default)]
    raidset: Vec<RawRaidSet>,
}

/// A key that takes one value or a list (`tls_pin = "sha256/..."` or `tls_pin = ["...", "..."]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(String),
    More(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    address: String,
    secret_file: PathBuf,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_io_timeout")]
    io_timeout_secs: u64,
    #[serde(default)]
    tls: Option<bool>,
    #[serde(default)]
    tls_pin: Option<OneOrMore>,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    tls_client_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_client_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRaidSet {
    name: String,
    server: String,
    partitions: Vec<String>,
}

/// Default worker threads.
pub const DEFAULT_WORKERS: usize = 8;
/// Default users per batch.
pub const DEFAULT_BATCH_SIZE: usize = 50;
/// Default retention in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;
/// Default `vanished_retention_days`: a deleted user's store is kept 30 days.
pub const DEFAULT_VANISHED_RETENTION_DAYS: u32 = 30;

/// The host of a `host:port` address (`[::1]:2912` gives `::1`).
fn address_host(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether an address's host is this machine (`127.0.0.0/8`, `::1`, `localhost`): plain
/// TCP is only the default there.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One server's TLS keys, checked against each other and its address: the key at fault
/// and what to do.
fn server_tls(
    s: &RawServer,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<crate::client::TlsSettings, (&'static str, String)> {
    use crate::client::{ClientCert, TlsSettings, TlsTrust};
    let host = address_host(&s.address);
    let client_cert = match (&s.tls_client_cert_file, &s.tls_client_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientCert {
            cert_file: resolve(cert),
            key_file: resolve(key),
        }),
        (Some(_), None) => {
            return Err((
                "tls_client_key_file",
                "missing: tls_client_cert_file needs its private key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "tls_client_cert_file",
                "missing: tls_client_key_file needs its certificate".into(),
            ))
        }
    };
    let trust = match (&s.tls_pin, &s.tls_ca_file) {
        (Some(_), Some(_)) => {
            return Err((
                "tls_ca_file",
                "give tls_pin or tls_ca_file, not both (the pin is the simpler: the line \
                 `backupd keygen` printed)"
                    .into(),
            ))
        }
        (Some(pins), None) => {
            let pins = match pins {
                OneOrMore::One(p) => std::slice::from_ref(p),
                OneOrMore::More(ps) => &ps[..],
            };
            if pins.is_empty() {
                return Err((
                    "tls_pin",
                    "an empty list: give the pin `backupd keygen` printed (two while a key is \
                     replaced)"
                        .into(),
                ));
            }
            TlsTrust::Pins(
                pins.iter()
                    .map(|p| p.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e: formats::protocol::PinError| ("tls_pin", e.to_string()))?,
            )
        }
        (None, Some(ca)) => TlsTrust::CaFile(resolve(ca)),
        (None, None) => TlsTrust::Off,
    };
    match (s.tls, &trust) {
        (Some(false), TlsTrust::Off) if client_cert.is_none() => {}
        (Some(false), _) => {
            return Err((
                "tls",
                "false, but tls_pin, tls_ca_file or a client certificate is set: remove one \
                 of them (TLS off sends mail in clear)"
                    .into(),
            ))
        }
        (_, TlsTrust::Off) if s.tls == Some(true) || client_cert.is_some() => {
            return Err((
                "tls_pin",
                "missing: TLS needs tls_pin (the line `backupd keygen` printed on the mail \
                 server) or tls_ca_file"
                    .into(),
            ))
        }
        (None, TlsTrust::Off) if !is_loopback_host(host) => {
            return Err((
                "tls_pin",
                format!(
                    "missing: {} is not a loopback address, so the protocol runs in TLS: set \
                     tls_pin to the line `backupd keygen` printed on that mail server (or \
                     tls_ca_file), or tls = false to send mail in clear, only on a network you \
                     trust",
                    s.address
                ),
            ))
        }
        _ => {}
    }
    Ok(TlsSettings {
        trust,
        client_cert,
        server_name: host.to_string(),
    })
}

fn default_workers() -> usize {
    DEFAULT_WORKERS
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_batches_per_raidset() -> usize {
    1
}
fn default_chunk_cap() -> u64 {
    crate::store::DEFAULT_CHUNK_CAP
}
fn default_gzip_level() -> u32 {
    formats::archive::DEFAULT_LEVEL
}
fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}
fn default_vanished_retention_days() -> u32 {
    DEFAULT_VANISHED_RETENTION_DAYS
}
fn default_refresh_hours() -> u64 {
    24
}
fn default_log_interval() -> u64 {
    60
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_io_timeout() -> u64 {
    300
}

impl Config {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks `text`, read from `path` (named in errors; relative paths in the
    /// file are taken relative to its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        if raw.store_root.as_os_str().is_empty() {
            return Err(invalid("store_root".into(), "must not be empty".into()));
        }
        if raw.workers == 0 || raw.workers > 1024 {
            return Err(invalid(
                "workers".into(),
                format!("expected 1 to 1024, found {}", raw.workers),
            ));
        }
        if raw.batches_per_raidset == 0 || raw.batches_per_raidset > 1024 {
            return Err(invalid(
                "batches_per_raidset".into(),
                format!("expected 1 to 1024, found {}", raw.batches_per_raidset),
            ));
        }
        if raw.batch_size == 0 {
            return Err(invalid(
                "batch_size".into(),
                "expected at least 1, found 0".into(),
            ));
        }
        if raw.gzip_level > 9 {
            return Err(invalid(
                "gzip_level".into(),
                format!("expected 0 to 9, found {}", raw.gzip_level),
            ));
        }
        if raw.chunk_size_cap < 4096 {
            return Err(invalid(
                "chunk_size_cap".into(),
                format!("expected at least 4096 bytes, found {}", raw.chunk_size_cap),
            ));
        }
        if raw.server.is_empty() {
            return Err(invalid(
                "server".into(),
                "no [[server]] table: name at least one mail server".into(),
            ));
        }
        if raw.raidset.is_empty() {
            return Err(invalid(
                "raidset".into(),
                "no [[raidset]] table: name at least one RAID set".into(),
            ));
        }
        let mut servers = Vec::new();
        let mut server_names = BTreeSet::new();
        for (i, s) in raw.server.into_iter().enumerate() {
            if s.name.is_empty() {
                return Err(invalid(
                    format!("server[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if !server_names.insert(s.name.clone()) {
                return Err(invalid(
                    format!("server[{i}].name"),
                    format!("server {:?} is named twice", s.name),
                ));
            }
            if s.address.is_empty() || !s.address.contains(':') {
                return Err(invalid(
                    format!("server[{i}].address"),
                    format!("expected host:port, found {:?}", s.address),
                ));
            }
            if s.connect_timeout_secs == 0 || s.io_timeout_secs == 0 {
                return Err(invalid(
                    format!("server[{i}].connect_timeout_secs/io_timeout_secs"),
                    "expected at least 1 second".into(),
                ));
            }
            let tls = server_tls(&s, &resolve)
                .map_err(|(key, message)| invalid(format!("server[{i}].{key}"), message))?;
            servers.push(Server {
                name: s.name,
                address: s.address,
                secret_file: resolve(&s.secret_file),
                connect_timeout: Duration::from_secs(s.connect_timeout_secs),
                io_timeout: Duration::from_secs(s.io_timeout_secs),
                tls,
            });
        }
        let mut raidsets = Vec::new();
        let mut set_names = BTreeSet::new();
        // (server, partition) → RAID set: a partition lives on one set of drives.
        let mut owner: BTreeMap<(String, String), String> = BTreeMap::new();
        for (i, r) in raw.raidset.into_iter().enumerate() {
            if r.name.is_empty() {
                return Err(invalid(
                    format!("raidset[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if !set_names.insert(r.name.clone()) {
                return Err(invalid(
                    format!("raidset[{i}].name"),
                    format!("RAID set {:?} is named twice", r.name),
                ));
            }
            if !server_names.contains(&r.server) {
                return Err(invalid(
                    format!("raidset[{i}].server"),
                    format!(
                        "no [[server]] is named {:?} (known: {})",
                        r.server,
                        server_names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if r.partitions.is_empty() {
                return Err(invalid(
                    format!("raidset[{i}].partitions"),
                    "expected at least one Cyrus partition".into(),
                ));
            }
            for p in &r.partitions {
                if let Some(other) = owner.insert((r.server.clone(), p.clone()), r.name.clone()) {
                    return Err(invalid(
                        format!("raidset[{i}].partitions"),
                        format!(
                            "partition {p:?} of server {:?} is already in RAID set {other:?}",
                            r.server
                        ),
                    ));
                }
            }
            raidsets.push(RaidSet {
                name: r.name,
                server: r.server,
                partitions: r.partitions,
            });
        }
        let store_root = resolve(&raw.store_root);
        let url = raw
            .state_db
            .as_ref()
            .and_then(|p| p.to_str())
            .filter(|p| crate::state::postgres::is_postgres_url(p))
            .map(str::to_string);
        let state_db = match (&raw.state_db, &url) {
            (Some(p), None) => resolve(p),
            _ => store_root.join("state.sqlite3"),
        };
        let state = match url {
            Some(url) => {
                crate::state::postgres::check_url(&url)
                    .map_err(|m| invalid("state_db".into(), m))?;
                crate::state::StateLocation::Postgres(crate::state::PostgresTarget {
                    url,
                    password_file: raw.state_db_password_file.as_deref().map(resolve),
                    ca_file: raw.state_db_ca_file.as_deref().map(resolve),
                })
            }
            None => {
                for (key, v) in [
                    ("state_db_password_file", &raw.state_db_password_file),
                    ("state_db_ca_file", &raw.state_db_ca_file),
                ] {
                    if v.is_some() {
                        return Err(invalid(
                            key.into(),
                            "only for a PostgreSQL state_db (postgres://...)".into(),
                        ));
                    }
                }
                crate::state::StateLocation::Sqlite(state_db.clone())
            }
        };
        let host_name = match raw.host_name {
            Some(h) if h.trim().is_empty() || h.len() > 255 => {
                return Err(invalid(
                    "host_name".into(),
                    "must be 1 to 255 characters, not blank".into(),
                ))
            }
            Some(h) => h,
            None => crate::state::machine_hostname(),
        };
        Ok(Config {
            path: path.to_path_buf(),
            store_root,
            state_db,
            state,
            host_name,
            workers: raw.workers,
            batch_size: raw.batch_size,
            batches_per_raidset: raw.batches_per_raidset,
            chunk_size_cap: raw.chunk_size_cap,
            gzip_level: raw.gzip_level,
            retention_days: raw.retention_days,
            vanished_retention_days: raw.vanished_retention_days,
            refresh_after: Duration::from_secs(raw.refresh_after_hours.saturating_mul(3600)),
            log_interval: Duration::from_secs(raw.log_interval_secs.max(1)),
            servers,
            raidsets,
        })
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The RAID set holding `partition` of `server`, if any.
    pub fn raidset_of(&self, server: &str, partition: &str) -> Option<&RaidSet> {
        self.raidsets
            .iter()
            .find(|r| r.server == server && r.partitions.iter().any(|p| p == partition))
    }

    /// How the stores of this host write.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            chunk_cap: self.chunk_size_cap,
            gzip_level: self.gzip_level,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::TlsTrust;

    fn parse(server: &str) -> Result<Config, String> {
        let text = format!(
            "store_root = \"/s\"\n[[server]]\nname = \"mail1\"\nsecret_file = \"m.secret\"\n\
             {server}\n[[raidset]]\nname = \"a\"\nserver = \"mail1\"\npartitions = [\"default\"]\n"
        );
        Config::parse(&text, Path::new("/etc/mb/b.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn tls_keys_of_a_server() {
        let pin = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let c = parse(&format!(
            "address = \"mail1.example:2912\"\ntls_pin = \"{pin}\""
        ))
        .unwrap();
        let tls = &c.servers[0].tls;
        assert_eq!(tls.trust, TlsTrust::Pins(vec![pin.parse().unwrap()]));
        assert_eq!(tls.server_name, "mail1.example");
        // Two pins while backupd's key is replaced; an empty list is refused.
        let next = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let c = parse(&format!(
            "address = \"mail1.example:2912\"\ntls_pin = [\"{pin}\", \"{next}\"]"
        ))
        .unwrap();
        assert_eq!(
            c.servers[0].tls.trust,
            TlsTrust::Pins(vec![pin.parse().unwrap(), next.parse().unwrap()])
        );
        let e = parse("address = \"mail1.example:2912\"\ntls_pin = []").unwrap_err();
        assert!(e.contains("server[0].tls_pin: an empty list"), "{e}");
        let c = parse(
            "address = \"[2001:db8::1]:2912\"\ntls_ca_file = \"ca.pem\"\n\
                       tls_client_cert_file = \"c.pem\"\ntls_client_key_file = \"c.key\"",
        )
        .unwrap();
        let tls = &c.servers[0].tls;
        assert_eq!(
            tls.trust,
            TlsTrust::CaFile("/etc/mb/ca.pem".into()),
            "relative to the file"
        );
        assert_eq!(tls.server_name, "2001:db8::1");
        assert_eq!(
            tls.client_cert.as_ref().unwrap().key_file,
            Path::new("/etc/mb/c.key")
        );
        // Loopback: plain TCP by default.
        for a in ["127.0.0.1:2912", "[::1]:2912", "localhost:2912"] {
            let c = parse(&format!("address = \"{a}\"")).unwrap();
            assert_eq!(c.servers[0].tls.trust, TlsTrust::Off, "{a}");
        }
        // Elsewhere TLS is required, or plain TCP said explicitly.
        let e = parse("address = \"10.0.0.5:2912\"").unwrap_err();
        assert!(
            e.starts_with("/etc/mb/b.toml: key server[0].tls_pin: missing: 10.0.0.5:2912 is not a loopback address")
                && e.contains("tls = false"),
            "{e}"
        );
        let c = parse("address = \"10.0.0.5:2912\"\ntls = false").unwrap();
        assert_eq!(c.servers[0].tls.trust, TlsTrust::Off);
        let e = parse(&format!(
            "address = \"10.0.0.5:2912\"\ntls = false\ntls_pin = \"{pin}\""
        ))
        .unwrap_err();
        assert!(e.contains("server[0].tls: false, but tls_pin"), "{e}");
        let e = parse("address = \"127.0.0.1:2912\"\ntls = true").unwrap_err();
        assert!(
            e.contains("server[0].tls_pin: missing: TLS needs tls_pin"),
            "{e}"
        );
        let e = parse(&format!(
            "address = \"h:1\"\ntls_pin = \"{pin}\"\ntls_ca_file = \"ca.pem\""
        ))
        .unwrap_err();
        assert!(
            e.contains("server[0].tls_ca_file: give tls_pin or tls_ca_file, not both"),
            "{e}"
        );
        let e = parse("address = \"h:1\"\ntls_pin = \"sha256/nope\"").unwrap_err();
        assert!(
            e.contains("server[0].tls_pin: \"sha256/nope\" is not a key pin"),
            "{e}"
        );
        let e = parse(&format!(
            "address = \"h:1\"\ntls_pin = \"{pin}\"\ntls_client_cert_file = \"c.pem\""
        ))
        .unwrap_err();
        assert!(e.contains("server[0].tls_client_key_file: missing"), "{e}");
    }
}
