//! One user's backup: DESIGN.md, "Per-user backup, step by step".
//!
//! [`backup_user`] takes the user's store lock, lists the user's folders once, and, when the
//! state db's [`QuietKey`] still holds for that listing, ends there without opening the
//! store. Otherwise it opens the store, [plans](super::plan) against it and carries the plan
//! out over the connection: meta copies pipelined in bounded windows, one message fetch per
//! changed folder streamed straight into the store (each message checked against its GUID
//! by the store), one commit. An empty plan commits nothing: no run, no byte, no fsync.
//!
//! Complete or partial: the run is committed [`RunEnd::Complete`] when every folder was
//! backed up whole; otherwise [`RunEnd::Partial`] with what is missing in
//! [`UserOutcome::incomplete`]. A partial run keeps everything it stored (messages, the
//! snapshots of the folders that were whole) but has no end marker, so its tombstones do
//! not take effect and the store's last complete run stays the previous one; the next run
//! redoes what is missing (the folders left out still differ from the store). A folder with
//! a live message that could not be fetched (read error, GUID mismatch) keeps its previous
//! snapshot: the store never shows a record whose message it lacks. A message the server
//! reports gone was expunged after the meta copy: the folder's meta is copied again (at
//! most twice) so that the snapshot shows it expunged; that is not an error.
//!
//! Faults of the connection and of the mail server (a connection cut at any frame, a message
//! gone or not matching its GUID, an item error) are tested through the real client, against
//! a real backupd over an in-memory spool and a frame-level proxy (tests/tests/backup_faults.rs).

use super::plan::{
    messages_to_fetch, plan, plan_for, unanswered_live, FolderAction, FolderStep, Plan, PlanError,
    Wanted,
};
use super::quiet::QuietKey;
use crate::client::{Client, ClientError, Fetched};
use crate::store::{
    FolderSnapshot, HeldFolder, HeldUserFile, LockedDir, MessageInfo, MetaFileData, RunEnd,
    RunWriter, StoreError, StoreOptions, UserDir,
};
use formats::archive::UserFileKind;
use formats::protocol::{ErrorCode, FolderStat, MetaCopy, UserFile, UserFileId, UserListing};
use formats::FileStat;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// Meta copies sent before their replies are read: at most this many...
const META_WINDOW: usize = 16;
/// ...and at most about this many bytes of cyrus.index (by the listing's stat sizes), so
/// the copies held at once stay bounded whatever the user's folders.
const META_WINDOW_BYTES: u64 = 32 * 1024 * 1024;
/// How often a folder's meta is copied again when live messages vanished meanwhile.
const GONE_RETRIES: u32 = 2;

/// Meta copies of these folders, pipelined: one answer per folder, in order. An `Err` in
/// the outer result broke the connection.
fn copy_metas(
    conn: &mut Client,
    user: &str,
    uniqueids: &[&str],
) -> Result<Vec<Result<MetaCopy, ClientError>>, ClientError> {
    let mut pending = Vec::with_capacity(uniqueids.len());
    for u in uniqueids {
        pending.push(conn.send_copy_meta(user, u)?);
    }
    let mut replies = Vec::with_capacity(pending.len());
    for p in pending {
        match conn.recv(p) {
            Ok(m) => replies.push(Ok(m)),
            Err(e) if e.connection_usable() => replies.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    Ok(replies)
}

/// Where and how one user is backed up (built by the run from the config and the state db).
#[derive(Debug, Clone, Copy)]
pub struct UserJob<'a> {
    /// The Cyrus user id.
    pub user: &'a str,
    /// The root of the per-user stores.
    pub store_root: &'a Path,
    /// How the store writes.
    pub store_options: &'a StoreOptions,
    /// The quiet key the state db holds for the user, if any.
    pub quiet_key: Option<&'a QuietKey>,
}

/// What one user's backup did (summed by the run for its summary).
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
    /// What could not be backed up (the run goes on; the user counts as incomplete).
    pub incomplete: Vec<Missing>,
    /// The user was quiet: its quiet key held, and the store was not even opened.
    pub quiet: bool,
    /// The quiet key the state db should now hold for the user: set when the store, as
    /// this backup left it (durably), has nothing to do for this listing; `None` clears it.
    pub quiet_key: Option<QuietKey>,
}

