//! The daemon's access to the Cyrus spool: where this module opens, locks and reads Cyrus's
//! files. The formats themselves are parsed by the `formats` crate; this is the I/O edge.
//!
//! ## Reading mailboxes.db
//!
//! Cyrus's own readers (lib/cyrusdb_twoskip.c over lib/mappedfile.c, built with fcntl
//! locking as Debian's package is) take a **shared fcntl lock on the whole file**
//! (`F_SETLKW`, `F_RDLCK`, start 0, length 0), then compare the inode of the open file with
//! the inode at the path, and reopen and lock again if they differ: a repack ("checkpoint")
//! writes `mailboxes.db.NEW` and renames it over the old file, so a lock on the old inode
//! protects nothing. Writers take the exclusive lock for a whole transaction, so under the
//! shared lock the file holds only committed transactions, and no writer can start one.
//!
//! [`open_locked`] does the same with an open-file-description lock (`F_OFD_SETLK`, Linux
//! 3.15+, tried again until the lock timeout: see [`crate::locks`]). On Linux OFD locks and classic POSIX locks conflict with each other, so Cyrus's
//! writers wait for it exactly as for one of their own readers; unlike a classic lock it
//! belongs to this open file, not to the process, so another thread of the daemon that opens
//! and closes the same file cannot drop it by accident.
//!
//! The file is not read whole, nor mapped: [`read_mailbox_list`] walks it through a 256 KiB
//! window with `pread` (`formats::cyrus::twoskip::TwoskipReader`), seeking straight to the
//! mailbox entries, and lets the lock go every [`BATCH`] mailboxes as Cyrus's own listing
//! does; [`user_mailboxes`] seeks to one user's entries and reads a few dozen records.
//! Memory is the window plus the list built; no `unsafe`. docs/mailbox-list.md has the
//! measurements behind this choice (against reading the file whole, mapping it, and Cyrus's
//! own tools).
//!
//! If Cyrus crashed in a transaction, the header is marked dirty and bytes past its
//! `current_size` are uncommitted. Cyrus's next reader would repair the file under an
//! exclusive lock; backupd never writes the spool, so it reads the committed state instead
//! (see `formats::cyrus::twoskip`), which is what that repair keeps.

use crate::locks::{self, DEFAULT_LOCK_TIMEOUT};
use formats::cyrus::imapd_conf::{ImapdConf, ImapdConfError, VirtDomains};
use formats::cyrus::mailboxes::{
    layout_hint, Layout, MailboxEntry, MailboxKey, MailboxListError, MailboxType, SpoolHashing,
};
use formats::cyrus::twoskip::{Entry, ReadAt, TwoskipReader};
use nix::errno::Errno;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Something on the spool that could not be read; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file could not be opened, stat'ed or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The lock could not be taken or released.
    #[error("{path}: fcntl lock: {source}")]
    Lock {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: Errno,
    },
    /// Another process (a Cyrus writer) held a conflicting lock for longer than the lock
    /// timeout (`lock_timeout_secs`).
    #[error(
        "{path}: gave up waiting for the lock after {secs:.1} s (lock_timeout_secs): \
         another process, most likely a Cyrus writer, holds it",
        secs = .waited.as_secs_f64()
    )]
    LockTimeout {
        /// The file.
        path: PathBuf,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// imapd.conf is malformed.
    #[error("{path}: {source}")]
    Conf {
        /// The configuration file.
        path: PathBuf,
        /// Where and what.
        source: ImapdConfError,
    },
    /// imapd.conf lacks something this reader needs, or asks for what it cannot read.
    #[error("imapd.conf: {0}")]
    Config(String),
    /// The mailbox list is damaged.
    #[error("{path}: {source}")]
    MailboxList {
        /// The mailboxes.db file.
        path: PathBuf,
        /// Where and what.
        source: MailboxListError,
    },
    /// No live mailbox of this user is in the mailbox list.
    #[error("unknown user {user:?}: the mailbox list holds no live mailbox of that user")]
    UnknownUser {
        /// The user id asked for.
        user: String,
    },
    /// The user has no live mailbox with this unique id (never had, or it was deleted).
    #[error("user {user:?} has no live folder with unique id {uniqueid:?}")]
    UnknownFolder {
        /// The user id asked for.
        user: String,
        /// The unique id asked for.
        uniqueid: String,
    },
    /// A name was refused before any path was built from it.
    #[error("refused {what} {name:?}: {rule}")]
    BadName {
        /// What the name was meant to name (`user`, `unique id`, `sieve script`, ...).
        what: &'static str,
        /// The name as given (cut to 200 characters).
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A copied cyrus.header does not parse, in every copy taken under Cyrus's locks.
    #[error("{path}: {source} (in each of {attempts} copies taken under Cyrus's locks)")]
    BadHeader {
        /// The cyrus.header file.
        path: PathBuf,
        /// How many copies were tried.
        attempts: u32,
        /// Where and what.
        source: formats::cyrus::header::HeaderError,
    },
    /// A copied cyrus.index does not parse, in every copy taken under Cyrus's locks.
    #[error("{path}: {source} (in each of {attempts} copies taken under Cyrus's locks)")]
    BadIndex {
        /// The cyrus.index file.
        path: PathBuf,
        /// How many copies were tried.
        attempts: u32,
        /// Where and what.
        source: formats::cyrus::index::IndexError,
    },
    /// Cyrus compiled a sieve script whose source is not among the live messages of the
    /// user's `#sieve` mailbox.
    #[error(
        "sieve script {name:?} of user {user:?}: {bytecode} exists, but no live message of \
         the #sieve mailbox has that name as its Subject"
    )]
    SieveSource {
        /// The user id.
        user: String,
        /// The script name.
        name: String,
        /// The compiled script.
        bytecode: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads imapd.conf at `path`, and the files it `@include`s (one level deep, as written).
pub fn load_imapd_conf(path: &Path) -> Result<ImapdConf, SpoolError> {
    let conf_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SpoolError::Conf { path, source }
    };
    let text = std::fs::read(path).map_err(io(path))?;
    let mut conf = ImapdConf::parse(&text).map_err(conf_err(path))?;
    for include in conf.includes().to_vec() {
        let inc = Path::new(&include);
        let text = std::fs::read(inc).map_err(io(inc))?;
        let other = ImapdConf::parse(&text).map_err(conf_err(inc))?;
        conf.merge(other).map_err(conf_err(inc))?;
    }
    Ok(conf)
}

