//! Quiet users: most users get no mail on most nights, and their backup must cost a listing
//! and one stat, nothing more (docs/store.md, "Quiet users", says why this is safe).
//!
//! A backup that leaves the store with nothing to do for the listing it worked from records
//! a [`QuietKey`] in the state db (`users.quiet_key`): a fingerprint of that listing and a
//! stamp of the store's data file (name, inode, size, mtime, ctime). The next night, if the
//! listing has the same fingerprint and the data file the same stamp, the plan against the
//! store would be empty again: the store is not opened at all. Anything that writes the
//! store changes the data file's stamp; anything that changes the folders changes the
//! listing: either makes the key fail, and the whole backup runs.

use crate::store::{is_data_file_name, UserDir};
use formats::protocol::{UserFileId, UserListing};
use formats::FileStat;
use sha1::{Digest, Sha1};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Version tag of the key's text; a key of another version never matches.
const KEY_VERSION: &str = "k1";

/// What the state db keeps for a quiet user: `k1 <listing fingerprint> <data file stamp>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietKey(String);

impl QuietKey {
    /// The key of a store whose data file is `data_path` and which has nothing to do for
    /// `listing` (the caller knows: the store holds exactly what the listing shows, durably,
    /// and the caller holds the store's lock). `None` if the data file cannot be stat'ed.
    pub fn of(user: &str, listing: &UserListing, data_path: &Path) -> Option<QuietKey> {
        let stamp = data_stamp(data_path).ok()?;
        Some(QuietKey(format!(
            "{KEY_VERSION} {} {stamp}",
            listing_fingerprint(user, listing)
        )))
    }

    /// A key as the state db holds it.
    pub fn from_stored(text: impl Into<String>) -> QuietKey {
        QuietKey(text.into())
    }

    /// The text the state db holds.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the key still holds: the same listing, and the store's data file in `dir`
    /// untouched since the key was made. Then the backup has nothing to do.
    pub fn holds(&self, user: &str, listing: &UserListing, dir: &UserDir) -> bool {
        let key = self.0.as_str();
        let mut parts = key.splitn(4, ' ');
        let (Some(KEY_VERSION), Some(fp), Some(name), Some(_)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        if !is_data_file_name(name) || fp != listing_fingerprint(user, listing) {
            return false;
        }
        let now = data_stamp(&dir.path().join(name));
        now.is_ok_and(|stamp| key.get(KEY_VERSION.len() + fp.len() + 2..) == Some(stamp.as_str()))
    }
}

/// SHA-1 (hex) of everything in `user`'s listing the plan looks at: each folder's name,
/// unique id, partition, UIDVALIDITY and the stat data of its three meta files, in listing
/// order, and each user file's id and stat data. Equal fingerprints mean equal listings.
pub fn listing_fingerprint(user: &str, listing: &UserListing) -> String {
    fn bytes(h: &mut Sha1, b: &[u8]) {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    fn stat(h: &mut Sha1, s: &FileStat) {
        h.update(s.size.to_le_bytes());
        h.update(s.mtime.secs.to_le_bytes());
        h.update(s.mtime.nanos.to_le_bytes());
        h.update(s.inode.to_le_bytes());
    }
    let mut h = Sha1::new();
    bytes(&mut h, b"mailbackup listing 1");
    bytes(&mut h, user.as_bytes());
    h.update((listing.folders.len() as u64).to_le_bytes());
    for f in &listing.folders {
        bytes(&mut h, f.name.as_bytes());
        bytes(&mut h, f.uniqueid.as_bytes());
        bytes(&mut h, f.partition.as_bytes());
        h.update(f.uidvalidity.to_le_bytes());
        stat(&mut h, &f.header);
        stat(&mut h, &f.index);
        match &f.annotations {
            Some(a) => {
                h.update([1]);
                stat(&mut h, a);
            }
            None => h.update([0]),
        }
    }
    h.update((listing.user_files.len() as u64).to_le_bytes());
    for f in &listing.user_files {
        match &f.id {
            UserFileId::Seen => h.update([0]),
            UserFileId::Subscriptions => h.update([1]),
            UserFileId::SieveScript(n) => {
                h.update([2]);
                bytes(&mut h, n.as_bytes());
            }
            UserFileId::SieveActive => h.update([3]),
        }
        stat(&mut h, &f.stat);
    }
    hex::encode(h.finalize())
}

/// The data file's name and lstat data (inode, size, mtime, ctime to the ns): any append,
/// cut, replacement or new data file changes it.
fn data_stamp(data_path: &Path) -> std::io::Result<String> {
    let name = data_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("data file path without a file name"))?;
    let m = std::fs::symlink_metadata(data_path)?;
    Ok(format!(
        "{name} {} {} {}.{} {}.{}",
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}