/// One thing a partial backup lacks, naming the folder (name and unique id) where there is
/// one. The texts are what the run's summary and the state db show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The folder's meta files could not be copied (its previous snapshot stays).
    MetaCopy {
        /// The folder.
        folder: FolderRef,
        /// Whether this was the copy again after messages vanished.
        again: bool,
        /// What backupd or the connection said.
        reason: String,
    },
    /// The copied cyrus.index does not parse.
    Index {
        /// The folder.
        folder: FolderRef,
        /// The reader's error (it names the byte offset).
        reason: String,
    },
    /// Live records without a GUID: they cannot be checked, so the folder is not stored.
    NoGuid {
        /// The folder.
        folder: FolderRef,
        /// The first few UIDs.
        uids: Vec<u32>,
        /// How many.
        count: usize,
    },
    /// The message fetch request failed as a whole.
    Fetch {
        /// The folder.
        folder: FolderRef,
        /// What backupd said.
        reason: String,
    },
    /// One message could not be stored (backupd could not read it, or its bytes do not
    /// hash to its GUID); `uid` is `None` when backupd's item error named none.
    Message {
        /// The folder.
        folder: FolderRef,
        /// Its UID.
        uid: Option<u32>,
        /// What went wrong.
        reason: String,
    },
    /// backupd's reply did not account for these live UIDs.
    Unanswered {
        /// The folder.
        folder: FolderRef,
        /// The first few UIDs.
        uids: Vec<u32>,
        /// How many.
        count: usize,
    },
    /// Live messages kept vanishing between meta copy and fetch.
    KeptVanishing {
        /// The folder.
        folder: FolderRef,
        /// How many, at the last try.
        count: u64,
    },
    /// The store refused the folder's snapshot (its meta files do not parse).
    Snapshot {
        /// The folder.
        folder: FolderRef,
        /// The store's error.
        reason: String,
    },
    /// The user-file fetch request failed as a whole.
    UserFiles {
        /// What backupd said.
        reason: String,
    },
    /// One user file could not be read on the server.
    UserFile {
        /// Which file.
        id: UserFileId,
        /// What backupd said.
        reason: String,
    },
}

/// A folder as errors name it: its name and unique id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRef {
    /// The folder's name (as its owner sees it).
    pub name: String,
    /// Its unique id.
    pub uniqueid: String,
}

impl FolderRef {
    fn of(f: &FolderStat) -> FolderRef {
        FolderRef {
            name: f.name.clone(),
            uniqueid: f.uniqueid.clone(),
        }
    }
}

impl fmt::Display for FolderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "folder {} ({})", self.name, self.uniqueid)
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::MetaCopy {
                folder,
                again: false,
                reason,
            } => write!(f, "{folder}: copying meta: {reason}"),
            Missing::MetaCopy {
                folder,
                again: true,
                reason,
            } => write!(f, "{folder}: copying meta again: {reason}"),
            Missing::Index { folder, reason } => write!(f, "{folder}: {reason}"),
            Missing::NoGuid {
                folder,
                uids,
                count,
            } => write!(
                f,
                "{folder}: {count} records without a GUID (UIDs {uids:?}...): not stored"
            ),
            Missing::Fetch { folder, reason } => {
                write!(f, "{folder}: fetching messages: {reason}")
            }
            Missing::Message {
                folder,
                uid: Some(uid),
                reason,
            } => write!(f, "{folder}: UID {uid}: {reason}"),
            Missing::Message {
                folder,
                uid: None,
                reason,
            } => write!(f, "{folder}: {reason}"),
            Missing::Unanswered {
                folder,
                uids,
                count,
            } => write!(
                f,
                "{folder}: backupd did not answer for {count} live UIDs ({uids:?}...)"
            ),
            Missing::KeptVanishing { folder, count } => write!(
                f,
                "{folder}: {count} messages kept vanishing between meta copy and fetch"
            ),
            Missing::Snapshot { folder, reason } => write!(f, "{folder}: {reason}"),
            Missing::UserFiles { reason } => write!(f, "user files: {reason}"),
            Missing::UserFile { id, reason } => write!(f, "user file {id:?}: {reason}"),
        }
    }
}