/// The whole of the Cyrus database file at `path`, read under the shared lock Cyrus's own
/// readers take; the lock is released before returning. For small files (and the
/// measurements in docs/mailbox-list.md); [`read_mailbox_list`] does not need the whole file.
pub fn read_locked(path: &Path) -> Result<Vec<u8>, SpoolError> {
    let mut file = open_locked(path)?;
    let mut data = Vec::with_capacity(file.metadata().map_err(io(path))?.len() as usize);
    file.read_to_end(&mut data).map_err(io(path))?;
    locks::unlock(&file, path)?;
    Ok(data)
}

/// One mailbox as backupd keeps it in memory: what a backup needs to find, identify and
/// compare it. The ACL and the name history stay in mailboxes.db (and cyrus.header, which is
/// backed up whole); `formats::cyrus::mailboxes::MailboxEntry` has everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The folder as the owner sees it: `INBOX`, `Work/Sub`; a shared mailbox's whole name.
    pub folder: Box<str>,
    /// The unique id (empty for the rare entry without one).
    pub uniqueid: Box<str>,
    /// The partition (empty if none); shared between the mailboxes of one partition.
    pub partition: Arc<str>,
    /// Kind and flags; [`MailboxType::has_spool_dir`] says whether files exist here.
    pub mbtype: MailboxType,
    /// Set for a delayed-deleted mailbox (`DELETED.user.alice.Work.<hex time>`): its time.
    pub deleted_at: Option<u32>,
    /// The directory under the partition root, for mailboxes stored by name (flag `l`);
    /// `None` for those stored by unique id (see [`Mailbox::spool_dir`]).
    pub legacy_dir: Option<Box<str>>,
    /// `V`.
    pub uidvalidity: u32,
    /// `F`: bumped when the folder itself (name, ACL, annotations) changes.
    pub foldermodseq: u64,
}

impl Mailbox {
    /// The directory relative to the partition root (`uuid/<c1>/<c2>/<unique id>`, or the
    /// name-based one), or `None` if the mailbox has no files on this server.
    pub fn spool_dir(&self) -> Option<String> {
        if !self.mbtype.has_spool_dir() || self.partition.is_empty() {
            return None;
        }
        if let Some(dir) = &self.legacy_dir {
            return Some(dir.to_string());
        }
        let mut c = self.uniqueid.chars();
        let (c1, c2) = (c.next()?, c.next()?);
        Some(format!("uuid/{c1}/{c2}/{}", self.uniqueid))
    }
}

