//! Mutual challenge-response authentication over a shared secret (docs/protocol.md,
//! "Authentication"), as pure functions: the proofs, and the rules a secret file must meet.
//! Reading the file and drawing nonces from the operating system are the callers' I/O.
//!
//! Each side sends a fresh 32-byte nonce; each proves it holds the secret with an
//! HMAC-SHA256 keyed by the secret over a label naming its role, the chosen protocol version,
//! both nonces and the [`Binding`] to the transport. The secret itself never crosses the
//! wire; the role labels keep one side's proof from being replayed as the other's, fresh
//! nonces keep a recorded conversation from being replayed at all, and the binding (the TLS
//! session's exporter, as RFC 9266 binds SCRAM to TLS) keeps a relay that terminates TLS from
//! passing a handshake through: the two TLS sessions it joins export different values, so
//! neither side's proof is right on the other session. Proofs are compared in constant time
//! (`Mac::verify_slice`). Where the binding comes from (the TLS library) is the callers' I/O.

use super::message::{Auth, AuthOk, Greeting, NONCE_LEN};
use super::VERSION;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// The label of the client's proof.
pub const CLIENT_LABEL: &[u8] = b"mailbackup backupd v2 client proof";
/// The label of the server's proof.
pub const SERVER_LABEL: &[u8] = b"mailbackup backupd v2 server proof";

/// The TLS exporter label (RFC 8446 section 7.5) both sides derive the binding with; no
/// context; [`BINDING_LEN`] bytes.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-mailbackup-handshake";

/// Bytes of exported keying material in a TLS binding.
pub const BINDING_LEN: usize = 32;

/// What ties a handshake to the transport it runs on: both sides must name the same one,
/// or neither side's proof verifies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Plain TCP (a `tls = false` configuration on loopback or a trusted network): nothing
    /// to bind to.
    Plain,
    /// TLS 1.3: the session's exported keying material ([`TLS_EXPORTER_LABEL`], no context,
    /// [`BINDING_LEN`] bytes). A relay that terminates TLS holds two sessions, and they export
    /// different values.
    Tls([u8; BINDING_LEN]),
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Plain => f.write_str("Binding::Plain"),
            // Keying material stays out of logs.
            Binding::Tls(_) => f.write_str("Binding::Tls(..)"),
        }
    }
}

impl Binding {
    /// What the proofs cover: `00` for plain TCP, `01` then the exported bytes for TLS.
    fn update(&self, mac: &mut HmacSha256) {
        match self {
            Binding::Plain => mac.update(&[0]),
            Binding::Tls(ekm) => {
                mac.update(&[1]);
                mac.update(ekm);
            }
        }
    }
}

/// The shortest secret accepted, in bytes (after trailing whitespace is removed).
pub const MIN_SECRET_LEN: usize = 16;

/// The most of a secret file that is read: a secret is short, a huge file is a mistake.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The shared secret. Debug output never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A secret (or secret file) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("secret file {path}: {source}", path = .path.display())]
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
    /// Owned by someone else than root or the user the program runs as: that user could
    /// change the secret, or read it by changing the mode back.
    #[error(
        "secret file {path} is owned by {owner}: it must belong to root or to the user \
         {program} starts as (uid {euid}) (chown root {path})",
        path = .path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner: `uid 1000 (alice)`, or `uid 1000` when no user has that id.
        owner: String,
        /// The program reading it (`backupd`, `backup-server`).
        program: &'static str,
        /// The effective uid of the reading process.
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

/// What the caller learnt of an opened secret file (from `fstat` of the open file, so that
/// what is read is what was checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretFileFacts {
    /// A regular file.
    pub is_file: bool,
    /// Its owner.
    pub uid: u32,
    /// Its mode bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl SecretFileFacts {
    /// The facts of an opened file's metadata (`File::metadata`, an `fstat`).
    pub fn of(meta: &std::fs::Metadata) -> SecretFileFacts {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        SecretFileFacts {
            is_file: meta.is_file(),
            uid: meta.uid(),
            mode: meta.permissions().mode() & 0o7777,
        }
    }
}