impl UserOutcome {
    /// What is missing, as one line (`; `-separated), for logs and the state db.
    pub fn incomplete_text(&self) -> String {
        self.incomplete
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
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
    /// backupd refused the user's listing (unknown user, spool error, ...); the connection
    /// is still good.
    #[error("user {user}: {source}")]
    Refused {
        /// The user.
        user: String,
        /// What backupd said.
        #[source]
        source: ClientError,
    },
    /// The store could not be locked, opened, written or committed. When the store's
    /// files are damaged in a way `backup-server repair` mends, the text says so.
    #[error("user {user}: {doing}: {source}{}", repair_hint(user, source))]
    Store {
        /// The user.
        user: String,
        /// What was being done: `opening the store`, `committing`, `storing UID 7 of
        /// folder INBOX (...)`.
        doing: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// The user's mail server is not in the configuration (the state db is older than the
    /// config).
    #[error("user {user}: server {server:?} is not in the configuration")]
    UnknownServer {
        /// The user.
        user: String,
        /// The server's config name.
        server: String,
    },
    /// A worker could not connect to the user's server a short while ago and does not try
    /// again yet.
    #[error(
        "user {user}: backupd {server} unreachable {secs_ago:.0} s ago, not retried yet: {reason}"
    )]
    ServerDown {
        /// The user.
        user: String,
        /// The server's address.
        server: String,
        /// Seconds since the failed connect.
        secs_ago: f64,
        /// What the connect said.
        reason: String,
    },
    /// The user was deleted and created again in Cyrus since its store's last backup (its
    /// INBOX has another unique id): nothing is written to the old store, which the run
    /// then keeps aside ([`crate::lifecycle::keep_recreated`]); the next run starts a new
    /// one.
    #[error("user {user}: deleted and created again in Cyrus (INBOX unique id {listed}, the store holds {held}): the old store is kept aside, the next run backs the new user up")]
    Recreated {
        /// The user.
        user: String,
        /// The INBOX unique id the store holds.
        held: String,
        /// The INBOX unique id listed now.
        listed: String,
    },
}

/// [`BackupError::Recreated`] when the listing's INBOX is not the live INBOX the store
/// holds (a user deleted and created again between two refreshes).
fn recreated(user: &str, listing: &UserListing, held: &[HeldFolder]) -> Option<BackupError> {
    let listed = listing.folders.iter().find(|f| f.name == "INBOX")?;
    let kept = held.iter().find(|h| h.name == "INBOX" && !h.deleted)?;
    (kept.unique_id != listed.uniqueid).then(|| BackupError::Recreated {
        user: user.to_owned(),
        held: kept.unique_id.clone(),
        listed: listed.uniqueid.clone(),
    })
}

/// What stops a user's backup part-way.
enum Abort {
    Conn(ClientError),
    Store {
        doing: String,
        source: Box<StoreError>,
    },
}

impl From<ClientError> for Abort {
    fn from(e: ClientError) -> Self {
        Abort::Conn(e)
    }
}

/// The way out of a store error that would otherwise make the user fail every night.
fn repair_hint(user: &str, e: &StoreError) -> String {
    if e.repair_mends() {
        format!("; run backup-server repair --user {user}")
    } else {
        String::new()
    }
}

fn store_abort(doing: &str) -> impl Fn(StoreError) -> Abort + '_ {
    move |source| Abort::Store {
        doing: doing.to_owned(),
        source: Box::new(source),
    }
}

