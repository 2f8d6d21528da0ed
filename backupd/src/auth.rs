//! Mutual challenge-response authentication over a shared secret (docs/protocol.md,
//! "Authentication").
//!
//! Each side sends a fresh 32-byte nonce from the operating system; each proves it holds
//! the secret with an HMAC-SHA256 keyed by the secret over a label naming its role, the
//! chosen protocol version and both nonces. The secret itself never crosses the wire; the
//! role labels keep one side's proof from being replayed as the other's, and fresh nonces
//! keep a recorded conversation from being replayed at all. Proofs are compared in
//! constant time (`Mac::verify_slice`).

use formats::protocol::NONCE_LEN;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// The label of the client's proof.
pub const CLIENT_LABEL: &[u8] = b"mailbackup backupd v1 client proof";
/// The label of the server's proof.
pub const SERVER_LABEL: &[u8] = b"mailbackup backupd v1 server proof";

/// The shortest secret accepted, in bytes (after trailing whitespace is removed).
pub const MIN_SECRET_LEN: usize = 16;

/// The shared secret. Debug output never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error("secret file {path} has mode {mode:04o}: it must be readable by its owner only (chmod 600 {path})", path = .path.display())]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by someone else than root or the user backupd runs as: that user could
    /// change the secret, or read it by changing the mode back.
    #[error(
        "secret file {path} is owned by {owner}: it must belong to root or to the user backupd \
         starts as (uid {euid}) (chown root {path})",
        path = .path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner: `uid 1000 (alice)`, or `uid 1000` when no user has that id.
        owner: String,
        /// The effective uid of this process.
        euid: u32,
    },
    /// Not a regular file.
    #[error("secret file {path} is not a regular file", path = .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Too short to be a secret.
    #[error("{what}: expected a secret of at least {MIN_SECRET_LEN} bytes, found {len}")]
    TooShort {
        /// Where it came from.
        what: String,
        /// Its length.
        len: usize,
    },
}

