//! One user's backup (`backup_server::backup::backup_user`) against faults, over the real
//! protocol and without Cyrus: a real backupd server in this process serving an in-memory
//! spool (`tests::memspool`), the backup host's real `Client`, sometimes through a
//! frame-level proxy (`tests::proxy`) that closes the connection or rewrites a reply.
//!
//! What must hold, whatever the fault: what is missing is named (folder, UID) in the
//! outcome's `incomplete`; a folder with a live message that could not be stored keeps its
//! previous snapshot; an incomplete backup sets no quiet key and commits a partial run (no
//! end marker) holding what it fetched; a broken connection is `BackupError::Connection`;
//! the store opens and passes its checks; the next backup without the fault completes and
//! leaves every message in the data file exactly once, each hashing to its GUID.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use backup_server::backup::user::FolderRef;
use backup_server::backup::{backup_user, BackupError, Missing, UserJob, UserOutcome};
use backup_server::client::Client;
use backup_server::store::{MessageState, RunInfo, Store, StoreError, StoreOptions, StoreReader};
use formats::archive::{EntryMeta, ScanEvent, Scanner, Tail};
use formats::protocol::{kind, Frame, FrameHeader, Reply, Request};
use formats::Guid;
use tests::memspool::{message, MemBackupd, MemFolder, SpoolEvent, SpoolState};
use tests::proxy::{FrameProxy, ProxyLog, Verdict};

const USER: &str = "alice";
const INBOX: &str = "u-inbox";
const WORK: &str = "u-work";
const OLD: &str = "u-old";
const ARCHIVE: &str = "u-archive";

/// The user's first state: three folders, nine messages of 300 B to 4 KB (one to four
/// data frames each), one seen, one expunged with its file kept.
fn first_spool() -> SpoolState {
    let mut s = SpoolState::new(USER);
    let mut inbox = MemFolder::new("INBOX", INBOX, 1);
    inbox.append_sizes(&[300, 2500, 900, 4000]);
    inbox.set_seen(3);
    let mut work = MemFolder::new("Work", WORK, 2);
    work.append_sizes(&[1200, 400, 3100]);
    let mut old = MemFolder::new("Work/Old", OLD, 3);
    old.append_sizes(&[700, 1500]);
    old.expunge(2);
    s.folders = vec![inbox, work, old];
    s
}

/// What a night changes: new mail and a flag in INBOX, Work renamed (a name link only),
/// Work/Old deleted, a new folder holding a copy of a message already stored and a new one.
fn second_spool(s: &mut SpoolState) {
    let inbox = s.folder_mut(INBOX);
    inbox.append_sizes(&[1800, 600]);
    inbox.set_seen(2);
    s.folder_mut(WORK).name = "Projects".into();
    s.remove_folder(OLD);
    let copy = s.folder(INBOX).files[&1].clone();
    let mut archive = MemFolder::new("Archive", ARCHIVE, 4);
    archive.append(copy);
    archive.append_sizes(&[2200]);
    s.folders.push(archive);
}

/// A folder as `ls` shows it: name, and each visible message (UID, GUID, flags, stored).
type FolderLs = (String, Vec<(u32, Guid, Vec<String>, bool)>);
/// Every folder by unique id.
type Ls = BTreeMap<String, FolderLs>;

/// What `ls` must show after a complete backup of `s`.
fn expected_ls(s: &SpoolState) -> Ls {
    s.folders
        .iter()
        .map(|f| {
            let msgs = f
                .visible()
                .map(|r| {
                    let flags = if r.seen {
                        vec!["\\Seen".to_owned()]
                    } else {
                        vec![]
                    };
                    (r.uid, r.guid, flags, true)
                })
                .collect();
            (f.uniqueid.clone(), (f.name.clone(), msgs))
        })
        .collect()
}

fn folder_ref(s: &SpoolState, uniqueid: &str) -> FolderRef {
    FolderRef {
        name: s.folder(uniqueid).name.clone(),
        uniqueid: uniqueid.into(),
    }
}