/// Backs up one user over an authenticated connection (the caller owns and reuses it).
pub fn backup_user(job: &UserJob<'_>, conn: &mut Client) -> Result<UserOutcome, BackupError> {
    let user = job.user;
    let store_err = |doing: &'static str| {
        move |source| BackupError::Store {
            user: user.to_owned(),
            doing: doing.to_owned(),
            source: Box::new(source),
        }
    };
    let server = conn.addr().to_owned();
    let conn_err = |source: ClientError| {
        if source.connection_usable() {
            BackupError::Refused {
                user: user.to_owned(),
                source,
            }
        } else {
            BackupError::Connection {
                user: user.to_owned(),
                server: server.clone(),
                source,
            }
        }
    };
    // 1. The lock. A user with a quiet key most likely needs nothing more than the lock
    //    and a look: take it without creating or writing anything.
    let dir = UserDir::new(job.store_root, user).map_err(store_err("the store directory"))?;
    let locked = match job.quiet_key {
        Some(_) => dir.lock_existing(),
        None => Ok(Err(dir)),
    };
    let locked = match locked {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(dir)) => dir.lock(),
        Err(e) => Err(e),
    };
    let mut locked: LockedDir = match locked {
        Ok(l) => l,
        Err(StoreError::Locked { holder, .. }) => {
            return Err(BackupError::Locked {
                user: user.to_owned(),
                holder,
            })
        }
        Err(e) => return Err(store_err("locking the store")(e)),
    };
    // 2. One listing.
    let listing = conn.list_folders(user).map_err(conn_err)?;
    // 3. A quiet user: the listing and one stat of the data file say the store has
    //    nothing to do (docs/store.md, "Quiet users").
    if let Some(key) = job.quiet_key {
        if key.holds(user, &listing, locked.dir()) {
            return Ok(UserOutcome {
                folders: listing.folders.len() as u64,
                quiet: true,
                quiet_key: Some(key.clone()),
                ..UserOutcome::default()
            });
        }
        locked.note_holder();
    }
    // 4. Open: an interrupted index switch finished, the torn tail cut.
    let mut store = locked
        .open(job.store_options.clone())
        .map_err(store_err("opening the store"))?;
    let held = store
        .catalog()
        .held_folders()
        .map_err(store_err("reading the index"))?;
    if let Some(e) = recreated(user, &listing, &held) {
        return Err(e);
    }
    let held_files = store
        .catalog()
        .user_files_at(None)
        .map_err(store_err("reading the index"))?;
    let mut plan = plan(&listing, &held, &held_files);
    // Folders with a damaged (or lost) live message are copied again: the run fetches it.
    plan.heal(
        &listing,
        &store
            .catalog()
            .damaged_folders()
            .map_err(store_err("reading the index"))?,
    );
    let held_by_id: HashMap<&str, &HeldFolder> =
        held.iter().map(|h| (h.unique_id.as_str(), h)).collect();

    let mut out = UserOutcome {
        folders: listing.folders.len() as u64,
        ..UserOutcome::default()
    };
    if plan.is_empty() {
        // Nothing to do: no run is written (an empty run would cost two fsyncs and bytes
        // kept forever). The store's state is the committed one, durable since its commit.
        out.quiet_key = QuietKey::of(user, &listing, store.catalog().data_path());
        return Ok(out);
    }
    let mut run = store.begin_run().map_err(store_err("beginning a run"))?;
    let mut ex = Execution {
        user,
        listing: &listing,
        held: &held_by_id,
        held_files: &held_files,
        conn,
        run: &mut run,
        out: &mut out,
        as_listed: true,
    };
    let r = ex.execute(&plan);
    let as_listed = ex.as_listed;
    match r {
        Ok(()) => {
            let end = if out.incomplete.is_empty() {
                RunEnd::Complete
            } else {
                RunEnd::Partial
            };
            let s = run.commit(end).map_err(store_err("committing"))?;
            out.messages_stored = s.messages_stored;
            out.bytes_stored = s.message_bytes;
            if end == RunEnd::Complete && as_listed {
                // Committed and durable, and everything stored has the listing's stat
                // data: the store now has nothing to do for this listing, so the next
                // night may skip it while both stay so.
                debug_assert!(
                    plan_for(store.catalog(), &listing).is_ok_and(|p| p.is_empty()),
                    "user {user}: a quiet key would be recorded for a store with work to do"
                );
                out.quiet_key = QuietKey::of(user, &listing, store.catalog().data_path());
            }
            Ok(out)
        }
        Err(Abort::Conn(e)) => {
            // Keep what was fetched before the connection broke: the next run need not
            // fetch it again. Partial: tombstones and the end marker wait for a whole run.
            let _ = run.commit(RunEnd::Partial);
            Err(conn_err(e))
        }
        Err(Abort::Store { doing, source }) => {
            run.abort();
            Err(BackupError::Store {
                user: user.to_owned(),
                doing,
                source,
            })
        }
    }
}

/// A plan being carried out.
struct Execution<'a, 'r> {
    user: &'a str,
    listing: &'a UserListing,
    held: &'a HashMap<&'a str, &'a HeldFolder>,
    held_files: &'a [HeldUserFile],
    conn: &'a mut Client,
    run: &'a mut RunWriter<'r>,
    out: &'a mut UserOutcome,
    /// Whether everything stored so far carries the listing's own stat data (a meta copy
    /// or a user file can be newer than the listing). When the run ends complete and this
    /// still holds, the store has nothing to do for the listing: its quiet key is valid.
    as_listed: bool,
}

