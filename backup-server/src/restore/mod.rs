//! Getting mail back out of a store, as of any point in time it holds, into local files or
//! an IMAP account. docs/restore.md is the user's reference.
//!
//! [`restore`] picks what to restore (a [`Selection`]: one message by folder and UID or by
//! GUID, one folder with or without its subfolders, or the whole user) and hands each
//! message to a [`Sink`], one per [`Target`]: [`maildir`], [`mbox`], [`eml`], [`imap`]. It
//! returns a [`RestoreReport`] (counts, and [`Note`]s on what a target could not keep) or a
//! [`RestoreError`]. Expunged mail restored on purpose loses `\Deleted` (`expunged.rs`);
//! what the store no longer holds as of the time asked is named (`retention.rs`). Folder
//! names come from the store, which got them from the mail server: they are never used as
//! paths as they are; [`safe_component`] maps each hierarchy level to a harmless file name.

pub mod confined;
pub mod cyrus;
mod distinct;
pub mod eml;
mod error;
mod expunged;
pub mod imap;
pub mod maildir;
pub mod mbox;
mod replies;
mod retention;
mod server_addr;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use formats::archive::EntryReader;
use formats::{Guid, Timestamp};

pub use confined::Owner;
pub use error::{RestoreError, TargetError};

use crate::point_in_time::{rfc3339, when};
use crate::store::{
    record_damage, Catalog, DamageAt, FolderAt, MessageAt, MessageState, PositionalReader,
    StoreError, StoreReader,
};

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `maildir:DIR`: a Maildir++ tree, folders as `.Sub.Folder` subdirectories.
    Maildir(PathBuf),
    /// `mbox:FILE`: an mboxrd file (a directory of them, one per folder, when several
    /// folders are restored).
    Mbox(PathBuf),
    /// `eml:DIR`: one `.eml` file per message, a directory per folder.
    Eml(PathBuf),
    /// `imap://ADMIN@HOST:PORT/`: APPENDed into the user's account on an IMAP server.
    Imap(imap::ImapTarget),
    /// `cyrus://ADMIN@HOST:PORT`: filed by Cyrus itself through its replication protocol,
    /// keeping folder identity, UIDs and flags ([`cyrus`]).
    Cyrus(cyrus::CyrusTarget),
}

impl std::str::FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        if s.starts_with("imap://") {
            return Ok(Target::Imap(imap::ImapTarget::parse(s)?));
        }
        if s.starts_with("cyrus://") {
            return Ok(Target::Cyrus(cyrus::CyrusTarget::parse(s)?));
        }
        let (kind, path) = s
            .split_once(':')
            .ok_or_else(|| TargetError::NoKind(s.to_owned()))?;
        if path.is_empty() {
            return Err(TargetError::NoPath(kind.to_owned()));
        }
        let p = PathBuf::from(path);
        match kind {
            "maildir" => Ok(Target::Maildir(p)),
            "mbox" => Ok(Target::Mbox(p)),
            "eml" => Ok(Target::Eml(p)),
            _ => Err(TargetError::UnknownKind {
                kind: kind.to_owned(),
                found: s.to_owned(),
            }),
        }
    }
}

/// What to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this folder (as the store names it, e.g. `Sent` or `Work/Sub`).
    pub folder: Option<String>,
    /// With `folder`: its subfolders too.
    pub subfolders: bool,
    /// One message of `folder`, by UID.
    pub uid: Option<u32>,
    /// One message by GUID (its folder and flags are those of `folder` when given).
    pub guid: Option<Guid>,
    /// As of this time (`None`: the newest state).
    pub at: Option<Timestamp>,
    /// Messages expunged (or gone) by then too, in their last state known.
    pub include_expunged: bool,
    /// Keep `\Deleted` on messages that had been expunged (by default it goes, so the next
    /// EXPUNGE does not delete them again: `restore/expunged.rs`).
    pub keep_deleted_flag: bool,
}

/// One message handed to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its UID in the folder (0 when restored by GUID alone).
    pub uid: u32,
    /// Its GUID.
    pub guid: Guid,
    /// Its internal date.
    pub internal_date: Timestamp,
    /// IMAP flags: system flags (`\Seen` ...) then keywords.
    pub flags: Vec<String>,
    /// Its length in bytes.
    pub size: u64,
}

/// A folder as a target sees it: its levels below the user's INBOX, each already safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeFolder {
    /// The name in the store.
    pub name: String,
    /// Hierarchy levels below INBOX, made safe ([`safe_component`]); empty for INBOX.
    pub levels: Vec<String>,
}

impl SafeFolder {
    /// The levels joined with `.`, `INBOX` for INBOX: one safe file name.
    pub fn flat(&self) -> String {
        if self.levels.is_empty() {
            "INBOX".to_owned()
        } else {
            self.levels.join(".")
        }
    }
}

