//! Copying a folder's meta files under Cyrus's locks.
//!
//! `lock_mailbox` takes, all shared and in this order, the locks a Cyrus reader takes to
//! open a mailbox (imap/mailbox.c `mailbox_open_irl` → `mailbox_open_advanced`): the user's
//! namespace lock, the mailbox's name lock, then the fcntl lock on cyrus.index; the user's
//! mailbox list is read between the first two, as Cyrus looks the mailbox up there. While they
//! are held no Cyrus process can change the mailbox: every writer needs the namespace lock
//! and the index lock exclusive, and rewriting or replacing cyrus.index (repack) needs the
//! name lock exclusive. cyrus.header is read after the index lock, as Cyrus rereads it;
//! cyrus.annotations (a twoskip database, changed only by holders of the exclusive index lock)
//! is read under its own shared lock, as Cyrus's twoskip readers do. docs/cyrus-locks.md has
//! the reasoning and the source references.

use super::cyrus::Cyrus;
use super::error::{io_err, SpoolError};
use super::files::{file_stat, open_read};
use super::locks::{self, open_locked_within, NameLock};
use super::mailbox::Mailbox;
use super::names::{check_name, check_uniqueid};
use formats::cyrus::MetaFile;
use formats::cyrus::{header, index};
use formats::protocol::MetaCopy;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::time::Duration;

/// Copies taken before a copy that does not parse is reported (under the right locks the
/// first one parses; the retries cover a file damaged by something that ignores locks).
pub const ATTEMPTS: u32 = 3;

/// Cyrus's OPT_MAILBOX_DELETED: the mailbox is being deleted (imap/mailbox.h).
const OPT_MAILBOX_DELETED: u32 = 1 << 31;

/// Which of the user's mailboxes to lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The live mailbox with this unique id.
    UniqueId(&'a str),
    /// The user's `#sieve` mailbox (type `f`), where Cyrus 3.6 keeps sieve script sources.
    Sieve,
}

/// A mailbox held under Cyrus's reader locks. Dropping it lets them go, index lock first
/// (fields drop in declaration order), namespace lock last.
#[derive(Debug)]
pub(crate) struct LockedMailbox {
    /// The mailbox, as mailboxes.db said under the namespace lock.
    pub mailbox: Mailbox,
    /// cyrus.index, open and locked shared.
    pub index: File,
    /// Its path.
    pub index_path: PathBuf,
    _mailbox_lock: NameLock,
    _namespace_lock: NameLock,
}

/// Takes the user's namespace lock, finds the mailbox in the user's list, takes its name lock,
/// opens and locks cyrus.index (docs/cyrus-locks.md). `Ok(None)`: the user has no `#sieve`
/// mailbox ([`Target::Sieve`] only; a missing unique id is [`SpoolError::UnknownFolder`]).
pub(crate) fn lock_mailbox(
    cyrus: &Cyrus,
    user: &str,
    target: Target<'_>,
) -> Result<Option<LockedMailbox>, SpoolError> {
    check_name("user", user)?;
    let layout = &cyrus.layout;
    let ns_path = locks::user_lock_path(&layout.lock_root, user, layout.hashing);
    // Lock files are created on first use; never create one for a user that does not exist.
    if !ns_path.exists() {
        cyrus.live_mailboxes(user)?;
    }
    let namespace = NameLock::shared(&ns_path, &layout.lock_root, cyrus.lock_timeout)?;
    let mailboxes = cyrus.live_mailboxes(user)?;
    let found = match target {
        Target::UniqueId(id) => mailboxes.into_iter().find(|m| &*m.uniqueid == id),
        Target::Sieve => mailboxes
            .into_iter()
            .find(|m| m.mbtype.kind == formats::cyrus::mailboxes::MailboxKind::Sieve),
    };
    let mailbox = match (found, target) {
        (Some(m), _) => m,
        (None, Target::Sieve) => return Ok(None),
        (None, Target::UniqueId(id)) => {
            return Err(SpoolError::UnknownFolder {
                user: user.into(),
                uniqueid: id.into(),
            })
        }
    };
    let mailbox_lock = NameLock::shared(
        &locks::mailbox_lock_path(&layout.lock_root, &mailbox, layout.hashing),
        &layout.lock_root,
        cyrus.lock_timeout,
    )?;
    // Opened only now: a repack replaces cyrus.index under the exclusive name lock.
    let index_path = layout.meta_path(&mailbox, MetaFile::Index)?;
    let index = open_read(&index_path).map_err(io_err(&index_path))?;
    locks::lock_shared(&index, &index_path, cyrus.lock_timeout)?;
    Ok(Some(LockedMailbox {
        mailbox,
        index,
        index_path,
        _mailbox_lock: mailbox_lock,
        _namespace_lock: namespace,
    }))
}

