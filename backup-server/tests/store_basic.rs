//! The store's basic life: create, append a run, commit, reopen; deduplication by GUID
//! (invariant 4); the SHA-1 check; the lock; aborted runs; chunk splitting.

mod store_common;

use std::io::Read;

use backup_server::store::{
    Added, LockedDir, MessageInfo, RunEnd, Store, StoreError, StoreOptions, StoreReader, UserDir,
};
use formats::archive::UserFileKind;
use formats::Guid;
use store_common::*;

fn read_message(store: &Store, g: &Guid) -> Vec<u8> {
    let mut r = store.catalog().open_message(g).unwrap().expect("stored");
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn append_commit_reopen() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let m1 = message(1, 3000);
    let m2 = message(2, 100);
    let snap = Snap::new(
        "uid-inbox",
        "user.alice",
        7,
        &[Rec::new(1, &m1).seen(), Rec::new(2, &m2)],
        1_799_999_000,
    );
    let first_len;
    {
        let mut store = Store::open(root.path(), "alice", opts(&clock)).unwrap();
        assert!(store.open_report().created);
        let mut run = store.begin_run().unwrap();
        assert_eq!(run.run_id(), 1);
        for (i, m) in [&m1, &m2].into_iter().enumerate() {
            let info = MessageInfo {
                origin: Some(("uid-inbox".into(), i as u32 + 1)),
                ..MessageInfo::default()
            };
            let added = run
                .add_message(guid(m), m.len() as u64, &m[..], info)
                .unwrap();
            assert!(matches!(added, Added::Stored(_)));
        }
        run.add_folder_snapshot(snap.as_snapshot()).unwrap();
        run.add_user_file(UserFileKind::Seen, Some(stat(5, 1, 2)), 5, &b"seen!"[..])
            .unwrap();
        let s = run.commit(RunEnd::Complete).unwrap();
        assert_eq!(
            (s.messages_stored, s.snapshots, s.links, s.user_files),
            (2, 1, 1, 1)
        );
        assert_eq!(s.chunks, 1);
        assert_eq!(s.data_len, store.committed_len());
        first_len = s.data_len;
        assert!(store.check(true).unwrap().is_empty());
    }
    let store = Store::open(root.path(), "alice", opts(&clock)).unwrap();
    assert!(!store.open_report().created);
    assert_eq!(store.open_report().cut_bytes, 0);
    assert_eq!(store.committed_len(), first_len);
    assert_eq!(read_message(&store, &guid(&m1)), m1);
    assert_eq!(read_message(&store, &guid(&m2)), m2);
    let cat = store.catalog();
    let stored = cat.message(&guid(&m1)).unwrap().unwrap();
    // The origin (folder, UID) is in the entry's header in the data file, not the index.
    let r = cat.open_entry(&stored.entry).unwrap();
    match &r.header().meta {
        formats::archive::EntryMeta::Message(m) => {
            assert_eq!(m.origin, Some(("uid-inbox".into(), 1)))
        }
        other => panic!("not a message entry: {other:?}"),
    }
    let folders = cat.folders_at(None).unwrap();
    assert_eq!(folders.len(), 1);
    assert_eq!(folders[0].name, "user.alice");
    let held = cat.held_folder("uid-inbox").unwrap().unwrap();
    assert_eq!(held.name, "user.alice");
    let hs = held.snapshot.unwrap();
    assert_eq!(hs.index, Some(stat(snap.index.len(), 1_799_999_000, 12)));
    assert_eq!(hs.header, Some(stat(snap.header.len(), 1_799_999_000, 11)));
    assert_eq!(hs.annotations, None);
    let files = cat.user_files_at(None).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].stat, Some(stat(5, 1, 2)));
    assert_eq!(cat.read_entry(&files[0].entry).unwrap(), b"seen!");
    let runs = cat.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].ended.is_some());
    // The snapshot reads back byte for byte.
    let si = cat.snapshot_at("uid-inbox", None).unwrap().unwrap();
    assert_eq!(cat.read_entry(&si.index).unwrap(), snap.index);
    assert_eq!(cat.read_entry(&si.header.unwrap()).unwrap(), snap.header);
    assert_eq!((si.uidvalidity, si.records, si.exists), (7, 2, 2));
}

