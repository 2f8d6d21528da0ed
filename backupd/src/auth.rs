//! The daemon's side of authentication: reading the shared secret file (under the rules of
//! `formats::protocol::handshake`) and drawing the handshake's nonces from the operating
//! system. The proofs themselves are pure and live in `formats`, shared with the client.

use formats::protocol::handshake::{self, SecretFileFacts};
use formats::protocol::{Secret, SecretError, NONCE_LEN};
use std::path::Path;

/// Reads the secret file. It must be a regular file owned by root or by the effective
/// user (it is read before the privilege drop, so normally root) that only its owner may
/// read or write (mode 0600 or 0400): anything else is refused, naming the owner or mode
/// found.
pub fn load_secret(path: &Path) -> Result<Secret, SecretError> {
    load_secret_as(path, nix::unistd::geteuid().as_raw())
}

/// [`load_secret`] for a process whose effective uid is `euid`.
fn load_secret_as(path: &Path, euid: u32) -> Result<Secret, SecretError> {
    let read_err = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // Checked on the open file, so what is read is what was checked.
    let meta = file.metadata().map_err(read_err)?;
    let facts = SecretFileFacts::of(&meta);
    handshake::read_secret_file(file, path, facts, euid, "backupd", |uid| {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
    })
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn secret_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"0123456789abcdef\r\n").unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_secret(&path).unwrap_err().to_string();
        assert!(
            e.contains("has mode 0644") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_secret(&path).unwrap().expose(), b"0123456789abcdef");
        std::fs::write(&path, b"short\n").unwrap();
        let e = load_secret(&path).unwrap_err().to_string();
        assert!(e.contains("at least 16 bytes, found 5"), "{e}");
        let e = load_secret(dir.path()).unwrap_err();
        assert!(matches!(e, SecretError::NotAFile { .. }), "{e}");
        let e = load_secret(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn secret_file_owner_must_be_root_or_the_effective_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let owner = std::fs::metadata(&path).unwrap().uid();
        assert!(load_secret(&path).is_ok(), "the effective user's own file");
        if owner != 0 {
            // Not root: a process of another effective uid must refuse our file.
            let e = load_secret_as(&path, owner + 1).unwrap_err();
            assert!(matches!(e, SecretError::Owner { .. }), "{e}");
            let e = e.to_string();
            assert!(e.contains(&format!("owned by uid {owner}")), "{e}");
            return;
        }
        // Root's file is accepted whoever reads it.
        assert!(load_secret_as(&path, 4242).is_ok());
        // Given away (a uid no user has, here): refused, naming the file and the owner.
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let e = load_secret(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "secret file {p} is owned by uid 4242: it must belong to root or to the user \
                 backupd starts as (uid 0) (chown root {p})",
                p = path.display()
            )
        );
        assert!(load_secret_as(&path, 4242).is_ok(), "the owner may read it");
    }
}