/// A whole file's bytes and the stat data of the open file.
fn read_all(
    mut file: &File,
    path: &std::path::Path,
) -> Result<(Vec<u8>, formats::FileStat), SpoolError> {
    let meta = file.metadata().map_err(io_err(path))?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data).map_err(io_err(path))?;
    // Under the locks the file does not change; the size read is the size stat'ed.
    Ok((data, file_stat(&meta)))
}

/// See [`Spool::copy_meta`](super::Spool::copy_meta).
pub(crate) fn copy_meta(cyrus: &Cyrus, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError> {
    check_name("user", user)?;
    check_uniqueid(uniqueid)?;
    let mut attempt = 1;
    loop {
        let (copy, paths) = copy_once(cyrus, user, uniqueid)?;
        match check(&copy, &paths, attempt) {
            Ok(()) => return Ok(copy),
            Err(CheckError::Gone) => {
                return Err(SpoolError::UnknownFolder {
                    user: user.into(),
                    uniqueid: uniqueid.into(),
                })
            }
            Err(CheckError::Bad(e)) if attempt == ATTEMPTS => return Err(e),
            // `check` asks for no retry on the last attempt.
            Err(CheckError::Bad(_) | CheckError::Retry) => {}
        }
        std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
        attempt += 1;
    }
}

struct Paths {
    header: PathBuf,
    index: PathBuf,
}

fn copy_once(cyrus: &Cyrus, user: &str, uniqueid: &str) -> Result<(MetaCopy, Paths), SpoolError> {
    let locked = lock_mailbox(cyrus, user, Target::UniqueId(uniqueid))?
        .expect("a unique id target is found or an error");
    let index = read_all(&locked.index, &locked.index_path)?;
    let header_path = cyrus.layout.meta_path(&locked.mailbox, MetaFile::Header)?;
    let file = open_read(&header_path).map_err(io_err(&header_path))?;
    let header = read_all(&file, &header_path)?;
    let annot_path = cyrus
        .layout
        .meta_path(&locked.mailbox, MetaFile::Annotations)?;
    let annotations = match open_locked_within(&annot_path, cyrus.lock_timeout) {
        Ok(file) => Some(read_all(&file, &annot_path)?),
        Err(SpoolError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let paths = Paths {
        header: header_path,
        index: locked.index_path.clone(),
    };
    // The locks go here, before the checks.
    drop(locked);
    let copy = MetaCopy {
        uniqueid: uniqueid.into(),
        header,
        index,
        annotations,
    };
    Ok((copy, paths))
}

enum CheckError {
    /// Cyrus is deleting the mailbox.
    Gone,
    /// Whole, but header and index disagree: copy again.
    Retry,
    Bad(SpoolError),
}

/// Parses the copies: the header, the index header and every index record (CRCs included).
fn check(copy: &MetaCopy, paths: &Paths, attempts: u32) -> Result<(), CheckError> {
    if let Err(source) = header::parse(&copy.header.0) {
        return Err(CheckError::Bad(SpoolError::BadHeader {
            path: paths.header.clone(),
            attempts,
            source,
        }));
    }
    let bad_index = |source| {
        CheckError::Bad(SpoolError::BadIndex {
            path: paths.index.clone(),
            attempts,
            source,
        })
    };
    let idx = index::Index::parse(&copy.index.0).map_err(bad_index)?;
    if idx.header().options & OPT_MAILBOX_DELETED != 0 {
        return Err(CheckError::Gone);
    }
    for rec in idx.records() {
        rec.map_err(bad_index)?;
    }
    // The index names the header it was committed with. Under Cyrus's locks they always
    // agree; a mismatch means something changed them without those locks (or the mailbox
    // needs `reconstruct`): copy again, and after the last attempt take it as it is, as Cyrus
    // does (it only logs "Header CRC mismatch").
    let crc = idx.header().header_file_crc.unwrap_or(0);
    if crc != 0 && crc != header::file_crc(&copy.header.0) && attempts < ATTEMPTS {
        return Err(CheckError::Retry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use std::fs::OpenOptions;
    use std::path::Path;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");
    /// The fixture's only user.
    const USER: &str = "fx0";

    /// The unique id of the fixture's Work folder (from mboxlist.json, Cyrus's own dump), and
    /// its directory relative to the fixture's root.
    fn work() -> (String, String) {
        let text = std::fs::read_to_string(Path::new(FIXTURE).join("mboxlist.json")).unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let id = list[format!("user.{USER}.Work")]["uniqueid"]
            .as_str()
            .unwrap()
            .to_string();
        let dir = format!("spool/p1/uuid/{}/{}/{id}", &id[..1], &id[1..2]);
        (id, dir)
    }

    /// mailboxes.db and the Work folder's meta files of the fixture, with an imapd.conf.
    fn fixture() -> (tempfile::TempDir, Cyrus) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (_, work) = work();
        for d in ["conf/lock", &work] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "conf/mailboxes.db".to_string(),
            format!("{work}/cyrus.header"),
            format!("{work}/cyrus.index"),
            format!("{work}/cyrus.annotations"),
        ] {
            std::fs::write(
                root.join(&f),
                std::fs::read(Path::new(FIXTURE).join(&f)).unwrap(),
            )
            .unwrap();
        }
        let text = std::fs::read_to_string(Path::new(FIXTURE).join("imapd.conf"))
            .unwrap()
            .replace("@ROOT@", root.to_str().unwrap());
        std::fs::write(root.join("imapd.conf"), text).unwrap();
        let spool = Cyrus::open(&root.join("imapd.conf")).unwrap();
        (dir, spool)
    }

    fn try_write_lock(path: &Path) -> Result<(), Errno> {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        crate::spool::locks::cyrus_style_lock(&file, nix::libc::F_WRLCK)
    }

    #[test]
    fn held_locks_keep_cyrus_writers_out_until_dropped() {
        let (dir, spool) = fixture();
        let (work, work_dir) = work();
        let files = [
            dir.path().join(format!("conf/lock/*U*{USER}.lock")),
            dir.path().join(format!("conf/lock/{work}.lock")),
            dir.path().join(&work_dir).join("cyrus.index"),
        ];
        let locked = lock_mailbox(&spool, USER, Target::UniqueId(&work))
            .unwrap()
            .unwrap();
        assert_eq!(&*locked.mailbox.folder, "Work");
        for f in &files {
            let r = try_write_lock(f);
            assert!(
                matches!(r, Err(Errno::EAGAIN | Errno::EACCES)),
                "{}: {r:?}",
                f.display()
            );
        }
        drop(locked);
        for f in &files {
            try_write_lock(f).unwrap();
        }
        // No #sieve mailbox in the fixture.
        assert!(lock_mailbox(&spool, USER, Target::Sieve).unwrap().is_none());
    }

    #[test]
    fn a_damaged_index_is_retried_then_reported_with_its_path() {
        let (dir, spool) = fixture();
        let (work, work_dir) = work();
        let index = dir.path().join(&work_dir).join("cyrus.index");
        let mut data = std::fs::read(&index).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff; // the last record's CRC
        std::fs::write(&index, data).unwrap();
        let err = copy_meta(&spool, USER, &work).unwrap_err();
        assert!(
            matches!(
                &err,
                SpoolError::BadIndex {
                    attempts: ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("cyrus.index") && text.contains("CRC"),
            "{text}"
        );
    }
}