/// Every mailbox of the server, grouped by the user it belongs to.
#[derive(Debug, Clone, Default)]
pub struct MailboxList {
    /// The key layout found (3.5+ by name, or 3.0 to 3.4 legacy).
    pub layout: Option<Layout>,
    /// User id (`alice`, `alice@example.com`) → that user's mailboxes in key order (INBOX,
    /// then its sub folders; delayed-deleted ones apart).
    pub users: BTreeMap<Box<str>, Vec<Mailbox>>,
    /// Mailboxes that belong to no user (shared folders).
    pub shared: Vec<Mailbox>,
}

impl MailboxList {
    /// Number of mailboxes, users' and shared.
    pub fn mailbox_count(&self) -> usize {
        self.shared.len() + self.users.values().map(Vec::len).sum::<usize>()
    }
}

/// A Cyrus file read with `pread`, for [`TwoskipReader`].
struct FileAt(File);

impl ReadAt for FileAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
}

/// Mailboxes read per hold of the lock by [`read_mailbox_list`]: about 0.15 s on the machine
/// of docs/mailbox-list.md, so that Cyrus never waits long to create or rename a mailbox.
pub const BATCH: usize = 100_000;

/// Reads the server's mailbox list: mailboxes.db as imapd.conf places it, through a 256 KiB
/// window (the file is never held whole: see the module documentation), under Cyrus's
/// shared lock. Like Cyrus's own listing, the lock is let go every [`BATCH`] mailboxes and
/// the walk resumes after the last key read, so the list is not one snapshot of the whole
/// server: a mailbox created or renamed meanwhile may be missed or seen twice. (A 3.0-3.4
/// database, whose key order cannot be sought, is read in one hold.) For one user's
/// consistent view use [`user_mailboxes`]. Entries without files on this server
/// (tombstones, remote, reserved, intermediate) are kept and marked: see
/// [`MailboxType::has_spool_dir`].
///
/// Waits at most [`DEFAULT_LOCK_TIMEOUT`] for each lock ([`Spool::users`] takes the
/// spool's).
pub fn read_mailbox_list(conf: &ImapdConf) -> Result<MailboxList, SpoolError> {
    read_mailbox_list_in_batches(conf, BATCH, DEFAULT_LOCK_TIMEOUT)
}

fn read_mailbox_list_in_batches(
    conf: &ImapdConf,
    batch: usize,
    lock_timeout: Duration,
) -> Result<MailboxList, SpoolError> {
    let path = mailboxes_db_path(conf)?;
    let hashing = conf
        .spool_hashing()
        .map_err(|source| SpoolError::Config(source.to_string()))?;
    let list_err = |source| SpoolError::MailboxList {
        path: path.clone(),
        source,
    };
    let mut walk = ListWalk::new(conf.deletedprefix(), hashing);
    let mut resume = None;
    loop {
        let file = open_locked_within(&path, lock_timeout)?;
        let db = TwoskipReader::open(FileAt(file)).map_err(|e| list_err(e.into()))?;
        resume = walk.batch(db, resume, batch).map_err(list_err)?;
        // The file, and with it the lock, is closed here.
        if resume.is_none() {
            return Ok(walk.finish());
        }
    }
}

/// The mailbox list in a twoskip mailboxes.db (any [`ReadAt`]: a file, or bytes), grouped by
/// user, in one pass. No locking: the caller holds the lock.
pub fn list_mailboxes<R: ReadAt>(
    src: R,
    deleted_prefix: &str,
    hashing: SpoolHashing,
) -> Result<MailboxList, MailboxListError> {
    let mut walk = ListWalk::new(deleted_prefix, hashing);
    walk.batch(TwoskipReader::open(src)?, None, usize::MAX)?;
    Ok(walk.finish())
}

/// A walk over the mailbox entries that can stop after a number of them and resume later,
/// in a newly opened file, after the last key read.
struct ListWalk<'c> {
    list: MailboxList,
    partitions: Vec<Arc<str>>,
    deleted_prefix: &'c str,
    hashing: SpoolHashing,
}

impl<'c> ListWalk<'c> {
    fn new(deleted_prefix: &'c str, hashing: SpoolHashing) -> Self {
        ListWalk {
            list: MailboxList::default(),
            partitions: Vec::new(),
            deleted_prefix,
            hashing,
        }
    }