/// A backupd over an in-memory spool, and a store root.
struct Env {
    backupd: MemBackupd,
    root: tempfile::TempDir,
    opts: StoreOptions,
}

impl Env {
    fn new(s: SpoolState) -> Env {
        Env {
            backupd: MemBackupd::start(s),
            root: tempfile::tempdir().unwrap(),
            opts: StoreOptions {
                // Several chunks per run even for this small user.
                chunk_cap: 8 * 1024,
                ..StoreOptions::default()
            },
        }
    }

    fn spool(&self) -> SpoolState {
        self.backupd.spool.snapshot()
    }

    fn backup_with(&self, c: &mut Client) -> Result<UserOutcome, BackupError> {
        let job = UserJob {
            user: USER,
            store_root: self.root.path(),
            store_options: &self.opts,
            quiet_key: None,
        };
        backup_user(&job, c)
    }

    /// One backup straight to backupd.
    fn backup(&self) -> Result<UserOutcome, BackupError> {
        self.backup_with(&mut self.backupd.connect())
    }

    /// One backup that must be complete; returns its outcome.
    fn complete(&self) -> UserOutcome {
        let o = self.backup().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.incomplete, [], "{}", o.incomplete_text());
        o
    }

    /// One backup through a proxy with `policy`; returns its result and the proxy's log.
    fn backup_via(&self, proxy: FrameProxy) -> (Result<UserOutcome, BackupError>, ProxyLog) {
        let r = match self.backupd.connect_via(proxy.addr()) {
            Ok(mut c) => self.backup_with(&mut c),
            Err(e) => panic!("connecting through the proxy: {e}"),
        };
        // The client is dropped: the proxy's conversation ends.
        (r, proxy.finish())
    }

    fn reader(&self) -> StoreReader {
        StoreReader::open(self.root.path(), USER).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The store as `ls` shows it now.
    fn ls(&self) -> Ls {
        let r = self.reader();
        let cat = r.catalog();
        let mut out = Ls::new();
        for f in cat.folders_at(None).unwrap() {
            let mut msgs = Vec::new();
            cat.messages_at(&f.unique_id, None, false, |m| {
                msgs.push((m.uid, m.guid, m.flags, m.stored));
                Ok(())
            })
            .unwrap();
            assert!(out.insert(f.unique_id, (f.name, msgs)).is_none());
        }
        out
    }

    fn runs(&self) -> Vec<RunInfo> {
        self.reader().catalog().runs().unwrap()
    }

    /// Opens the store as a writer (recovery included) and runs its deep check.
    fn check(&self) {
        let store = Store::open(self.root.path(), USER, self.opts.clone())
            .unwrap_or_else(|e| panic!("opening the store: {e}"));
        assert_eq!(store.check(true).unwrap(), vec![]);
    }

    /// Every message entry of the data file, scanned from byte 0: each GUID at most once
    /// (asserted), each entry's bytes hashing to its GUID (asserted), the file ending
    /// clean; the GUIDs, which the index must agree with.
    fn stored_once(&self) -> BTreeSet<Guid> {
        let r = self.reader();
        let cat = r.catalog();
        let mut scanner = Scanner::new(File::open(cat.data_path()).unwrap());
        let mut seen = BTreeSet::new();
        loop {
            match scanner.next_event().unwrap() {
                ScanEvent::Entry(mut e) => {
                    if let EntryMeta::Message(m) = &e.header.meta {
                        let guid = m.guid;
                        assert_eq!(e.sha1().unwrap(), guid, "message entry {guid}");
                        assert!(seen.insert(guid), "message {guid} stored twice");
                    }
                }
                ScanEvent::End(end) => {
                    assert_eq!(end.tail, Tail::Clean, "{end:?}");
                    break;
                }
                _ => {}
            }
        }
        for g in &seen {
            assert!(
                cat.has_message(g).unwrap(),
                "{g} in the file, not in the index"
            );
        }
        seen
    }

    fn has_message(&self, g: &Guid) -> bool {
        self.reader().catalog().has_message(g).unwrap()
    }
}

