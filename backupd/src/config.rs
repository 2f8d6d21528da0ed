//! backupd's configuration file (TOML). contrib/backupd.toml.example shows every key with
//! its default; only `secret_file` has none.

use crate::allow::IpNet;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration as read from the file, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on. Default `127.0.0.1:2912`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Addresses and networks (`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`) peers may
    /// connect from; anyone else is closed at once, before the greeting. Default: loopback
    /// only (`127.0.0.0/8`, `::1`), and only when `listen` is a loopback address: on any
    /// other address the list must be given ([`Config::parse`] refuses the file without it).
    #[serde(default, deserialize_with = "non_empty")]
    pub allow_from: Vec<IpNet>,
    /// The shared secret, a file of mode 0600 (see [`crate::auth::load_secret`]).
    pub secret_file: PathBuf,
    /// Cyrus's imapd.conf: configdirectory, partitions, sievedir come from it.
    #[serde(default = "default_imapd_conf")]
    pub imapd_conf: PathBuf,
    /// Connections served at once; one more gets a "busy" error and is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Threads reading the spool at once (the bounded blocking pool).
    #[serde(default = "default_blocking_threads")]
    pub blocking_threads: usize,
    /// Seconds a connection may stay silent between requests (and a reply may wait on a
    /// client that does not read) before it is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a new connection has for the whole handshake: TLS, then the secret's proofs.
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
    /// Connections that have not authenticated yet, at most; when one more arrives, the
    /// oldest of them is closed. They never take one of the `max_connections` slots, which
    /// only authenticated backup hosts hold.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// Whether the protocol runs inside TLS 1.3. Default: on when `tls_cert_file` is set;
    /// on a `listen` address that is not loopback the file must then be set, or `tls =
    /// false` said explicitly ([`Config::parse`] refuses anything else).
    #[serde(default)]
    pub tls: Option<bool>,
    /// The certificate chain (PEM); `backupd keygen` makes a self-signed one.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM), mode 0600, read before the privilege drop.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM): when set, only clients with a certificate issued by one of
    /// them complete the TLS handshake. Default: no client certificate asked for (the
    /// shared secret authenticates the backup host).
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Seconds a shutdown waits for replies under way before it cuts connections.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Seconds to wait for one of Cyrus's locks (a Cyrus writer holds it) before the
    /// request fails with an I/O error naming the lock file. Bounds how long a hung Cyrus
    /// process can hold one of the spool threads.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_secs: u64,
    /// The user to run as when started as root (after binding the port and reading the
    /// secret). Its primary and supplementary groups are taken too.
    #[serde(default = "default_run_as")]
    pub run_as: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], formats::protocol::DEFAULT_PORT))
}
fn default_imapd_conf() -> PathBuf {
    PathBuf::from("/etc/imapd.conf")
}
fn default_max_connections() -> usize {
    64
}
fn default_blocking_threads() -> usize {
    16
}
fn default_idle_timeout() -> u64 {
    600
}
fn default_auth_timeout() -> u64 {
    5
}
fn default_max_unauthenticated() -> usize {
    16
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_lock_timeout() -> u64 {
    crate::spool::locks::DEFAULT_LOCK_TIMEOUT.as_secs()
}
fn default_run_as() -> String {
    "cyrus".to_string()
}

/// An `allow_from` that is given must name someone: an empty list would refuse every peer.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let nets = Vec::<IpNet>::deserialize(d)?;
    if nets.is_empty() {
        return Err(serde::de::Error::custom(
            "expected at least one address or network (an empty list would refuse every peer)",
        ));
    }
    Ok(nets)
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
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}", path = .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with line and column.
        message: String,
    },
    /// A value out of range.
    #[error("{path}: {key}: {message}", path = .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Config {
    /// Reads, parses and checks the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks TOML text; `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_string(),
        };
        if config.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if config.max_unauthenticated == 0 {
            return Err(invalid("max_unauthenticated", "must be at least 1"));
        }
        if !(1..=1024).contains(&config.blocking_threads) {
            return Err(invalid("blocking_threads", "must be between 1 and 1024"));
        }
        for (key, v) in [
            ("idle_timeout_secs", config.idle_timeout_secs),
            ("auth_timeout_secs", config.auth_timeout_secs),
            ("lock_timeout_secs", config.lock_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if config.run_as.is_empty() {
            return Err(invalid("run_as", "must name a user"));
        }
        if config.allow_from.is_empty() {
            // Absent. The loopback default is only safe on a loopback address; anywhere
            // else, guessing who may connect (everyone? the local subnet?) is not ours to do.
            if !config.listen.ip().is_loopback() {
                return Err(invalid(
                    "allow_from",
                    &format!(
                        "missing: listen is {}, not a loopback address, so the peers allowed \
                         to connect must be listed, e.g. allow_from = [\"192.0.2.10\"] (the \
                         backup host's address) or [\"192.0.2.0/24\"]",
                        config.listen
                    ),
                ));
            }
            config.allow_from = crate::allow::loopback();
        }
        config.check_tls().map_err(|(key, m)| invalid(key, &m))?;
        Ok(config)
    }

    /// Whether the keys about TLS agree with each other and with `listen`: the key at fault
    /// and what to do.
    fn check_tls(&self) -> Result<(), (&'static str, String)> {
        let files = [
            ("tls_cert_file", self.tls_cert_file.is_some()),
            ("tls_key_file", self.tls_key_file.is_some()),
            ("tls_client_ca_file", self.tls_client_ca_file.is_some()),
        ];
        match self.tls {
            Some(false) => {
                if let Some((key, _)) = files.iter().find(|(_, set)| *set) {
                    return Err((
                        key,
                        "set, but tls = false: remove one of them (TLS off sends mail in clear)"
                            .into(),
                    ));
                }
                Ok(())
            }
            Some(true) | None => {
                let (cert, key) = (files[0].1, files[1].1);
                if !cert && !key && !files[2].1 && self.tls.is_none() {
                    if self.listen.ip().is_loopback() {
                        // Plain TCP on loopback: only this host's root could read it.
                        return Ok(());
                    }
                    return Err((
                        "tls_cert_file",
                        format!(
                            "missing: listen is {}, not a loopback address, so the protocol                              runs in TLS: run `backupd keygen --dir /etc/backupd` and set                              tls_cert_file and tls_key_file to the files it writes (or set                              tls = false to send mail in clear, only on a network you trust)",
                            self.listen
                        ),
                    ));
                }
                if !cert {
                    return Err((
                        "tls_cert_file",
                        "missing: TLS needs a certificate and its key (`backupd keygen                          --dir /etc/backupd` makes both)"
                            .into(),
                    ));
                }
                if !key {
                    return Err((
                        "tls_key_file",
                        "missing: TLS needs the certificate's private key (`backupd keygen                          --dir /etc/backupd` makes both)"
                            .into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The TLS files, when the protocol runs in TLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert_file: self.tls_cert_file.clone()?,
            key_file: self.tls_key_file.clone()?,
            client_ca_file: self.tls_client_ca_file.clone(),
        })
    }

    /// The server settings this configuration asks for (without the TLS configuration,
    /// which [`crate::tls::server_config`] reads from the files).
    pub fn settings(&self) -> crate::server::Settings {
        crate::server::Settings {
            max_connections: self.max_connections,
            max_unauthenticated: self.max_unauthenticated,
            blocking_threads: self.blocking_threads,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            auth_timeout: Duration::from_secs(self.auth_timeout_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            allow_from: self.allow_from.clone(),
            ..crate::server::Settings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let p = Path::new("backupd.toml");
        let c = Config::parse("secret_file = \"/etc/backupd/secret\"\n", p).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:2912");
        assert_eq!(c.imapd_conf, Path::new("/etc/imapd.conf"));
        assert_eq!((c.max_connections, c.blocking_threads), (64, 16));
        assert_eq!(c.run_as, "cyrus");
        assert_eq!(c.allow_from, crate::allow::loopback());
        assert_eq!(c.lock_timeout_secs, 60);
        assert_eq!(c.settings().allow_from, crate::allow::loopback());

        let e = Config::parse("", p).unwrap_err().to_string();
        assert!(
            e.starts_with("backupd.toml: ") && e.contains("secret_file"),
            "{e}"
        );
        let e = Config::parse("secret_file = \"s\"\nlisten_port = 3\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
        let e = Config::parse("secret_file = \"s\"\nlisten = \"nowhere\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") || e.contains("address"), "{e}");
        let e = Config::parse("secret_file = \"s\"\nmax_connections = 0\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "backupd.toml: max_connections: must be at least 1");
    }

    #[test]
    fn allow_from_is_required_off_loopback() {
        let p = Path::new("backupd.toml");
        let e = Config::parse("secret_file = \"s\"\nlisten = \"0.0.0.0:2912\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("backupd.toml: allow_from: missing: listen is 0.0.0.0:2912"),
            "{e}"
        );
        let e = Config::parse("secret_file = \"s\"\nlisten = \"10.0.0.5:2912\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_from"), "{e}");
        let c = Config::parse(
            "secret_file = \"s\"\nlisten = \"[::]:2912\"\ntls = false\n\
             allow_from = [\"10.0.0.9\", \"2001:db8::/32\"]\n",
            p,
        )
        .unwrap();
        let ips = ["10.0.0.9", "10.0.0.10", "2001:db8::1", "127.0.0.1"]
            .map(|ip| crate::allow::allowed(&c.allow_from, ip.parse().unwrap()));
        assert_eq!(ips, [true, false, true, false], "{:?}", c.allow_from);
        // Given explicitly on loopback, the list is taken as it is.
        let c = Config::parse("secret_file = \"s\"\nallow_from = [\"::1\"]\n", p).unwrap();
        assert_eq!(c.allow_from, ["::1".parse().unwrap()]);
        let e = Config::parse("secret_file = \"s\"\nallow_from = []\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one address"), "{e}");
        let e = Config::parse("secret_file = \"s\"\nallow_from = [\"10.0.0.0/33\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_from") && e.contains("0 to 32"), "{e}");
        let e = Config::parse("secret_file = \"s\"\nlock_timeout_secs = 0\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "backupd.toml: lock_timeout_secs: must be at least 1");
    }

    #[test]
    fn tls_is_required_off_loopback_and_explicit_when_off() {
        let p = Path::new("backupd.toml");
        let off_lo =
            "secret_file = \"s\"\nlisten = \"10.0.0.5:2912\"\nallow_from = [\"10.0.0.9\"]\n";
        let e = Config::parse(off_lo, p).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "backupd.toml: tls_cert_file: missing: listen is 10.0.0.5:2912, not a loopback address"
            ) && e.contains("backupd keygen")
                && e.contains("tls = false"),
            "{e}"
        );
        let c = Config::parse(&format!("{off_lo}tls = false\n"), p).unwrap();
        assert_eq!(c.tls_files(), None, "said explicitly: plain TCP");
        let c = Config::parse(
            &format!("{off_lo}tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n"),
            p,
        )
        .unwrap();
        let files = c.tls_files().unwrap();
        assert_eq!(
            (
                files.cert_file.to_str(),
                files.key_file.to_str(),
                files.client_ca_file
            ),
            (Some("/c.pem"), Some("/k.pem"), None)
        );
        let e = Config::parse(&format!("{off_lo}tls_cert_file = \"/c.pem\"\n"), p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("backupd.toml: tls_key_file: missing"), "{e}");
        let e = Config::parse(
            &format!("{off_lo}tls = false\ntls_key_file = \"/k.pem\"\n"),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("backupd.toml: tls_key_file: set, but tls = false"),
            "{e}"
        );
        // Loopback: plain unless asked; tls = true needs the files.
        let c = Config::parse("secret_file = \"s\"\n", p).unwrap();
        assert_eq!(c.tls_files(), None);
        let e = Config::parse("secret_file = \"s\"\ntls = true\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("backupd.toml: tls_cert_file: missing"), "{e}");
        let e = Config::parse("secret_file = \"s\"\ntls_client_ca_file = \"/ca\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("backupd.toml: tls_cert_file: missing"), "{e}");
        let e = Config::parse("secret_file = \"s\"\nmax_unauthenticated = 0\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "backupd.toml: max_unauthenticated: must be at least 1");
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!("../../contrib/backupd.toml.example");
        let c = Config::parse(text, Path::new("backupd.toml.example")).unwrap();
        assert_eq!(c.listen.port(), formats::protocol::DEFAULT_PORT);
        // "Every key but secret_file has the default shown."
        let defaults = Config::parse("secret_file = \"/etc/backupd/secret\"\n", Path::new("d"));
        assert_eq!(c, defaults.unwrap());
    }
}
