//! One user's backup: DESIGN.md, "Per-user backup, step by step".
//!
//! Split in two so the decisions can be tested without a server:
//!
//! * [`plan`] (pure): from backupd's listing and what the store holds, which folders are
//!   unchanged, renamed (a name link, no data), to copy (new, changed or revived), which
//!   held folders vanished (tombstones), which user files to fetch. A folder is unchanged
//!   when the stat data (size, mtime, inode) of cyrus.header, cyrus.index and
//!   cyrus.annotations, and its partition, equal those of the store's newest snapshot of
//!   the same unique id.
//! * [`messages_to_fetch`] (pure): from a copied cyrus.index, the UIDs whose GUIDs the store
//!   lacks, one UID per GUID.
//! * [`backup_user`] carries a plan out over one connection: one folder listing, meta copies
//!   pipelined in bounded windows, one message fetch per changed folder streamed straight
//!   into the store (each message checked against its GUID by the store), one commit.
//!   An empty plan commits nothing: no run, no byte, no fsync.
//! * [`unchanged_key`] / [`listing_unchanged`]: what a backup that leaves nothing to do
//!   records in the state db, and the check that lets the next run skip the store while
//!   the listing and the store's data file stay the same (docs/store.md, "Quiet users").
//!
//! Complete or partial: the run is committed [`RunEnd::Complete`] when every folder was
//! backed up whole; otherwise [`RunEnd::Partial`] with the reasons in
//! [`UserOutcome::incomplete`]. A partial run keeps everything it stored (messages, the
//! snapshots of the folders that were whole) but has no end marker, so its tombstones do
//! not take effect and the store's last complete run stays the previous one; the next run
//! redoes what is missing (the folders left out still differ from the store). A folder with
//! a live message that could not be fetched (read error, GUID mismatch) keeps its previous
//! snapshot: the store never shows a record whose message it lacks. A message the server
//! reports gone was expunged after the meta copy: the folder's meta is copied again (at
//! most twice) so that the snapshot shows it expunged; that is not an error.

use crate::client::{Client, ClientError, Fetched, Pending};
use crate::store::{
    Catalog, FolderSnapshot, HeldFolder, HeldUserFile, LockedDir, MessageInfo, MetaFileData,
    RunEnd, RunWriter, StoreError, StoreOptions, UserDir,
};
use formats::archive::UserFileKind;
use formats::cyrus::index::Index;
use formats::protocol::ErrorCode;
use formats::protocol::{FolderStat, MetaCopy, UserFile, UserFileId, UserListing};
use formats::{FileStat, Guid, Timestamp};
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Meta copies sent before their replies are read: at most this many...
const META_WINDOW: usize = 16;
/// ...and at most about this many bytes of cyrus.index (by the listing's stat sizes), so
/// the copies held at once stay bounded whatever the user's folders.
const META_WINDOW_BYTES: u64 = 32 * 1024 * 1024;
/// How often a folder's meta is copied again when live messages vanished meanwhile.
const GONE_RETRIES: u32 = 2;

/// Where and how one user is backed up (built by the scheduler from the config).
#[derive(Debug, Clone, Copy)]
pub struct UserJob<'a> {
    /// The Cyrus user id.
    pub user: &'a str,
    /// The root of the per-user stores.
    pub store_root: &'a Path,
    /// How the store writes.
    pub store_options: &'a StoreOptions,
}

/// What one user's backup did (summed by the scheduler for the run summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOutcome {
    /// Folders in the listing.
    pub folders: u64,
    /// Folders whose meta files were copied (new, changed, or revived).
    pub folders_changed: u64,
    /// Folders whose name changed (with or without other changes).
    pub folders_renamed: u64,
    /// Folders gone from the listing (tombstones written).
    pub folders_deleted: u64,
    /// COPY_META requests sent (retries included).
    pub meta_copies: u64,
    /// Messages received from backupd.
    pub messages_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
    /// Messages new to the store.
    pub messages_stored: u64,
    /// Their bytes.
    pub bytes_stored: u64,
    /// Messages backupd answered "gone" for (expunged since the meta copy).
    pub messages_gone: u64,
    /// Per-user files stored.
    pub user_files_stored: u64,
    /// Some messages or folders could not be backed up (the run continues; exit status 2).
    pub incomplete: Vec<String>,
    /// The store was not even opened: the listing and the store's data file matched the
    /// unchanged key the state db held ([`listing_unchanged`]).
    pub store_untouched: bool,
    /// What the state db should now hold as the user's unchanged key: set when the store,
    /// as left (durable) by this backup, has nothing to do for this listing; `None` clears
    /// it.
    pub unchanged_key: Option<String>,
}

