//! The backup host reads each mail server's shared secret file under the same rules backupd
//! applies to its own (`formats::protocol::handshake::check_secret_file`): a regular file
//! owned by root or by the user backup-server runs as, readable by its owner only.

use formats::protocol::handshake::{self, SecretFileFacts};
use formats::protocol::{Secret, SecretError};
use std::path::Path;

/// Reads and checks a secret file (the file named by a server's `secret_file`).
pub fn load_secret(path: &Path) -> Result<Secret, SecretError> {
    let read_err = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // Checked on the open file, so what is read is what was checked.
    let meta = file.metadata().map_err(read_err)?;
    let facts = SecretFileFacts::of(&meta);
    let euid = nix::unistd::geteuid().as_raw();
    handshake::read_secret_file(file, path, facts, euid, "backup-server", |uid| {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail1.secret");
        std::fs::write(&path, b"0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_secret(&path).unwrap_err().to_string();
        assert!(e.contains("mail1.secret has mode 0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_secret(&path).unwrap().expose(), b"0123456789abcdef");
    }
}