/// Asserts `o` is an incomplete backup: exactly `missing`, and no quiet key.
fn assert_incomplete(o: &UserOutcome, missing: &[Missing]) {
    assert_eq!(o.incomplete, missing, "{}", o.incomplete_text());
    assert_not_quiet(o);
}

/// Asserts an incomplete backup `o` left no quiet key.
fn assert_not_quiet(o: &UserOutcome) {
    assert!(!o.incomplete.is_empty());
    assert!(!o.quiet);
    assert_eq!(o.quiet_key, None, "an incomplete backup sets no quiet key");
}

/// Asserts the store's newest run is a partial one (committed, no end marker) and its last
/// complete run is `complete`.
fn assert_last_run_partial(env: &Env, runs: usize, complete: Option<u64>) {
    let r = env.runs();
    assert_eq!(r.len(), runs, "{r:?}");
    assert!(r.last().unwrap().started.is_some());
    assert_eq!(r.last().unwrap().ended, None, "partial: no end marker");
    let cat = env.reader();
    assert_eq!(
        cat.catalog().last_complete_run().unwrap().map(|r| r.run),
        complete
    );
}

/// After a complete backup of the spool as it is: `ls` shows it exactly, the data file
/// holds `guids` once each, the checks pass.
fn assert_whole(env: &Env, guids: &BTreeSet<Guid>) {
    assert_eq!(env.ls(), expected_ls(&env.spool()));
    assert_eq!(&env.stored_once(), guids);
    env.check();
}

#[test]
fn clean_backups_hold_every_message_once() {
    let env = Env::new(first_spool());
    let first = env.complete();
    assert_eq!(first.messages_fetched, 9);
    assert_eq!(first.messages_stored, 9);
    assert!(first.quiet_key.is_some());
    assert_whole(&env, &env.spool().good_guids());

    // Nothing changed: nothing asked but the listing, no run written.
    let served = env.backupd.spool.served.meta_copies.load(Ordering::SeqCst);
    let o = env.complete();
    assert_eq!((o.meta_copies, o.messages_fetched), (0, 0));
    assert!(o.quiet_key.is_some());
    assert_eq!(env.runs().len(), 1);
    assert_eq!(
        env.backupd.spool.served.meta_copies.load(Ordering::SeqCst),
        served
    );

    // The night's changes: a rename costs nothing, the copy in Archive is not fetched.
    let before = env.spool().good_guids();
    env.backupd.spool.with(second_spool);
    let o = env.complete();
    assert_eq!(
        o.messages_fetched, 3,
        "two new in INBOX, one new in Archive"
    );
    assert_eq!((o.folders_renamed, o.folders_deleted), (1, 1));
    let all: BTreeSet<Guid> = before.union(&env.spool().good_guids()).copied().collect();
    assert_whole(&env, &all);
}

