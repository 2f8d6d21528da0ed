//! What can go wrong in a restore: [`RestoreError`] (choosing what to restore, reading the
//! store, writing the target) and [`TargetError`] (a `--to` that names no target).

use std::io;
use std::path::PathBuf;

use formats::{Guid, Timestamp};

use super::cyrus::CyrusError;
use super::imap::{ImapError, ImapUrlError};
use crate::point_in_time::when;
use crate::store::{MessageState, StoreError};

/// Why a restore failed. Each names what it concerns: the user, folder, UID or message,
/// the file written.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A UID without the folder it is a UID of.
    #[error("--uid needs --folder")]
    UidNeedsFolder,
    /// Both a UID and a GUID.
    #[error("--uid and --guid exclude each other")]
    UidAndGuid,
    /// The user's store does not open.
    #[error("user {user}: opening the store: {source}")]
    OpenStore {
        /// The user.
        user: String,
        /// Why.
        source: Box<StoreError>,
    },
    /// Reading the store failed (the error names the file).
    #[error(transparent)]
    Store(Box<StoreError>),
    /// A message asked for by GUID alone is not in the store.
    #[error("user {user}: message {} is not stored", .guid.to_hex())]
    NotStored {
        /// The user.
        user: String,
        /// The message.
        guid: Guid,
    },
    /// The folder had no such UID then.
    #[error("folder {folder:?}: no UID {uid} as of {}", when(*.at))]
    NoUid {
        /// The folder.
        folder: String,
        /// The UID.
        uid: u32,
        /// The point in time.
        at: Option<Timestamp>,
    },
    /// The UID was expunged (or gone) by then and expunged mail was not asked for.
    #[error("folder {folder:?}: UID {uid} was {} as of {} (--include-expunged restores it)", expunged_or_gone(*.state), when(*.at))]
    NotVisible {
        /// The folder.
        folder: String,
        /// The UID.
        uid: u32,
        /// The point in time.
        at: Option<Timestamp>,
        /// Expunged or gone.
        state: MessageState,
    },
    /// The folder held no message with that GUID then.
    #[error("folder {folder:?}: no message {} as of {}", .guid.to_hex(), when(*.at))]
    NoMessage {
        /// The folder.
        folder: String,
        /// The message.
        guid: Guid,
        /// The point in time.
        at: Option<Timestamp>,
    },
    /// No folder of that name then.
    #[error("no folder {folder:?} as of {}{}", when(*.at), compacted_hint(*.compacted_on))]
    NoFolder {
        /// The folder.
        folder: String,
        /// The point in time.
        at: Option<Timestamp>,
        /// When the store was compacted, if after `at`: the folder may have been deleted
        /// (or renamed) longer ago than the retention then, and dropped.
        compacted_on: Option<Timestamp>,
    },
    /// Neither the folder nor any subfolder of it then.
    #[error("no folder {folder:?} nor subfolders of it as of {}{}", when(*.at), compacted_hint(*.compacted_on))]
    NoFolderTree {
        /// The folder.
        folder: String,
        /// The point in time.
        at: Option<Timestamp>,
        /// As in [`RestoreError::NoFolder`].
        compacted_on: Option<Timestamp>,
    },
    /// A message a record names is not in the store.
    #[error("message {} is not stored", .guid.to_hex())]
    MessageGone {
        /// The message.
        guid: Guid,
    },
    /// A message's bytes could not be read from the store.
    #[error("reading the message: {source}")]
    ReadMessage {
        /// The message.
        guid: Guid,
        /// Why.
        source: io::Error,
    },
    /// A message's stored bytes do not hash to its GUID.
    #[error("message {}: the stored bytes do not hash to their GUID (run verify)", .guid.to_hex())]
    WrongHash {
        /// The message.
        guid: Guid,
    },
    /// A message's stored bytes do not hash to its GUID, seen while the target wrote it:
    /// it was taken out again.
    #[error("message {}: the stored bytes hash to {}, not to their GUID (run verify); not written", .guid.to_hex(), .sha1.to_hex())]
    NotWritten {
        /// The message.
        guid: Guid,
        /// The SHA-1 of the bytes read.
        sha1: Guid,
    },
    /// A directory of the target could not be made.
    #[error("creating directory {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file the restore would write exists (a restore never overwrites).
    #[error("{} exists already", .path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be created.
    #[error("creating {}: {source}", .path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("writing {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A written message could not be renamed into place.
    #[error("renaming to {}: {source}", .path.display())]
    Rename {
        /// The name it was to get.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be synced to disk.
    #[error("syncing {}: {source}", .path.display())]
    Sync {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A symbolic link where the restore would create or enter something: never followed.
    #[error("{} is a symbolic link: a restore never writes through one (remove it, or restore into a new directory)", .path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a directory where the restore needs one.
    #[error("{} is not a directory (remove it, or restore into a new directory)", .path.display())]
    NotADirectory {
        /// What is there.
        path: PathBuf,
    },
    /// Something other than a regular file where the restore expects one (a FIFO, a
    /// device).
    #[error("{} is not a regular file (remove it, or restore into a new directory)", .path.display())]
    NotAFile {
        /// What is there.
        path: PathBuf,
    },
    /// A name that is not one path component (a bug: names are made safe first).
    #[error("{}: not a single file name", .path.display())]
    BadName {
        /// The path it would make.
        path: PathBuf,
    },
    /// A created file's mode or owner could not be set.
    #[error("setting the mode and owner of {}: {source}", .path.display())]
    Own {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `--owner` names no local user.
    #[error("--owner {name}: no such local user{}", .source.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    NoSuchOwner {
        /// The name given.
        name: String,
        /// Why the lookup failed, when it did.
        source: Option<io::Error>,
    },
    /// `--owner` with a target that writes no local files.
    #[error("--owner is for maildir:, mbox: and eml: targets")]
    OwnerNotLocal,
    /// A target was handed a message before any folder (a bug of the driver).
    #[error("a message before its folder")]
    NoFolderYet,
    /// A damaged message could not be cut off the mbox it was written to.
    #[error("{}: cutting a damaged message off failed: {cut}: {original}", .path.display())]
    CutFailed {
        /// The mbox file.
        path: PathBuf,
        /// Why the cut failed.
        cut: io::Error,
        /// Why the message had to go.
        #[source]
        original: Box<RestoreError>,
    },
    /// The IMAP target failed.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// The Cyrus target failed.
    #[error(transparent)]
    Cyrus(#[from] CyrusError),
    /// A message larger than a target takes.
    #[error("message {}: {size} bytes, more than the {limit} this target takes", .guid.to_hex())]
    TooLarge {
        /// The message.
        guid: Guid,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
}

impl From<StoreError> for RestoreError {
    fn from(e: StoreError) -> Self {
        RestoreError::Store(Box::new(e))
    }
}

/// A folder missing as of a time before the store's last compaction may be one it dropped.
fn compacted_hint(on: Option<Timestamp>) -> String {
    on.map(|t| {
        format!(
            " (the store was compacted on {}: a folder deleted or renamed longer ago than the \
             retention then is no longer kept)",
            crate::point_in_time::rfc3339(t)
        )
    })
    .unwrap_or_default()
}

fn expunged_or_gone(state: MessageState) -> &'static str {
    if state == MessageState::Expunged {
        "expunged"
    } else {
        "gone"
    }
}

/// A `--to` that names no restore target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No `KIND:` prefix.
    #[error("expected maildir:DIR, mbox:FILE, eml:DIR, imap://ADMIN@HOST:PORT/ or cyrus://ADMIN@HOST:PORT, found {0:?}")]
    NoKind(String),
    /// Nothing after `KIND:`.
    #[error("expected a path after {0}:, found none")]
    NoPath(String),
    /// A kind that is not one of ours.
    #[error(
        "expected a target kind maildir, mbox, eml, imap or cyrus, found {kind:?} in {found:?}"
    )]
    UnknownKind {
        /// The kind given.
        kind: String,
        /// The whole `--to`.
        found: String,
    },
    /// An `imap://` URL that does not parse.
    #[error(transparent)]
    Imap(#[from] ImapUrlError),
}