/// Checks an opened secret file before it is read: a regular file owned by root or by the
/// reading process's effective user (`euid`), that only its owner may read or write (mode
/// 0600 or 0400). `owner_name` names a uid for the error text (the caller looks it up).
pub fn check_secret_file(
    path: &Path,
    facts: SecretFileFacts,
    euid: u32,
    program: &'static str,
    owner_name: impl FnOnce(u32) -> Option<String>,
) -> Result<(), SecretError> {
    if !facts.is_file {
        return Err(SecretError::NotAFile {
            path: path.to_owned(),
        });
    }
    if facts.uid != 0 && facts.uid != euid {
        let uid = facts.uid;
        let owner = match owner_name(uid) {
            Some(name) => format!("uid {uid} ({name})"),
            None => format!("uid {uid}"),
        };
        return Err(SecretError::Owner {
            path: path.to_owned(),
            owner,
            program,
            euid,
        });
    }
    if facts.mode & 0o077 != 0 {
        return Err(SecretError::Mode {
            path: path.to_owned(),
            mode: facts.mode,
        });
    }
    Ok(())
}

/// Checks an opened secret file ([`check_secret_file`]), then reads the secret from it (at
/// most [`MAX_SECRET_FILE`] bytes).
pub fn read_secret_file(
    file: impl std::io::Read,
    path: &Path,
    facts: SecretFileFacts,
    euid: u32,
    program: &'static str,
    owner_name: impl FnOnce(u32) -> Option<String>,
) -> Result<Secret, SecretError> {
    check_secret_file(path, facts, euid, program, owner_name)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
    Secret::from_bytes_named(&bytes, &format!("secret file {}", path.display()))
}

impl Secret {
    /// A secret from bytes: trailing ASCII whitespace (a final newline) is not part of it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, SecretError> {
        Self::from_bytes_named(bytes, "secret")
    }

    /// [`Secret::from_bytes`], naming where the bytes came from in the error
    /// (`secret file /etc/backupd/secret`).
    pub fn from_bytes_named(bytes: &[u8], what: &str) -> Result<Secret, SecretError> {
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

    /// The secret's bytes (for tests that compare what a file held).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn mac(
        &self,
        label: &[u8],
        version: u16,
        server_nonce: &[u8],
        client_nonce: &[u8],
        binding: &Binding,
    ) -> HmacSha256 {
        // Any key length is valid for HMAC.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(label);
        mac.update(&version.to_be_bytes());
        mac.update(server_nonce);
        mac.update(client_nonce);
        binding.update(&mut mac);
        mac
    }

    /// The client's proof for this handshake.
    pub fn client_proof(
        &self,
        version: u16,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
        binding: &Binding,
    ) -> [u8; NONCE_LEN] {
        self.mac(CLIENT_LABEL, version, server_nonce, client_nonce, binding)
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
        binding: &Binding,
    ) -> [u8; NONCE_LEN] {
        self.mac(SERVER_LABEL, version, server_nonce, client_nonce, binding)
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
        binding: &Binding,
        proof: &[u8],
    ) -> bool {
        self.mac(CLIENT_LABEL, version, server_nonce, client_nonce, binding)
            .verify_slice(proof)
            .is_ok()
    }

    /// Whether `proof` is the server's proof, compared in constant time.
    pub fn verify_server(
        &self,
        version: u16,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
        binding: &Binding,
        proof: &[u8],
    ) -> bool {
        self.mac(SERVER_LABEL, version, server_nonce, client_nonce, binding)
            .verify_slice(proof)
            .is_ok()
    }
}

/// Why the client side of a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The server speaks no version this client speaks.
    #[error(
        "the server speaks protocol versions {min} to {max}, this client {VERSION}: upgrade \
         the older of backupd and backup-server"
    )]
    Version {
        /// The server's lowest version.
        min: u16,
        /// The server's highest version.
        max: u16,
    },
    /// The server's proof does not match: it does not hold the secret.
    #[error("the server's proof does not match the secret (wrong secret on one side, or not our server)")]
    ServerProof,
}

/// The client's side of the handshake, between its auth frame and the server's answer.
#[derive(Debug)]
pub struct ClientHandshake {
    server_nonce: [u8; NONCE_LEN],
    client_nonce: [u8; NONCE_LEN],
    binding: Binding,
    server: String,
}

