//! `backup-server ls`: what a user's store holds at a point in time, as data: the folders
//! the user had then, or one folder's messages then ([`Listing`]). The binary prints it
//! (`backup-server/src/cli/ls.rs` describes the text).

use crate::point_in_time::{rfc3339, when};
use crate::store::{FolderAt, MessageAt, SnapshotInfo, StoreError, StoreReader};
use formats::Timestamp;

/// What a store held at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Every folder the user had then, by name.
    Folders {
        /// The user.
        user: String,
        /// The point in time (`None`: the newest state).
        at: Option<Timestamp>,
        /// The folders, sorted by name.
        folders: Vec<FolderAt>,
    },
    /// One folder's messages then, expunged ones left out.
    Messages {
        /// The user.
        user: String,
        /// The point in time (`None`: the newest state).
        at: Option<Timestamp>,
        /// The folder's name then.
        folder: String,
        /// Its unique id.
        unique_id: String,
        /// Its snapshot then.
        snapshot: Box<SnapshotInfo>,
        /// Its messages, by UID.
        messages: Vec<MessageAt>,
    },
}

/// Why a listing could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LsError {
    /// The user has no store.
    #[error("user {user}: no backup ({source})")]
    NoBackup {
        /// The user.
        user: String,
        /// The store's answer (naming where the store would be).
        source: Box<StoreError>,
    },
    /// The store does not open.
    #[error("user {user}: opening the store: {source}")]
    Open {
        /// The user.
        user: String,
        /// Why.
        source: Box<StoreError>,
    },
    /// Reading the store failed.
    #[error("user {user}: {source}")]
    Read {
        /// The user.
        user: String,
        /// What failed (naming the file).
        source: Box<StoreError>,
    },
    /// No folder of that name then.
    #[error("user {user}: no folder {folder:?} as of {}", when(*.at))]
    NoFolder {
        /// The user.
        user: String,
        /// The folder asked for.
        folder: String,
        /// The point in time.
        at: Option<Timestamp>,
    },
    /// The folder was named then, but the store holds no snapshot of it of then: a
    /// compaction dropped it (older than the retention).
    #[error("user {user}: folder {folder:?}: its state as of {} is not kept (compacted away){}", when(*.at), oldest_kept_hint(*.oldest_kept))]
    NoSnapshot {
        /// The user.
        user: String,
        /// The folder.
        folder: String,
        /// The point in time.
        at: Option<Timestamp>,
        /// Its oldest snapshot the store holds.
        oldest_kept: Option<Timestamp>,
    },
    /// The point in time is older than the store's first backup: the store holds nothing
    /// of then.
    #[error("user {user}: nothing as of {}: before the oldest backup kept ({}); try --at {} or later", rfc3339(*.at), rfc3339(*.oldest), rfc3339(*.oldest))]
    BeforeOldestBackup {
        /// The user.
        user: String,
        /// The point in time asked for.
        at: Timestamp,
        /// When the first backup kept started.
        oldest: Timestamp,
    },
}

fn oldest_kept_hint(t: Option<Timestamp>) -> String {
    t.map(|t| format!("; its oldest state kept: --at {}", rfc3339(t)))
        .unwrap_or_default()
}

/// The folders of `user`'s store as of `at` (`None`: now), or with `folder` that folder's
/// messages.
pub fn ls(
    store_root: &std::path::Path,
    user: &str,
    folder: Option<&str>,
    at: Option<Timestamp>,
) -> Result<Listing, LsError> {
    let reader = match StoreReader::open(store_root, user) {
        Ok(r) => r,
        Err(source @ StoreError::NoStore { .. }) => {
            return Err(LsError::NoBackup {
                user: user.to_owned(),
                source: Box::new(source),
            })
        }
        Err(source) => {
            return Err(LsError::Open {
                user: user.to_owned(),
                source: Box::new(source),
            })
        }
    };
    let read = |source| LsError::Read {
        user: user.to_owned(),
        source: Box::new(source),
    };
    let cat = reader.catalog();
    // An empty listing would read as "the user had nothing then".
    if let (Some(at), Some(oldest)) = (at, cat.first_backup().map_err(read)?) {
        if at < oldest {
            return Err(LsError::BeforeOldestBackup {
                user: user.to_owned(),
                at,
                oldest,
            });
        }
    }
    let Some(name) = folder else {
        let mut folders = cat.folders_at(at).map_err(read)?;
        folders.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(Listing::Folders {
            user: user.to_owned(),
            at,
            folders,
        });
    };
    let Some(f) = cat.folder_at(name, at).map_err(read)? else {
        return Err(LsError::NoFolder {
            user: user.to_owned(),
            folder: name.to_owned(),
            at,
        });
    };
    let Some(snapshot) = f.snapshot else {
        return Err(LsError::NoSnapshot {
            user: user.to_owned(),
            folder: name.to_owned(),
            at,
            oldest_kept: cat.oldest_snapshot(&f.unique_id).map_err(read)?,
        });
    };
    let mut messages = Vec::new();
    cat.messages_at(&f.unique_id, at, false, |m| {
        messages.push(m);
        Ok(())
    })
    .map_err(read)?;
    Ok(Listing::Messages {
        user: user.to_owned(),
        at,
        folder: f.name,
        unique_id: f.unique_id,
        snapshot: Box::new(snapshot),
        messages,
    })
}