impl Secret {
    /// A secret from bytes: trailing ASCII whitespace (a final newline) is not part of it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, SecretError> {
        Self::from_bytes_named(bytes, "secret")
    }

    fn from_bytes_named(bytes: &[u8], what: &str) -> Result<Secret, SecretError> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                what: what.to_string(),
                len: end,
            });
        }
        Ok(Secret(bytes[..end].to_vec()))
    }

    /// Reads the secret file. It must be a regular file owned by root or by the effective
    /// user (it is read before the privilege drop, so normally root) that only its owner may
    /// read or write (mode 0600 or 0400): anything else is refused, naming the owner or mode
    /// found.
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        Self::load_as(path, nix::unistd::geteuid().as_raw())
    }

    /// [`Secret::load`] for a process whose effective uid is `euid`.
    fn load_as(path: &Path, euid: u32) -> Result<Secret, SecretError> {
        let read_err = |source| SecretError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // Checked on the open file, so what is read is what was checked.
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile {
                path: path.to_owned(),
            });
        }
        let uid = meta.uid();
        if uid != 0 && uid != euid {
            let owner = match nix::unistd::User::from_uid(uid.into()) {
                Ok(Some(user)) => format!("uid {uid} ({})", user.name),
                _ => format!("uid {uid}"),
            };
            return Err(SecretError::Owner {
                path: path.to_owned(),
                owner,
                euid,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Vec::new();
        // A secret is short; a huge file is a mistake, and is not read whole.
        (&file)
            .take(64 * 1024)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        Self::from_bytes_named(&bytes, &format!("secret file {}", path.display()))
    }

    fn mac(
        &self,
        label: &[u8],
        version: u16,
        server_nonce: &[u8],
        client_nonce: &[u8],
    ) -> HmacSha256 {
        // Any key length is valid for HMAC.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(label);
        mac.update(&version.to_be_bytes());
        mac.update(server_nonce);
        mac.update(client_nonce);
        mac
    }

    /// The client's proof for this handshake.
    pub fn client_proof(
        &self,
        version: u16,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
    ) -> [u8; NONCE_LEN] {
        self.mac(CLIENT_LABEL, version, server_nonce, client_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// The server's proof for this handshake.
    pub fn server_proof(
        &self,
        version: u16,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
    ) -> [u8; NONCE_LEN] {
        self.mac(SERVER_LABEL, version, server_nonce, client_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the client's proof, compared in constant time.
    pub fn verify_client(
        &self,
        version: u16,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
        proof: &[u8],
    ) -> bool {
        self.mac(CLIENT_LABEL, version, server_nonce, client_nonce)
            .verify_slice(proof)
            .is_ok()
    }

    /// Whether `proof` is the server's proof, compared in constant time.
    pub fn verify_server(
        &self,
        version: u16,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
        proof: &[u8],
    ) -> bool {
        self.mac(SERVER_LABEL, version, server_nonce, client_nonce)
            .verify_slice(proof)
            .is_ok()
    }
}

/// A fresh nonce from the operating system's random source.
pub fn nonce() -> Result<[u8; NONCE_LEN], getrandom::Error> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn secret() -> Secret {
        Secret::from_bytes(b"0123456789abcdef-the-secret\n").unwrap()
    }

    #[test]
    fn proofs_differ_by_role_and_verify() {
        let s = secret();
        let (sn, cn) = ([1u8; 32], [2u8; 32]);
        let c = s.client_proof(1, &sn, &cn);
        let v = s.server_proof(1, &sn, &cn);
        assert_ne!(c, v, "a client proof is no server proof");
        assert!(s.verify_client(1, &sn, &cn, &c));
        assert!(s.verify_server(1, &sn, &cn, &v));
        assert!(!s.verify_client(1, &sn, &cn, &v));
        assert!(!s.verify_client(2, &sn, &cn, &c), "bound to the version");
        assert!(
            !s.verify_client(1, &cn, &sn, &c),
            "bound to the nonces' roles"
        );
        assert!(!s.verify_client(1, &sn, &cn, &c[..31]));
        let other = Secret::from_bytes(b"0123456789abcdef-other").unwrap();
        assert!(!other.verify_client(1, &sn, &cn, &c));
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(key "0123456789abcdef", CLIENT_LABEL || 00 01 || 32×01 || 32×02),
        // computed independently with Python's hmac module (docs/protocol.md shows it).
        let s = Secret::from_bytes(b"0123456789abcdef").unwrap();
        let c = s.client_proof(1, &[1; 32], &[2; 32]);
        assert_eq!(
            hex(&c),
            "78c2f7eb5b4dfcd24b4d645201595f079aa3fe2731907409f2d69c39341ae318"
        );
        assert_eq!(
            hex(&s.server_proof(1, &[1; 32], &[2; 32])),
            "0009fdaf56da2602897e95d36859419c9ea5d5e08d0a0f1ec8b4da7341b065f8"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn secret_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"0123456789abcdef\r\n").unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("has mode 0644") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::load(&path).unwrap().0, b"0123456789abcdef");
        std::fs::write(&path, b"short\n").unwrap();
        let e = Secret::load(&path).unwrap_err().to_string();
        assert!(e.contains("at least 16 bytes, found 5"), "{e}");
        let e = Secret::load(dir.path()).unwrap_err();
        assert!(matches!(e, SecretError::NotAFile { .. }), "{e}");
        let e = Secret::load(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        assert_eq!(format!("{:?}", secret()), "Secret(27 bytes)");
    }

    #[test]
    fn secret_file_owner_must_be_root_or_the_effective_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let owner = std::fs::metadata(&path).unwrap().uid();
        assert!(Secret::load(&path).is_ok(), "the effective user's own file");
        if owner != 0 {
            // Not root: a process of another effective uid must refuse our file.
            let e = Secret::load_as(&path, owner + 1).unwrap_err();
            assert!(matches!(e, SecretError::Owner { .. }), "{e}");
            let e = e.to_string();
            assert!(e.contains(&format!("owned by uid {owner}")), "{e}");
            return;
        }
        // Root's file is accepted whoever reads it.
        assert!(Secret::load_as(&path, 4242).is_ok());
        // Given away (a uid no user has, here): refused, naming the file and the owner.
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let e = Secret::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "secret file {p} is owned by uid 4242: it must belong to root or to the user \
                 backupd starts as (uid 0) (chown root {p})",
                p = path.display()
            )
        );
        assert!(
            Secret::load_as(&path, 4242).is_ok(),
            "the owner may read it"
        );
    }
}
