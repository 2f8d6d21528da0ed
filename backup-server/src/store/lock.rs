//! The user's lock files, taken with flock(2), never waiting.
//!
//! * `lock`: held exclusively by whoever writes the store (a backup run, compaction,
//!   reindex). A second writer gets [`StoreError::Locked`] at once, with what the holder
//!   wrote into the file (its pid and start time), and skips the user.
//! * `readers.lock`: held shared by read-only openers (ls, restore) and exclusively, for
//!   a moment, by whoever replaces the index file (reindex, compaction), so no reader has
//!   the old index open while it is renamed away. A backup run never takes it: appending
//!   does not disturb readers (SQLite's WAL gives them a stable view).
//!
//! flock locks belong to the open file description and vanish with the process, so a
//! crashed run never leaves a stale lock behind: the file stays, the lock does not.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::error::{IoContext, Result, StoreError};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct UserLock {
    path: PathBuf,
    _flock: Flock<File>,
}

impl UserLock {
    /// Takes the exclusive lock on `path` (created if missing) and writes the holder's pid
    /// and the time into it, for the message the next contender gets.
    pub fn exclusive(path: &Path, user: &str) -> Result<UserLock> {
        let mut lock = Self::take(path, user, FlockArg::LockExclusiveNonblock)?;
        lock.write_note();
        Ok(lock)
    }

    /// Writes who holds the lock (`pid N since unix time T`) into the lock file, for the
    /// error another writer shows. Only a diagnostic: a failure to write it does not matter.
    pub fn write_note(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let note = format!("pid {} since unix time {now}\n", std::process::id());
        let f: &mut File = &mut self._flock;
        let _ = f
            .set_len(0)
            .and_then(|()| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(note.as_bytes()));
    }

    /// Takes the exclusive lock on `path` if the file exists, writing nothing (not even
    /// the holder's note): `Ok(None)` when it does not. For a look at the store that must
    /// not coincide with a writer but changes nothing.
    pub fn exclusive_existing(path: &Path, user: &str) -> Result<Option<UserLock>> {
        let file = match OpenOptions::new().read(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).io(path, "opening the lock file"),
        };
        Self::lock_file(file, path, user, FlockArg::LockExclusiveNonblock).map(Some)
    }

    /// Takes the shared lock on `path` (created if missing).
    pub fn shared(path: &Path, user: &str) -> Result<UserLock> {
        Self::take(path, user, FlockArg::LockSharedNonblock)
    }

    fn take(path: &Path, user: &str, how: FlockArg) -> Result<UserLock> {
        // Created 0600 like every store file (crate::private).
        let file = crate::private::open_or_create(path).io(path, "opening the lock file")?;
        Self::lock_file(file, path, user, how)
    }

    fn lock_file(file: File, path: &Path, user: &str, how: FlockArg) -> Result<UserLock> {
        match Flock::lock(file, how) {
            Ok(flock) => Ok(UserLock {
                path: path.to_path_buf(),
                _flock: flock,
            }),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "holder unknown".to_owned(),
                    h => h.chars().take(200).collect(),
                };
                Err(StoreError::Locked {
                    user: user.to_owned(),
                    path: path.to_path_buf(),
                    holder,
                })
            }
            Err((_, errno)) => Err(StoreError::Io {
                path: path.to_path_buf(),
                op: "locking",
                source: errno.into(),
            }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_is_refused_then_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let a = UserLock::exclusive(&p, "u").unwrap();
        match UserLock::exclusive(&p, "u") {
            Err(StoreError::Locked { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(UserLock::shared(&p, "u").is_err());
        assert!(matches!(
            UserLock::exclusive_existing(&p, "u"),
            Err(StoreError::Locked { .. })
        ));
        drop(a);
        let b = UserLock::exclusive_existing(&p, "u").unwrap().unwrap();
        assert!(UserLock::exclusive(&p, "u").is_err());
        drop(b);
        let _c = UserLock::exclusive(&p, "u").unwrap();
        assert!(UserLock::exclusive_existing(&dir.path().join("none"), "u")
            .unwrap()
            .is_none());
        assert!(!dir.path().join("none").exists());
    }

    #[test]
    fn shared_locks_coexist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("readers.lock");
        let _a = UserLock::shared(&p, "u").unwrap();
        let _b = UserLock::shared(&p, "u").unwrap();
        assert!(UserLock::exclusive(&p, "u").is_err());
    }
}
