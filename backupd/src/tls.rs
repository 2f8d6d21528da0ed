//! TLS for the daemon (docs/protocol.md, "Transport"): its key and certificate files, the
//! rustls configuration (TLS 1.3 only, the `ring` provider, client certificates when a
//! client CA is configured), and the handshake's binding exported from a session.
//!
//! The key file is read as the secret file is (before the privilege drop, under the same
//! rules: a regular file owned by root or the starting user, mode 0600 or 0400), because
//! whoever reads it can impersonate this server to the backup host.

use formats::protocol::handshake::{Binding, SecretFileFacts, BINDING_LEN, TLS_EXPORTER_LABEL};
use formats::protocol::Pin;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most of a PEM file that is read: certificates and keys are a few kB.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Where the daemon's TLS material lives (the `tls_*` keys of its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1), mode 0600.
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when set, a client
    /// without such a certificate is refused in the TLS handshake.
    pub client_ca_file: Option<PathBuf>,
}

/// TLS material that cannot be used; every variant names the file and, where there is one,
/// the way out.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what} {path}: {source}", path = .path.display())]
    Read {
        /// Which file (`TLS key file`, `TLS certificate file`, `TLS client CA file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The key file may be read or written by others, or belongs to someone else.
    #[error("TLS key file {path}: {problem}", path = .path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and the command that fixes it.
        problem: String,
    },
    /// The file holds no usable PEM object of the kind needed.
    #[error("{what} {path}: {message}", path = .path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the material (a key that does not match the certificate, a key type
    /// it cannot sign with, a CA file it cannot use).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up, naming the files.
        what: String,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// The provider every TLS object of backupd is built with: `ring`, TLS 1.3 suites only.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads at most [`MAX_PEM_FILE`] bytes of `path`.
fn read_pem_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_PEM_FILE)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(what, path)?;
    let pem_err = |message: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// Checks the opened key file's owner and mode as the secret file's are checked.
fn check_key_file(path: &Path, facts: SecretFileFacts, euid: u32) -> Result<(), TlsError> {
    let problem = |problem: String| TlsError::KeyFile {
        path: path.to_owned(),
        problem,
    };
    let p = path.display();
    if !facts.is_file {
        return Err(problem("not a regular file".into()));
    }
    if facts.uid != 0 && facts.uid != euid {
        return Err(problem(format!(
            "owned by uid {}: it must belong to root or to the user backupd starts as (uid \
             {euid}) (chown root {p})",
            facts.uid
        )));
    }
    if facts.mode & 0o077 != 0 {
        return Err(problem(format!(
            "has mode {:04o}: it must be readable by its owner only (chmod 600 {p})",
            facts.mode
        )));
    }
    Ok(())
}

/// The private key, read after its owner and mode were checked on the open file.
pub fn read_key(path: &Path, euid: u32) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "TLS key file";
    let read_err = |source| TlsError::Read {
        what: WHAT,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check_key_file(path, SecretFileFacts::of(&meta), euid)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what: WHAT,
        path: path.to_owned(),
        message: format!(
            "no private key (expected -----BEGIN PRIVATE KEY----- or an EC or RSA key): {e}"
        ),
    })
}

/// A certificate chain, its key and the client CAs, as read from the files (or made by
/// [`crate::keygen::generate`] in a test).
#[derive(Debug)]
pub struct TlsMaterial {
    /// The chain, the server's own certificate first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// CA certificates client certificates must chain to; `None`: none asked for.
    pub client_roots: Option<Vec<CertificateDer<'static>>>,
}

impl TlsMaterial {
    /// A chain and key in PEM (what `keygen` writes), no client certificates.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsMaterial, TlsError> {
        let pem_err = |what, message| TlsError::Pem {
            what,
            path: PathBuf::from("(in memory)"),
            message,
        };
        Ok(TlsMaterial {
            certs: CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err("TLS certificate", e.to_string()))?,
            key: PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| pem_err("TLS key", e.to_string()))?,
            client_roots: None,
        })
    }
}

