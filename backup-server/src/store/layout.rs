//! Where a user's store lives: `<root>/<aa>/<bb>/<name>/`.
//!
//! * `<aa>/<bb>`: the first two bytes of the SHA-1 of the user name, in lower-case hex. Two
//!   levels of 256 keep 500,000 users at about 8 per directory, and no directory with more
//!   than 256 subdirectories above them.
//! * `<name>`: the user name, encoded so that it is one safe path component on any file
//!   system: the bytes `a-z 0-9 _ - @ +` stay, `.` stays except as the first byte, every
//!   other byte (upper-case letters included) becomes `=` and two lower-case hex digits. So
//!   `..`, `/`, NUL and control characters never reach the file system, no name starts
//!   with a dot, and `Alice` (`=41lice`) and `alice` stay apart on case-insensitive file
//!   systems. The encoding is injective; a name whose encoding passes 200 bytes keeps its
//!   first 150 encoded bytes, then `~` and the 40 hex digits of the name's SHA-1 (`~` never
//!   occurs otherwise, so these cannot collide with short names).
//!
//! Inside: `lock` (writers' lock), `readers.lock` (readers' shared lock),
//! `backupstate.sqlite3` (the index, with SQLite's `-wal` and `-shm`) and one
//! `backupdata-<unix time>.tar.gz` (the data file). docs/store.md has the whole picture.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::error::{IoContext, Result, StoreError};

/// File name of the writers' lock file.
pub const LOCK_FILE: &str = "lock";
/// File name of the readers' lock file.
pub const READERS_LOCK_FILE: &str = "readers.lock";
/// File name of the index.
pub const INDEX_FILE: &str = "backupstate.sqlite3";
/// A complete replacement index waiting to be switched in (see `switch`).
pub const INDEX_NEW_FILE: &str = "backupstate.sqlite3.new";
/// A replacement index being built; removed on open.
pub const INDEX_TMP_FILE: &str = "backupstate.sqlite3.tmp";
/// Prefix and suffix of data file names: `backupdata-<unix time>.tar.gz`.
pub const DATA_PREFIX: &str = "backupdata-";
/// See [`DATA_PREFIX`].
pub const DATA_SUFFIX: &str = ".tar.gz";

/// Longest encoded name kept whole.
const MAX_ENCODED: usize = 200;
/// Encoded bytes kept before the hash when a name is too long.
const CUT_ENCODED: usize = 150;

/// The directory of one user's store, derived from the user name. Nothing is checked on
/// disk: this is a place, not an opened store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDir {
    user: String,
    path: PathBuf,
}

