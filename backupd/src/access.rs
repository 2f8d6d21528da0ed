//! What the daemon reads from the spool for one request, as plain data: the contract between
//! the spool side (Cyrus's files and locks) and the protocol side (frames on the wire).
//! Nothing here does I/O; [`crate::spool`] and its submodules fill these types.

use formats::FileStat;

/// One user, for the feeders of the backup host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The Cyrus user id (`alice`, or `alice@example.com` with virtual domains).
    pub user: String,
    /// The partition of the user's INBOX (where the feeders assign RAID sets).
    pub partition: String,
}

/// One folder of a user as the folder listing reports it: identity plus the stat data of its
/// meta files, taken with stat() alone (no message file is touched, no lock is taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStat {
    /// The folder as its owner sees it: `INBOX`, `Work/Sub`.
    pub name: String,
    /// The mailbox unique id (the stable identity: a rename keeps it).
    pub uniqueid: String,
    /// The Cyrus partition.
    pub partition: String,
    /// UIDVALIDITY from mailboxes.db.
    pub uidvalidity: u32,
    /// cyrus.header.
    pub header: FileStat,
    /// cyrus.index.
    pub index: FileStat,
    /// cyrus.annotations, where it exists.
    pub annotations: Option<FileStat>,
}

/// Which per-user file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserFileId {
    /// The user's seen state for other users' mailboxes (seen.db), where it exists.
    Seen,
    /// Subscriptions (sub.db).
    Subscriptions,
    /// One sieve script by name (its source).
    SieveScript(String),
    /// Which sieve script is active: its name as bytes (the target of `defaultbc`). Not
    /// listed, and read as absent, when no script is active.
    SieveActive,
}

/// A per-user file's stat data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFileStat {
    /// Which file.
    pub id: UserFileId,
    /// Its stat data (for the backup host's change detection).
    pub stat: FileStat,
}

/// Everything the folder listing returns for one user, in one reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserListing {
    /// The user's folders (delayed-deleted and hidden ones excluded), INBOX first.
    pub folders: Vec<FolderStat>,
    /// Seen state, subscriptions, sieve scripts.
    pub user_files: Vec<UserFileStat>,
}

/// A folder's meta files, copied whole while holding the locks Cyrus takes to change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCopy {
    /// The unique id the copy was made for.
    pub uniqueid: String,
    /// cyrus.header bytes and stat data.
    pub header: (Vec<u8>, FileStat),
    /// cyrus.index bytes and stat data.
    pub index: (Vec<u8>, FileStat),
    /// cyrus.annotations bytes and stat data, where it exists.
    pub annotations: Option<(Vec<u8>, FileStat)>,
}