#[test]
fn a_message_is_stored_once_whatever_the_folders_and_runs() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let shared = message(42, 5000);
    let g = guid(&shared);
    let mut store = Store::open(root.path(), "bob", opts(&clock)).unwrap();
    let mut run = store.begin_run().unwrap();
    let a = run
        .add_message(g, shared.len() as u64, &shared[..], MessageInfo::default())
        .unwrap();
    assert!(matches!(a, Added::Stored(_)));
    assert!(run.has_message(&g).unwrap());
    // Same GUID for a second folder in the same run: not read, not written.
    let mut untouched = std::io::Cursor::new(shared.clone());
    let b = run
        .add_message(
            g,
            shared.len() as u64,
            &mut untouched,
            MessageInfo::default(),
        )
        .unwrap();
    assert_eq!(b, Added::AlreadyHeld);
    assert_eq!(untouched.position(), 0);
    let s1 = Snap::new("u1", "user.bob", 1, &[Rec::new(1, &shared)], 1);
    let s2 = Snap::new("u2", "user.bob.Archive", 1, &[Rec::new(9, &shared)], 1);
    run.add_folder_snapshot(s1.as_snapshot()).unwrap();
    run.add_folder_snapshot(s2.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
    let len1 = store.committed_len();

    clock.advance(86_400);
    let mut run = store.begin_run().unwrap();
    assert_eq!(
        run.add_message(g, shared.len() as u64, &shared[..], MessageInfo::default())
            .unwrap(),
        Added::AlreadyHeld
    );
    let s = run.commit(RunEnd::Complete).unwrap();
    assert_eq!((s.messages_stored, s.messages_already_held), (0, 1));
    // The second run added only its markers.
    assert!(
        store.committed_len() - len1 < 400,
        "{}",
        store.committed_len() - len1
    );
    let n: i64 = rusqlite::Connection::open(store.dir().index_path())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM entries WHERE kind = 'message'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let mut seen = Vec::new();
    for u in ["u1", "u2"] {
        store
            .catalog()
            .messages_at(u, None, false, |m| {
                assert!(m.stored);
                seen.push(m.guid);
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(seen, vec![g, g]);
}

#[test]
fn a_sha1_mismatch_is_refused_and_the_run_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.verify_in_memory = 1000;
    let mut store = Store::open(root.path(), "carol", o).unwrap();
    let mut run = store.begin_run().unwrap();
    for len in [500usize, 50_000] {
        let good = message(len as u64, len);
        let mut bad = good.clone();
        bad[len / 2] ^= 1;
        match run.add_message(
            guid(&good),
            bad.len() as u64,
            &bad[..],
            MessageInfo::default(),
        ) {
            Err(StoreError::GuidMismatch { expected, found }) => {
                assert_eq!(expected, guid(&good));
                assert_eq!(found, guid(&bad));
            }
            other => panic!("{other:?}"),
        }
        assert!(!run.has_message(&guid(&good)).unwrap());
        // Short data is refused too.
        assert!(matches!(
            run.add_message(
                guid(&good),
                good.len() as u64 + 1,
                &good[..],
                MessageInfo::default()
            ),
            Err(StoreError::LengthMismatch { .. })
        ));
        run.add_message(
            guid(&good),
            good.len() as u64,
            &good[..],
            MessageInfo::default(),
        )
        .unwrap();
    }
    assert!(matches!(
        run.add_message(Guid::NULL, 0, &b""[..], MessageInfo::default()),
        Err(StoreError::Invalid { .. })
    ));
    run.commit(RunEnd::Complete).unwrap();
    assert!(store.check(false).unwrap().is_empty());
    for len in [500usize, 50_000] {
        let good = message(len as u64, len);
        assert_eq!(read_message(&store, &guid(&good)), good);
    }
}

#[test]
fn the_lock_keeps_a_second_writer_out() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let store = Store::open(root.path(), "dave", opts(&clock)).unwrap();
    match Store::open(root.path(), "dave", opts(&clock)) {
        Err(StoreError::Locked { user, holder, .. }) => {
            assert_eq!(user, "dave");
            assert!(holder.contains("pid"), "{holder}");
            let msg = StoreError::Locked {
                user,
                holder,
                path: "x".into(),
            }
            .to_string();
            assert!(msg.contains("locked by another run"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // Another user is not affected; a reader is not kept out by a writer.
    let _other = Store::open(root.path(), "erin", opts(&clock)).unwrap();
    let reader = StoreReader::open(root.path(), "dave").unwrap();
    assert_eq!(reader.catalog().user(), "dave");
    drop(reader);
    drop(store);
    let _again = Store::open(root.path(), "dave", opts(&clock)).unwrap();
}

#[test]
fn an_aborted_run_leaves_no_trace() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let keep = message(1, 2000);
    let lose = message(2, 2000);
    let mut store = Store::open(root.path(), "frank", opts(&clock)).unwrap();
    let mut run = store.begin_run().unwrap();
    run.add_message(
        guid(&keep),
        keep.len() as u64,
        &keep[..],
        MessageInfo::default(),
    )
    .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    let len = store.committed_len();
    let tables_before = dump_tables(&store.dir().index_path());

    let mut run = store.begin_run().unwrap();
    run.add_message(
        guid(&lose),
        lose.len() as u64,
        &lose[..],
        MessageInfo::default(),
    )
    .unwrap();
    run.add_folder_snapshot(
        Snap::new("u", "user.frank", 1, &[Rec::new(1, &lose)], 1).as_snapshot(),
    )
    .unwrap();
    assert!(run.has_message(&guid(&lose)).unwrap());
    drop(run);
    assert!(!store.catalog().has_message(&guid(&lose)).unwrap());
    assert_eq!(store.committed_len(), len);
    assert_eq!(
        std::fs::metadata(store.catalog().data_path())
            .unwrap()
            .len(),
        len
    );
    drop(store);
    let store = Store::open(root.path(), "frank", opts(&clock)).unwrap();
    assert_eq!(store.open_report().cut_bytes, 0);
    assert_eq!(dump_tables(&store.dir().index_path()), tables_before);
    // The next run reuses the run id nobody committed.
    let mut store = store;
    let run = store.begin_run().unwrap();
    assert_eq!(run.run_id(), 2);
}

#[test]
fn chunks_are_capped_and_one_message_inflates_one_chunk() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.chunk_cap = 64 * 1024;
    let mut store = Store::open(root.path(), "gina", o).unwrap();
    let mut run = store.begin_run().unwrap();
    let msgs: Vec<Vec<u8>> = (0..100).map(|i| message(i, 5000)).collect();
    let big = message(999, 300_000);
    for m in msgs.iter().chain([&big]) {
        run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
    }
    let s = run.commit(RunEnd::Complete).unwrap();
    assert!(s.chunks >= 8, "{}", s.chunks);
    let conn = rusqlite::Connection::open(store.dir().index_path()).unwrap();
    let over: i64 = conn
        .query_row(
            "SELECT count(*) FROM chunks WHERE uncompressed_len > 65536",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // Only the chunk holding the message larger than the cap passes it.
    assert_eq!(over, 1);
    for m in msgs.iter().chain([&big]) {
        let mut r = store.catalog().open_message(&guid(m)).unwrap().unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(&out, m);
        let limit = if m.len() > 65536 {
            m.len() as u64 + 4096
        } else {
            65536
        };
        assert!(r.inflated() <= limit, "{} > {limit}", r.inflated());
        r.finish_chunk().unwrap();
    }
    assert!(store.check(true).unwrap().is_empty());
}

#[test]
fn no_store_index_missing_and_wrong_user() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    assert!(matches!(
        StoreReader::open(root.path(), "nobody"),
        Err(StoreError::NoStore { .. })
    ));
    assert!(matches!(
        Store::open_existing(root.path(), "nobody", opts(&clock)),
        Err(StoreError::NoStore { .. })
    ));
    let mut store = Store::open(root.path(), "hank", opts(&clock)).unwrap();
    let m = message(1, 100);
    let mut run = store.begin_run().unwrap();
    run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    let dir = store.dir().clone();
    drop(store);
    // The index is the only record of what is committed: without it, refuse, do not guess.
    std::fs::rename(dir.index_path(), root.path().join("saved")).unwrap();
    let _ = std::fs::remove_file(dir.file("backupstate.sqlite3-wal"));
    assert!(matches!(
        Store::open(root.path(), "hank", opts(&clock)),
        Err(StoreError::IndexMissing { .. })
    ));
    // Another user's index in this directory is refused.
    let other = Store::open(root.path(), "ivan", opts(&clock)).unwrap();
    let other_index = other.dir().index_path();
    drop(other);
    std::fs::copy(other_index, dir.index_path()).unwrap();
    assert!(matches!(
        UserDir::new(root.path(), "hank")
            .unwrap()
            .lock()
            .and_then(|l: LockedDir| l.open(StoreOptions::default())),
        Err(StoreError::WrongUser { .. })
    ));
}

#[test]
fn folder_snapshot_rules() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let mut store = Store::open(root.path(), "jo", opts(&clock)).unwrap();
    let m = message(1, 100);
    let mut run = store.begin_run().unwrap();
    let s = Snap::new("u1", "user.jo", 1, &[Rec::new(1, &m)], 1);
    run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
        .unwrap();
    run.add_folder_snapshot(s.as_snapshot()).unwrap();
    // Twice in a run: refused.
    assert!(matches!(
        run.add_folder_snapshot(s.as_snapshot()),
        Err(StoreError::Invalid { .. })
    ));
    // A cyrus.header of another folder: refused before anything is written.
    let mut wrong = Snap::new("u2", "user.jo.X", 1, &[], 1);
    wrong.header = header_bytes("u3", "user.jo.X");
    assert!(matches!(
        run.add_folder_snapshot(wrong.as_snapshot()),
        Err(StoreError::MetaFile { .. })
    ));
    // Records out of UID order: refused.
    let bad = Snap::new("u4", "user.jo.Y", 1, &[Rec::new(5, &m), Rec::new(3, &m)], 1);
    assert!(matches!(
        run.add_folder_snapshot(bad.as_snapshot()),
        Err(StoreError::MetaFile { .. })
    ));
    // A cut cyrus.index: refused.
    let mut cut = Snap::new("u5", "user.jo.Z", 1, &[Rec::new(1, &m)], 1);
    cut.index.truncate(cut.index.len() - 1);
    assert!(matches!(
        run.add_folder_snapshot(cut.as_snapshot()),
        Err(StoreError::MetaFile { .. })
    ));
    // A unique id that would make an unsafe path: refused.
    let evil = Snap::new("../x", "user.jo.W", 1, &[], 1);
    assert!(matches!(
        run.add_folder_snapshot(evil.as_snapshot()),
        Err(StoreError::Invalid { .. })
    ));
    // A tombstone for a folder this run copied: refused.
    assert!(matches!(
        run.tombstone("u1"),
        Err(StoreError::Invalid { .. })
    ));
    assert!(!run.tombstone("never-seen").unwrap());
    run.commit(RunEnd::Complete).unwrap();
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<backup_server::store::IndexFault>::new()
    );
    assert_eq!(store.catalog().folders_at(None).unwrap().len(), 1);
}
