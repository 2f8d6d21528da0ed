//! `repair` on the store API: a damaged chunk in the middle, a truncated tail, garbage
//! between chunks, a missing index. Each time every intact chunk is kept, what was lost is
//! named by folder and UID, the lost messages are marked so the planner copies their
//! folder again, and a run that stores them again leaves a store verify finds clean.
//! Also: damage verify finds is marked, the plan copies the folder again, the run replaces
//! the damaged copy, restore skips a damaged message with a note.

mod store_common;

use std::path::{Path, PathBuf};

use backup_server::backup::plan::CopyReason;
use backup_server::backup::{plan_for, FolderAction};
use backup_server::repair::repair_user;
use backup_server::restore::{restore, Note, Selection, Target};
use backup_server::store::{
    DamageRecording, MessageInfo, RunEnd, Store, StoreError, StoreReader, UserDir,
};
use backup_server::verify::{verify_user, Fault};
use formats::protocol::UserListing;
use formats::Guid;
use store_common::*;

const USER: &str = "rita";
const T1: i64 = 1_800_000_000;

/// Two runs into INBOX, every message in a chunk of its own (cap 1 KiB): run 1 holds
/// UIDs 1 and 2, run 2 UIDs 3 and 4 and a snapshot of all four. Returns the messages.
fn build(root: &Path) -> (Vec<Vec<u8>>, Snap) {
    let clock = TestClock::at(T1);
    let mut o = opts(&clock);
    o.chunk_cap = 1024;
    let m: Vec<Vec<u8>> = (0..4).map(|i| message(100 + i, 3000)).collect();
    let recs: Vec<Rec> = m
        .iter()
        .enumerate()
        .map(|(i, x)| Rec::new(i as u32 + 1, x))
        .collect();
    let mut store = Store::open(root, USER, o.clone()).unwrap();
    commit_run(
        &mut store,
        &m[..2],
        &[&Snap::new("u-inbox", "INBOX", 7, &recs[..2], 10)],
    );
    clock.advance(60);
    let last = Snap::new("u-inbox", "INBOX", 7, &recs, 20);
    commit_run(&mut store, &m[2..], &[&last]);
    (m, last)
}

fn data_path(root: &Path) -> PathBuf {
    let r = StoreReader::open(root, USER).unwrap();
    r.catalog().data_path().to_path_buf()
}

