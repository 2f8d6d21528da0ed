//! A store following its user to a new name (a user renamed in Cyrus, or a deleted user's
//! store kept aside when the name is taken again): the directory is moved and the index
//! told its new user, crash-safe (docs/store.md, "A store changing its name").
//!
//! 1. Under the writer lock of the old directory, the old name is appended to its
//!    `former-names` file (fsynced): the run markers in the data file keep naming the user
//!    that wrote them, and a reindex, repair or compaction, which rebuilds the index from
//!    the data file, accepts runs of a former name only because this file lists it.
//! 2. One `rename(2)` of the directory to the new name's place (parents made 0700 first;
//!    both parents fsynced): the store is under exactly one name at every instant.
//! 3. Under the writer lock at the new place, the index's `store.user` is changed from the
//!    old name to the new one (one SQLite transaction).
//!
//! A kill between 2 and 3 leaves the directory at its new place with an index naming the
//! old user (which no open accepts); [`move_store`] run again (the caller records the move
//! before it starts and clears it after) finds it there and finishes step 3. The caller
//! makes sure nobody backs the new name up before the move is done.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension;

use super::error::StoreError;
use super::layout::{UserDir, INDEX_FILE, LOCK_FILE, READERS_LOCK_FILE};

/// File in a store directory listing the names the store had before, each followed by a
/// NUL byte (user names hold none).
pub const FORMER_NAMES_FILE: &str = "former-names";

/// Why a store could not be moved to its new name.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Opening, locking or reading a store failed (a backup holding the lock among them:
    /// the move is tried again at the next refresh).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file system refused.
    #[error("{path}: {op}: {source}", path = .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// What the system said.
        source: std::io::Error,
    },
    /// The new name already has a store of its own: nothing is overwritten.
    #[error("moving the store of {from:?} to {to:?}: {dir} already holds a store; move or remove one of them by hand, then run users refresh", dir = .dir.display())]
    Occupied {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
        /// The new name's directory.
        dir: PathBuf,
    },
    /// The index at the new place names a third user.
    #[error("{index}: a store of {found:?}, expected one of {from:?} or {to:?}", index = .index.display())]
    Foreign {
        /// The index.
        index: PathBuf,
        /// The user it names.
        found: String,
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
}

/// What [`move_store`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The store was moved (or a move interrupted earlier was finished).
    Moved,
    /// Already under the new name: nothing to do.
    AlreadyThere,
    /// No store under either name (the user had never been backed up).
    NoStore,
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> MoveError {
    let path = path.to_path_buf();
    move |source| MoveError::Io { path, op, source }
}

fn sync_dir(dir: &Path) -> Result<(), MoveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "syncing the directory"))
}

/// Whether the directory holds a store (an index or a data file), as opposed to nothing or
/// only lock files.
fn holds_store(dir: &UserDir) -> Result<bool, MoveError> {
    Ok(dir.index_path().exists() || !dir.data_files()?.is_empty())
}

/// Moves the store of `from` under `root` to the name `to` (see the module docs). Run
/// again after a crash, it finishes what was begun.
pub fn move_store(root: &Path, from: &str, to: &str) -> Result<MoveOutcome, MoveError> {
    let src = UserDir::new(root, from)?;
    let dst = UserDir::new(root, to)?;
    let mut outcome = MoveOutcome::AlreadyThere;
    if src.exists() && holds_store(&src)? {
        if dst.exists() && holds_store(&dst)? {
            return Err(MoveError::Occupied {
                from: from.to_owned(),
                to: to.to_owned(),
                dir: dst.path().to_path_buf(),
            });
        }
        let locked = src.clone().lock()?;
        if dst.exists() {
            // Lock files only (a lock taken under the new name before the move was known).
            for f in [LOCK_FILE, READERS_LOCK_FILE] {
                match std::fs::remove_file(dst.file(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&dst.file(f), "removing a leftover lock file")(e))
                    }
                    _ => {}
                }
            }
            std::fs::remove_dir(dst.path())
                .map_err(io(dst.path(), "removing an empty store directory"))?;
        }
        let names = src.file(FORMER_NAMES_FILE);
        let mut f = crate::private::open_or_create(&names).map_err(io(&names, "opening"))?;
        let mut rec = from.as_bytes().to_vec();
        rec.push(0);
        std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).map_err(io(&names, "seeking"))?;
        f.write_all(&rec).map_err(io(&names, "writing"))?;
        f.sync_all().map_err(io(&names, "syncing"))?;
        let parent = dst.path().parent().unwrap_or(root);
        crate::private::create_dir_all(parent).map_err(io(parent, "creating the directory"))?;
        std::fs::rename(src.path(), dst.path())
            .map_err(io(src.path(), "renaming the store directory"))?;
        sync_dir(parent)?;
        sync_dir(src.path().parent().unwrap_or(root))?;
        drop(locked);
        outcome = MoveOutcome::Moved;
    }
    if !dst.exists() || !dst.index_path().exists() {
        return Ok(if outcome == MoveOutcome::Moved {
            outcome
        } else {
            MoveOutcome::NoStore
        });
    }
    let _locked = dst.clone().lock()?;
    let index = dst.file(INDEX_FILE);
    let sql = |source| StoreError::Sqlite {
        path: index.clone(),
        source,
    };
    let conn = rusqlite::Connection::open(&index).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(60))
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    let found: Option<String> = conn
        .query_row("SELECT user FROM store WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    match found {
        Some(u) if u == to => Ok(outcome),
        Some(u) if u == from => {
            conn.execute(
                "UPDATE store SET user = ?1 WHERE id = 1 AND user = ?2",
                [to, from],
            )
            .map_err(sql)?;
            Ok(MoveOutcome::Moved)
        }
        Some(found) => Err(MoveError::Foreign {
            index: index.clone(),
            found,
            from: from.to_owned(),
            to: to.to_owned(),
        }),
        None => Ok(outcome),
    }
}