impl Execution<'_, '_> {
    fn execute(&mut self, plan: &Plan) -> Result<(), Abort> {
        // Tombstones first: their entries then come before any new folder's link to a name
        // a deleted folder had, so "the newest event of that name" is the new link.
        for u in &plan.tombstones {
            if self.run.tombstone(u).map_err(store_abort("tombstone"))? {
                self.out.folders_deleted += 1;
            }
        }
        for step in &plan.folders {
            match &step.action {
                FolderAction::Rename { .. } => {
                    let f = &self.listing.folders[step.index];
                    self.run
                        .link_name(&f.uniqueid, &f.name)
                        .map_err(store_abort("name link"))?;
                    self.out.folders_renamed += 1;
                }
                FolderAction::Copy {
                    renamed_from: Some(_),
                    ..
                } => self.out.folders_renamed += 1,
                _ => {}
            }
        }
        // Changed folders: meta copies pipelined in bounded windows, then each folder's
        // messages.
        let copies: Vec<&FolderStep> = plan.copies().collect();
        let folders = &self.listing.folders;
        let mut i = 0;
        while i < copies.len() {
            let mut j = i;
            let mut bytes = 0u64;
            while j < copies.len()
                && j - i < META_WINDOW
                && (j == i || bytes + folders[copies[j].index].index.size <= META_WINDOW_BYTES)
            {
                bytes += folders[copies[j].index].index.size;
                j += 1;
            }
            let ids: Vec<&str> = copies[i..j]
                .iter()
                .map(|s| folders[s.index].uniqueid.as_str())
                .collect();
            let replies = copy_metas(self.conn, self.user, &ids)?;
            self.out.meta_copies += ids.len() as u64;
            if replies.len() != ids.len() {
                return Err(Abort::Conn(ClientError::Misuse(format!(
                    "{} meta copies asked, {} answered",
                    ids.len(),
                    replies.len()
                ))));
            }
            for (step, reply) in copies[i..j].iter().zip(replies) {
                let f = &folders[step.index];
                self.out.folders_changed += 1;
                match reply {
                    Ok(meta) => self.folder(f, meta)?,
                    Err(e) => self.vanished_or_failed(f, e)?,
                }
            }
            i = j;
        }
        self.user_files(plan)
    }

    /// A meta copy refused: a folder deleted since the listing is tombstoned (not an
    /// error); anything else leaves the folder incomplete.
    fn vanished_or_failed(&mut self, f: &FolderStat, e: ClientError) -> Result<(), Abort> {
        if e.remote()
            .is_some_and(|r| r.code == ErrorCode::UnknownFolder)
        {
            // The store now lacks a folder the listing shows.
            self.as_listed = false;
            let held_live = self
                .held
                .get(f.uniqueid.as_str())
                .is_some_and(|h| !h.deleted);
            if held_live
                && self
                    .run
                    .tombstone(&f.uniqueid)
                    .map_err(store_abort("tombstone"))?
            {
                self.out.folders_deleted += 1;
            }
            return Ok(());
        }
        self.out.incomplete.push(Missing::MetaCopy {
            folder: FolderRef::of(f),
            again: false,
            reason: e.to_string(),
        });
        Ok(())
    }