#[test]
fn guid_mismatch_keeps_the_folders_previous_snapshot() {
    let env = Env::new(first_spool());
    env.complete();
    let before = env.ls();
    // New mail in INBOX (one of it altered on disk after delivery) and a flag change;
    // new mail in Work.
    let (bad, good_inbox) = env.backupd.spool.with(|s| {
        let inbox = s.folder_mut(INBOX);
        let uids = inbox.append_sizes(&[800, 900]);
        inbox.set_seen(1);
        let f = inbox.files.get_mut(&uids[0]).unwrap();
        f[100] ^= 1;
        s.folder_mut(WORK).append_sizes(&[500]);
        (uids[0], s.folder(INBOX).record(uids[1]).guid)
    });
    let spool = env.spool();
    let o = env.backup().unwrap();
    let expected_guid = spool.folder(INBOX).record(bad).guid;
    assert_eq!(o.incomplete.len(), 1, "{}", o.incomplete_text());
    match &o.incomplete[0] {
        Missing::Message {
            folder,
            uid,
            reason,
        } => {
            assert_eq!(folder, &folder_ref(&spool, INBOX));
            assert_eq!(*uid, Some(bad));
            assert!(reason.contains(&expected_guid.to_hex()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_not_quiet(&o);
    assert_last_run_partial(&env, 2, Some(1));
    // INBOX as before (no new message, no new flag); Work as now.
    let ls = env.ls();
    assert_eq!(ls[INBOX], before[INBOX]);
    assert_eq!(ls[WORK], expected_ls(&spool)[WORK]);
    assert_eq!(ls[OLD], before[OLD]);
    // What was fetched whole is kept; the altered bytes are not.
    assert!(env.has_message(&good_inbox));
    assert!(!env.has_message(&expected_guid));
    env.check();

    // The file mended: the next backup fetches that one message only, and completes.
    env.backupd.spool.with(|s| {
        let f = s.folder_mut(INBOX).files.get_mut(&bad).unwrap();
        f[100] ^= 1;
    });
    let o = env.complete();
    assert_eq!(o.messages_fetched, 1);
    assert!(o.quiet_key.is_some());
    assert_whole(&env, &env.spool().good_guids());
}

#[test]
fn gone_after_meta_copy_with_index_changed_is_copied_again() {
    let env = Env::new(first_spool());
    env.complete();
    let (gone, kept) = env.backupd.spool.with(|s| {
        let uids = s.folder_mut(INBOX).append_sizes(&[700, 1300]);
        (uids[0], uids[1])
    });
    // Expunged and unlinked by Cyrus right after the first meta copy of INBOX.
    let mut once = true;
    env.backupd.spool.set_hook(move |e, s| {
        if once
            && *e
                == (SpoolEvent::MetaCopied {
                    uniqueid: INBOX.into(),
                })
        {
            once = false;
            s.folder_mut(INBOX).unlink(gone);
        }
    });
    let copies = env.backupd.spool.served.meta_copies.load(Ordering::SeqCst);
    let o = env.complete();
    env.backupd.spool.clear_hook();
    assert_eq!(o.messages_gone, 1);
    assert_eq!(
        o.meta_copies, 2,
        "INBOX copied again after the gone message"
    );
    assert_eq!(
        env.backupd.spool.served.meta_copies.load(Ordering::SeqCst) - copies,
        2
    );
    assert_eq!(
        o.quiet_key, None,
        "stored as copied, newer than the listing: no quiet key yet"
    );
    // Complete: a new complete run; the message shows expunged, not stored; the other one
    // is there.
    assert_eq!(
        env.reader()
            .catalog()
            .last_complete_run()
            .unwrap()
            .unwrap()
            .run,
        2
    );
    let m = env
        .reader()
        .catalog()
        .message_at(INBOX, gone, None)
        .unwrap()
        .unwrap();
    assert_eq!((m.state, m.stored), (MessageState::Expunged, false));
    assert!(env.has_message(&env.spool().folder(INBOX).record(kept).guid));
    assert_whole(&env, &env.spool().good_guids());

    // The store now has the listing's state: nothing to do, and a quiet key.
    let o = env.complete();
    assert_eq!((o.meta_copies, o.messages_fetched), (0, 0));
    assert!(o.quiet_key.is_some());
}

#[test]
fn gone_expunged_message_is_not_a_fault() {
    let env = Env::new(first_spool());
    env.complete();
    // A new message, expunged (file kept) before the listing; its file goes after the
    // meta copy. The store need not keep an expunged message it never got.
    let uid = env.backupd.spool.with(|s| {
        let inbox = s.folder_mut(INBOX);
        let uid = inbox.append_sizes(&[900])[0];
        inbox.expunge(uid);
        uid
    });
    env.backupd.spool.set_hook(move |e, s| {
        if *e
            == (SpoolEvent::MetaCopied {
                uniqueid: INBOX.into(),
            })
        {
            s.folder_mut(INBOX).files.remove(&uid);
        }
    });
    let o = env.complete();
    assert_eq!((o.messages_gone, o.meta_copies), (1, 1), "not copied again");
    assert!(o.quiet_key.is_some(), "stored as listed");
    let m = env
        .reader()
        .catalog()
        .message_at(INBOX, uid, None)
        .unwrap()
        .unwrap();
    assert_eq!((m.state, m.stored), (MessageState::Expunged, false));
    assert_whole(&env, &env.spool().good_guids());
}

#[test]
fn gone_without_index_change_keeps_the_previous_snapshot() {
    let env = Env::new(first_spool());
    env.complete();
    let before = env.ls();
    let (vanish, kept) = env.backupd.spool.with(|s| {
        let uids = s.folder_mut(INBOX).append_sizes(&[700, 1300]);
        (uids[0], uids[1])
    });
    // The file goes after the first meta copy; cyrus.index keeps showing it live.
    let file = Arc::new(Mutex::new(None));
    let taken = file.clone();
    env.backupd.spool.set_hook(move |e, s| {
        if *e
            == (SpoolEvent::MetaCopied {
                uniqueid: INBOX.into(),
            })
        {
            let mut t = taken.lock().unwrap();
            if t.is_none() {
                *t = Some(s.folder_mut(INBOX).remove_file(vanish));
            }
        }
    });
    let spool = env.spool();
    let copies = env.backupd.spool.served.meta_copies.load(Ordering::SeqCst);
    let asked = env.backupd.spool.served.messages.load(Ordering::SeqCst);
    let o = env.backup().unwrap();
    env.backupd.spool.clear_hook();
    assert_incomplete(
        &o,
        &[Missing::KeptVanishing {
            folder: folder_ref(&spool, INBOX),
            count: 1,
        }],
    );
    // One copy and two more; the first fetch asks for both, each retry for the one still
    // missing (the other was stored by the first fetch).
    assert_eq!(o.meta_copies, 3);
    let served = &env.backupd.spool.served;
    assert_eq!(served.meta_copies.load(Ordering::SeqCst) - copies, 3);
    assert_eq!(served.messages.load(Ordering::SeqCst) - asked, 4);
    assert_eq!(o.messages_gone, 3);
    assert_last_run_partial(&env, 2, Some(1));
    assert_eq!(env.ls(), before, "INBOX keeps its previous snapshot");
    assert!(env.has_message(&spool.folder(INBOX).record(kept).guid));
    env.check();

    // The file back: the next backup fetches it alone and completes.
    let bytes = file.lock().unwrap().take().unwrap();
    env.backupd
        .spool
        .with(|s| s.folder_mut(INBOX).files.insert(vanish, bytes));
    let o = env.complete();
    assert_eq!(o.messages_fetched, 1);
    assert_whole(&env, &env.spool().good_guids());
}

#[test]
fn item_error_leaves_a_new_folder_out() {
    // First backup: Work's second message cannot be read on the server.
    let mut s = first_spool();
    s.unreadable.insert((WORK.into(), 2));
    let spool = s.clone();
    let env = Env::new(s);
    let o = env.backup().unwrap();
    assert_eq!(o.incomplete.len(), 1, "{}", o.incomplete_text());
    match &o.incomplete[0] {
        Missing::Message {
            folder,
            uid,
            reason,
        } => {
            assert_eq!(folder, &folder_ref(&spool, WORK));
            // backupd's item error names the file, not the UID.
            assert_eq!(*uid, None);
            assert!(reason.contains("memspool/alice/u-work/2."), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_not_quiet(&o);
    assert_last_run_partial(&env, 1, None);
    // Work has no snapshot before this one: it is not shown at all; the others are whole.
    let mut expected = expected_ls(&spool);
    expected.remove(WORK);
    assert_eq!(env.ls(), expected);
    // Its two readable messages were kept.
    let work = spool.folder(WORK);
    assert!(env.has_message(&work.record(1).guid) && env.has_message(&work.record(3).guid));
    assert!(!env.has_message(&work.record(2).guid));
    env.check();

    env.backupd.spool.with(|s| s.unreadable.clear());
    let o = env.complete();
    assert_eq!(o.messages_fetched, 1);
    assert_whole(&env, &env.spool().good_guids());
}

#[test]
fn item_error_keeps_the_previous_snapshot() {
    let env = Env::new(first_spool());
    env.complete();
    let before = env.ls();
    env.backupd.spool.with(|s| {
        let uids = s.folder_mut(WORK).append_sizes(&[600, 700]);
        s.unreadable.insert((WORK.into(), uids[0]));
    });
    let o = env.backup().unwrap();
    assert!(
        matches!(&o.incomplete[..], [Missing::Message { folder, uid: None, .. }] if folder.uniqueid == WORK),
        "{:?}",
        o.incomplete
    );
    assert_not_quiet(&o);
    assert_eq!(env.ls(), before);
    assert_last_run_partial(&env, 2, Some(1));
    env.check();
    env.backupd.spool.with(|s| s.unreadable.clear());
    assert_eq!(env.complete().messages_fetched, 1);
    assert_whole(&env, &env.spool().good_guids());
}

#[test]
fn folder_deleted_between_listing_and_meta_copy() {
    // First backup: a folder never held that vanishes is simply not there.
    let env = Env::new(first_spool());
    env.backupd.spool.set_hook(|e, s| {
        if *e == SpoolEvent::Listed {
            s.remove_folder(OLD);
        }
    });
    let o = env.complete();
    env.backupd.spool.clear_hook();
    assert_eq!(o.folders_deleted, 0);
    assert_eq!(
        o.quiet_key, None,
        "the store lacks a folder the listing showed"
    );
    assert_whole(&env, &env.spool().good_guids());
    assert_eq!(env.ls().len(), 2);

    // Second backup: a folder held, changed, then deleted after the listing: tombstoned,
    // and the run is complete (the deletion takes effect).
    env.backupd.spool.with(|s| {
        s.folder_mut(WORK).append_sizes(&[500]);
    });
    env.backupd.spool.set_hook(|e, s| {
        if *e == SpoolEvent::Listed {
            s.remove_folder(WORK);
        }
    });
    let copies = env.backupd.spool.served.meta_copies.load(Ordering::SeqCst);
    let o = env.complete();
    env.backupd.spool.clear_hook();
    assert_eq!(o.folders_deleted, 1);
    assert_eq!(o.messages_fetched, 0);
    assert_eq!(o.quiet_key, None);
    assert_eq!(
        env.backupd.spool.served.meta_copies.load(Ordering::SeqCst) - copies,
        1,
        "one copy asked, refused"
    );
    assert!(env.runs().last().unwrap().ended.is_some(), "complete");
    assert!(!env.ls().contains_key(WORK));
    assert_eq!(env.ls(), expected_ls(&env.spool()));
    env.check();

    // The store and the listing agree now.
    let o = env.complete();
    assert_eq!((o.meta_copies, o.folders_deleted), (0, 0));
    assert!(o.quiet_key.is_some());
}

/// A policy that takes UID `uid`'s message out of the first message fetch reply holding
/// it (its MESSAGE and DATA frames) and lowers that reply's END count to match: a reply
/// that quietly skips a UID.
fn skip_uid(uid: u32) -> impl FnMut(usize, &FrameHeader, &[u8]) -> Verdict + Send {
    let mut target: Option<u32> = None;
    let mut data_left = 0u64;
    let mut done = false;
    move |_, h, body| {
        let reply = || {
            Reply::decode(&Frame {
                kind: h.kind,
                id: h.id,
                body,
            })
            .unwrap()
        };
        match (h.kind, target) {
            (kind::MESSAGE, None) if !done => match reply() {
                Reply::Message { uid: u, size } if u == uid => {
                    target = Some(h.id);
                    data_left = size;
                    Verdict::Drop
                }
                _ => Verdict::Forward,
            },
            (kind::DATA, Some(id)) if id == h.id && data_left > 0 => {
                data_left -= u64::from(h.len);
                Verdict::Drop
            }
            (kind::END, Some(id)) if id == h.id => {
                let Reply::End { items } = reply() else {
                    unreachable!()
                };
                target = None;
                done = true;
                let mut out = Vec::new();
                Reply::End { items: items - 1 }
                    .encode(h.id, &mut out)
                    .unwrap();
                Verdict::Replace(out[formats::protocol::HEADER_LEN..].to_vec())
            }
            _ => Verdict::Forward,
        }
    }
}

#[test]
fn reply_skipping_a_uid_is_unanswered() {
    let env = Env::new(first_spool());
    env.complete();
    let before = env.ls();
    let (first, skipped) = env.backupd.spool.with(|s| {
        let uids = s.folder_mut(INBOX).append_sizes(&[700, 1300]);
        (uids[0], uids[1])
    });
    let spool = env.spool();
    let (r, log) = env.backup_via(FrameProxy::start(env.backupd.addr(), skip_uid(skipped)));
    let o = r.unwrap();
    assert!(log
        .to_client
        .iter()
        .any(|f| f.header.kind == kind::END && f.body == 1u64.to_be_bytes()));
    assert_incomplete(
        &o,
        &[Missing::Unanswered {
            folder: folder_ref(&spool, INBOX),
            uids: vec![skipped],
            count: 1,
        }],
    );
    assert_eq!(env.ls(), before);
    assert!(env.has_message(&spool.folder(INBOX).record(first).guid));
    assert_last_run_partial(&env, 2, Some(1));
    env.check();
    assert_eq!(env.complete().messages_fetched, 1);
    assert_whole(&env, &env.spool().good_guids());
}

/// The GUIDs of the messages whose bytes reached the client whole, by the proxy's log:
/// each MESSAGE frame of a fetch reply followed by all its DATA frames.
fn delivered(log: &ProxyLog, spool: &SpoolState) -> BTreeSet<Guid> {
    let mut fetches: HashMap<u32, String> = HashMap::new();
    for f in &log.to_server {
        let frame = Frame {
            kind: f.header.kind,
            id: f.header.id,
            body: &f.body,
        };
        if let Ok(Request::FetchMessages { uniqueid, .. }) = Request::decode(&frame) {
            fetches.insert(f.header.id, uniqueid);
        }
    }
    let mut out = BTreeSet::new();
    let mut current: Option<(Guid, u64)> = None;
    for f in &log.to_client {
        match f.header.kind {
            kind::MESSAGE => {
                let frame = Frame {
                    kind: f.header.kind,
                    id: f.header.id,
                    body: &f.body,
                };
                let Ok(Reply::Message { uid, size }) = Reply::decode(&frame) else {
                    panic!("a bad MESSAGE frame")
                };
                let guid = spool.folder(&fetches[&f.header.id]).record(uid).guid;
                current = Some((guid, size));
                if size == 0 {
                    out.insert(guid);
                }
            }
            kind::DATA => {
                if let Some((guid, left)) = current.as_mut() {
                    *left -= f.body.len() as u64;
                    if *left == 0 {
                        out.insert(*guid);
                        current = None;
                    }
                }
            }
            _ => current = None,
        }
    }
    out
}

/// Whether the listing's reply reached the client whole (then the run had begun).
fn listed(log: &ProxyLog) -> bool {
    let Some(list) = log
        .to_server
        .iter()
        .find(|f| f.header.kind == kind::LIST_FOLDERS)
    else {
        return false;
    };
    log.to_client
        .iter()
        .any(|f| f.header.id == list.header.id && f.header.kind == kind::END)
}

/// Drops the connection after every frame count of one backup in turn: of a first backup
/// when `second` is false, else of the second one (after `second_spool`'s changes: a
/// rename, a deletion, new mail, a new folder). Each trial starts from a fresh store.
fn drop_at_every_frame(second: bool) {
    // How many frames the backup takes, unbroken.
    let total = {
        let env = Env::new(first_spool());
        if second {
            env.complete();
            env.backupd.spool.with(second_spool);
        }
        let (r, log) = env.backup_via(FrameProxy::forward_all(env.backupd.addr()));
        assert_eq!(r.unwrap().incomplete, []);
        log.to_client.len()
    };
    assert!(total > 20, "{total} frames");
    let mut partial_runs = 0;
    for n in 2..=total {
        let env = Env::new(first_spool());
        let (base_runs, base_ls, base_guids) = if second {
            env.complete();
            let b = (env.runs().len(), env.ls(), env.stored_once());
            env.backupd.spool.with(second_spool);
            b
        } else {
            (0, Ls::new(), BTreeSet::new())
        };
        let spool = env.spool();
        let (r, log) = env.backup_via(FrameProxy::close_after(env.backupd.addr(), n));
        assert_eq!(log.to_client.len(), n);
        if n == total {
            let o = r.unwrap();
            assert_eq!(o.incomplete, []);
            assert!(o.quiet_key.is_some());
        } else {
            match r {
                Err(BackupError::Connection { user, .. }) => assert_eq!(user, USER),
                other => panic!("frame {n} of {total}: expected a connection error, got {other:?}"),
            }
        }
        // The store opens and passes its checks (or, cut before the listing on a first
        // backup, was never created).
        let exists = match StoreReader::open(env.root.path(), USER) {
            Ok(_) => true,
            Err(StoreError::NoStore { .. }) => false,
            Err(e) => panic!("frame {n}: {e}"),
        };
        assert_eq!(exists, second || listed(&log), "frame {n}");
        if exists {
            env.check();
            // What was fetched whole is committed, nothing else.
            let expected: BTreeSet<Guid> = base_guids
                .union(&delivered(&log, &spool))
                .copied()
                .collect();
            assert_eq!(env.stored_once(), expected, "frame {n} of {total}");
            let runs = env.runs();
            if n < total && listed(&log) {
                // A partial run: no end marker, so the deletion did not take effect.
                assert_eq!(runs.len(), base_runs + 1, "frame {n}");
                assert_eq!(runs.last().unwrap().ended, None, "frame {n}");
                partial_runs += 1;
                if second {
                    assert!(env.ls().contains_key(OLD), "frame {n}: tombstone untrusted");
                }
            } else if n < total {
                assert_eq!(runs.len(), base_runs, "frame {n}");
            }
            // Each folder shows either its state before this backup or its new one.
            let now = expected_ls(&spool);
            for (u, f) in env.ls() {
                let old = base_ls.get(&u);
                let new = now.get(&u);
                let same_msgs = |x: Option<&FolderLs>| x.is_some_and(|x| x.1 == f.1);
                assert!(
                    same_msgs(old) || same_msgs(new),
                    "frame {n}: folder {u} is {f:?}, was {old:?}, is now {new:?}"
                );
            }
        }
        // A clean rerun completes, fetches only what the store lacks, and leaves every
        // message once.
        let held = if exists {
            env.stored_once()
        } else {
            BTreeSet::new()
        };
        let o = env.complete();
        let good = env.spool().good_guids();
        assert_eq!(
            o.messages_fetched as usize,
            good.difference(&held).count(),
            "frame {n}: nothing fetched twice"
        );
        let all: BTreeSet<Guid> = base_guids.union(&good).copied().collect();
        assert_whole(&env, &all);
    }
    assert!(
        partial_runs > total / 2,
        "{partial_runs} partial runs of {total}"
    );
}

#[test]
fn connection_dropped_at_every_frame_of_a_first_backup() {
    drop_at_every_frame(false);
}

#[test]
fn connection_dropped_at_every_frame_of_a_second_backup() {
    drop_at_every_frame(true);
}

#[test]
fn message_helper_is_deterministic() {
    assert_eq!(message(1, 2, 500), message(1, 2, 500));
    assert_ne!(message(1, 2, 500), message(1, 3, 500));
    assert_eq!(message(1, 2, 500).len(), 500);
}