/// The names the store in `dir` had before (empty when it never changed its name).
pub(crate) fn former_names(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read(dir.join(FORMER_NAMES_FILE)) {
        Ok(b) => Ok(b
            .split(|&c| c == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions, StoreReader};

    #[test]
    fn a_store_moves_once_and_a_second_call_does_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        drop(Store::open(root, "a", StoreOptions::default()).unwrap());
        assert_eq!(move_store(root, "a", "b").unwrap(), MoveOutcome::Moved);
        assert!(!UserDir::new(root, "a").unwrap().exists());
        let r = StoreReader::open(root, "b").unwrap();
        assert_eq!(r.catalog().user(), "b");
        assert_eq!(
            former_names(UserDir::new(root, "b").unwrap().path()).unwrap(),
            vec!["a".to_owned()]
        );
        assert_eq!(
            move_store(root, "a", "b").unwrap(),
            MoveOutcome::AlreadyThere
        );
        assert_eq!(move_store(root, "x", "y").unwrap(), MoveOutcome::NoStore);
    }

    #[test]
    fn a_move_cut_after_the_rename_is_finished_by_the_next_call() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        drop(Store::open(root, "a", StoreOptions::default()).unwrap());
        let (src, dst) = (
            UserDir::new(root, "a").unwrap(),
            UserDir::new(root, "b").unwrap(),
        );
        // What a kill between step 2 and 3 leaves: moved, index still naming a.
        std::fs::write(src.file(FORMER_NAMES_FILE), b"a\0").unwrap();
        crate::private::create_dir_all(dst.path().parent().unwrap()).unwrap();
        std::fs::rename(src.path(), dst.path()).unwrap();
        assert!(
            StoreReader::open(root, "b").is_err(),
            "the index still names a"
        );
        assert_eq!(move_store(root, "a", "b").unwrap(), MoveOutcome::Moved);
        assert_eq!(StoreReader::open(root, "b").unwrap().catalog().user(), "b");
    }

    #[test]
    fn a_move_cut_before_the_rename_or_after_the_index_is_finished_or_done() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        drop(Store::open(root, "a", StoreOptions::default()).unwrap());
        // Cut after step 1: former-names written, nothing moved; the record is repeated.
        std::fs::write(
            UserDir::new(root, "a").unwrap().file(FORMER_NAMES_FILE),
            b"a\0",
        )
        .unwrap();
        assert_eq!(move_store(root, "a", "b").unwrap(), MoveOutcome::Moved);
        let dir = UserDir::new(root, "b").unwrap();
        assert_eq!(
            former_names(dir.path()).unwrap(),
            vec!["a".to_owned(), "a".to_owned()]
        );
        // Cut after step 3 (the state db not yet told): nothing left to do.
        assert_eq!(
            move_store(root, "a", "b").unwrap(),
            MoveOutcome::AlreadyThere
        );
        assert_eq!(StoreReader::open(root, "b").unwrap().catalog().user(), "b");
    }

    #[test]
    fn an_occupied_name_is_never_overwritten() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        drop(Store::open(root, "a", StoreOptions::default()).unwrap());
        drop(Store::open(root, "b", StoreOptions::default()).unwrap());
        let e = move_store(root, "a", "b").unwrap_err();
        assert!(matches!(e, MoveError::Occupied { .. }), "{e}");
        assert_eq!(StoreReader::open(root, "a").unwrap().catalog().user(), "a");
        assert_eq!(StoreReader::open(root, "b").unwrap().catalog().user(), "b");
    }
}