    /// Adds up to `limit` mailboxes, starting after key `resume` (or at the start); returns
    /// the last key read if it stopped at the limit.
    fn batch<R: ReadAt>(
        &mut self,
        mut db: TwoskipReader<R>,
        resume: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, MailboxListError> {
        let layout = match self.list.layout {
            Some(layout) => layout,
            None => {
                let mut layout = None;
                while let Some(e) = db.next_entry()? {
                    layout = layout_hint(e.key, e.value);
                    if layout.is_some() {
                        break;
                    }
                }
                *self.list.layout.insert(layout.unwrap_or(Layout::Legacy))
            }
        };
        // Keys of a legacy database are in mailbox-name order, which a seek cannot follow.
        let limit = if layout == Layout::Legacy {
            usize::MAX
        } else {
            limit
        };
        match (&resume, layout) {
            (Some(key), _) => db.seek(key),
            (None, Layout::ByName) => db.seek(b"N"),
            (None, Layout::Legacy) => db.rewind(),
        }
        let mut count = 0;
        while let Some(e) = db.next_entry()? {
            if resume.as_deref() == Some(e.key) {
                continue; // read in the previous batch
            }
            let name = match MailboxKey::classify(e.key, layout) {
                MailboxKey::Name(name) => name,
                _ if layout == Layout::ByName && !e.key.starts_with(b"N") => break,
                _ => continue,
            };
            let (mailbox, user) = to_mailbox(
                &e,
                name,
                layout,
                self.deleted_prefix,
                self.hashing,
                &mut self.partitions,
            )?;
            match user {
                Some(user) => self
                    .list
                    .users
                    .entry(user.into())
                    .or_default()
                    .push(mailbox),
                None => self.list.shared.push(mailbox),
            }
            count += 1;
            if count == limit {
                return Ok(Some(e.key.to_vec()));
            }
        }
        Ok(None)
    }

    fn finish(mut self) -> MailboxList {
        // Most users have a handful of mailboxes: do not keep Vec's growth slack.
        self.list.users.values_mut().for_each(Vec::shrink_to_fit);
        self.list
    }
}

/// Where imapd.conf puts mailboxes.db, refusing database types other than twoskip.
pub fn mailboxes_db_path(conf: &ImapdConf) -> Result<PathBuf, SpoolError> {
    if conf.mboxlist_db() != "twoskip" {
        return Err(SpoolError::Config(format!(
            "mboxlist_db is {}; only twoskip (Cyrus's default) is read",
            conf.mboxlist_db()
        )));
    }
    conf.mailboxes_db()
        .map(PathBuf::from)
        .ok_or_else(|| SpoolError::Config("configdirectory is not set".into()))
}

/// Decodes one `N` entry into the compact form, with its user id.
fn to_mailbox(
    e: &Entry<'_>,
    name: &[u8],
    layout: Layout,
    deleted_prefix: &str,
    hashing: SpoolHashing,
    partitions: &mut Vec<Arc<str>>,
) -> Result<(Mailbox, Option<String>), MailboxListError> {
    let m = MailboxEntry::decode(name, e.value, layout, deleted_prefix).map_err(|source| {
        MailboxListError::Entry {
            offset: e.offset,
            source,
        }
    })?;
    // A handful of partitions per server: share one string between their mailboxes.
    let partition = match partitions.iter().find(|p| ***p == *m.partition) {
        Some(p) => p.clone(),
        None => {
            let p: Arc<str> = Arc::from(m.partition.as_str());
            partitions.push(p.clone());
            p
        }
    };
    let mailbox = Mailbox {
        folder: m.name.folder().into(),
        uniqueid: m.uniqueid.as_str().into(),
        partition,
        mbtype: m.mbtype,
        deleted_at: m.name.deleted.as_ref().map(|d| d.at),
        legacy_dir: m
            .mbtype
            .legacy_dirs
            .then(|| m.name.legacy_dir(hashing).into()),
        uidvalidity: m.uidvalidity,
        foldermodseq: m.foldermodseq,
    };
    Ok((mailbox, m.name.userid()))
}

/// One user's live mailboxes (INBOX and the folders below it; not the delayed-deleted ones),
/// found by seeking in mailboxes.db under Cyrus's shared lock: a few dozen records are read,
/// whatever the size of the file. `userid` is `alice`, or `alice@example.com` with
/// virtual domains. Needs a Cyrus 3.5+ database; an older one is reported as a config error.
///
/// Waits at most [`DEFAULT_LOCK_TIMEOUT`] for the lock (the [`Spool`] methods take the
/// spool's).
pub fn user_mailboxes(conf: &ImapdConf, userid: &str) -> Result<Vec<Mailbox>, SpoolError> {
    user_mailboxes_within(conf, userid, DEFAULT_LOCK_TIMEOUT)
}

fn user_mailboxes_within(
    conf: &ImapdConf,
    userid: &str,
    lock_timeout: Duration,
) -> Result<Vec<Mailbox>, SpoolError> {
    let path = mailboxes_db_path(conf)?;
    let config = |e: ImapdConfError| SpoolError::Config(e.to_string());
    let hashing = conf.spool_hashing().map_err(config)?;
    let (local, domain) = match userid.rsplit_once('@') {
        Some((local, domain)) if conf.virtdomains().map_err(config)? != VirtDomains::Off => {
            (local, Some(domain))
        }
        _ => (userid, None),
    };
    let mut prefix = b"N".to_vec();
    if let Some(domain) = domain {
        prefix.extend_from_slice(domain.as_bytes());
        prefix.push(0x1d);
    }
    prefix.extend_from_slice(b"user\x1f");
    prefix.extend_from_slice(local.as_bytes());
    let list_err = |source| SpoolError::MailboxList {
        path: path.clone(),
        source,
    };
    let file = open_locked_within(&path, lock_timeout)?;
    // A seek reads a few dozen records scattered over the file: small reads suit it.
    let mut db = TwoskipReader::with_window(FileAt(file), 4096).map_err(|e| list_err(e.into()))?;
    db.seek(&prefix);
    let mut partitions = Vec::new();
    let mut found = Vec::new();
    while let Some(e) = db.next_entry().map_err(|e| list_err(e.into()))? {
        if !e.key.starts_with(&prefix) {
            break; // past this user's keys
        }
        match e.key.get(prefix.len()) {
            None | Some(0x1f) => {}
            // `alice<control>` would sort before `alice\x1f`; `alice2` comes after it all.
            Some(&b) if b < 0x1f => continue,
            Some(_) => break,
        }
        let (mailbox, _) = to_mailbox(
            &e,
            &e.key[1..],
            Layout::ByName,
            conf.deletedprefix(),
            hashing,
            &mut partitions,
        )
        .map_err(list_err)?;
        found.push(mailbox);
    }
    if found.is_empty() && !is_by_name(&mut db).map_err(list_err)? {
        return Err(SpoolError::Config(format!(
            "{}: a Cyrus 3.0-3.4 mailbox list; per-user lookups need 3.5 or later",
            path.display()
        )));
    }
    Ok(found)
}

/// Whether the database has the 3.5+ layout (checked only when a lookup found nothing).
fn is_by_name<R: ReadAt>(db: &mut TwoskipReader<R>) -> Result<bool, MailboxListError> {
    db.rewind();
    while let Some(e) = db.next_entry()? {
        if let Some(layout) = layout_hint(e.key, e.value) {
            return Ok(layout == Layout::ByName);
        }
    }
    Ok(true) // empty: nothing to find either way
}

/// Opens a Cyrus database file and takes the shared lock Cyrus's readers take, following a
/// repack that renamed a new file over it (see the module documentation). The lock lasts
/// as long as the returned file is open.
/// Waits at most [`DEFAULT_LOCK_TIMEOUT`] for the lock; [`open_locked_within`] takes the wait.
pub fn open_locked(path: &Path) -> Result<File, SpoolError> {
    open_locked_within(path, DEFAULT_LOCK_TIMEOUT)
}

/// [`open_locked`], waiting at most `timeout` for each lock taken.
pub fn open_locked_within(path: &Path, timeout: Duration) -> Result<File, SpoolError> {
    let mut file = File::open(path).map_err(io(path))?;
    loop {
        locks::lock_shared(&file, path, timeout)?;
        let open = file.metadata().map_err(io(path))?;
        let named = std::fs::metadata(path).map_err(io(path))?;
        if (open.dev(), open.ino()) == (named.dev(), named.ino()) {
            return Ok(file);
        }
        // Repacked and renamed while we waited: lock the file that is there now.
        file = File::open(path).map_err(io(path))?;
    }
}

/// The spool of one Cyrus server, as the daemon reads it: every request of the protocol that
/// touches Cyrus's files goes through one of these methods. Shared by the daemon's blocking
/// pool (`Send + Sync`); each call opens what it needs and holds no lock after it returns.
///
/// Names from clients are checked ([`check_name`], [`check_uniqueid`]) and looked up in the
/// mailbox list; paths are built only from imapd.conf's roots and the unique ids and
/// partitions mailboxes.db holds.
#[derive(Debug)]
pub struct Spool {
    pub(crate) conf: ImapdConf,
    pub(crate) layout: crate::layout::Layout,
    /// (user, unique id) → message directories, so that streaming a folder's messages does
    /// not look the mailbox up once per message. Checked again when a file is missing.
    pub(crate) message_dirs: crate::messages::DirCache,
    /// The longest wait for one of Cyrus's locks.
    pub(crate) lock_timeout: Duration,
}

impl Spool {
    /// Reads imapd.conf (and its `@include`s) and checks that the mailbox list is there.
    pub fn open(imapd_conf: &Path) -> Result<Spool, SpoolError> {
        let conf = load_imapd_conf(imapd_conf)?;
        let layout = crate::layout::Layout::new(&conf)?;
        std::fs::metadata(&layout.mailboxes_db).map_err(io(&layout.mailboxes_db))?;
        Ok(Spool {
            conf,
            layout,
            message_dirs: Default::default(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// The same spool, waiting at most `timeout` for each of Cyrus's locks (the
    /// configuration's `lock_timeout_secs`; [`DEFAULT_LOCK_TIMEOUT`] unless set): a request
    /// that waits longer fails with [`SpoolError::LockTimeout`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Spool {
        self.lock_timeout = timeout;
        self
    }

    /// The longest wait for one of Cyrus's locks.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The parsed imapd.conf.
    pub fn imapd_conf(&self) -> &ImapdConf {
        &self.conf
    }

    /// Every user with a live INBOX, and the partition of that INBOX (for the feeders), in
    /// user id order. Reads the whole mailbox list ([`read_mailbox_list`]).
    pub fn users(&self) -> Result<Vec<crate::access::UserEntry>, SpoolError> {
        let list = read_mailbox_list_in_batches(&self.conf, BATCH, self.lock_timeout)?;
        Ok(list
            .users
            .into_iter()
            .filter_map(|(user, mailboxes)| {
                let inbox = mailboxes
                    .iter()
                    .find(|m| &*m.folder == "INBOX" && is_live(m))?;
                Some(crate::access::UserEntry {
                    user: user.into(),
                    partition: inbox.partition.to_string(),
                })
            })
            .collect())
    }

    /// One user's folders (mail folders only: not delayed-deleted ones, tombstones, the
    /// hidden `#sieve` mailbox or DAV collections) with the stat data of their meta files,
    /// and the stat data of the user's own files. Stat only: no lock is taken and no message
    /// file is opened or stat'ed. See [`crate::folders`].
    pub fn folders(&self, user: &str) -> Result<crate::access::UserListing, SpoolError> {
        crate::folders::folders(self, user)
    }

    /// cyrus.header, cyrus.index and cyrus.annotations of one of the user's folders, copied
    /// whole under the locks Cyrus takes (docs/cyrus-locks.md), and checked. See
    /// [`crate::meta`].
    pub fn copy_meta(
        &self,
        user: &str,
        uniqueid: &str,
    ) -> Result<crate::access::MetaCopy, SpoolError> {
        crate::meta::copy_meta(self, user, uniqueid)
    }

    /// The message file of `uid` in one of the user's folders, open for reading, with its
    /// size; `None` when Cyrus has removed it. See [`crate::messages`].
    pub fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(File, u64)>, SpoolError> {
        crate::messages::open_message(self, user, uniqueid, uid)
    }

    /// A user file's bytes and stat data; `None` when it does not exist. See
    /// [`crate::user_files`].
    pub fn read_user_file(
        &self,
        user: &str,
        id: &crate::access::UserFileId,
    ) -> Result<Option<(Vec<u8>, formats::FileStat)>, SpoolError> {
        crate::user_files::read_user_file(self, user, id)
    }

    /// The user's live mailboxes (with files on this server), read from mailboxes.db; an
    /// unknown user (none found) is an error. The name is checked first.
    pub(crate) fn live_mailboxes(&self, user: &str) -> Result<Vec<Mailbox>, SpoolError> {
        check_name("user", user)?;
        let live: Vec<Mailbox> = user_mailboxes_within(&self.conf, user, self.lock_timeout)?
            .into_iter()
            .filter(is_live)
            .collect();
        if live.is_empty() {
            return Err(SpoolError::UnknownUser { user: user.into() });
        }
        for m in &live {
            // mailboxes.db is Cyrus's, but a path is built from this: check it all the same.
            check_uniqueid(&m.uniqueid)?;
        }
        Ok(live)
    }
}

/// Whether a mailbox is live (not delayed-deleted) and has files on this server (not a
/// tombstone, reservation, intermediate or remote entry).
pub(crate) fn is_live(m: &Mailbox) -> bool {
    m.deleted_at.is_none() && m.mbtype.has_spool_dir()
}

pub(crate) fn bad_name(what: &'static str, name: &str, rule: &'static str) -> SpoolError {
    SpoolError::BadName {
        what,
        name: name.chars().take(200).collect(),
        rule,
    }
}

/// Refuses a user or folder name that is empty or holds `..`, `/`, NUL or another control
/// character, before anything is looked up or built from it.
pub fn check_name(what: &'static str, name: &str) -> Result<(), SpoolError> {
    let bad = name.is_empty()
        || name.len() > 1024
        || name.contains("..")
        || name.chars().any(|c| c == '/' || c.is_control());
    if bad {
        return Err(bad_name(
            what,
            name,
            "names must be non-empty, at most 1024 bytes, without `..`, `/`, NUL or control \
             characters",
        ));
    }
    Ok(())
}

/// Refuses a sieve script name Cyrus would refuse (imap/sievedir.c `sievedir_valid_name`:
/// empty, or holding `/` or NUL), or one over 1024 bytes. Anything else is a valid Cyrus
/// script name (`v1..v2`, a tab) and must be backed up: the name only ever becomes
/// `<name>.script` or `<name>.bc` inside the user's sieve directory, which with the suffix
/// can be neither `.` nor `..`.
pub fn check_script_name(name: &str) -> Result<(), SpoolError> {
    if name.is_empty() || name.len() > 1024 || name.contains(['/', '\0']) {
        return Err(bad_name(
            "sieve script",
            name,
            "sieve script names must be non-empty, at most 1024 bytes, without `/` or NUL",
        ));
    }
    Ok(())
}

/// Refuses a unique id that is not 2 to 64 letters, digits, `-` or `_` (Cyrus 3.x makes
/// 24 lower-case letters and digits; older servers made hex or UUID-like ones).
pub fn check_uniqueid(id: &str) -> Result<(), SpoolError> {
    let ok = (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(bad_name(
            "unique id",
            id,
            "unique ids are 2 to 64 ASCII letters, digits, `-` and `_`",
        ));
    }
    Ok(())
}

/// The stat data backupd reports for a file.
pub(crate) fn file_stat(meta: &std::fs::Metadata) -> formats::FileStat {
    formats::FileStat {
        size: meta.size(),
        mtime: formats::Timestamp {
            secs: meta.mtime(),
            // Always below 10^9 from the kernel.
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        inode: meta.ino(),
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    io(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::cyrus_style_lock;
    use std::sync::mpsc;
    use std::time::Duration;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/cyrus-3.6"
    );

    /// The fixture's conf directory, with an imapd.conf pointing at it.
    fn instance() -> (tempfile::TempDir, ImapdConf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::copy(
            Path::new(FIXTURE).join("conf/mailboxes.db"),
            dir.path().join("conf/mailboxes.db"),
        )
        .unwrap();
        let text = std::fs::read_to_string(Path::new(FIXTURE).join("imapd.conf"))
            .unwrap()
            .replace("@ROOT@", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("imapd.conf"), text).unwrap();
        let conf = load_imapd_conf(&dir.path().join("imapd.conf")).unwrap();
        (dir, conf)
    }

    #[test]
    fn spool_is_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Spool>();
    }

    #[test]
    fn names_checked() {
        for ok in ["alice", "u002.x", "bob@example.com", "Données"] {
            check_name("user", ok).unwrap();
        }
        for bad in ["", "..", "a..b", "a/b", "/", "a\0", "a\tb", "a\u{85}b"] {
            assert!(
                matches!(
                    check_name("user", bad),
                    Err(SpoolError::BadName { what: "user", .. })
                ),
                "{bad:?}"
            );
        }
        for ok in ["v1..v2", "..", "a\tb", "é"] {
            check_script_name(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", "a\0b"] {
            assert!(
                matches!(
                    check_script_name(bad),
                    Err(SpoolError::BadName {
                        what: "sieve script",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        check_uniqueid("9larhequg4n2vyip2tvslkaa").unwrap();
        check_uniqueid("0a1b2c3d-4e5f").unwrap();
        for bad in ["", "a", "a.b", "a/b", "ab\0", "é1"] {
            assert!(check_uniqueid(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(5000);
        let err = check_name("user", &long).unwrap_err().to_string();
        assert!(err.len() < 600, "the error quotes the name cut short");
    }

    #[test]
    fn fixture_grouped_by_user() {
        let (_dir, conf) = instance();
        let list = read_mailbox_list(&conf).unwrap();
        assert_eq!(list.layout, Some(Layout::ByName));
        assert_eq!(list.mailbox_count(), 5);
        assert!(list.shared.is_empty());
        let inbox = &list.users["u3x0"][0];
        assert_eq!(&*inbox.uniqueid, "tr3g9qzoe6kapjm5i3coxngy");
        assert_eq!(&*inbox.partition, "default");
        assert_eq!(inbox.uidvalidity, 1795415425);
        assert_eq!(
            inbox.spool_dir().unwrap(),
            "uuid/t/r/tr3g9qzoe6kapjm5i3coxngy"
        );
        let folders: Vec<&str> = list.users["u3x0"].iter().map(|m| &*m.folder).collect();
        assert_eq!(
            folders,
            ["INBOX", "Archive", "Archive/2025", "Lists", "Work"]
        );
        let p2: Vec<&str> = list.users["u3x0"].iter().map(|m| &*m.partition).collect();
        assert_eq!(p2, ["default", "p2", "p2", "default", "default"]);
    }

    #[test]
    fn batches_add_up_to_one_pass() {
        let (dir, conf) = instance();
        let data = std::fs::read(dir.path().join("conf/mailboxes.db")).unwrap();
        let whole = list_mailboxes(&data[..], "DELETED", SpoolHashing::default()).unwrap();
        for batch in [1, 2, 3, 100] {
            let list = read_mailbox_list_in_batches(&conf, batch, DEFAULT_LOCK_TIMEOUT).unwrap();
            assert_eq!(list.users, whole.users, "batch {batch}");
            assert_eq!(list.mailbox_count(), 5);
        }
    }

    #[test]
    fn one_user_by_seeking() {
        let (_dir, conf) = instance();
        let found = user_mailboxes(&conf, "u3x0").unwrap();
        let folders: Vec<&str> = found.iter().map(|m| &*m.folder).collect();
        assert_eq!(
            folders,
            ["INBOX", "Archive", "Archive/2025", "Lists", "Work"]
        );
        assert_eq!(found, read_mailbox_list(&conf).unwrap().users["u3x0"]);
        assert!(user_mailboxes(&conf, "u3x").unwrap().is_empty());
        assert!(user_mailboxes(&conf, "u3x00").unwrap().is_empty());
        assert!(user_mailboxes(&conf, "nobody").unwrap().is_empty());
    }

    #[test]
    fn waits_for_a_cyrus_writer() {
        // A writer's classic fcntl write lock (what Cyrus's twoskip takes for a transaction)
        // holds the reader off until it is released. OFD and classic locks conflict even
        // within one process, so the test needs no second process.
        let (dir, conf) = instance();
        let path = dir.path().join("conf/mailboxes.db");
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        cyrus_style_lock(&writer, nix::libc::F_WRLCK).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let list = read_mailbox_list(&conf).map(|l| l.mailbox_count());
            done_tx.send(()).unwrap();
            list
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "reader waited"
        );
        cyrus_style_lock(&writer, nix::libc::F_UNLCK).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), 5);
    }

    #[test]
    fn follows_a_repack_that_renamed_the_file() {
        // Lock the file, then replace it by rename as a checkpoint does: a reader that was
        // waiting must read the new file, not the unlinked one.
        let (dir, conf) = instance();
        let path = dir.path().join("conf/mailboxes.db");
        let old = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        cyrus_style_lock(&old, nix::libc::F_WRLCK).unwrap();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || read_locked(&path))
        };
        // Once the reader has the old file open (a second descriptor of its inode in this
        // process), it can only get at it through the lock we hold.
        let meta = old.metadata().unwrap();
        let open_on_old = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .filter(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
                .count()
        };
        let t = std::time::Instant::now();
        while open_on_old() < 2 {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "stuck: the reader never opened the file"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let new = dir.path().join("conf/mailboxes.db.NEW");
        std::fs::write(&new, b"the repacked file").unwrap();
        std::fs::rename(&new, &path).unwrap();
        cyrus_style_lock(&old, nix::libc::F_UNLCK).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"the repacked file");
        drop(conf);
    }

    #[test]
    fn errors_name_the_file() {
        let (dir, conf) = instance();
        let path = dir.path().join("conf/mailboxes.db");
        let mut data = std::fs::read(&path).unwrap();
        data[0x300] ^= 0xff;
        std::fs::write(&path, data).unwrap();
        let err = read_mailbox_list(&conf).unwrap_err().to_string();
        assert!(
            err.contains("mailboxes.db") && err.contains("record at byte"),
            "{err}"
        );
    }
}