/// (offset, compressed length) of the chunk holding a message.
fn chunk_of(root: &Path, g: &Guid) -> (u64, u64) {
    let r = StoreReader::open(root, USER).unwrap();
    let e = r.catalog().message(g).unwrap().unwrap().entry;
    let conn = rusqlite::Connection::open_with_flags(
        r.catalog().index_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let len: i64 = conn
        .query_row(
            "SELECT compressed_len FROM chunks WHERE offset = ?1",
            [e.chunk_offset as i64],
            |r| r.get(0),
        )
        .unwrap();
    (e.chunk_offset, len as u64)
}

/// Flips bytes in the middle of a message's chunk (its deflate data).
fn damage_chunk(root: &Path, g: &Guid) -> u64 {
    let (off, len) = chunk_of(root, g);
    let p = data_path(root);
    let mut b = std::fs::read(&p).unwrap();
    for i in 0..8 {
        b[(off + len / 2) as usize + i] ^= 0x55;
    }
    std::fs::write(&p, b).unwrap();
    off
}

fn listing(s: &Snap) -> UserListing {
    UserListing {
        folders: vec![listed(s)],
        ..UserListing::default()
    }
}

/// The run that fetches again what the store lacks: here, the messages given.
fn refetch(root: &Path, msgs: &[&Vec<u8>], snap: &Snap) {
    let clock = TestClock::at(T1 + 3600);
    let mut store = Store::open(root, USER, opts(&clock)).unwrap();
    let mut run = store.begin_run().unwrap();
    for m in msgs {
        assert!(!run.has_message(&guid(m)).unwrap(), "fetched again");
        run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
    }
    run.add_folder_snapshot(snap.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
}

fn assert_clean(root: &Path) {
    let v = verify_user(root, USER);
    assert!(v.is_clean(), "{:#?}", v.faults);
}

/// Every message restores byte for byte.
fn assert_restores(root: &Path, m: &[Vec<u8>]) {
    let r = StoreReader::open(root, USER).unwrap();
    for x in m {
        let got = r
            .catalog()
            .read_entry(&r.catalog().message(&guid(x)).unwrap().unwrap().entry)
            .unwrap();
        assert!(got == *x);
    }
}

#[test]
fn verify_marks_a_damaged_chunk_the_run_replaces_it_and_restore_skips_it_meanwhile() {
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    let g1 = guid(&m[1]);
    let off = damage_chunk(root.path(), &g1);

    let v = verify_user(root.path(), USER);
    assert!(
        v.faults
            .iter()
            .any(|f| matches!(f, Fault::DamagedChunk { chunk, .. } if *chunk == off)),
        "{:#?}",
        v.faults
    );
    assert_eq!(v.damage, Some(DamageRecording::Recorded { marked: 1 }));
    {
        let r = StoreReader::open(root.path(), USER).unwrap();
        let d = r.catalog().damaged().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].guid, g1);
        assert!(!r.catalog().holds_message(&g1).unwrap());
        assert!(r.catalog().holds_message(&guid(&m[0])).unwrap());
        // Unchanged stat data, but a damaged live message: copied again.
        let p = plan_for(r.catalog(), &listing(&last)).unwrap();
        assert_eq!(
            p.folders[0].action,
            FolderAction::Copy {
                reason: CopyReason::Damaged,
                renamed_from: None
            }
        );
    }

    // A restore meanwhile: everything else restored, the damaged one named.
    let out = root.path().join("eml");
    let rep = restore(
        root.path(),
        USER,
        &Selection::default(),
        &Target::Eml(out.clone()),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.damaged), (3, 1));
    assert!(rep.notes.iter().any(|n| matches!(
        n,
        Note::Damaged { folder, uid: 2, guid, .. } if folder == "INBOX" && *guid == g1
    )));
    assert!(!out.join("INBOX/2.eml").exists());

    // A second verify while a run holds the lock: said, not failed.
    {
        let _held = UserDir::new(root.path(), USER).unwrap().lock().unwrap();
        let v = verify_user(root.path(), USER);
        assert!(
            matches!(&v.damage, Some(DamageRecording::NotRecorded { reason }) if reason.contains("locked")),
            "{:?}",
            v.damage
        );
    }

    // The run fetches it again; the good copy replaces the mark.
    refetch(root.path(), &[&m[1]], &last);
    {
        let r = StoreReader::open(root.path(), USER).unwrap();
        assert!(r.catalog().damaged().unwrap().is_empty());
        assert!(r.catalog().holds_message(&g1).unwrap());
        assert!(plan_for(r.catalog(), &listing(&last)).unwrap().is_empty());
    }
    assert_restores(root.path(), &m);
    // The damaged bytes are still in the data file until a repair (or compaction).
    assert!(!verify_user(root.path(), USER).is_clean());
    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert_eq!(rep.lost_ranges.len(), 1, "{rep:#?}");
    assert!(rep.lost_messages.is_empty(), "{rep:#?}");
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

