//! Message files: `<mailbox directory>/<uid>.`, or the same path under the partition's
//! archive partition for records Cyrus has archived (imap/mailbox.c `mailbox_record_fname`).
//!
//! No lock is taken: Cyrus never changes a message file, it only creates it before the record
//! that names it and unlinks it (expunge cleanup, `cyr_expire`) after the record is flagged.
//! A file that is missing is reported as gone; the caller has the record, which says whether
//! that was to be expected. The caller checks each message against the GUID of its record.

use super::cyrus::Cyrus;
use super::error::{io_err, SpoolError};
use super::files::open_read;
use super::names::{bad_name, check_name, check_uniqueid};
use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where one mailbox's message files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageDirs {
    data: PathBuf,
    archive: Option<PathBuf>,
}

/// (user, unique id).
type Key = (Box<str>, Box<str>);

/// Cached lookups, (user, unique id) → directories.
#[derive(Debug, Default)]
pub(crate) struct DirCache(Mutex<HashMap<Key, Arc<MessageDirs>>>);

/// Entries kept before the cache starts over (a few hundred bytes each).
const CACHE_MAX: usize = 4096;

impl DirCache {
    fn get(&self, user: &str, uniqueid: &str) -> Option<Arc<MessageDirs>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(Box::from(user), Box::from(uniqueid))).cloned()
    }

    fn put(&self, user: &str, uniqueid: &str, dirs: Arc<MessageDirs>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert((user.into(), uniqueid.into()), dirs);
    }
}

/// Looks the mailbox up in the user's list, and caches where its messages are.
fn resolve(
    cyrus: &Cyrus,
    cache: &DirCache,
    user: &str,
    uniqueid: &str,
) -> Result<Arc<MessageDirs>, SpoolError> {
    let mailbox = cyrus
        .live_mailboxes(user)?
        .into_iter()
        .find(|m| &*m.uniqueid == uniqueid)
        .ok_or_else(|| SpoolError::UnknownFolder {
            user: user.into(),
            uniqueid: uniqueid.into(),
        })?;
    let dirs = Arc::new(MessageDirs {
        data: cyrus.layout.data_dir(&mailbox)?,
        archive: cyrus.layout.archive_dir(&mailbox)?,
    });
    cache.put(user, uniqueid, dirs.clone());
    Ok(dirs)
}

/// Opens `<uid>.` in the spool directory, else in the archive one; `None` if in neither.
fn open_in(dirs: &MessageDirs, uid: u32) -> Result<Option<(File, u64)>, SpoolError> {
    let name = format!("{uid}.");
    for dir in std::iter::once(&dirs.data).chain(&dirs.archive) {
        let path = dir.join(&name);
        match open_read(&path) {
            Ok(file) => {
                let meta = file.metadata().map_err(io_err(&path))?;
                if !meta.is_file() {
                    return Err(SpoolError::Io {
                        source: std::io::Error::new(ErrorKind::InvalidData, "not a regular file"),
                        path,
                    });
                }
                return Ok(Some((file, meta.len())));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(SpoolError::Io { path, source }),
        }
    }
    Ok(None)
}

/// See [`Spool::open_message`](super::Spool::open_message); `cache` is the spool's.
pub(crate) fn open_message(
    cyrus: &Cyrus,
    cache: &DirCache,
    user: &str,
    uniqueid: &str,
    uid: u32,
) -> Result<Option<(File, u64)>, SpoolError> {
    check_name("user", user)?;
    check_uniqueid(uniqueid)?;
    if uid == 0 {
        return Err(bad_name("UID", "0", "UIDs start at 1"));
    }
    if let Some(dirs) = cache.get(user, uniqueid) {
        if let Some(found) = open_in(&dirs, uid)? {
            return Ok(Some(found));
        }
        // Missing: gone, or the mailbox moved (partition change) or was deleted since the
        // lookup was cached. Look again before saying "gone".
        let fresh = resolve(cyrus, cache, user, uniqueid)?;
        if fresh == dirs {
            return Ok(None);
        }
        return open_in(&fresh, uid);
    }
    let dirs = resolve(cyrus, cache, user, uniqueid)?;
    open_in(&dirs, uid)
}