/// A target format.
pub trait Sink {
    /// Starts a folder; the following messages go into it.
    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError>;
    /// Writes one message, its bytes read from `data`.
    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError>;
    /// Finishes (closes files); notes for the report.
    fn finish(&mut self) -> Result<Vec<Note>, RestoreError>;
    /// Whether the order of a folder's messages does not matter to the target (it files
    /// them by UID, or one file each): the restore then reads them in the order the data
    /// file holds them, inflating each chunk once instead of once per message.
    fn any_order(&self) -> bool {
        false
    }
    /// Whether the target recreates folders as they were and wants [`Sink::identity`] and
    /// [`Sink::user_files`] (reading them costs an index snapshot per folder).
    fn wants_identity(&self) -> bool {
        false
    }
    /// What the store knows of the next folder's identity, just before [`Sink::folder`]
    /// (`None`: no snapshot of it is held).
    fn identity(&mut self, _id: Option<FolderIdentity>) {}
    /// The user's own files as of the restore's time, before the first folder.
    fn user_files(&mut self, _files: UserFiles) -> Result<(), RestoreError> {
        Ok(())
    }
}

/// A folder's identity as the backup's snapshot of its cyrus.index and cyrus.header held
/// it: what a client that cached the folder checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderIdentity {
    /// Its unique id (IMAP's MAILBOXID).
    pub unique_id: String,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ, if the index kept one.
    pub highestmodseq: Option<u64>,
    /// The folder's creation MODSEQ, if known.
    pub createdmodseq: Option<u64>,
    /// The partition it was on.
    pub partition: Option<String>,
    /// Its ACL in Cyrus's form (`id\trights\t` pairs).
    pub acl: Option<String>,
    /// Per UID: MODSEQ and the time the record last changed.
    pub records: std::collections::HashMap<u32, (u64, Timestamp)>,
}

/// A user's own files as of a time, for a target that puts them back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFiles {
    /// The restore covers the whole user (seen state and sieve scripts go back too).
    pub whole_user: bool,
    /// The subscriptions database, as copied.
    pub subscriptions: Option<Vec<u8>>,
    /// The seen state database, as copied.
    pub seen: Option<Vec<u8>>,
    /// The sieve scripts.
    pub sieve: Vec<SieveScript>,
}

/// One sieve script of [`UserFiles`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveScript {
    /// Its name.
    pub name: String,
    /// Whether it was the active one.
    pub active: bool,
    /// When it was copied.
    pub time: Timestamp,
    /// Its source.
    pub source: Vec<u8>,
}

