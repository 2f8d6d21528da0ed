//! Users deleted in Cyrus: a refresh that no longer lists a user marks it vanished
//! (`users.vanished_at`); its store stays, restorable (`restore --user`, into another
//! account with `--as-user`), for `vanished_retention_days`; then `backup-server compact`
//! removes it ([`remove_expired`]) and marks the row removed (`users.removed_at`), never
//! deleting it.
//!
//! A removal is crash-safe: under the user's writer lock (a running backup or compaction
//! holds it: the store is left for the next time) the directory is renamed whole into
//! `<store root>/removing/` (outside the fan-out, so no reader, verify or compaction takes
//! it for a store), then deleted, then the row marked. A kill leaves either the store as it
//! was, or a directory under `removing/` that the next removal deletes first; a store gone
//! whose row is not yet marked is marked by the next removal.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::state::{StateDb, StateError};
use crate::store::{MoveError, StoreError, UserDir};

/// Directory under the store root where stores being removed wait for their deletion.
pub const REMOVING_DIR: &str = "removing";

/// What became of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Removed now.
    Removed,
    /// There was no store left (removed before, its row not yet marked).
    AlreadyGone,
    /// A backup or compaction holds the store: left for the next time.
    Locked,
    /// A dry run: it would be removed.
    WouldRemove,
}

/// One vanished user whose retention is over.
#[derive(Debug)]
pub struct Removal {
    /// The user.
    pub user: String,
    /// When a refresh first no longer listed it.
    pub vanished_at: i64,
    /// What became of its store, or why it could not be removed.
    pub result: Result<RemoveOutcome, MoveError>,
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> MoveError {
    let path = path.to_path_buf();
    move |source| MoveError::Io { path, op, source }
}

/// Removes what an interrupted removal left under `<root>/removing/`.
fn sweep(removing: &Path) -> Result<(), MoveError> {
    let rd = match std::fs::read_dir(removing) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(removing, "listing")(e)),
    };
    for e in rd {
        let p: PathBuf = e.map_err(io(removing, "listing"))?.path();
        std::fs::remove_dir_all(&p).map_err(io(&p, "removing a store being removed"))?;
    }
    Ok(())
}

/// Removes `user`'s store under `root` (see the module docs).
pub fn remove_store(root: &Path, user: &str) -> Result<RemoveOutcome, MoveError> {
    let removing = root.join(REMOVING_DIR);
    sweep(&removing)?;
    let dir = UserDir::new(root, user)?;
    if !dir.exists() {
        return Ok(RemoveOutcome::AlreadyGone);
    }
    let locked = match dir.clone().lock() {
        Ok(l) => l,
        Err(StoreError::Locked { .. }) => return Ok(RemoveOutcome::Locked),
        Err(e) => return Err(e.into()),
    };
    crate::private::create_dir_all(&removing).map_err(io(&removing, "creating"))?;
    let aside = removing.join(hex::encode(Sha1::digest(user.as_bytes())));
    std::fs::rename(dir.path(), &aside).map_err(io(dir.path(), "moving the store aside"))?;
    if let Some(parent) = dir.path().parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent, "syncing the directory"))?;
    }
    drop(locked);
    std::fs::remove_dir_all(&aside).map_err(io(&aside, "removing the store"))?;
    Ok(RemoveOutcome::Removed)
}

/// Removes the stores of users that vanished `retention_days` or more before `now`, and
/// marks their rows removed (`dry_run`: says which it would remove, changes nothing).
pub fn remove_expired(
    root: &Path,
    db: &mut StateDb,
    now: i64,
    retention_days: u32,
    dry_run: bool,
) -> Result<Vec<Removal>, StateError> {
    let cutoff = now.saturating_sub(i64::from(retention_days) * 86_400);
    let mut out = Vec::new();
    for v in db.vanished_before(cutoff)? {
        let result = if dry_run {
            Ok(RemoveOutcome::WouldRemove)
        } else {
            remove_store(root, &v.name)
        };
        if let Ok(RemoveOutcome::Removed | RemoveOutcome::AlreadyGone) = result {
            db.store_removed(&v.name, now)?;
        }
        out.push(Removal {
            user: v.name,
            vanished_at: v.vanished_at,
            result,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    #[test]
    fn a_store_is_removed_whole_and_a_left_over_aside_is_swept() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        drop(Store::open(root, "gone", StoreOptions::default()).unwrap());
        // What a kill after the move aside left of an earlier removal.
        let stale = root.join(REMOVING_DIR).join("x");
        std::fs::create_dir_all(stale.join("y")).unwrap();
        assert_eq!(remove_store(root, "gone").unwrap(), RemoveOutcome::Removed);
        assert!(!UserDir::new(root, "gone").unwrap().exists());
        assert!(!stale.exists());
        assert_eq!(
            std::fs::read_dir(root.join(REMOVING_DIR)).unwrap().count(),
            0
        );
        assert_eq!(
            remove_store(root, "gone").unwrap(),
            RemoveOutcome::AlreadyGone
        );
    }

    #[test]
    fn a_locked_store_is_left() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let s = Store::open(root, "busy", StoreOptions::default()).unwrap();
        assert_eq!(remove_store(root, "busy").unwrap(), RemoveOutcome::Locked);
        drop(s);
        assert!(UserDir::new(root, "busy").unwrap().exists());
    }
}