#[test]
fn repair_keeps_every_chunk_around_a_damaged_one() {
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    let g1 = guid(&m[1]);
    let off = damage_chunk(root.path(), &g1);
    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert_eq!(rep.lost_ranges.len(), 1, "{rep:#?}");
    assert_eq!(rep.lost_ranges[0].offset, off);
    assert!(rep.old_index_read);
    assert_eq!(rep.lost_messages.len(), 1, "{rep:#?}");
    assert_eq!(
        (
            rep.lost_messages[0].folder.as_str(),
            rep.lost_messages[0].uid,
            rep.lost_messages[0].guid
        ),
        ("INBOX", 2, g1)
    );
    {
        let r = StoreReader::open(root.path(), USER).unwrap();
        let c = r.catalog();
        for (i, x) in m.iter().enumerate() {
            assert_eq!(c.holds_message(&guid(x)).unwrap(), i != 1, "message {i}");
        }
        assert_eq!(c.damaged().unwrap()[0].entry, None);
        assert!(matches!(
            plan_for(c, &listing(&last)).unwrap().folders[0].action,
            FolderAction::Copy {
                reason: CopyReason::Damaged,
                ..
            }
        ));
        assert_eq!(c.data_file_name(), rep.new_data_file);
        assert_eq!(
            r.dir().data_files().unwrap(),
            vec![rep.new_data_file.clone()]
        );
    }
    // Until the run, verify names the record whose message is lost.
    assert!(!verify_user(root.path(), USER).is_clean());
    refetch(root.path(), &[&m[1]], &last);
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

#[test]
fn repair_of_a_truncated_tail_names_what_the_cut_took() {
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    let (off, len) = chunk_of(root.path(), &guid(&m[3]));
    let p = data_path(root.path());
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(off + len / 2).unwrap();
    drop(f);
    // What makes the user fail every night, and names the way out.
    let e = Store::open(root.path(), USER, Default::default()).unwrap_err();
    assert!(matches!(e, StoreError::DataFileShort { .. }), "{e}");
    assert!(e.repair_mends());

    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert_eq!(rep.lost_ranges.len(), 1, "{rep:#?}");
    assert_eq!(rep.lost_ranges[0].offset, off);
    assert_eq!(
        rep.lost_ranges[0].offset + rep.lost_ranges[0].len,
        off + len / 2
    );
    // The last snapshot went with the tail: UID 4 is named from the old index.
    let lost: Vec<(u32, Guid)> = rep.lost_messages.iter().map(|l| (l.uid, l.guid)).collect();
    assert_eq!(lost, vec![(4, guid(&m[3]))]);
    {
        let r = StoreReader::open(root.path(), USER).unwrap();
        for x in &m[..3] {
            assert!(r.catalog().holds_message(&guid(x)).unwrap());
        }
        // The snapshot the store still has is older than the listing: copied again.
        let p = plan_for(r.catalog(), &listing(&last)).unwrap();
        assert!(matches!(p.folders[0].action, FolderAction::Copy { .. }));
    }
    refetch(root.path(), &[&m[3]], &last);
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

#[test]
fn repair_skips_garbage_between_chunks() {
    let root = tempfile::tempdir().unwrap();
    let (m, _) = build(root.path());
    let (off, _) = chunk_of(root.path(), &guid(&m[2]));
    let p = data_path(root.path());
    let mut b = std::fs::read(&p).unwrap();
    // Garbage with a false gzip header in it, which the resync must try and pass.
    let mut junk = vec![0xA5u8; 300];
    junk[100..103].copy_from_slice(&[0x1f, 0x8b, 0x08]);
    b.splice(off as usize..off as usize, junk);
    std::fs::write(&p, b).unwrap();

    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert_eq!(rep.lost_ranges.len(), 1, "{rep:#?}");
    assert_eq!(
        (rep.lost_ranges[0].offset, rep.lost_ranges[0].len),
        (off, 300)
    );
    assert!(rep.lost_messages.is_empty(), "{rep:#?}");
    assert!(rep.damaged_entries.is_empty());
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

#[test]
fn repair_without_an_index_names_the_lost_from_the_new_one() {
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    let g1 = guid(&m[1]);
    damage_chunk(root.path(), &g1);
    let dir = UserDir::new(root.path(), USER).unwrap();
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", dir.index_path().display()));
    }
    let e = Store::open(root.path(), USER, Default::default()).unwrap_err();
    assert!(e.repair_mends(), "{e}");
    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert!(!rep.old_index_read);
    let lost: Vec<(&str, u32, Guid)> = rep
        .lost_messages
        .iter()
        .map(|l| (l.folder.as_str(), l.uid, l.guid))
        .collect();
    assert_eq!(lost, vec![("INBOX", 2, g1)]);
    refetch(root.path(), &[&m[1]], &last);
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

#[test]
fn repair_of_a_whole_store_changes_nothing_and_leaves_no_leftover() {
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    // A killed repair's output, left behind.
    let dir = UserDir::new(root.path(), USER).unwrap();
    std::fs::write(dir.file("backupdata-1.tar.gz.repair"), b"half").unwrap();
    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert!(rep.is_clean(), "{rep:#?}");
    assert!(!dir.file("backupdata-1.tar.gz.repair").exists());
    assert_clean(root.path());
    assert_restores(root.path(), &m);
    let r = StoreReader::open(root.path(), USER).unwrap();
    assert!(plan_for(r.catalog(), &listing(&last)).unwrap().is_empty());
}

#[test]
fn compaction_drops_damaged_copies_and_names_an_only_copy() {
    use backup_server::compact::{compact_store, CompactOptions};
    use backup_server::store::DamageAt;
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    let (g1, g2) = (guid(&m[1]), guid(&m[2]));
    let clock = TestClock::at(T1 + 7200);
    let copts = CompactOptions {
        threshold: 0.0,
        min_bytes: 0,
        dry_run: false,
        now: formats::Timestamp::from_secs(T1 + 7200),
        retention_secs: 86_400,
        store: opts(&clock),
    };
    // Two messages found damaged (as a restore would mark them); one gets a good copy.
    {
        let mut s = Store::open(root.path(), USER, opts(&clock)).unwrap();
        let n = s
            .mark_damaged(
                &[
                    DamageAt::Message { guid: g1 },
                    DamageAt::Message { guid: g2 },
                ],
                "found by a test",
            )
            .unwrap();
        assert_eq!(n, 2);
    }
    refetch(root.path(), &[&m[2]], &last);
    let s = Store::open(root.path(), USER, opts(&clock)).unwrap();
    let (s, rep) = compact_store(s, &copts).unwrap();
    // The healed one's damaged copy went silently (a good copy stays); the other one's
    // only copy went, and is named.
    let named: Vec<Guid> = rep.dropped_damaged.iter().map(|d| d.guid).collect();
    assert_eq!(named, vec![g1]);
    let c = s.catalog();
    assert!(c.holds_message(&g2).unwrap());
    assert!(!c.holds_message(&g1).unwrap());
    let d = c.damaged().unwrap();
    assert_eq!((d.len(), d[0].guid, d[0].entry), (1, g1, None));
    assert!(matches!(
        plan_for(c, &listing(&last)).unwrap().folders[0].action,
        FolderAction::Copy {
            reason: CopyReason::Damaged,
            ..
        }
    ));
    drop(s);
    refetch(root.path(), &[&m[1]], &last);
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

/// A message whose chunk checks out (gzip CRC and all) but whose bytes do not hash to its
/// GUID: the chunk is rewritten without it, every other entry of it kept.
#[test]
fn repair_rewrites_a_chunk_without_its_damaged_message() {
    use formats::archive::{ArchiveWriter, EntryMeta, ScanEvent, Scanner};
    use std::io::Read;
    let root = tempfile::tempdir().unwrap();
    // One chunk for everything (the default 4 MiB cap).
    let clock = TestClock::at(T1);
    let m: Vec<Vec<u8>> = (0..4).map(|i| message(200 + i, 3000)).collect();
    let recs: Vec<Rec> = m
        .iter()
        .enumerate()
        .map(|(i, x)| Rec::new(i as u32 + 1, x))
        .collect();
    let inbox = Snap::new("u-inbox", "INBOX", 7, &recs, 10);
    let mut store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    commit_run(&mut store, &m, &[&inbox]);
    let data = store.catalog().data_path().to_path_buf();
    drop(store);
    // The same entries written again, one byte of message 2 changed under its GUID.
    let g1 = guid(&m[1]);
    let old = std::fs::read(&data).unwrap();
    let mut out = Vec::new();
    {
        let mut w = ArchiveWriter::new(&mut out, 0);
        let mut sc = Scanner::new(&old[..]);
        loop {
            match sc.next_event().unwrap() {
                ScanEvent::ChunkStart { .. } => {
                    w.start_chunk().unwrap();
                }
                ScanEvent::Entry(mut e) => {
                    let meta = e.header.meta.clone();
                    let mut d = Vec::new();
                    e.read_to_end(&mut d).unwrap();
                    if matches!(&meta, EntryMeta::Message(x) if x.guid == g1) {
                        d[100] ^= 1;
                    }
                    w.append(&meta, &d).unwrap();
                }
                ScanEvent::ChunkEnd(_) => {
                    w.finish_chunk().unwrap();
                }
                ScanEvent::End(_) => break,
            }
        }
    }
    std::fs::write(&data, out).unwrap();

    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert!(rep.lost_ranges.is_empty(), "{rep:#?}");
    assert_eq!(rep.damaged_entries.len(), 1, "{rep:#?}");
    assert_eq!(rep.damaged_entries[0].guid, g1);
    assert_eq!((rep.chunks_copied, rep.chunks_rewritten), (0, 1));
    let lost: Vec<(u32, Guid)> = rep.lost_messages.iter().map(|l| (l.uid, l.guid)).collect();
    assert_eq!(lost, vec![(2, g1)]);
    {
        let r = StoreReader::open(root.path(), USER).unwrap();
        for (i, x) in m.iter().enumerate() {
            assert_eq!(r.catalog().holds_message(&guid(x)).unwrap(), i != 1);
        }
        // The snapshot, names, markers and user file of that chunk were kept.
        assert!(r.catalog().folder_at("INBOX", None).unwrap().is_some());
        assert_eq!(r.catalog().runs().unwrap().len(), 1);
    }
    refetch(root.path(), &[&m[1]], &inbox);
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}

#[test]
fn repair_of_a_missing_data_file_leaves_an_empty_store_and_names_every_message() {
    let root = tempfile::tempdir().unwrap();
    let (m, last) = build(root.path());
    std::fs::remove_file(data_path(root.path())).unwrap();
    let e = Store::open(root.path(), USER, Default::default()).unwrap_err();
    assert!(matches!(e, StoreError::DataFileMissing { .. }), "{e}");
    assert!(e.to_string().contains("backup-server repair"), "{e}");
    let rep = repair_user(root.path(), USER, Default::default()).unwrap();
    assert_eq!(rep.old_data_file, None);
    assert_eq!((rep.new_len, rep.entries), (0, 0));
    let lost: Vec<u32> = rep.lost_messages.iter().map(|l| l.uid).collect();
    assert_eq!(lost, vec![1, 2, 3, 4]);
    {
        let r = StoreReader::open(root.path(), USER).unwrap();
        let p = plan_for(r.catalog(), &listing(&last)).unwrap();
        assert!(matches!(
            p.folders[0].action,
            FolderAction::Copy {
                reason: CopyReason::New,
                ..
            }
        ));
    }
    refetch(root.path(), &m.iter().collect::<Vec<_>>(), &last);
    assert_clean(root.path());
    assert_restores(root.path(), &m);
}