    /// One changed folder: fetch what the store lacks, then the snapshot.
    fn folder(&mut self, f: &FolderStat, mut meta: MetaCopy) -> Result<(), Abort> {
        let folder = || FolderRef::of(f);
        let mut attempt = 0;
        loop {
            let run = &mut *self.run;
            let stored = run
                .held_records(&f.uniqueid)
                .map_err(|source| Abort::Store {
                    doing: format!("{}: reading its stored records", folder()),
                    source: Box::new(source),
                })?;
            let (wanted, no_guid) =
                match messages_to_fetch(&meta.index.0, &stored, |g| run.has_message(g)) {
                    Ok(w) => w,
                    Err(PlanError::Index(e)) => {
                        self.out.incomplete.push(Missing::Index {
                            folder: folder(),
                            reason: PlanError::Index(e).to_string(),
                        });
                        return Ok(());
                    }
                    Err(PlanError::Store(source)) => {
                        return Err(Abort::Store {
                            doing: format!("{}: looking up GUIDs", folder()),
                            source: Box::new(source),
                        })
                    }
                };
            if !no_guid.is_empty() {
                self.out.incomplete.push(Missing::NoGuid {
                    folder: folder(),
                    uids: no_guid[..no_guid.len().min(5)].to_vec(),
                    count: no_guid.len(),
                });
                return Ok(());
            }
            let (missing_live, gone_live) = if wanted.is_empty() {
                (0, 0)
            } else {
                match self.fetch(f, &wanted)? {
                    Some(counts) => counts,
                    None => return Ok(()),
                }
            };
            if missing_live > 0 {
                // Its previous snapshot stays; the next run tries again.
                return Ok(());
            }
            if gone_live > 0 {
                if attempt < GONE_RETRIES {
                    // Expunged since the copy: a fresh copy shows them expunged or absent.
                    attempt += 1;
                    self.out.meta_copies += 1;
                    let mut again = copy_metas(self.conn, self.user, &[&f.uniqueid])?;
                    match again.pop() {
                        Some(Ok(m)) => {
                            meta = m;
                            continue;
                        }
                        Some(Err(e)) => {
                            self.out.incomplete.push(Missing::MetaCopy {
                                folder: folder(),
                                again: true,
                                reason: e.to_string(),
                            });
                            return Ok(());
                        }
                        None => {
                            return Err(Abort::Conn(ClientError::Misuse(
                                "a meta copy asked, none answered".into(),
                            )))
                        }
                    }
                }
                self.out.incomplete.push(Missing::KeptVanishing {
                    folder: folder(),
                    count: gone_live,
                });
                return Ok(());
            }
            if meta.header.1 != f.header
                || meta.index.1 != f.index
                || meta.annotations.as_ref().map(|a| a.1) != f.annotations
            {
                // Changed again since the listing: stored as copied, which is newer.
                self.as_listed = false;
            }
            let snap = FolderSnapshot {
                unique_id: &f.uniqueid,
                folder: &f.name,
                partition: Some(&f.partition),
                header: data(&meta.header),
                index: data(&meta.index),
                annotations: meta.annotations.as_ref().map(data),
            };
            return match self.run.add_folder_snapshot(snap) {
                Ok(()) => Ok(()),
                Err(e @ (StoreError::MetaFile { .. } | StoreError::Invalid { .. })) => {
                    self.out.incomplete.push(Missing::Snapshot {
                        folder: folder(),
                        reason: e.to_string(),
                    });
                    Ok(())
                }
                Err(source) => Err(Abort::Store {
                    doing: format!("{}: snapshot", folder()),
                    source: Box::new(source),
                }),
            };
        }
    }

