//! The console's accounts file: who may sign in, each with an Argon2id password hash.
//!
//! One account a line, `NAME:HASH`, HASH a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`);
//! blank lines and lines starting with `#` are ignored. `backup-server console add-account
//! NAME` writes or replaces a line ([`set_password`]). The file is read once at start; it
//! must not be readable by others (a hash is still a guess-at-leisure target).
//!
//! A sign-in with an unknown name still runs one Argon2 verification (against a hash made
//! at start for no one), so the time taken does not say whether the name exists.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// The longest accounts file read (a few thousand accounts fit).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The longest account name.
pub const MAX_NAME: usize = 64;
/// The longest password taken (Argon2 hashes any length; a bound keeps a request small).
pub const MAX_PASSWORD: usize = 1024;

/// Why the accounts file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// Reading or writing it failed.
    #[error("accounts file {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error("accounts file {path}: mode {mode:o} lets others read the password hashes; chmod 600 it", path = .path.display())]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("accounts file {path}: {len} bytes, more than the {MAX_FILE_BYTES} read", path = .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A line is not `NAME:HASH` with a valid name and an Argon2 PHC hash.
    #[error("accounts file {path} line {line}: {why}; expected NAME:$argon2id$... (backup-server console add-account NAME writes one)", path = .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// An account name that is not allowed.
    #[error("account name {0:?}: use 1 to {MAX_NAME} letters, digits, '.', '_', '-' or '@'")]
    BadName(String),
    /// A password that is empty or too long.
    #[error("password: {0}")]
    BadPassword(&'static str),
    /// Hashing failed.
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// Whether `name` may name an account (and appear in the audit log as it is).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// The accounts, read from the file.
#[derive(Debug)]
pub struct Accounts {
    hashes: BTreeMap<String, String>,
    /// A hash of a random password, verified against when the name is unknown.
    decoy: String,
}

impl Accounts {
    /// Reads the accounts file (refused when others may read it).
    pub fn load(path: &Path) -> Result<Accounts, AccountsError> {
        let io = |source| AccountsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.mode() & 0o077 != 0 {
            return Err(AccountsError::Readable {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(AccountsError::TooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let hashes = parse(path, &text)?;
        Ok(Accounts {
            hashes,
            decoy: hash_password(&random_hex(16))?,
        })
    }

    /// The accounts' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// Whether `password` is `name`'s. Slow on purpose (Argon2): run it off the async
    /// threads. An unknown name costs the same as a wrong password.
    pub fn check(&self, name: &str, password: &str) -> bool {
        let known = self.hashes.get(name);
        let hash = known.unwrap_or(&self.decoy);
        let ok = verify(hash, password);
        ok && known.is_some()
    }
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, String>, AccountsError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| AccountsError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            why,
        };
        let (name, hash) = line.split_once(':').ok_or_else(|| bad("no ':'".into()))?;
        if !valid_name(name) {
            return Err(bad(format!("account name {name:?} is not allowed")));
        }
        let phc = PasswordHash::new(hash).map_err(|e| bad(format!("hash: {e}")))?;
        if !phc.algorithm.as_str().starts_with("argon2") {
            return Err(bad(format!("hash algorithm {}", phc.algorithm)));
        }
        if out.insert(name.to_owned(), hash.to_owned()).is_some() {
            return Err(bad(format!("account {name} is named twice")));
        }
    }
    Ok(out)
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// `n` random bytes from the operating system, as hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    // The operating system's generator does not fail on Linux once booted; if it ever
    // did, an all-zero token would be guessable, so stop rather than go on.
    getrandom::fill(&mut b).expect("the operating system's random generator failed");
    hex::encode(b)
}

/// An Argon2id hash of `password` (default parameters: 19 MiB, 2 passes), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AccountsError> {
    if password.is_empty() {
        return Err(AccountsError::BadPassword("empty"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AccountsError::BadPassword("longer than 1024 bytes"));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AccountsError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountsError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountsError::Hash(e.to_string()))
}

/// Writes `name`'s password hash into the accounts file at `path` (created 0600 when
/// missing; an existing line for `name` replaced), through a new file renamed over it.
pub fn set_password(path: &Path, name: &str, password: &str) -> Result<(), AccountsError> {
    if !valid_name(name) {
        return Err(AccountsError::BadName(name.to_owned()));
    }
    let hash = hash_password(password)?;
    let io = |source| AccountsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    // What is there must parse: a line written now is not added to a broken file.
    parse(path, &old)?;
    let mut text = String::new();
    for line in old.lines() {
        if line.trim().split_once(':').map(|(n, _)| n) != Some(name) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!("{name}:{hash}\n"));
    let new = path.with_extension("new");
    let _ = std::fs::remove_file(&new);
    let mut f = crate::private::create_new(&new).map_err(io)?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&new, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_account_written_signs_in_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("accounts");
        set_password(&p, "ann", "correct horse").unwrap();
        set_password(&p, "bob", "other").unwrap();
        // Replacing keeps one line per name.
        set_password(&p, "ann", "battery staple").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("ann:")).count(), 1);
        assert!(text.contains("$argon2id$"), "{text}");
        let a = Accounts::load(&p).unwrap();
        assert_eq!(a.names().collect::<Vec<_>>(), ["ann", "bob"]);
        assert!(a.check("ann", "battery staple"));
        assert!(!a.check("ann", "correct horse"));
        assert!(!a.check("ann", ""));
        assert!(!a.check("carol", "battery staple"));
        assert!(a.check("bob", "other"));
    }

    #[test]
    fn a_file_others_read_or_a_bad_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("accounts");
        set_password(&p, "ann", "pw").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Accounts::load(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::write(&p, "ann:plaintext\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Accounts::load(&p).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(matches!(
            set_password(&p, "a b", "pw"),
            Err(AccountsError::BadName(_))
        ));
    }
}