/// The server's TLS configuration from its files, read as the effective user `euid`
/// (before the privilege drop: normally root). Refuses a key that does not match the
/// certificate.
pub fn server_config(files: &TlsFiles, euid: u32) -> Result<Arc<ServerConfig>, TlsError> {
    let material = TlsMaterial {
        certs: read_certs("TLS certificate file", &files.cert_file)?,
        key: read_key(&files.key_file, euid)?,
        client_roots: match &files.client_ca_file {
            Some(ca) => Some(read_certs("TLS client CA file", ca)?),
            None => None,
        },
    };
    server_config_of(material).map_err(|e| match e {
        TlsError::Rustls { what, source } => TlsError::Rustls {
            what: format!(
                "{what} (certificate {}, key {}{})",
                files.cert_file.display(),
                files.key_file.display(),
                files
                    .client_ca_file
                    .as_ref()
                    .map(|c| format!(", client CA file {}", c.display()))
                    .unwrap_or_default()
            ),
            source,
        },
        other => other,
    })
}

/// The server's TLS configuration from material in memory.
pub fn server_config_of(material: TlsMaterial) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let rustls_err = |what: &str| {
        let what = what.to_string();
        move |source| TlsError::Rustls { what, source }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err("TLS 1.3 with the ring provider"))?;
    let builder = match material.client_roots {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for cert in cas {
                roots
                    .add(cert)
                    .map_err(rustls_err("a client CA certificate"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls {
                    what: "the client CA certificates".into(),
                    source: rustls::Error::General(e.to_string()),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(material.certs, material.key)
        .map_err(rustls_err(
            "the TLS certificate and key (a key that does not match the certificate? \
             `backupd keygen` makes a matching pair)",
        ))?;
    // No session tickets: every connection is a full handshake, so the certificate (and
    // the client's certificate) is checked on each one; the backup host keeps its
    // connections for the whole run, so the cost is a handful of handshakes a night.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The handshake's binding to this TLS session (the exporter, RFC 8446 section 7.5).
pub fn binding<D>(conn: &rustls::ConnectionCommon<D>) -> Result<Binding, rustls::Error> {
    let ekm = conn.export_keying_material([0u8; BINDING_LEN], TLS_EXPORTER_LABEL, None)?;
    Ok(Binding::Tls(ekm))
}

/// The pin of a certificate's public key (`sha256/...`), as the backup host's `tls_pin`
/// holds it; `None` if the certificate does not parse.
pub fn pin_of_cert(cert: &[u8]) -> Option<Pin> {
    CertFacts::of(cert).map(|f| f.pin)
}

/// What `backupd check` says of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject, as text.
    pub subject: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
    /// Start of validity, as text.
    pub not_before_text: String,
    /// End of validity, as text.
    pub not_after_text: String,
    /// The pin of its public key.
    pub pin: Pin,
}

impl CertFacts {
    /// The facts of a DER certificate; `None` if it does not parse.
    pub fn of(cert: &[u8]) -> Option<CertFacts> {
        let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
        let v = c.validity();
        Some(CertFacts {
            subject: c.subject().to_string(),
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
            not_before_text: v.not_before.to_string(),
            not_after_text: v.not_after.to_string(),
            pin: Pin::of_spki(c.tbs_certificate.subject_pki.raw),
        })
    }

    /// What is wrong with the dates at `now` (seconds since the epoch): not yet valid,
    /// expired, or ending within [`crate::check::EXPIRY_WARNING_SECS`]; with the way out.
    pub fn warning(&self, now: i64) -> Option<String> {
        const RENEW: &str = "a backup host that pins the key (tls_pin) does not look at the \
                             dates, one that trusts a CA file (tls_ca_file) refuses the \
                             certificate outside them; make a new one (`backupd keygen \
                             --force`, then the new tls_pin on the backup host) or have the CA \
                             renew it";
        if now < self.not_before {
            Some(format!(
                "not valid yet (the clock is {} s behind its start?); {RENEW}",
                self.not_before - now
            ))
        } else if now >= self.not_after {
            Some(format!(
                "expired {} days ago; {RENEW}",
                (now - self.not_after) / 86400
            ))
        } else if self.not_after - now < crate::check::EXPIRY_WARNING_SECS {
            Some(format!(
                "expires in {} days; {RENEW}",
                (self.not_after - now) / 86400
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_rules_name_the_file_and_the_fix() {
        let p = Path::new("/etc/backupd/tls.key");
        let ok = SecretFileFacts {
            is_file: true,
            uid: 0,
            mode: 0o600,
        };
        assert!(check_key_file(p, ok, 0).is_ok());
        assert!(check_key_file(p, SecretFileFacts { mode: 0o400, ..ok }, 0).is_ok());
        let e = check_key_file(p, SecretFileFacts { mode: 0o640, ..ok }, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "TLS key file /etc/backupd/tls.key: has mode 0640: it must be readable by its \
             owner only (chmod 600 /etc/backupd/tls.key)"
        );
        let e = check_key_file(p, SecretFileFacts { uid: 7, ..ok }, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("owned by uid 7") && e.contains("chown root"),
            "{e}"
        );
    }

    #[test]
    fn certificate_dates_warn_before_during_and_after_the_end() {
        let pair = crate::keygen::generate(&["mail1.example".into()]).unwrap();
        let m = TlsMaterial::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
        let f = CertFacts::of(&m.certs[0]).unwrap();
        assert_eq!(f.pin, pair.pin);
        assert!(f.subject.contains("mail1.example"), "{}", f.subject);
        let day = 86400;
        let w = |now| f.warning(now);
        assert_eq!(w(f.not_before + day), None);
        assert_eq!(w(f.not_after - 31 * day), None);
        let soon = w(f.not_after - 29 * day - 10).unwrap();
        assert!(
            soon.starts_with("expires in 29 days;") && soon.contains("keygen"),
            "{soon}"
        );
        let gone = w(f.not_after + 3 * day + 10).unwrap();
        assert!(gone.starts_with("expired 3 days ago;"), "{gone}");
        let early = w(f.not_before - 100).unwrap();
        assert!(early.starts_with("not valid yet"), "{early}");
        assert!(
            (f.not_after - f.not_before) / day >= crate::keygen::VALID_DAYS,
            "keygen's certificates last {} days",
            crate::keygen::VALID_DAYS
        );
    }

    #[test]
    fn a_pair_from_keygen_loads_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = crate::keygen::keygen(dir.path(), &["mail1.example".into()], false).unwrap();
        let pair = crate::keygen::generate(&["x".into()]).unwrap();
        let m = TlsMaterial::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
        server_config_of(m).unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let files = TlsFiles {
            cert_file: made.cert_file.clone(),
            key_file: made.key_file.clone(),
            client_ca_file: None,
        };
        server_config(&files, euid).unwrap();
        let cert = read_certs("c", &made.cert_file).unwrap();
        assert_eq!(pin_of_cert(&cert[0]), Some(made.pin));

        // Another pair's key with this certificate: refused, naming both files.
        let other = tempfile::tempdir().unwrap();
        let made2 = crate::keygen::keygen(other.path(), &["x".into()], false).unwrap();
        let mixed = TlsFiles {
            key_file: made2.key_file,
            ..files.clone()
        };
        let e = server_config(&mixed, euid).unwrap_err().to_string();
        assert!(
            e.contains("does not match the certificate") && e.contains("tls.key"),
            "{e}"
        );

        // A key readable by others is refused before it is read.
        std::fs::set_permissions(&made.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = server_config(&files, euid).unwrap_err().to_string();
        assert!(e.contains("has mode 0644"), "{e}");

        // A certificate file that holds no certificate.
        std::fs::write(&made.cert_file, "hello\n").unwrap();
        let e = read_certs("TLS certificate file", &made.cert_file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
