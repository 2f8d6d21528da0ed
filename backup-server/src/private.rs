//! Private by construction: everything the backup host writes about a user's mail is the
//! backup user's alone. Directories are made 0700 and files 0600 with the mode set
//! explicitly after creation (`fchmod`/`chmod`), so neither a loose umask (022, 000) nor a
//! tight one that takes the owner's own bits changes what they get. SQLite gives an
//! index's `-wal`, `-shm` and `-journal` the mode of the database file itself, so that
//! file is created here, 0600, before SQLite opens it ([`prepare_sqlite`]).
//!
//! And the places it all lives are checked before a command uses them
//! ([`check_places`]): a store root, state db, or state db directory that group or others
//! can write is refused (whoever can write there can swap a user's store or the state db
//! for their own); a store root or state db that they can read is a warning (each store
//! inside is private, but the fan-out names user names). docs/store.md, "Who can read a
//! store", says the same for the administrator.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory the backup host creates (stores, fan-out levels, the root).
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the backup host creates (data files, indexes, locks, state db).
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents, each 0700. Directories that exist are left as
/// they are (the store root's mode is the administrator's: [`check_places`] judges it).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = path;
    loop {
        match std::fs::symlink_metadata(p) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p);
                match p.parent() {
                    Some(up) if !up.as_os_str().is_empty() => p = up,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?,
            // Another worker made it meanwhile (the fan-out levels are shared).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    if !path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", path.display()),
        ));
    }
    Ok(())
}

/// Creates the new file `path` (failing if it exists), 0600, open for reading and writing.
pub fn create_new(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Opens `path` for reading and writing, creating it 0600 when missing (a lock file). A
/// file that exists keeps its mode.
pub fn open_or_create(path: &Path) -> io::Result<File> {
    match create_new(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().read(true).write(true).open(path)
        }
        r => r,
    }
}

/// Makes sure the SQLite database `path` exists before SQLite opens it: created empty and
/// 0600 when missing (an empty file is a new database to SQLite), so its journal files,
/// which SQLite creates with the database file's mode, are 0600 too.
pub fn prepare_sqlite(path: &Path) -> io::Result<()> {
    open_or_create(path).map(drop)
}

/// What a checked place is, in the administrator's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `store_root` of the configuration.
    StoreRoot,
    /// `state_db` of the configuration.
    StateDb,
    /// The directory holding the state db.
    StateDbDir,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Place::StoreRoot => "store root",
            Place::StateDb => "state db",
            Place::StateDbDir => "state db's directory",
        })
    }
}

/// A place others can write: refused.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// Group or others can write it.
    #[error("{place} {} is writable by {} (mode {mode:04o}): they could replace stores or the state db; run chmod go-w {} (chmod 700 for a directory, 600 for a file)", .path.display(), who(*.mode, 0o020, 0o002), .path.display())]
    OthersCanWrite {
        /// Which place.
        place: Place,
        /// It.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The place could not be looked at.
    #[error("{place} {}: {source}", .path.display())]
    Stat {
        /// Which place.
        place: Place,
        /// It.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A place others can read: a warning, for the binary to print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place} {} is readable by {} (mode {mode:04o}): run chmod go-rwx {}", .path.display(), who(*.mode, 0o040, 0o004), .path.display())]
pub struct PrivacyWarning {
    /// Which place.
    pub place: Place,
    /// It.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

fn who(mode: u32, group: u32, other: u32) -> &'static str {
    match (mode & group != 0, mode & other != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "others",
    }
}

/// Checks the store root, the state db and the state db's directory (each when it
/// exists: a missing one is created private): refuses one that group or others can
/// write; warns about a store root or state db they can read.
pub fn check_places(
    store_root: &Path,
    state_db: &Path,
) -> Result<Vec<PrivacyWarning>, PrivacyError> {
    let mut warnings = Vec::new();
    let state_dir = state_db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (place, path, warn) in [
        (Place::StoreRoot, store_root, true),
        (Place::StateDbDir, state_dir, false),
        (Place::StateDb, state_db, true),
    ] {
        if place == Place::StateDbDir && state_dir == store_root {
            continue;
        }
        // The place itself, not what a symlink there points to: that is checked too.
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(PrivacyError::Stat {
                    place,
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(PrivacyError::OthersCanWrite {
                place,
                path: path.to_path_buf(),
                mode,
            });
        }
        if warn && mode & 0o044 != 0 {
            warnings.push(PrivacyWarning {
                place,
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_private_whatever_the_umask_left() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&d.path().join(p)), DIR_MODE, "{p}");
        }
        // Again: nothing to do, no error.
        create_dir_all(&deep).unwrap();
        let f = deep.join("f");
        create_new(&f).unwrap();
        assert_eq!(mode(&f), FILE_MODE);
        assert_eq!(
            create_new(&f).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        open_or_create(&f).unwrap();
        let db = deep.join("x.sqlite3");
        prepare_sqlite(&db).unwrap();
        assert_eq!(mode(&db), FILE_MODE);
        std::fs::write(d.path().join("file"), b"").unwrap();
        assert!(create_dir_all(&d.path().join("file")).is_err());
    }

    #[test]
    fn places_others_can_write_are_refused_readable_ones_warned() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let state = root.join("state.sqlite3");
        // Missing: fine (they will be created private).
        assert!(check_places(&root, &state).unwrap().is_empty());
        create_dir_all(&root).unwrap();
        prepare_sqlite(&state).unwrap();
        assert!(check_places(&root, &state).unwrap().is_empty());
        std::fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        let w = check_places(&root, &state).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            format!(
                "store root {} is readable by group and others (mode 0755): run chmod go-rwx {}",
                root.display(),
                root.display()
            )
        );
        std::fs::set_permissions(&root, Permissions::from_mode(0o770)).unwrap();
        let e = check_places(&root, &state).unwrap_err();
        assert!(matches!(
            e,
            PrivacyError::OthersCanWrite {
                place: Place::StoreRoot,
                mode: 0o770,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            format!(
                "store root {} is writable by its group (mode 0770): they could replace stores or the state db; run chmod go-w {} (chmod 700 for a directory, 600 for a file)",
                root.display(),
                root.display()
            )
        );
        std::fs::set_permissions(&root, Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&state, Permissions::from_mode(0o606)).unwrap();
        assert!(matches!(
            check_places(&root, &state),
            Err(PrivacyError::OthersCanWrite {
                place: Place::StateDb,
                ..
            })
        ));
        // A state db elsewhere: its directory may be readable (a usual /var/lib), not
        // writable.
        let other = d.path().join("var");
        std::fs::create_dir(&other).unwrap();
        std::fs::set_permissions(&other, Permissions::from_mode(0o755)).unwrap();
        assert!(check_places(&root, &other.join("s.db")).unwrap().is_empty());
        std::fs::set_permissions(&other, Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(
            check_places(&root, &other.join("s.db")),
            Err(PrivacyError::OthersCanWrite {
                place: Place::StateDbDir,
                ..
            })
        ));
    }
}