impl UserDir {
    /// The directory of `user`'s store under `root`. Fails for names that cannot be a
    /// user's: empty, longer than 4096 bytes, or holding NUL.
    pub fn new(root: &Path, user: &str) -> Result<UserDir> {
        check_user(user)?;
        let hash = Sha1::digest(user.as_bytes());
        let path = root
            .join(hex::encode(&hash[..1]))
            .join(hex::encode(&hash[1..2]))
            .join(encode_name(user));
        Ok(UserDir {
            user: user.to_owned(),
            path,
        })
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The index file.
    pub fn index_path(&self) -> PathBuf {
        self.file(INDEX_FILE)
    }

    /// Whether the directory exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Creates the directory and its missing parents, each 0700 ([`crate::private`]).
    pub(crate) fn create(&self) -> Result<()> {
        crate::private::create_dir_all(&self.path).io(&self.path, "creating the store directory")
    }

    /// Names of the data files in the directory (`backupdata-*.tar.gz`), sorted.
    pub fn data_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).io(&self.path, "listing the store directory"),
        };
        for ent in rd {
            let ent = ent.io(&self.path, "listing the store directory")?;
            if let Some(name) = ent.file_name().to_str() {
                if is_data_file_name(name) {
                    out.push(name.to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The data file name for a file created at `unix_secs`.
pub fn data_file_name(unix_secs: i64) -> String {
    format!("{DATA_PREFIX}{unix_secs}{DATA_SUFFIX}")
}

/// The creation time (unix seconds) a data file name carries, if it is one.
pub fn data_file_secs(name: &str) -> Option<i64> {
    name.strip_prefix(DATA_PREFIX)
        .and_then(|s| s.strip_suffix(DATA_SUFFIX))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
}

/// Whether `name` is a data file name (`backupdata-<decimal>.tar.gz`).
pub fn is_data_file_name(name: &str) -> bool {
    name.strip_prefix(DATA_PREFIX)
        .and_then(|s| s.strip_suffix(DATA_SUFFIX))
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
}

fn check_user(user: &str) -> Result<()> {
    let expected = "1 to 4096 bytes without NUL";
    if user.is_empty() || user.len() > formats::archive::MAX_NAME_LEN || user.contains('\0') {
        return Err(StoreError::InvalidUserName {
            name: user.chars().take(200).collect(),
            expected,
        });
    }
    Ok(())
}

/// The path component for a user name (see the module documentation).
pub fn encode_name(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for (i, b) in user.bytes().enumerate() {
        let keep = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'-' | b'@' | b'+')
            || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push('=');
            out.push_str(&hex::encode([b]));
        }
    }
    if out.len() > MAX_ENCODED {
        // Cut on an escape boundary so the kept part reads as a prefix of the encoding.
        let mut cut = CUT_ENCODED;
        while out.as_bytes()[cut - 1] == b'=' || (cut >= 2 && out.as_bytes()[cut - 2] == b'=') {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('~');
        out.push_str(&hex::encode(Sha1::digest(user.as_bytes())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_safely() {
        assert_eq!(encode_name("alice"), "alice");
        assert_eq!(encode_name("Alice"), "=41lice");
        assert_eq!(encode_name("bob@example.com"), "bob@example.com");
        assert_eq!(encode_name(".."), "=2e.");
        assert_eq!(encode_name("."), "=2e");
        assert_eq!(encode_name("a/b"), "a=2fb");
        assert_eq!(encode_name("a\nb\x7f"), "a=0ab=7f");
        assert_eq!(encode_name("a=b"), "a=3db");
        assert_eq!(encode_name("é"), "=c3=a9");
        assert_eq!(encode_name("a~b"), "a=7eb");
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let long = "x".repeat(300);
        let e = encode_name(&long);
        assert!(e.len() <= MAX_ENCODED);
        assert!(e.starts_with(&"x".repeat(150)));
        assert!(e.contains('~'));
        let upper = "X".repeat(300);
        let e2 = encode_name(&upper);
        assert!(e2.len() <= MAX_ENCODED, "{}", e2.len());
        // Never cut inside an escape.
        let (kept, _) = e2.split_once('~').unwrap();
        assert_eq!(kept.len() % 3, 0);
        assert_ne!(
            encode_name(&format!("{long}a")),
            encode_name(&format!("{long}b"))
        );
    }

    #[test]
    fn fans_out_and_refuses_bad_names() {
        let d = UserDir::new(Path::new("/r"), "alice").unwrap();
        let comps: Vec<_> = d.path().components().collect();
        assert_eq!(comps.len(), 5); // "/", aa, bb, name
        assert!(d.path().ends_with("alice"));
        let other = UserDir::new(Path::new("/r"), "Alice").unwrap();
        assert_ne!(
            d.path().to_string_lossy().to_lowercase(),
            other.path().to_string_lossy().to_lowercase()
        );
        for bad in ["", "a\0b"] {
            assert!(matches!(
                UserDir::new(Path::new("/r"), bad),
                Err(StoreError::InvalidUserName { .. })
            ));
        }
        assert!(UserDir::new(Path::new("/r"), &"a".repeat(4097)).is_err());
        assert!(is_data_file_name("backupdata-17.tar.gz"));
        assert!(!is_data_file_name("backupdata-.tar.gz"));
        assert!(!is_data_file_name("backupdata-1x.tar.gz"));
    }
}