/// Why a user's backup did not happen or failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Another run holds the user's lock: skipped, not failed.
    #[error("user {user}: skipped, locked by another run ({holder})")]
    Locked {
        /// The user.
        user: String,
        /// Who holds the lock.
        holder: String,
    },
    /// The connection to backupd failed (the worker reconnects for the next user).
    #[error("user {user}: backupd {server}: {source}")]
    Connection {
        /// The user.
        user: String,
        /// The server's address.
        server: String,
        /// What failed.
        #[source]
        source: ClientError,
    },
    /// Anything else, naming user and what failed.
    #[error("user {user}: {message}")]
    Failed {
        /// The user.
        user: String,
        /// What failed.
        message: String,
    },
}

// ---------------------------------------------------------------- the plan (pure)

/// Why a folder's meta files are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyReason {
    /// The store has never held this unique id (or holds no snapshot of it).
    New,
    /// Its stat data (or partition) differ from the store's newest snapshot.
    Changed,
    /// The store holds it as deleted, and it is back.
    Revived,
}

/// What to do with one listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderAction {
    /// Same stat data, same name: nothing.
    Unchanged,
    /// Same stat data, new name: a name link only (`from` is the name the store has).
    Rename {
        /// The store's name.
        from: String,
    },
    /// Copy the meta files, fetch the messages the store lacks, store a snapshot.
    Copy {
        /// Why.
        reason: CopyReason,
        /// The store's name when it differs from the listing's (a rename with changes).
        renamed_from: Option<String>,
    },
}

/// One listed folder's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStep {
    /// Position in [`UserListing::folders`].
    pub index: usize,
    /// What to do.
    pub action: FolderAction,
}

/// What a user's backup will do, decided from the listing and the store alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// One step per listed folder, in listing order (a unique id listed twice: the first).
    pub folders: Vec<FolderStep>,
    /// Unique ids of live folders the store holds that the listing lacks.
    pub tombstones: Vec<String>,
    /// User files whose stat data changed (or that are new).
    pub user_files: Vec<UserFileId>,
}

impl Plan {
    /// Whether the plan does nothing at all: every folder unchanged, no tombstone, no user
    /// file. Such a backup writes nothing to the store (no run is recorded).
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
            && self.user_files.is_empty()
            && self
                .folders
                .iter()
                .all(|s| s.action == FolderAction::Unchanged)
    }

    /// Steps that copy meta files.
    pub fn copies(&self) -> impl Iterator<Item = &FolderStep> {
        self.folders
            .iter()
            .filter(|s| matches!(s.action, FolderAction::Copy { .. }))
    }
}

/// Whether the store's newest snapshot of a folder has exactly the listed stat data.
pub fn stat_matches(held: &HeldFolder, f: &FolderStat) -> bool {
    let Some(s) = &held.snapshot else {
        return false;
    };
    s.header == Some(f.header)
        && s.index == Some(f.index)
        && s.annotations == f.annotations
        && s.partition.as_deref() == Some(f.partition.as_str())
}