impl ClientHandshake {
    /// Answers the server's greeting with `client_nonce` (fresh random bytes the caller
    /// drew) on the transport `binding` names: the auth frame to send, and the state that
    /// checks the server's answer.
    pub fn answer(
        greeting: Greeting,
        secret: &Secret,
        client_nonce: [u8; NONCE_LEN],
        binding: Binding,
    ) -> Result<(ClientHandshake, Auth), HandshakeError> {
        if !(greeting.min_version..=greeting.max_version).contains(&VERSION) {
            return Err(HandshakeError::Version {
                min: greeting.min_version,
                max: greeting.max_version,
            });
        }
        let auth = Auth {
            version: VERSION,
            nonce: client_nonce,
            proof: secret.client_proof(VERSION, &greeting.nonce, &client_nonce, &binding),
        };
        Ok((
            ClientHandshake {
                server_nonce: greeting.nonce,
                client_nonce,
                binding,
                server: greeting.server,
            },
            auth,
        ))
    }

    /// Checks the server's proof; on success, what the server called itself.
    pub fn finish(self, ok: &AuthOk, secret: &Secret) -> Result<String, HandshakeError> {
        if secret.verify_server(
            VERSION,
            &self.server_nonce,
            &self.client_nonce,
            &self.binding,
            &ok.proof,
        ) {
            Ok(self.server)
        } else {
            Err(HandshakeError::ServerProof)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes(b"0123456789abcdef-the-secret\n").unwrap()
    }

    const TLS: Binding = Binding::Tls([3; BINDING_LEN]);

    #[test]
    fn proofs_differ_by_role_and_verify() {
        let s = secret();
        let (sn, cn) = ([1u8; 32], [2u8; 32]);
        for b in [Binding::Plain, TLS] {
            let c = s.client_proof(2, &sn, &cn, &b);
            let v = s.server_proof(2, &sn, &cn, &b);
            assert_ne!(c, v, "a client proof is no server proof");
            assert!(s.verify_client(2, &sn, &cn, &b, &c));
            assert!(s.verify_server(2, &sn, &cn, &b, &v));
            assert!(!s.verify_client(2, &sn, &cn, &b, &v));
            assert!(
                !s.verify_client(3, &sn, &cn, &b, &c),
                "bound to the version"
            );
            assert!(
                !s.verify_client(2, &cn, &sn, &b, &c),
                "bound to the nonces' roles"
            );
            assert!(!s.verify_client(2, &sn, &cn, &b, &c[..31]));
            let other = Secret::from_bytes(b"0123456789abcdef-other").unwrap();
            assert!(!other.verify_client(2, &sn, &cn, &b, &c));
        }
    }

    #[test]
    fn proofs_are_bound_to_the_transport() {
        // A relay terminating TLS holds two sessions with different exporters: a proof made
        // on one verifies on neither the other nor on plain TCP, and the reverse.
        let s = secret();
        let (sn, cn) = ([1u8; 32], [2u8; 32]);
        let client_side = Binding::Tls([3; BINDING_LEN]);
        let server_side = Binding::Tls([4; BINDING_LEN]);
        let c = s.client_proof(2, &sn, &cn, &client_side);
        assert!(!s.verify_client(2, &sn, &cn, &server_side, &c));
        assert!(!s.verify_client(2, &sn, &cn, &Binding::Plain, &c));
        let p = s.client_proof(2, &sn, &cn, &Binding::Plain);
        assert!(!s.verify_client(2, &sn, &cn, &client_side, &p));
        let v = s.server_proof(2, &sn, &cn, &server_side);
        assert!(!s.verify_server(2, &sn, &cn, &client_side, &v));
        assert_eq!(format!("{client_side:?}"), "Binding::Tls(..)");
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(key "0123456789abcdef",
        //   CLIENT_LABEL || 00 02 || 32x01 || 32x02 || 00)              (plain TCP)
        //   CLIENT_LABEL || 00 02 || 32x01 || 32x02 || 01 || 32x03)      (TLS)
        // computed independently with Python's hmac module (docs/protocol.md shows them).
        let s = Secret::from_bytes(b"0123456789abcdef").unwrap();
        let (sn, cn) = ([1; 32], [2; 32]);
        assert_eq!(
            hex::encode(s.client_proof(2, &sn, &cn, &Binding::Plain)),
            "20793e07f3c23a49af33e37a917834b377132a6da9db438171e686bd4f7bbb2c"
        );
        assert_eq!(
            hex::encode(s.server_proof(2, &sn, &cn, &Binding::Plain)),
            "98a2e7d78501a9e7a4ffaeafb5896d957e5d16ee2458b4399e254af16be7604d"
        );
        assert_eq!(
            hex::encode(s.client_proof(2, &sn, &cn, &TLS)),
            "ed98549a8ddb3e6e92ae6d1ddcdd4095fbaa1a69c1b2840b8fa4e76319a1a2b1"
        );
        assert_eq!(
            hex::encode(s.server_proof(2, &sn, &cn, &TLS)),
            "a9d45ca0dee4b5b90c4d7cbb5165bfd57a2320ba71969de9ce88c23babebfb90"
        );
    }

    #[test]
    fn secret_rules() {
        assert_eq!(secret().expose(), b"0123456789abcdef-the-secret");
        let e = Secret::from_bytes(b"short\n").unwrap_err().to_string();
        assert!(e.contains("at least 16 bytes, found 5"), "{e}");
        assert_eq!(format!("{:?}", secret()), "Secret(27 bytes)");
        let p = Path::new("/etc/x/secret");
        let ok = SecretFileFacts {
            is_file: true,
            uid: 0,
            mode: 0o600,
        };
        assert!(check_secret_file(p, ok, 1000, "backupd", |_| None).is_ok());
        let e = check_secret_file(
            p,
            SecretFileFacts { mode: 0o644, ..ok },
            0,
            "backupd",
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("has mode 0644") && e.contains("chmod 600"),
            "{e}"
        );
        let e = check_secret_file(p, SecretFileFacts { uid: 42, ..ok }, 0, "backupd", |_| {
            Some("bob".into())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "secret file /etc/x/secret is owned by uid 42 (bob): it must belong to root or to \
             the user backupd starts as (uid 0) (chown root /etc/x/secret)"
        );
        assert!(check_secret_file(p, SecretFileFacts { uid: 42, ..ok }, 42, "b", |_| None).is_ok());
        let e = check_secret_file(
            p,
            SecretFileFacts {
                is_file: false,
                ..ok
            },
            0,
            "b",
            |_| None,
        );
        assert!(matches!(e, Err(SecretError::NotAFile { .. })));
    }

    #[test]
    fn client_handshake_checks_version_and_server_proof() {
        let s = secret();
        let g = Greeting {
            min_version: VERSION,
            max_version: VERSION,
            nonce: [7; 32],
            server: "mail1".into(),
        };
        let (hs, auth) = ClientHandshake::answer(g.clone(), &s, [9; 32], TLS).unwrap();
        assert!(s.verify_client(VERSION, &[7; 32], &[9; 32], &TLS, &auth.proof));
        let good = AuthOk {
            proof: s.server_proof(VERSION, &[7; 32], &[9; 32], &TLS),
        };
        assert_eq!(hs.finish(&good, &s).unwrap(), "mail1");
        // The server's proof on another session (a relay's) is refused.
        let (hs, _) = ClientHandshake::answer(g.clone(), &s, [9; 32], TLS).unwrap();
        let relayed = AuthOk {
            proof: s.server_proof(VERSION, &[7; 32], &[9; 32], &Binding::Tls([4; 32])),
        };
        assert_eq!(hs.finish(&relayed, &s), Err(HandshakeError::ServerProof));
        let (hs, _) = ClientHandshake::answer(g.clone(), &s, [9; 32], TLS).unwrap();
        let bad = AuthOk { proof: [0; 32] };
        assert_eq!(hs.finish(&bad, &s), Err(HandshakeError::ServerProof));
        let future = Greeting {
            min_version: VERSION + 1,
            max_version: VERSION + 2,
            ..g
        };
        let e = ClientHandshake::answer(future, &s, [9; 32], TLS).unwrap_err();
        assert!(matches!(e, HandshakeError::Version { .. }));
        let old = Greeting {
            min_version: 1,
            max_version: 1,
            nonce: [7; 32],
            server: "mail1".into(),
        };
        let e = ClientHandshake::answer(old, &s, [9; 32], TLS)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the server speaks protocol versions 1 to 1, this client 2: upgrade the older of \
             backupd and backup-server"
        );
    }
}