/// Something a restore could not do, or did differently, short of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A record whose message the store does not hold (the backup could not fetch it):
    /// skipped.
    NotStored {
        /// The folder.
        folder: String,
        /// The record's UID.
        uid: u32,
        /// The message.
        guid: Guid,
    },
    /// A Maildir folder met more than 26 keywords (the letters `a` to `z`): these were
    /// left out.
    KeywordsLeftOut {
        /// The Maildir folder.
        dir: PathBuf,
        /// The keywords left out.
        keywords: Vec<String>,
    },
    /// Two folders whose safe names are the same (`INBOX/Work` and `Work`): this one was
    /// restored under a distinct name.
    Renamed {
        /// The folder renamed.
        folder: String,
        /// The folder that kept the name.
        other: String,
        /// The name both had.
        shared: String,
        /// The name it was restored as.
        now: String,
    },
    /// .eml files keep no flags.
    FlagsNotKept {
        /// Messages that had some.
        messages: u64,
    },
    /// A keyword IMAP cannot send (not an atom): left out.
    KeywordNotSent {
        /// The folder on the server.
        folder: String,
        /// The message.
        guid: Guid,
        /// The keyword.
        keyword: String,
    },
    /// A message whose stored copy is damaged (marked so by verify, a restore or a
    /// repair, or found so now): skipped, nothing of it written. The next backup run
    /// fetches it again while the mail server still has it.
    Damaged {
        /// The folder.
        folder: String,
        /// The record's UID.
        uid: u32,
        /// The message.
        guid: Guid,
        /// What is wrong with it.
        why: String,
    },
    /// A Cyrus restore could not keep a folder's UIDVALIDITY or UIDs: why, and what it did.
    UidsNotKept {
        /// The folder.
        folder: String,
        /// Why, and what was done.
        why: String,
    },
    /// A Cyrus restore created a folder under a new unique id (MAILBOXID), keeping its
    /// UIDVALIDITY and UIDs.
    NewMailboxId {
        /// The folder.
        folder: String,
        /// Why the old one could not be used.
        why: String,
    },
    /// A user file (seen state, a sieve script) not put back.
    UserFileNotRestored {
        /// Which.
        what: String,
        /// Why.
        why: String,
    },
    /// `--dry-run`: what a Cyrus restore would write.
    WouldWrite {
        /// The change, in words.
        what: String,
    },
    /// What a Cyrus restore filed, and left out as already there.
    Filed {
        /// Messages filed.
        appended: u64,
        /// Messages the folders already held (not sent again).
        already_there: u64,
    },
    /// The restore's time is older than the store's first backup: nothing of then is held,
    /// nothing was restored.
    BeforeOldestBackup {
        /// The time asked for.
        at: Timestamp,
        /// When the first backup kept was done (the oldest `--at` that finds anything).
        oldest: Timestamp,
    },
    /// A folder the user had at the restore's time whose state then the store no longer
    /// holds (compaction dropped it: older than the retention): not restored.
    FolderNotKept {
        /// The folder.
        folder: String,
        /// The time asked for.
        at: Option<Timestamp>,
        /// When the store was compacted, if it tells.
        compacted_on: Option<Timestamp>,
        /// Its oldest state the store holds (an `--at` from then on restores it).
        oldest_kept: Option<Timestamp>,
    },
    /// A record whose message compaction dropped (expunged or replaced longer ago than the
    /// retention): skipped.
    MessageNotKept {
        /// The folder.
        folder: String,
        /// The record's UID.
        uid: u32,
        /// The message.
        guid: Guid,
        /// When the store was compacted.
        compacted_on: Timestamp,
    },
    /// The restore's time is before the retention cutoff of the store's last compaction:
    /// folders deleted and messages expunged before the cutoff are no longer kept, and the
    /// store keeps no trace to name them by ([`RestoreReport::note_past_retention`]).
    BeforeRetention {
        /// The time asked for.
        at: Timestamp,
        /// When the store was compacted.
        compacted_on: Timestamp,
        /// Its cutoff: `compacted_on` less the retention configured.
        cutoff: Timestamp,
    },
    /// What an IMAP restore appended, and left out as already there.
    Appended {
        /// Messages appended.
        appended: u64,
        /// Messages the folder already held (not appended again).
        already_there: u64,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::NotStored { folder, uid, guid } => write!(
                f,
                "folder {folder:?} UID {uid}: message {} is not stored, skipped",
                guid.to_hex()
            ),
            Note::Damaged {
                folder,
                uid,
                guid,
                why,
            } => write!(
                f,
                "folder {folder:?} UID {uid}: message {} is damaged ({why}), not restored",
                guid.to_hex()
            ),
            Note::BeforeOldestBackup { at, oldest } => write!(
                f,
                "nothing restored as of {}: before the oldest backup kept ({}); --at {} or later finds mail",
                rfc3339(*at),
                rfc3339(*oldest),
                rfc3339(*oldest)
            ),
            Note::FolderNotKept {
                folder,
                at,
                compacted_on,
                oldest_kept,
            } => {
                write!(f, "folder {folder:?}: its state as of {} is not kept: ", when(*at))?;
                match compacted_on {
                    Some(on) => write!(f, "compacted away on {}", rfc3339(*on))?,
                    None => write!(f, "compacted away")?,
                }
                match oldest_kept {
                    Some(t) => write!(f, " (its oldest state kept: --at {})", rfc3339(*t)),
                    None => Ok(()),
                }
            }
            Note::BeforeRetention {
                at,
                compacted_on,
                cutoff,
            } => write!(
                f,
                "as of {} is before the retention cutoff ({}) of the store's compaction on {}: \
                 folders deleted and messages expunged before the cutoff are no longer kept and \
                 cannot be named; what the store holds of then was restored",
                rfc3339(*at),
                rfc3339(*cutoff),
                rfc3339(*compacted_on)
            ),
            Note::MessageNotKept {
                folder,
                uid,
                guid,
                compacted_on,
            } => write!(
                f,
                "folder {folder:?} UID {uid}: message {} is not kept: compacted away on {}, not restored",
                guid.to_hex(),
                rfc3339(*compacted_on)
            ),
            Note::KeywordsLeftOut { dir, keywords } => write!(
                f,
                "{}: more than 26 keywords; left out: {}",
                dir.display(),
                keywords.join(" ")
            ),
            Note::Renamed {
                folder,
                other,
                shared,
                now,
            } => write!(
                f,
                "folder {folder:?} has the same target name as folder {other:?} ({shared}): restored as {now}"
            ),
            Note::FlagsNotKept { messages } => {
                write!(f, "eml keeps no flags: {messages} messages had some")
            }
            Note::KeywordNotSent {
                folder,
                guid,
                keyword,
            } => write!(
                f,
                "{folder}: message {}: keyword {keyword:?} is not an IMAP atom, not kept",
                guid.to_hex()
            ),
            Note::UidsNotKept { folder, why } => {
                write!(f, "folder {folder:?}: UIDs not kept: {why}")
            }
            Note::NewMailboxId { folder, why } => write!(
                f,
                "folder {folder:?}: created with a new mailbox id (UIDVALIDITY and UIDs kept): {why}"
            ),
            Note::UserFileNotRestored { what, why } => write!(f, "{what} not restored: {why}"),
            Note::WouldWrite { what } => write!(f, "dry run: would {what}"),
            Note::Filed {
                appended,
                already_there,
            } => write!(
                f,
                "cyrus: {appended} filed, {already_there} already there (not sent again)"
            ),
            Note::Appended {
                appended,
                already_there,
            } => write!(
                f,
                "imap: {appended} appended, {already_there} already there (not appended again)"
            ),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Folders written.
    pub folders: u64,
    /// Messages written.
    pub messages: u64,
    /// Message bytes written.
    pub bytes: u64,
    /// Records whose message the store does not hold (skipped).
    pub not_stored: u64,
    /// Messages skipped because their stored copy is damaged (each has a
    /// [`Note::Damaged`]).
    pub damaged: u64,
    /// What the selection covered as of its time that the store no longer holds: a time
    /// before the first backup, folders and messages compacted away, a time before the
    /// last compaction's cutoff (each has a [`Note::BeforeOldestBackup`],
    /// [`Note::FolderNotKept`], [`Note::MessageNotKept`] or [`Note::BeforeRetention`]).
    pub not_kept: u64,
    /// Damage this restore found that the index did not know yet: whether it was marked
    /// for the next run to fetch the messages again.
    pub damage_recorded: Option<crate::store::DamageRecording>,
    /// When the store was last compacted, if after the restore's time (what a compaction
    /// dropped may be missing: [`RestoreReport::note_past_retention`]).
    pub compacted_on: Option<Timestamp>,
    /// Chunks inflated (one per message read).
    pub chunks_inflated: u64,
    /// Uncompressed bytes inflated in all.
    pub inflated: u64,
    /// Records skipped, and what the target could not keep (keywords and the like).
    pub notes: Vec<Note>,
}