/// Decides every folder's step and the user files to fetch (see the module header).
pub fn plan(listing: &UserListing, held: &[HeldFolder], held_files: &[HeldUserFile]) -> Plan {
    let by_id: HashMap<&str, &HeldFolder> =
        held.iter().map(|h| (h.unique_id.as_str(), h)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut folders = Vec::with_capacity(listing.folders.len());
    for (index, f) in listing.folders.iter().enumerate() {
        if !seen.insert(f.uniqueid.as_str()) {
            continue;
        }
        let action = match by_id.get(f.uniqueid.as_str()) {
            None => FolderAction::Copy {
                reason: CopyReason::New,
                renamed_from: None,
            },
            Some(h) => {
                let renamed_from = (h.name != f.name).then(|| h.name.clone());
                if h.deleted {
                    FolderAction::Copy {
                        reason: CopyReason::Revived,
                        renamed_from,
                    }
                } else if h.snapshot.is_none() {
                    FolderAction::Copy {
                        reason: CopyReason::New,
                        renamed_from,
                    }
                } else if !stat_matches(h, f) {
                    FolderAction::Copy {
                        reason: CopyReason::Changed,
                        renamed_from,
                    }
                } else if let Some(from) = renamed_from {
                    FolderAction::Rename { from }
                } else {
                    FolderAction::Unchanged
                }
            }
        };
        folders.push(FolderStep { index, action });
    }
    let tombstones = held
        .iter()
        .filter(|h| !h.deleted && !seen.contains(h.unique_id.as_str()))
        .map(|h| h.unique_id.clone())
        .collect();
    Plan {
        folders,
        tombstones,
        user_files: plan_user_files(listing, held_files),
    }
}

/// The store's kind (without the active flag) for a listed user file; `None` for the
/// "active script" pseudo-file, which the store keeps as a flag on the script.
fn kind_key(id: &UserFileId) -> Option<(&'static str, &str)> {
    match id {
        UserFileId::Seen => Some(("seen", "")),
        UserFileId::Subscriptions => Some(("subscriptions", "")),
        UserFileId::SieveScript(n) => Some(("sieve", n.as_str())),
        UserFileId::SieveActive => None,
    }
}

fn held_key(k: &UserFileKind) -> (&'static str, &str) {
    match k {
        UserFileKind::Seen => ("seen", ""),
        UserFileKind::Subscriptions => ("subscriptions", ""),
        UserFileKind::Sieve { name, .. } => ("sieve", name.as_str()),
    }
}

/// User files to fetch: those whose stat data differ from the store's newest copy. The
/// active sieve script is asked for too whenever it may have changed: a script is fetched,
/// the store's idea of "some script is active" disagrees with the listing, or the active
/// link was changed after the store's newest sieve copy (activating another script changes
/// no script file). The scripts whose active flag then differs are fetched again by
/// [`backup_user`].
pub fn plan_user_files(listing: &UserListing, held_files: &[HeldUserFile]) -> Vec<UserFileId> {
    let held: HashMap<(&str, &str), &HeldUserFile> =
        held_files.iter().map(|h| (held_key(&h.kind), h)).collect();
    let mut out = Vec::new();
    let mut active_stat = None;
    for f in &listing.user_files {
        match kind_key(&f.id) {
            Some(key) => {
                if held.get(&key).and_then(|h| h.stat) != Some(f.stat) {
                    out.push(f.id.clone());
                }
            }
            None => active_stat = Some(f.stat),
        }
    }
    let listed_scripts: HashSet<&str> = listing
        .user_files
        .iter()
        .filter_map(|f| match &f.id {
            UserFileId::SieveScript(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let held_active = held_files.iter().any(|h| {
        matches!(&h.kind, UserFileKind::Sieve { name, active: true } if listed_scripts.contains(name.as_str()))
    });
    let newest_sieve = held_files
        .iter()
        .filter(|h| matches!(h.kind, UserFileKind::Sieve { .. }))
        .map(|h| h.time)
        .max();
    let script_fetched = out
        .iter()
        .any(|id| matches!(id, UserFileId::SieveScript(_)));
    let active_changed = match (active_stat, newest_sieve) {
        (Some(s), Some(t)) => s.mtime >= t,
        _ => false,
    };
    if (script_fetched || held_active != active_stat.is_some() || active_changed)
        && !listed_scripts.is_empty()
    {
        out.push(UserFileId::SieveActive);
    }
    out
}

// ---------------------------------------------------------------- quiet users

/// Version tag of [`unchanged_key`]'s text; a key of another version never matches.
const KEY_VERSION: &str = "k1";

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

/// The unchanged key of a store whose data file is `data_path` and which has nothing to
/// do for `listing` (the caller knows: its plan was empty against the store's durable
/// state, and the caller holds the writer lock). `None` if the data file cannot be stat'ed.
/// docs/store.md, "Quiet users", says why a later match lets a run skip the store.
pub fn unchanged_key(user: &str, listing: &UserListing, data_path: &Path) -> Option<String> {
    let stamp = data_stamp(data_path).ok()?;
    Some(format!(
        "{KEY_VERSION} {} {stamp}",
        listing_fingerprint(user, listing)
    ))
}

/// Whether `key` (recorded by [`unchanged_key`]) still holds: the same listing, and the
/// store's data file in `dir` untouched since. Then the plan against the store would be
/// empty again and the backup writes nothing: the store need not be opened.
pub fn listing_unchanged(key: &str, user: &str, listing: &UserListing, dir: &UserDir) -> bool {
    let mut parts = key.splitn(4, ' ');
    let (Some(KEY_VERSION), Some(fp), Some(name), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if !crate::store::is_data_file_name(name) || fp != listing_fingerprint(user, listing) {
        return false;
    }
    let now = data_stamp(&dir.path().join(name));
    now.is_ok_and(|stamp| key.get(KEY_VERSION.len() + fp.len() + 2..) == Some(stamp.as_str()))
}

/// One message to fetch from a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Its UID.
    pub uid: u32,
    /// Its GUID (the SHA-1 its bytes must have).
    pub guid: Guid,
    /// IMAP INTERNALDATE.
    pub internal_date: Timestamp,
    /// Whether the record is expunged (then "gone" is expected, not an error).
    pub expunged: bool,
}

/// The live records asked for that backupd's reply did not mention at all (neither bytes nor
/// "gone"), in UID order. A reply that skips a UID must not let the folder's snapshot be stored
/// with a live record whose message the store lacks.
pub fn unanswered_live(wanted: &[Wanted], answered: &HashSet<u32>) -> Vec<u32> {
    wanted
        .iter()
        .filter(|w| !w.expunged && !answered.contains(&w.uid))
        .map(|w| w.uid)
        .collect()
}

/// The records of a cyrus.index whose message the store lacks (`held(guid)` false), one
/// per GUID (a live record's UID preferred over an expunged one's), in UID order. Records
/// without a GUID and records whose file Cyrus has already unlinked are skipped; the
/// former are returned as the second value (they cannot be checked, so never stored).
pub fn messages_to_fetch(
    index: &[u8],
    mut held: impl FnMut(&Guid) -> Result<bool, StoreError>,
) -> Result<(Vec<Wanted>, Vec<u32>), PlanError> {
    let idx = Index::parse(index).map_err(|e| PlanError::Index(e.to_string()))?;
    let mut by_guid: BTreeMap<Guid, Wanted> = BTreeMap::new();
    let mut no_guid = Vec::new();
    let mut checked: HashMap<Guid, bool> = HashMap::new();
    for r in idx.records() {
        let r = r.map_err(|e| PlanError::Index(e.to_string()))?;
        if r.is_unlinked() {
            continue;
        }
        let guid = match r.guid {
            Some(g) if !g.is_null() => g,
            _ => {
                if !r.is_expunged() {
                    no_guid.push(r.uid);
                }
                continue;
            }
        };
        let have = match checked.get(&guid) {
            Some(h) => *h,
            None => {
                let h = held(&guid).map_err(PlanError::Store)?;
                checked.insert(guid, h);
                h
            }
        };
        if have {
            continue;
        }
        let w = Wanted {
            uid: r.uid,
            guid,
            internal_date: r.internaldate,
            expunged: r.is_expunged(),
        };
        // Keep the first record of a GUID, unless a live one follows an expunged one.
        let replace = by_guid
            .get(&guid)
            .is_none_or(|old| old.expunged && !w.expunged);
        if replace {
            by_guid.insert(guid, w);
        }
    }
    let mut out: Vec<Wanted> = by_guid.into_values().collect();
    out.sort_by_key(|w| w.uid);
    Ok((out, no_guid))
}

/// Why [`messages_to_fetch`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The copied cyrus.index does not parse (the text has the byte offset).
    #[error("cyrus.index: {0}")]
    Index(String),
    /// The store could not answer.
    #[error(transparent)]
    Store(StoreError),
}

// ---------------------------------------------------------------- carrying it out

/// What stops a user's backup part-way.
enum Abort {
    Conn(ClientError),
    Store(String),
}

impl From<ClientError> for Abort {
    fn from(e: ClientError) -> Self {
        Abort::Conn(e)
    }
}

fn store_abort(what: &str) -> impl Fn(StoreError) -> Abort + '_ {
    move |e| Abort::Store(format!("{what}: {e}"))
}

/// Backs up one user over an authenticated connection (the caller owns and reuses it).
pub fn backup_user(job: &UserJob<'_>, conn: &mut Client) -> Result<UserOutcome, BackupError> {
    let user = job.user;
    let failed = |message: String| BackupError::Failed {
        user: user.to_owned(),
        message,
    };
    let server = conn.addr().to_owned();
    let conn_err = |source: ClientError| {
        if source.connection_usable() {
            BackupError::Failed {
                user: user.to_owned(),
                message: source.to_string(),
            }
        } else {
            BackupError::Connection {
                user: user.to_owned(),
                server: server.clone(),
                source,
            }
        }
    };
    // 1. The lock.
    let dir = UserDir::new(job.store_root, user).map_err(|e| failed(e.to_string()))?;
    let locked: LockedDir = match dir.lock() {
        Ok(l) => l,
        Err(StoreError::Locked { holder, .. }) => {
            return Err(BackupError::Locked {
                user: user.to_owned(),
                holder,
            })
        }
        Err(e) => return Err(failed(e.to_string())),
    };
    // 2. Open: an interrupted index switch finished, the torn tail cut.
    let mut store = locked
        .open(job.store_options.clone())
        .map_err(|e| failed(format!("opening the store: {e}")))?;
    // 3. One listing.
    let listing = conn.list_folders(user).map_err(conn_err)?;
    let held = store
        .catalog()
        .held_folders()
        .map_err(|e| failed(e.to_string()))?;
    let held_files = store
        .catalog()
        .user_files_at(None)
        .map_err(|e| failed(e.to_string()))?;
    let plan = plan(&listing, &held, &held_files);
    let held_by_id: HashMap<&str, &HeldFolder> =
        held.iter().map(|h| (h.unique_id.as_str(), h)).collect();

    let mut out = UserOutcome {
        folders: listing.folders.len() as u64,
        ..UserOutcome::default()
    };
    if plan.is_empty() {
        // Nothing to do: no run is written (an empty run would cost two fsyncs and bytes
        // kept forever). The store's state is the committed one, durable since its commit.
        out.unchanged_key = unchanged_key(user, &listing, store.catalog().data_path());
        return Ok(out);
    }
    let mut run = store
        .begin_run()
        .map_err(|e| failed(format!("beginning a run: {e}")))?;
    let r = execute(
        user,
        &plan,
        &listing,
        &held_by_id,
        &held_files,
        conn,
        &mut run,
        &mut out,
    );
    match r {
        Ok(()) => {
            let end = if out.incomplete.is_empty() {
                RunEnd::Complete
            } else {
                RunEnd::Partial
            };
            let s = run
                .commit(end)
                .map_err(|e| failed(format!("committing: {e}")))?;
            out.messages_stored = s.messages_stored;
            out.bytes_stored = s.message_bytes;
            if end == RunEnd::Complete {
                // Committed and durable: if the store now has nothing to do for this
                // listing (the usual case; not when a copy saw newer stat data than the
                // listing), the next night may skip it while both stay so.
                let cat = store.catalog();
                let done = match (cat.held_folders(), cat.user_files_at(None)) {
                    (Ok(h), Ok(f)) => self::plan(&listing, &h, &f).is_empty(),
                    _ => false,
                };
                if done {
                    out.unchanged_key = unchanged_key(user, &listing, cat.data_path());
                }
            }
            Ok(out)
        }
        Err(Abort::Conn(e)) => {
            // Keep what was fetched before the connection broke: the next run need not
            // fetch it again. Partial: tombstones and the end marker wait for a whole run.
            let _ = run.commit(RunEnd::Partial);
            Err(conn_err(e))
        }
        Err(Abort::Store(m)) => {
            run.abort();
            Err(failed(m))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn execute(
    user: &str,
    plan: &Plan,
    listing: &UserListing,
    held: &HashMap<&str, &HeldFolder>,
    held_files: &[HeldUserFile],
    conn: &mut Client,
    run: &mut RunWriter<'_>,
    out: &mut UserOutcome,
) -> Result<(), Abort> {
    // Tombstones first: their entries then come before any new folder's link to a name a
    // deleted folder had, so "the newest event of that name" is the new link.
    for u in &plan.tombstones {
        if run.tombstone(u).map_err(store_abort("tombstone"))? {
            out.folders_deleted += 1;
        }
    }
    for step in &plan.folders {
        match &step.action {
            FolderAction::Rename { .. } => {
                let f = &listing.folders[step.index];
                run.link_name(&f.uniqueid, &f.name)
                    .map_err(store_abort("name link"))?;
                out.folders_renamed += 1;
            }
            FolderAction::Copy {
                renamed_from: Some(_),
                ..
            } => out.folders_renamed += 1,
            _ => {}
        }
    }
    // Changed folders: meta copies pipelined in bounded windows, then each folder's
    // messages.
    let copies: Vec<&FolderStep> = plan.copies().collect();
    let mut i = 0;
    while i < copies.len() {
        let mut j = i;
        let mut bytes = 0u64;
        while j < copies.len()
            && j - i < META_WINDOW
            && (j == i || bytes + listing.folders[copies[j].index].index.size <= META_WINDOW_BYTES)
        {
            bytes += listing.folders[copies[j].index].index.size;
            j += 1;
        }
        let mut pending: Vec<Pending<MetaCopy>> = Vec::with_capacity(j - i);
        for step in &copies[i..j] {
            pending.push(conn.send_copy_meta(user, &listing.folders[step.index].uniqueid)?);
            out.meta_copies += 1;
        }
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending {
            match conn.recv(p) {
                Ok(m) => replies.push(Ok(m)),
                Err(e) if e.connection_usable() => replies.push(Err(e)),
                Err(e) => return Err(Abort::Conn(e)),
            }
        }
        for (step, reply) in copies[i..j].iter().zip(replies) {
            let f = &listing.folders[step.index];
            out.folders_changed += 1;
            match reply {
                Ok(meta) => backup_folder(user, f, meta, conn, run, out)?,
                Err(e) => vanished_or_failed(f, e, held, run, out)?,
            }
        }
        i = j;
    }
    backup_user_files(user, plan, held_files, conn, run, out)
}

/// A meta copy refused: a folder deleted since the listing is tombstoned (not an error);
/// anything else leaves the folder incomplete.
fn vanished_or_failed(
    f: &FolderStat,
    e: ClientError,
    held: &HashMap<&str, &HeldFolder>,
    run: &mut RunWriter<'_>,
    out: &mut UserOutcome,
) -> Result<(), Abort> {
    if e.remote()
        .is_some_and(|r| r.code == ErrorCode::UnknownFolder)
    {
        if held.get(f.uniqueid.as_str()).is_some_and(|h| !h.deleted)
            && run
                .tombstone(&f.uniqueid)
                .map_err(store_abort("tombstone"))?
        {
            out.folders_deleted += 1;
        }
        return Ok(());
    }
    out.incomplete.push(format!(
        "folder {} ({}): copying meta: {e}",
        f.name, f.uniqueid
    ));
    Ok(())
}

/// One changed folder: fetch what the store lacks, then the snapshot.
fn backup_folder(
    user: &str,
    f: &FolderStat,
    mut meta: MetaCopy,
    conn: &mut Client,
    run: &mut RunWriter<'_>,
    out: &mut UserOutcome,
) -> Result<(), Abort> {
    let label = || format!("folder {} ({})", f.name, f.uniqueid);
    let mut attempt = 0;
    loop {
        let (wanted, no_guid) = match messages_to_fetch(&meta.index.0, |g| run.has_message(g)) {
            Ok(w) => w,
            Err(PlanError::Index(e)) => {
                out.incomplete.push(format!("{}: {e}", label()));
                return Ok(());
            }
            Err(PlanError::Store(e)) => return Err(Abort::Store(e.to_string())),
        };
        if !no_guid.is_empty() {
            out.incomplete.push(format!(
                "{}: {} records without a GUID (UIDs {:?}...): not stored",
                label(),
                no_guid.len(),
                &no_guid[..no_guid.len().min(5)]
            ));
            return Ok(());
        }
        let mut missing_live = 0u64;
        let mut gone_live = 0u64;
        if !wanted.is_empty() {
            let mut answered: HashSet<u32> = HashSet::with_capacity(wanted.len());
            let mut failed_items = 0u64;
            let by_uid: HashMap<u32, &Wanted> = wanted.iter().map(|w| (w.uid, w)).collect();
            let uids: Vec<u32> = wanted.iter().map(|w| w.uid).collect();
            let mut stream = match conn.fetch_messages(user, &f.uniqueid, &uids) {
                Ok(s) => s,
                Err(e) if e.connection_usable() => {
                    out.incomplete
                        .push(format!("{}: fetching messages: {e}", label()));
                    return Ok(());
                }
                Err(e) => return Err(Abort::Conn(e)),
            };
            loop {
                let item = match stream.next_message() {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) if e.connection_usable() => {
                        out.incomplete
                            .push(format!("{}: fetching messages: {e}", label()));
                        return Ok(());
                    }
                    Err(e) => return Err(Abort::Conn(e)),
                };
                match item {
                    Fetched::Message {
                        uid,
                        size,
                        mut body,
                    } => {
                        answered.insert(uid);
                        out.messages_fetched += 1;
                        out.bytes_fetched += size;
                        let Some(w) = by_uid.get(&uid) else {
                            return Err(Abort::Conn(ClientError::Misuse(format!(
                                "{}: UID {uid} sent, not asked for",
                                label()
                            ))));
                        };
                        let info = MessageInfo {
                            internal_date: Some(w.internal_date),
                            origin: Some((f.uniqueid.clone(), uid)),
                        };
                        match run.add_message(w.guid, size, &mut body, info) {
                            Ok(_) => {}
                            Err(StoreError::Source { source, .. }) => {
                                let e = body.item_error(source).map_err(Abort::Conn)?;
                                out.incomplete
                                    .push(format!("{}: UID {uid}: backupd: {e}", label()));
                                missing_live += u64::from(!w.expunged);
                            }
                            Err(e @ StoreError::GuidMismatch { .. })
                            | Err(e @ StoreError::LengthMismatch { .. }) => {
                                out.incomplete.push(format!("{}: UID {uid}: {e}", label()));
                                missing_live += u64::from(!w.expunged);
                            }
                            Err(e) => {
                                return Err(Abort::Store(format!(
                                    "{}: storing UID {uid}: {e}",
                                    label()
                                )))
                            }
                        }
                    }
                    Fetched::Gone { uid } => {
                        answered.insert(uid);
                        out.messages_gone += 1;
                        if by_uid.get(&uid).is_some_and(|w| !w.expunged) {
                            gone_live += 1;
                        }
                    }
                    Fetched::Failed(e) => {
                        out.incomplete.push(format!("{}: backupd: {e}", label()));
                        missing_live += 1;
                        failed_items += 1;
                    }
                }
            }
            // Failed items name no UID: only UIDs beyond those are unexplained.
            let unanswered = unanswered_live(&wanted, &answered);
            if unanswered.len() as u64 > failed_items {
                out.incomplete.push(format!(
                    "{}: backupd did not answer for {} live UIDs ({:?}...)",
                    label(),
                    unanswered.len(),
                    &unanswered[..unanswered.len().min(5)]
                ));
                missing_live += unanswered.len() as u64;
            }
        }
        if missing_live > 0 {
            // Its previous snapshot stays; the next run tries again.
            return Ok(());
        }
        if gone_live > 0 {
            if attempt < GONE_RETRIES {
                // Expunged since the copy: a fresh copy shows them expunged or absent.
                attempt += 1;
                out.meta_copies += 1;
                match conn.copy_meta(user, &f.uniqueid) {
                    Ok(m) => {
                        meta = m;
                        continue;
                    }
                    Err(e) if e.connection_usable() => {
                        out.incomplete
                            .push(format!("{}: copying meta again: {e}", label()));
                        return Ok(());
                    }
                    Err(e) => return Err(Abort::Conn(e)),
                }
            }
            out.incomplete.push(format!(
                "{}: {gone_live} messages kept vanishing between meta copy and fetch",
                label()
            ));
            return Ok(());
        }
        let snap = FolderSnapshot {
            unique_id: &f.uniqueid,
            folder: &f.name,
            partition: Some(&f.partition),
            header: data(&meta.header),
            index: data(&meta.index),
            annotations: meta.annotations.as_ref().map(data),
        };
        return match run.add_folder_snapshot(snap) {
            Ok(()) => Ok(()),
            Err(e @ (StoreError::MetaFile { .. } | StoreError::Invalid { .. })) => {
                out.incomplete.push(format!("{}: {e}", label()));
                Ok(())
            }
            Err(e) => Err(Abort::Store(format!("{}: snapshot: {e}", label()))),
        };
    }
}

fn data(d: &(Vec<u8>, FileStat)) -> MetaFileData<'_> {
    MetaFileData {
        bytes: &d.0,
        stat: Some(d.1),
    }
}

/// Seen state, subscriptions and sieve scripts whose stat data changed.
fn backup_user_files(
    user: &str,
    plan: &Plan,
    held_files: &[HeldUserFile],
    conn: &mut Client,
    run: &mut RunWriter<'_>,
    out: &mut UserOutcome,
) -> Result<(), Abort> {
    if plan.user_files.is_empty() {
        return Ok(());
    }
    let fetch = |conn: &mut Client, ids: &[UserFileId], out: &mut UserOutcome| match conn
        .fetch_user_files(user, ids)
    {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.connection_usable() => {
            out.incomplete.push(format!("user files: {e}"));
            Ok(None)
        }
        Err(e) => Err(Abort::Conn(e)),
    };
    let Some(mut files) = fetch(conn, &plan.user_files, out)? else {
        return Ok(());
    };
    let asked_active = plan.user_files.contains(&UserFileId::SieveActive);
    let active: Option<String> = files.iter().find_map(|(id, f)| match (id, f) {
        (UserFileId::SieveActive, UserFile::Found { bytes, .. }) => {
            let name = String::from_utf8_lossy(bytes).trim().to_owned();
            (!name.is_empty()).then_some(name)
        }
        _ => None,
    });
    let held_active = |name: &str| {
        held_files.iter().find_map(|h| match &h.kind {
            UserFileKind::Sieve { name: n, active } if n == name => Some(*active),
            _ => None,
        })
    };
    if asked_active {
        // Scripts not fetched whose active flag changed are fetched again to record it.
        let refetch: Vec<UserFileId> = held_files
            .iter()
            .filter_map(|h| match &h.kind {
                UserFileKind::Sieve { name, active: was } => {
                    let now = active.as_deref() == Some(name.as_str());
                    let id = UserFileId::SieveScript(name.clone());
                    (now != *was && !plan.user_files.contains(&id)).then_some(id)
                }
                _ => None,
            })
            .collect();
        if !refetch.is_empty() {
            if let Some(more) = fetch(conn, &refetch, out)? {
                // A script deleted meanwhile comes back absent and is skipped below.
                files.extend(more);
            }
        }
    }
    for (id, file) in files {
        let kind = match &id {
            UserFileId::Seen => UserFileKind::Seen,
            UserFileId::Subscriptions => UserFileKind::Subscriptions,
            UserFileId::SieveScript(name) => UserFileKind::Sieve {
                name: name.clone(),
                active: if asked_active {
                    active.as_deref() == Some(name.as_str())
                } else {
                    held_active(name).unwrap_or(false)
                },
            },
            UserFileId::SieveActive => continue,
        };
        match file {
            UserFile::Found { bytes, stat } => {
                run.add_user_file(kind, Some(stat), bytes.len() as u64, &bytes[..])
                    .map_err(store_abort("user file"))?;
                out.user_files_stored += 1;
            }
            // Removed since the listing: nothing to keep (the store cannot record a
            // deletion of a user file yet; docs/store.md).
            UserFile::Absent => {}
            UserFile::Failed(e) => out.incomplete.push(format!("user file {id:?}: {e}")),
        }
    }
    Ok(())
}

/// The catalog query the planner starts from, for tests and tools: the plan this store
/// would follow for `listing`.
pub fn plan_for(catalog: &Catalog, listing: &UserListing) -> Result<Plan, StoreError> {
    let held = catalog.held_folders()?;
    let files = catalog.user_files_at(None)?;
    Ok(plan(listing, &held, &files))
}
