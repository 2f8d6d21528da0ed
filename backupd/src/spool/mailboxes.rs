//! The mailbox list: every mailbox of the server, or one user's, read from mailboxes.db.
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
//! [`locks::open_locked`](super::locks::open_locked) does the same with an
//! open-file-description lock (`F_OFD_SETLK`, Linux 3.15+, tried again until the lock
//! timeout: see [`super::locks`]). On Linux OFD locks and classic POSIX locks conflict with
//! each other, so Cyrus's writers wait for it exactly as for one of their own readers; unlike
//! a classic lock it belongs to this open file, not to the process, so another thread of the
//! daemon that opens and closes the same file cannot drop it by accident.
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

use super::error::SpoolError;
use super::locks::{open_locked_within, DEFAULT_LOCK_TIMEOUT};
use super::mailbox::{is_live, Mailbox};
use super::user_list::UserList;
use formats::cyrus::imapd_conf::{ImapdConf, ImapdConfError, VirtDomains};
use formats::cyrus::mailboxes::{
    layout_hint, KeyLayout, MailboxEntry, MailboxKey, MailboxListError, SpoolHashing,
};
use formats::cyrus::twoskip::{Entry, ReadAt, TwoskipReader};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every mailbox of the server, grouped by the user it belongs to.
#[derive(Debug, Clone, Default)]
pub struct MailboxList {
    /// The key layout found (3.5+ by name, or 3.0 to 3.4 legacy).
    pub layout: Option<KeyLayout>,
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
/// [`MailboxType::has_spool_dir`](formats::cyrus::mailboxes::MailboxType::has_spool_dir).
///
/// Waits at most [`DEFAULT_LOCK_TIMEOUT`] for each lock
/// ([`Spool::users`](super::Spool::users) takes the spool's).
pub fn read_mailbox_list(conf: &ImapdConf) -> Result<MailboxList, SpoolError> {
    read_mailbox_list_in_batches(conf, BATCH, DEFAULT_LOCK_TIMEOUT)
}

pub(crate) fn read_mailbox_list_in_batches(
    conf: &ImapdConf,
    batch: usize,
    lock_timeout: Duration,
) -> Result<MailboxList, SpoolError> {
    let mut list = MailboxList::default();
    list.layout = Some(walk_in_batches(
        conf,
        batch,
        lock_timeout,
        |mailbox, user| match user {
            Some(user) => list.users.entry(user.into()).or_default().push(mailbox),
            None => list.shared.push(mailbox),
        },
    )?);
    // Most users have a handful of mailboxes: do not keep Vec's growth slack.
    list.users.values_mut().for_each(Vec::shrink_to_fit);
    Ok(list)
}

/// Every user with a live INBOX and its partition ([`UserList`], what LIST_USERS sends),
/// read as [`read_mailbox_list`] reads the whole list, but keeping only those: the other
/// mailboxes are decoded and dropped at once, so memory is the window plus the user list,
/// not the mailbox list (about 10 MB rather than 366 MB at 500,000 users).
pub(crate) fn read_user_list_in_batches(
    conf: &ImapdConf,
    batch: usize,
    lock_timeout: Duration,
) -> Result<UserList, SpoolError> {
    let mut inboxes: Vec<(String, Arc<str>)> = Vec::new();
    walk_in_batches(conf, batch, lock_timeout, |mailbox, user| {
        if let Some(user) = user {
            if &*mailbox.folder == "INBOX" && is_live(&mailbox) {
                inboxes.push((user, mailbox.partition));
            }
        }
    })?;
    Ok(UserList::from_pairs(
        inboxes
            .iter()
            .map(|(user, partition)| (user.as_str(), &**partition)),
    ))
}

/// Walks the mailbox entries of mailboxes.db in batches under its lock (see
/// [`read_mailbox_list`]), giving each mailbox and its user id (`None`: shared) to `keep`;
/// returns the key layout found.
fn walk_in_batches(
    conf: &ImapdConf,
    batch: usize,
    lock_timeout: Duration,
    keep: impl FnMut(Mailbox, Option<String>),
) -> Result<KeyLayout, SpoolError> {
    let path = mailboxes_db_path(conf)?;
    let hashing = conf
        .spool_hashing()
        .map_err(|source| SpoolError::Config(source.to_string()))?;
    let list_err = |source| SpoolError::MailboxList {
        path: path.clone(),
        source,
    };
    let mut walk = ListWalk::new(conf.deletedprefix(), hashing, keep);
    let mut resume = None;
    loop {
        let file = open_locked_within(&path, lock_timeout)?;
        let db = TwoskipReader::open(FileAt(file)).map_err(|e| list_err(e.into()))?;
        resume = walk.batch(db, resume, batch).map_err(list_err)?;
        // The file, and with it the lock, is closed here.
        if resume.is_none() {
            return Ok(walk.layout.unwrap_or(KeyLayout::Legacy));
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
    let mut list = MailboxList::default();
    let mut walk = ListWalk::new(
        deleted_prefix,
        hashing,
        |mailbox, user: Option<String>| match user {
            Some(user) => list.users.entry(user.into()).or_default().push(mailbox),
            None => list.shared.push(mailbox),
        },
    );
    walk.batch(TwoskipReader::open(src)?, None, usize::MAX)?;
    let layout = walk.layout;
    drop(walk);
    list.layout = layout;
    list.users.values_mut().for_each(Vec::shrink_to_fit);
    Ok(list)
}

/// A walk over the mailbox entries that can stop after a number of them and resume later,
/// in a newly opened file, after the last key read; each mailbox goes to `keep`.
struct ListWalk<'c, K> {
    layout: Option<KeyLayout>,
    partitions: Vec<Arc<str>>,
    deleted_prefix: &'c str,
    hashing: SpoolHashing,
    keep: K,
}

impl<'c, K: FnMut(Mailbox, Option<String>)> ListWalk<'c, K> {
    fn new(deleted_prefix: &'c str, hashing: SpoolHashing, keep: K) -> Self {
        ListWalk {
            layout: None,
            partitions: Vec::new(),
            deleted_prefix,
            hashing,
            keep,
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
        let layout = match self.layout {
            Some(layout) => layout,
            None => {
                let mut layout = None;
                while let Some(e) = db.next_entry()? {
                    layout = layout_hint(e.key, e.value);
                    if layout.is_some() {
                        break;
                    }
                }
                *self.layout.insert(layout.unwrap_or(KeyLayout::Legacy))
            }
        };
        // Keys of a legacy database are in mailbox-name order, which a seek cannot follow.
        let limit = if layout == KeyLayout::Legacy {
            usize::MAX
        } else {
            limit
        };
        match (&resume, layout) {
            (Some(key), _) => db.seek(key),
            (None, KeyLayout::ByName) => db.seek(b"N"),
            (None, KeyLayout::Legacy) => db.rewind(),
        }
        let mut count = 0;
        while let Some(e) = db.next_entry()? {
            if resume.as_deref() == Some(e.key) {
                continue; // read in the previous batch
            }
            let name = match MailboxKey::classify(e.key, layout) {
                MailboxKey::Name(name) => name,
                _ if layout == KeyLayout::ByName && !e.key.starts_with(b"N") => break,
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
            (self.keep)(mailbox, user);
            count += 1;
            if count == limit {
                return Ok(Some(e.key.to_vec()));
            }
        }
        Ok(None)
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
    layout: KeyLayout,
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
/// Waits at most [`DEFAULT_LOCK_TIMEOUT`] for the lock (the [`Spool`](super::Spool) methods
/// take the spool's).
pub fn user_mailboxes(conf: &ImapdConf, userid: &str) -> Result<Vec<Mailbox>, SpoolError> {
    user_mailboxes_within(conf, userid, DEFAULT_LOCK_TIMEOUT)
}

pub(crate) fn user_mailboxes_within(
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
            KeyLayout::ByName,
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
            return Ok(layout == KeyLayout::ByName);
        }
    }
    Ok(true) // empty: nothing to find either way
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::locks::{cyrus_style_lock, read_locked};
    use crate::spool::{check_name, check_script_name, check_uniqueid, load_imapd_conf, Spool};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");
    /// The fixture's only user.
    const USER: &str = "fx0";

    /// One mailbox of the fixture as `ctl_mboxlist -d` printed it (mboxlist.json).
    fn dumped(name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(Path::new(FIXTURE).join("mboxlist.json")).unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list[name].clone()
    }

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
        assert_eq!(list.layout, Some(KeyLayout::ByName));
        assert_eq!(list.mailbox_count(), 5);
        assert!(list.shared.is_empty());
        let inbox = &list.users[USER][0];
        let want = dumped(&format!("user.{USER}"));
        let id = want["uniqueid"].as_str().unwrap();
        assert_eq!(&*inbox.uniqueid, id);
        assert_eq!(&*inbox.partition, "default");
        assert_eq!(
            inbox.uidvalidity.to_string(),
            want["uidvalidity"].as_str().unwrap()
        );
        assert_eq!(
            inbox.spool_dir().unwrap(),
            format!("uuid/{}/{}/{id}", &id[..1], &id[1..2])
        );
        let folders: Vec<&str> = list.users[USER].iter().map(|m| &*m.folder).collect();
        assert_eq!(
            folders,
            ["INBOX", "Archive", "Archive/2025", "Lists", "Work"]
        );
        let p2: Vec<&str> = list.users[USER].iter().map(|m| &*m.partition).collect();
        assert_eq!(p2, ["default", "p2", "p2", "default", "default"]);
        let ids: Vec<&str> = list.users[USER].iter().map(|m| &*m.uniqueid).collect();
        let want_ids: Vec<String> = ["", ".Archive", ".Archive.2025", ".Lists", ".Work"]
            .iter()
            .map(|f| {
                let entry = dumped(&format!("user.{USER}{f}"));
                entry["uniqueid"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids, want_ids);
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
    fn user_list_is_the_live_inboxes_of_the_mailbox_list() {
        let (_dir, conf) = instance();
        let list = read_mailbox_list(&conf).unwrap();
        let want: Vec<(&str, &str)> = list
            .users
            .iter()
            .filter_map(|(user, mailboxes)| {
                let inbox = mailboxes
                    .iter()
                    .find(|m| &*m.folder == "INBOX" && is_live(m))?;
                Some((&**user, &*inbox.partition))
            })
            .collect();
        for batch in [1, 2, 100] {
            let users = read_user_list_in_batches(&conf, batch, DEFAULT_LOCK_TIMEOUT).unwrap();
            let got: Vec<_> = (0..users.len()).map(|i| users.get(i).unwrap()).collect();
            assert_eq!(got, want, "batch {batch}");
        }
        assert_eq!(want, [(USER, "default")]);
    }

    #[test]
    fn one_user_by_seeking() {
        let (_dir, conf) = instance();
        let found = user_mailboxes(&conf, USER).unwrap();
        let folders: Vec<&str> = found.iter().map(|m| &*m.folder).collect();
        assert_eq!(
            folders,
            ["INBOX", "Archive", "Archive/2025", "Lists", "Work"]
        );
        assert_eq!(found, read_mailbox_list(&conf).unwrap().users[USER]);
        assert!(user_mailboxes(&conf, &USER[..USER.len() - 1])
            .unwrap()
            .is_empty());
        assert!(user_mailboxes(&conf, &format!("{USER}0"))
            .unwrap()
            .is_empty());
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
        // A byte of a record every listing reads (the key length in the head of the INBOX's
        // `N` entry), wherever this capture's records happen to lie.
        let record = {
            let db = formats::cyrus::twoskip::Twoskip::open(&data).unwrap();
            let key = format!("Nuser\x1f{USER}");
            let entry = db
                .iter()
                .map(Result::unwrap)
                .find(|e| e.key == key.as_bytes())
                .unwrap();
            entry.offset
        };
        data[record as usize + 3] ^= 0xff;
        std::fs::write(&path, data).unwrap();
        let err = read_mailbox_list(&conf).unwrap_err().to_string();
        assert!(
            err.contains("mailboxes.db") && err.contains(&format!("record at byte {record}")),
            "{err}"
        );
    }
}
