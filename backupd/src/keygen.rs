//! `backupd keygen`: a new private key (ECDSA P-256) and a self-signed certificate for it,
//! and the key's pin for the backup host's configuration.
//!
//! Self-signed is enough: the backup host pins the key (`tls_pin`), so no CA is involved
//! and the certificate's names and dates are not what it trusts. The certificate is valid
//! for [`VALID_DAYS`] from now, so that `backupd check` (which warns 30 days before the end)
//! and a backup host that trusts a CA file instead see ordinary dates.

use formats::protocol::Pin;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Days a new certificate is valid.
pub const VALID_DAYS: i64 = 3650;

/// The key file's name in the directory given.
pub const KEY_FILE: &str = "tls.key";
/// The certificate file's name in the directory given.
pub const CERT_FILE: &str = "tls.crt";

/// What `keygen` made.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The private key (PEM, PKCS#8), mode 0600.
    pub key_file: PathBuf,
    /// The certificate (PEM), mode 0644.
    pub cert_file: PathBuf,
    /// The pin of the key, for the backup host's `tls_pin`.
    pub pin: Pin,
    /// The names the certificate carries.
    pub names: Vec<String>,
    /// The end of its validity.
    pub not_after: time::OffsetDateTime,
}

/// Why no key was made.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// A file could not be written (it exists already: `--force` replaces it).
    #[error("{path}: {source}{hint}", path = .path.display(), hint = if .source.kind() == std::io::ErrorKind::AlreadyExists { " (keygen never overwrites a key: move it away, or pass --force)" } else { "" })]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The key or certificate could not be made (a name that is not a DNS name or IP).
    #[error("making the key and certificate: {0}")]
    Make(#[from] rcgen::Error),
}

/// The name of this host, the default name on the certificate.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "backupd".to_string())
}

/// A key and its self-signed certificate, in memory.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The pin of the key.
    pub pin: Pin,
    /// The end of the certificate's validity.
    pub not_after: time::OffsetDateTime,
}

/// Makes a key and a self-signed certificate for `names`, valid for [`VALID_DAYS`].
pub fn generate(names: &[String]) -> Result<Pair, KeygenError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    // An hour back: a mail server's clock a little behind the one that made it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "backupd".into()),
    );
    params.distinguished_name = dn;
    let cert = params.self_signed(&key)?;
    Ok(Pair {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
        pin: Pin::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&key)),
        not_after: params.not_after,
    })
}

/// Makes a key and a self-signed certificate for `names` in `dir` ([`KEY_FILE`],
/// [`CERT_FILE`]). An existing file is an error unless `force`.
pub fn keygen(dir: &Path, names: &[String], force: bool) -> Result<Generated, KeygenError> {
    let pair = generate(names)?;
    let key_file = dir.join(KEY_FILE);
    let cert_file = dir.join(CERT_FILE);
    write_new(&key_file, pair.key_pem.as_bytes(), 0o600, force)?;
    write_new(&cert_file, pair.cert_pem.as_bytes(), 0o644, force)?;
    Ok(Generated {
        key_file,
        cert_file,
        pin: pair.pin,
        names: names.to_vec(),
        not_after: pair.not_after,
    })
}

/// Writes a new file of `mode` (created with it, so the key is never readable by others,
/// whatever the umask); with `force` an existing file is removed first.
fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), KeygenError> {
    let err = |source| KeygenError::Write {
        path: path.to_owned(),
        source,
    };
    if force {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    // Exactly `mode`, whatever the umask took away (the certificate is public).
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_and_never_overwrites_one() {
        let dir = tempfile::tempdir().unwrap();
        let g = keygen(
            dir.path(),
            &["mail1.example".into(), "192.0.2.7".into()],
            false,
        )
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&g.key_file), 0o600);
        assert_eq!(mode(&g.cert_file), 0o644);
        let key = std::fs::read_to_string(&g.key_file).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        assert!(g.pin.to_string().starts_with("sha256/"));
        // The printed pin is the certificate's key's.
        let cert = crate::tls::read_certs("c", &g.cert_file).unwrap();
        assert_eq!(crate::tls::pin_of_cert(&cert[0]), Some(g.pin));

        let e = keygen(dir.path(), &["x".into()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key") && e.contains("--force"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&g.key_file).unwrap(),
            key,
            "untouched"
        );
        let g2 = keygen(dir.path(), &["x".into()], true).unwrap();
        assert_ne!(g2.pin, g.pin);
        assert_eq!(mode(&g2.key_file), 0o600);
    }
}