impl RestoreReport {
    /// Adds a [`Note::BeforeRetention`] (counted in `not_kept`) when the restore's time `at`
    /// is before the cutoff of the store's last compaction, `retention_secs` (the
    /// configuration's `retention_days`: the store does not record the retention a
    /// compaction used) before it. Such a restore may lack what the compaction dropped
    /// without a trace.
    pub fn note_past_retention(&mut self, at: Option<Timestamp>, retention_secs: i64) {
        let (Some(at), Some(on)) = (at, self.compacted_on) else {
            return;
        };
        let cutoff = Timestamp::from_secs(on.secs.saturating_sub(retention_secs));
        if at < cutoff {
            self.not_kept += 1;
            self.notes.push(Note::BeforeRetention {
                at,
                compacted_on: on,
                cutoff,
            });
        }
    }
}

/// Maps one level of a folder name to a file name that is safe on its own: no `/`, `\`,
/// `.` (Maildir++'s separator, and so no `..` or hidden names), `%`, NUL or control
/// character survives: each such byte becomes `%` and two upper-case hex digits. An empty
/// level becomes `%`. Longer than 200 bytes: cut there (at a character boundary) and `~`
/// and 16 hex digits of the name's SHA-1 added, so distinct names stay distinct.
pub fn safe_component(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    for c in level.chars() {
        match c {
            '/' | '\\' | '.' | '%' | '~' | '\u{7f}' => out.push_str(&format!("%{:02X}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("%{:02X}", c as u32)),
            // C1 controls and the like: not in file names either.
            c if c.is_control() => {
                let mut b = [0u8; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return "%".to_owned();
    }
    if out.len() > 200 {
        let mut cut = 200;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // Never inside an escape.
        if let Some(p) = out[..cut].rfind('%').filter(|p| cut - p < 3) {
            cut = p;
        }
        let h = Guid::of(level.as_bytes()).to_hex();
        out.truncate(cut);
        out.push('~');
        out.push_str(&h[..16]);
    }
    out
}

/// Splits a store folder name (the folder as its owner sees it, as backupd lists it:
/// `INBOX`, `Work/Sub`, levels separated by `/`) into levels below INBOX, each made safe.
/// `INBOX` (any case) is the root; a leading `INBOX/` is dropped. `user` is not used for
/// splitting; it is there so a later namespace can depend on it.
pub fn folder_levels(_user: &str, name: &str) -> SafeFolder {
    let rest = below_inbox(name);
    let levels = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').map(safe_component).collect()
    };
    SafeFolder {
        name: name.to_owned(),
        levels,
    }
}

/// A store folder name below the user's INBOX: `INBOX` (any case) is the root (empty), a
/// leading `INBOX/` is dropped, anything else is as it is. Never cuts a character (a name
/// from a mail server may hold any bytes).
pub(crate) fn below_inbox(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        return "";
    }
    match name.get(..6) {
        Some(p) if p.eq_ignore_ascii_case("INBOX/") && name.len() > 6 => &name[6..],
        _ => name,
    }
}

/// Restores `user`'s mail from the store under `root` into `target`.
pub fn restore(
    root: &Path,
    user: &str,
    sel: &Selection,
    target: &Target,
) -> Result<RestoreReport, RestoreError> {
    restore_as(root, user, sel, target, None)
}

/// [`restore`], what it creates in a local target (Maildir, mbox, .eml) owned by `owner`
/// (`restore --owner USER`).
pub fn restore_as(
    root: &Path,
    user: &str,
    sel: &Selection,
    target: &Target,
    owner: Option<Owner>,
) -> Result<RestoreReport, RestoreError> {
    if owner.is_some() && matches!(target, Target::Imap(_) | Target::Cyrus(_)) {
        return Err(RestoreError::OwnerNotLocal);
    }
    if sel.uid.is_some() && sel.folder.is_none() {
        return Err(RestoreError::UidNeedsFolder);
    }
    if sel.uid.is_some() && sel.guid.is_some() {
        return Err(RestoreError::UidAndGuid);
    }
    // A data file cut short still restores what it holds; the rest is named as damaged.
    let reader =
        StoreReader::open_past_damage(root, user).map_err(|source| RestoreError::OpenStore {
            user: user.to_owned(),
            source: Box::new(source),
        })?;
    let cat = reader.catalog();
    let by_guid_alone = sel.folder.is_none() && sel.guid.is_some();
    // Reaching back past what the store kept is said, never a silent partial restore.
    let reach = retention::Reach::of(cat)?;
    if let Some(n) = reach.before_first_backup(sel.at).filter(|_| !by_guid_alone) {
        return Ok(RestoreReport {
            not_kept: 1,
            notes: vec![n],
            ..RestoreReport::default()
        });
    }
    let mut folders = if by_guid_alone {
        Vec::new()
    } else {
        pick_folders(cat, sel, reach.compacted_after(sel.at))?
    };
    // INBOX first, then parents before children (name order): a mail server creates a
    // user's folders only under an existing INBOX.
    folders.sort_by(|a, b| {
        let inbox = |f: &FolderAt| !f.name.eq_ignore_ascii_case("INBOX");
        inbox(a).cmp(&inbox(b)).then_with(|| a.name.cmp(&b.name))
    });
    let single_folder = folders.len() <= 1;
    let mut sink: Box<dyn Sink> = match target {
        Target::Maildir(d) => Box::new(maildir::Maildir::new(d, owner)?),
        Target::Mbox(f) => Box::new(mbox::Mbox::new(f, single_folder, owner)?),
        Target::Eml(d) => Box::new(eml::Eml::new(d, owner)?),
        Target::Imap(t) => Box::new(imap::ImapSink::connect(
            t,
            t.account.as_deref().unwrap_or(user),
        )?),
        Target::Cyrus(t) => Box::new(cyrus::CyrusSink::connect(t, user)?),
    };
    let mut rep = RestoreReport {
        // A message by GUID alone is not looked for as of a time.
        compacted_on: reach.compacted_after(sel.at).filter(|_| !by_guid_alone),
        ..RestoreReport::default()
    };
    if sink.wants_identity() {
        sink.user_files(user_files_at(cat, sel)?)?;
    }
    // A file target never merges two folders whose safe names collide.
    let (safe_names, renamed) = if matches!(target, Target::Imap(_) | Target::Cyrus(_)) {
        Default::default()
    } else {
        let ids: Vec<(&str, &str)> = folders
            .iter()
            .map(|f| (f.unique_id.as_str(), f.name.as_str()))
            .collect();
        distinct::distinct_names(user, &ids)
    };
    rep.notes.extend(renamed);

    if sel.folder.is_none() {
        if let Some(g) = sel.guid {
            // A message by GUID alone: no folder, no flags.
            let m = cat.message(&g)?.ok_or_else(|| RestoreError::NotStored {
                user: user.to_owned(),
                guid: g,
            })?;
            let item = Item {
                uid: 0,
                guid: g,
                internal_date: m.internal_date.unwrap_or(m.stored_at),
                flags: Vec::new(),
                size: m.entry.data_len,
            };
            sink.folder(&folder_levels(user, "INBOX"))?;
            rep.folders += 1;
            if write_one(cat, sink.as_mut(), &item, &mut None, &mut rep)?.is_some() {
                return Err(RestoreError::WrongHash { guid: g });
            }
            rep.notes.extend(sink.finish()?);
            return Ok(rep);
        }
    }

    let mut found_damaged = Vec::new();
    for f in &folders {
        if let Some(n) = reach.folder(cat, f, sel.at)? {
            rep.not_kept += 1;
            rep.notes.push(n);
            continue;
        }
        let safe = safe_names
            .get(&f.unique_id)
            .cloned()
            .unwrap_or_else(|| folder_levels(user, &f.name));
        let mut items = Vec::new();
        if let Some(uid) = sel.uid {
            let m =
                cat.message_at(&f.unique_id, uid, sel.at)?
                    .ok_or_else(|| RestoreError::NoUid {
                        folder: f.name.clone(),
                        uid,
                        at: sel.at,
                    })?;
            if m.state != MessageState::Visible && !sel.include_expunged {
                return Err(RestoreError::NotVisible {
                    folder: f.name.clone(),
                    uid,
                    at: sel.at,
                    state: m.state,
                });
            }
            items.push(m);
        } else {
            cat.messages_at(&f.unique_id, sel.at, sel.include_expunged, |m| {
                if sel.guid.is_none_or(|g| g == m.guid) {
                    items.push(m);
                }
                Ok(())
            })?;
            if let (Some(guid), true) = (sel.guid, items.is_empty()) {
                return Err(RestoreError::NoMessage {
                    folder: f.name.clone(),
                    guid,
                    at: sel.at,
                });
            }
        }
        if sink.wants_identity() {
            sink.identity(identity_of(cat, f)?);
        }
        sink.folder(&safe)?;
        rep.folders += 1;
        if sink.any_order() {
            // In the data file's order: each chunk is inflated once, read on from message
            // to message (`cursor`), instead of from its start for every message.
            let mut keyed = Vec::with_capacity(items.len());
            for m in items {
                let at = match cat.message(&m.guid)? {
                    Some(s) => (s.entry.chunk_offset, s.entry.header_offset),
                    None => (u64::MAX, u64::MAX),
                };
                keyed.push((at, m));
            }
            keyed.sort_by_key(|(at, m)| (*at, m.uid));
            items = keyed.into_iter().map(|(_, m)| m).collect();
        }
        let mut cursor = None;
        for m in items {
            if let Some(d) = cat.is_damaged(&m.guid)? {
                rep.damaged += 1;
                rep.notes.push(Note::Damaged {
                    folder: f.name.clone(),
                    uid: m.uid,
                    guid: m.guid,
                    why: d.why,
                });
                continue;
            }
            if !m.stored {
                let n = reach.message_not_held(&f.name, &m);
                if matches!(n, Note::NotStored { .. }) {
                    rep.not_stored += 1;
                } else {
                    rep.not_kept += 1;
                }
                rep.notes.push(n);
                continue;
            }
            // A message that cannot be read back whole and right is skipped and named; the
            // rest of the selection is restored (a target's own failure still stops it).
            let flags = expunged::restored_flags(cat, &f.unique_id, &m, sel.keep_deleted_flag)?;
            let item = item_of(&m, flags);
            if let Some(why) = write_one(cat, sink.as_mut(), &item, &mut cursor, &mut rep)? {
                rep.damaged += 1;
                rep.notes.push(Note::Damaged {
                    folder: f.name.clone(),
                    uid: m.uid,
                    guid: m.guid,
                    why,
                });
                found_damaged.push(DamageAt::Message { guid: m.guid });
            }
        }
    }
    rep.notes.extend(sink.finish()?);
    drop(reader);
    if !found_damaged.is_empty() {
        rep.damage_recorded = Some(record_damage(
            root,
            user,
            &found_damaged,
            "found by a restore",
        ));
    }
    Ok(rep)
}

/// What the store's snapshot of a folder (as of the selection's time) says of its
/// identity: its cyrus.index header and records, its cyrus.header's ACL.
fn identity_of(cat: &Catalog, f: &FolderAt) -> Result<Option<FolderIdentity>, RestoreError> {
    let Some(snap) = &f.snapshot else {
        return Ok(None);
    };
    let index = cat.read_entry(&snap.index)?;
    let (header, records) = match formats::cyrus::index::parse_all(&index) {
        Ok(parsed) => parsed,
        // The store checked it when it was copied; a snapshot that no longer parses leaves
        // the folder to be created under a new identity (the messages are still restored).
        Err(_) => return Ok(None),
    };
    let acl = match &snap.header {
        Some(h) => formats::cyrus::header::parse(&cat.read_entry(h)?)
            .ok()
            .filter(|h| !h.acl.is_empty())
            .map(|h| {
                h.acl
                    .iter()
                    .map(|a| format!("{}\t{}\t", a.identifier, a.rights))
                    .collect::<String>()
            }),
        None => None,
    };
    Ok(Some(FolderIdentity {
        unique_id: f.unique_id.clone(),
        uidvalidity: header.uidvalidity,
        highestmodseq: header.highestmodseq,
        createdmodseq: header.createdmodseq,
        partition: snap.partition.clone(),
        acl,
        records: records
            .iter()
            .map(|r| (r.uid, (r.modseq.unwrap_or(0), r.last_updated)))
            .collect(),
    }))
}

/// The user's own files as of the selection's time.
fn user_files_at(cat: &Catalog, sel: &Selection) -> Result<UserFiles, RestoreError> {
    let mut files = UserFiles {
        whole_user: sel.folder.is_none() && sel.guid.is_none() && sel.uid.is_none(),
        ..UserFiles::default()
    };
    for held in cat.user_files_at(sel.at)? {
        let bytes = cat.read_entry(&held.entry)?;
        match held.kind {
            formats::archive::UserFileKind::Seen => files.seen = Some(bytes),
            formats::archive::UserFileKind::Subscriptions => files.subscriptions = Some(bytes),
            formats::archive::UserFileKind::Sieve { name, active } => {
                files.sieve.push(SieveScript {
                    name,
                    active,
                    time: held.time,
                    source: bytes,
                })
            }
        }
    }
    Ok(files)
}

/// The item a sink gets for record `m`, with the flags it is restored with.
fn item_of(m: &MessageAt, flags: Vec<String>) -> Item {
    Item {
        uid: m.uid,
        guid: m.guid,
        internal_date: m.internal_date,
        flags,
        size: m.size,
    }
}

/// Reads one message (inflating its one chunk up to it) into the sink, checking its SHA-1.
/// `Ok(Some(why))`: the stored copy could not be read back whole and right (a chunk that
/// does not inflate, bytes that do not hash to the GUID); the sink kept nothing of it.
/// `Err`: the target failed, or the index could not be read.
fn write_one<'c>(
    cat: &'c Catalog,
    sink: &mut dyn Sink,
    item: &Item,
    cursor: &mut Option<EntryReader<PositionalReader<'c>>>,
    rep: &mut RestoreReport,
) -> Result<Option<String>, RestoreError> {
    let entry = match cat.message(&item.guid)? {
        Some(m) => m.entry,
        None => return Err(RestoreError::MessageGone { guid: item.guid }),
    };
    // Read on in the chunk the last message was read from when this one lies further on in
    // it; otherwise inflate its chunk from the start.
    let (mut r, base) = match cursor.take() {
        Some(c) if c.can_reach(entry.chunk_offset, entry.header_offset) => {
            let base = c.inflated();
            match c.next_in_chunk(entry.header_offset) {
                Ok(r) => (r, base),
                Err(e) => return Ok(Some(e.to_string())),
            }
        }
        _ => match cat.open_entry(&entry) {
            Ok(r) => {
                rep.chunks_inflated += 1;
                (r, 0)
            }
            Err(StoreError::Archive { source, .. }) => return Ok(Some(source.to_string())),
            Err(e) => return Err(e.into()),
        },
    };
    let mut hashing = Hashing {
        inner: &mut r,
        hasher: <sha1::Sha1 as sha1::Digest>::new(),
        len: 0,
        read_error: None,
    };
    let written = sink.message(item, &mut hashing);
    if let Err(e @ RestoreError::CutFailed { .. }) = written {
        // The target could not take the damaged bytes out again: that is its failure.
        return Err(e);
    }
    if let Some(why) = hashing.read_error.take() {
        // The store's side failed (the sink reports it as its own write error, or as a
        // hash mismatch): the message is damaged, whatever the sink made of it.
        return Ok(Some(why));
    }
    match written {
        Ok(()) => {}
        Err(RestoreError::NotWritten { sha1, .. }) => {
            return Ok(Some(format!("its bytes hash to {}", sha1.to_hex())))
        }
        // A sink that checks before it sends (IMAP) refused it: nothing was written.
        Err(RestoreError::WrongHash { .. }) => {
            return Ok(Some("its bytes do not hash to its GUID".to_owned()))
        }
        Err(e) => return Err(e),
    }
    // Whatever the sink left unread is read, so the hash covers every byte.
    if let Err(e) = std::io::copy(&mut hashing, &mut std::io::sink()) {
        return Ok(Some(e.to_string()));
    }
    let (len, digest) = (hashing.len, sha1::Digest::finalize(hashing.hasher));
    if digest[..] != item.guid.0[..] {
        // Only a sink that writes before the bytes are checked gets here (IMAP checks
        // before it sends): the target may hold it, so this stays an error.
        return Err(RestoreError::WrongHash { guid: item.guid });
    }
    rep.inflated += r.inflated() - base;
    rep.messages += 1;
    rep.bytes += len;
    *cursor = Some(r);
    Ok(None)
}

struct Hashing<'a, R: Read> {
    inner: &'a mut R,
    hasher: sha1::Sha1,
    len: u64,
    /// The store's side failed (what it said): the message is damaged.
    read_error: Option<String>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.read_error = Some(e.to_string());
                return Err(e);
            }
        };
        sha1::Digest::update(&mut self.hasher, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The folders a selection covers, as of its time (`compacted_on`: the store's last
/// compaction, when after that time, for the errors to say).
fn pick_folders(
    cat: &Catalog,
    sel: &Selection,
    compacted_on: Option<Timestamp>,
) -> Result<Vec<FolderAt>, RestoreError> {
    let Some(name) = &sel.folder else {
        return Ok(cat.folders_at(sel.at)?);
    };
    let mut out = Vec::new();
    match cat.folder_at(name, sel.at)? {
        Some(f) => out.push(f),
        None if !sel.subfolders => {
            return Err(RestoreError::NoFolder {
                folder: name.clone(),
                at: sel.at,
                compacted_on,
            })
        }
        None => {}
    }
    if sel.subfolders {
        let prefix = format!("{name}/");
        out.extend(
            cat.folders_at(sel.at)?
                .into_iter()
                .filter(|f| f.name.starts_with(&prefix)),
        );
        if out.is_empty() {
            return Err(RestoreError::NoFolderTree {
                folder: name.clone(),
                at: sel.at,
                compacted_on,
            });
        }
    }
    Ok(out)
}

/// Sets a file's modification time to a message's internal date (mail readers sort by it),
/// on its descriptor (`futimens`).
pub(crate) fn set_mtime(file: &std::fs::File, t: Timestamp) {
    if t.secs >= 0 {
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(t.secs as u64, t.nanos);
        // Cosmetic: a file system that refuses it still holds the message.
        let _ = file.set_modified(when);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_prefixes_are_cut_at_character_boundaries_only() {
        assert_eq!(below_inbox("INBOX"), "");
        assert_eq!(below_inbox("inbox/Work"), "Work");
        assert_eq!(below_inbox("Work"), "Work");
        // Six bytes in, inside a character: no panic, the name as it is.
        assert_eq!(below_inbox("Donné/x"), "Donné/x");
        assert_eq!(below_inbox("aééé/x"), "aééé/x");
        assert_eq!(folder_levels("u", "ééé/x").levels, ["ééé", "x"]);
    }

    #[test]
    fn targets_parse_and_refuse_with_reasons() {
        assert_eq!(
            "maildir:/r".parse::<Target>().unwrap(),
            Target::Maildir("/r".into())
        );
        assert!(matches!(
            "imap://a@h:1/".parse::<Target>().unwrap(),
            Target::Imap(t) if t.port == 1
        ));
        let e = |s: &str| s.parse::<Target>().unwrap_err();
        assert_eq!(e("nocolon"), TargetError::NoKind("nocolon".into()));
        assert_eq!(
            e("maildir:").to_string(),
            "expected a path after maildir:, found none"
        );
        assert!(matches!(e("foo:/x"), TargetError::UnknownKind { kind, .. } if kind == "foo"));
        assert!(matches!(e("imap://h:143/"), TargetError::Imap(_)));
    }

    #[test]
    fn notes_and_errors_say_what_and_where() {
        let g = Guid::of(b"m");
        assert_eq!(
            Note::Appended {
                appended: 3,
                already_there: 1
            }
            .to_string(),
            "imap: 3 appended, 1 already there (not appended again)"
        );
        assert_eq!(
            Note::NotStored {
                folder: "Work".into(),
                uid: 7,
                guid: g
            }
            .to_string(),
            format!(
                "folder \"Work\" UID 7: message {} is not stored, skipped",
                g.to_hex()
            )
        );
        assert_eq!(
            Note::Damaged {
                folder: "INBOX".into(),
                uid: 3,
                guid: g,
                why: "found by verify".into()
            }
            .to_string(),
            format!(
                "folder \"INBOX\" UID 3: message {} is damaged (found by verify), not restored",
                g.to_hex()
            )
        );
        let e = RestoreError::NotVisible {
            folder: "INBOX".into(),
            uid: 1,
            at: Some(Timestamp::from_secs(1_795_406_400)),
            state: MessageState::Gone,
        };
        assert_eq!(
            e.to_string(),
            "folder \"INBOX\": UID 1 was gone as of 2026-11-23T04:00:00Z (--include-expunged restores it)"
        );
    }
}