    /// Fetches `wanted` of folder `f` into the store: `(live messages missing, live
    /// messages gone)`, or `None` when the fetch failed as a whole (noted as missing).
    fn fetch(&mut self, f: &FolderStat, wanted: &[Wanted]) -> Result<Option<(u64, u64)>, Abort> {
        let folder = || FolderRef::of(f);
        let mut missing_live = 0u64;
        let mut gone_live = 0u64;
        let mut answered: HashSet<u32> = HashSet::with_capacity(wanted.len());
        let mut failed_items = 0u64;
        let by_uid: HashMap<u32, &Wanted> = wanted.iter().map(|w| (w.uid, w)).collect();
        let uids: Vec<u32> = wanted.iter().map(|w| w.uid).collect();
        let (run, out) = (&mut *self.run, &mut *self.out);
        // The request failed: for this folder only (noted), or for the connection.
        let failed = |out: &mut UserOutcome, e: ClientError| {
            if !e.connection_usable() {
                return Err(Abort::Conn(e));
            }
            out.incomplete.push(Missing::Fetch {
                folder: folder(),
                reason: e.to_string(),
            });
            Ok(None)
        };
        let mut stream = match self.conn.fetch_messages(self.user, &f.uniqueid, &uids) {
            Ok(s) => s,
            Err(e) => return failed(out, e),
        };
        loop {
            let item = match stream.next_message() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => return failed(out, e),
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
                            folder()
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
                            out.incomplete.push(Missing::Message {
                                folder: folder(),
                                uid: Some(uid),
                                reason: format!("backupd: {e}"),
                            });
                            missing_live += u64::from(!w.expunged);
                        }
                        Err(e @ StoreError::GuidMismatch { .. })
                        | Err(e @ StoreError::LengthMismatch { .. }) => {
                            out.incomplete.push(Missing::Message {
                                folder: folder(),
                                uid: Some(uid),
                                reason: e.to_string(),
                            });
                            missing_live += u64::from(!w.expunged);
                        }
                        Err(source) => {
                            return Err(Abort::Store {
                                doing: format!("{}: storing UID {uid}", folder()),
                                source: Box::new(source),
                            })
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
                    out.incomplete.push(Missing::Message {
                        folder: folder(),
                        uid: None,
                        reason: format!("backupd: {e}"),
                    });
                    missing_live += 1;
                    failed_items += 1;
                }
            }
        }
        // Failed items name no UID: only UIDs beyond those are unexplained.
        let unanswered = unanswered_live(wanted, &answered);
        if unanswered.len() as u64 > failed_items {
            out.incomplete.push(Missing::Unanswered {
                folder: folder(),
                uids: unanswered[..unanswered.len().min(5)].to_vec(),
                count: unanswered.len(),
            });
            missing_live += unanswered.len() as u64;
        }
        Ok(Some((missing_live, gone_live)))
    }

    /// Fetches user files; `None` when the request failed as a whole (noted as missing).
    fn fetch_user_files(
        &mut self,
        ids: &[UserFileId],
    ) -> Result<Option<Vec<(UserFileId, UserFile)>>, Abort> {
        match self.conn.fetch_user_files(self.user, ids) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.connection_usable() => {
                self.out.incomplete.push(Missing::UserFiles {
                    reason: e.to_string(),
                });
                Ok(None)
            }
            Err(e) => Err(Abort::Conn(e)),
        }
    }

    /// Seen state, subscriptions and sieve scripts whose stat data changed.
    fn user_files(&mut self, plan: &Plan) -> Result<(), Abort> {
        if plan.user_files.is_empty() {
            return Ok(());
        }
        let Some(mut files) = self.fetch_user_files(&plan.user_files)? else {
            return Ok(());
        };
        let held_files = self.held_files;
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
                if let Some(more) = self.fetch_user_files(&refetch)? {
                    // A script deleted meanwhile comes back absent and is skipped below.
                    files.extend(more);
                }
            }
        }
        let listed: HashMap<&UserFileId, FileStat> = self
            .listing
            .user_files
            .iter()
            .map(|f| (&f.id, f.stat))
            .collect();
        if asked_active {
            // The plan asks for the active script again while "some listed script is
            // active" disagrees with the listing's active link: an active link naming no
            // listed script (or unreadable) keeps it asking, so no quiet key.
            let names_listed = active
                .as_deref()
                .is_some_and(|name| listed.contains_key(&UserFileId::SieveScript(name.to_owned())));
            if names_listed != listed.contains_key(&UserFileId::SieveActive) {
                self.as_listed = false;
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
                    if listed.get(&id).is_some_and(|s| *s != stat) {
                        self.as_listed = false;
                    }
                    self.run
                        .add_user_file(kind, Some(stat), bytes.len() as u64, &bytes[..])
                        .map_err(store_abort("user file"))?;
                    self.out.user_files_stored += 1;
                }
                // Removed since the listing: nothing to keep (the store cannot record a
                // deletion of a user file yet; docs/store.md).
                UserFile::Absent => {
                    if listed.contains_key(&id) {
                        self.as_listed = false;
                    }
                }
                UserFile::Failed(e) => self.out.incomplete.push(Missing::UserFile {
                    id,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(())
    }
}

fn data(d: &(Vec<u8>, FileStat)) -> MetaFileData<'_> {
    MetaFileData {
        bytes: &d.0,
        stat: Some(d.1),
    }
}

#[cfg(test)]
mod heal_tests {
    use super::*;

    #[test]
    fn a_store_only_repair_mends_names_the_repair() {
        let short = BackupError::Store {
            user: "ann".into(),
            doing: "opening the store".into(),
            source: Box::new(StoreError::DataFileShort {
                path: "/s/a/b/ann/backupdata-1.tar.gz".into(),
                committed: 100,
                actual: 50,
            }),
        };
        assert!(
            short
                .to_string()
                .ends_with("intact chunk); run backup-server repair --user ann"),
            "{short}"
        );
        let locked = BackupError::Store {
            user: "ann".into(),
            doing: "committing".into(),
            source: Box::new(StoreError::RunBroken),
        };
        assert!(!locked.to_string().contains("repair"), "{locked}");
    }
}
