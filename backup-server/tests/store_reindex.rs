//! Invariant 3: the index rebuilt from the data file alone equals the original, table by
//! table.

mod store_common;

use std::io::Write;

use backup_server::store::{
    rebuild_index, MessageInfo, RunEnd, Store, StoreError, StoreReader, UserDir,
};
use formats::archive::{Tail, UserFileKind};
use formats::Timestamp;
use store_common::*;

/// A store with a varied history: several runs, chunk splits, large (spooled) messages,
/// renames, a tombstone, a partial run, an aborted run, user files, expunges.
fn build(root: &std::path::Path) -> std::path::PathBuf {
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.chunk_cap = 32 * 1024;
    o.verify_in_memory = 20_000;
    let mut store = Store::open(root, "lee", o).unwrap();
    let mut all: Vec<Vec<u8>> = Vec::new();
    for day in 0..6u64 {
        let mut run = store.begin_run().unwrap();
        let new: Vec<Vec<u8>> = (0..12)
            .map(|i| {
                message(
                    day * 100 + i,
                    if i == 3 {
                        60_000
                    } else {
                        700 + 150 * i as usize
                    },
                )
            })
            .collect();
        for (i, m) in new.iter().enumerate() {
            let info = MessageInfo {
                internal_date: Some(Timestamp::from_secs(1_700_000_000 + i as i64)),
                origin: Some(("u-inbox".into(), (all.len() + i + 1) as u32)),
            };
            run.add_message(guid(m), m.len() as u64, &m[..], info)
                .unwrap();
        }
        all.extend(new);
        // INBOX keeps the last 40 messages; older ones are expunged then vanish.
        let first = all.len().saturating_sub(40);
        let recs: Vec<Rec> = all
            .iter()
            .enumerate()
            .skip(first.saturating_sub(5))
            .map(|(i, m)| {
                let r = Rec::new(i as u32 + 1, m);
                let r = if i < first { r.expunged() } else { r };
                if (i + day as usize) % 3 == 0 {
                    r.seen()
                } else {
                    r
                }
            })
            .collect();
        run.add_folder_snapshot(
            Snap::new("u-inbox", "user.lee", 5, &recs, clock.secs()).as_snapshot(),
        )
        .unwrap();
        let name = if day < 3 {
            "user.lee.Old"
        } else {
            "user.lee.New"
        };
        if day == 0 {
            let r: Vec<Rec> = all
                .iter()
                .take(4)
                .enumerate()
                .map(|(i, m)| Rec::new(i as u32 + 1, m).keyword())
                .collect();
            run.add_folder_snapshot(Snap::new("u-other", name, 6, &r, clock.secs()).as_snapshot())
                .unwrap();
        } else {
            run.link_name("u-other", name).unwrap();
        }
        if day == 1 {
            run.add_folder_snapshot(
                Snap::new("u-tmp", "user.lee.Tmp", 7, &[], clock.secs()).as_snapshot(),
            )
            .unwrap();
        }
        if day == 4 {
            run.tombstone("u-tmp").unwrap();
        }
        if day % 2 == 0 {
            let seen = format!("seen state of day {day}");
            run.add_user_file(
                UserFileKind::Seen,
                Some(stat(seen.len(), day as i64, 5)),
                seen.len() as u64,
                seen.as_bytes(),
            )
            .unwrap();
            let script = b"require \"fileinto\";\r\nkeep;\r\n";
            run.add_user_file(
                UserFileKind::Sieve {
                    name: "main.script".into(),
                    active: true,
                },
                None,
                script.len() as u64,
                &script[..],
            )
            .unwrap();
        }
        let end = if day == 5 {
            RunEnd::Partial
        } else {
            RunEnd::Complete
        };
        run.commit(end).unwrap();
        if day == 2 {
            // An aborted attempt: no trace. Then a small run of its own.
            let mut aborted = store.begin_run().unwrap();
            let m = message(777, 5000);
            aborted
                .add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
            drop(aborted);
            let mut run = store.begin_run().unwrap();
            run.add_user_file(UserFileKind::Subscriptions, None, 4, &b"subs"[..])
                .unwrap();
            run.commit(RunEnd::Complete).unwrap();
        }
        clock.advance(86_400);
    }
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<backup_server::store::IndexFault>::new()
    );
    let index = store.dir().index_path();
    let locked = store.close().unwrap();
    drop(locked);
    index
}

fn assert_same(a: &[(String, Vec<String>)], b: &[(String, Vec<String>)]) {
    assert_eq!(a.len(), b.len());
    for ((ta, ra), (tb, rb)) in a.iter().zip(b) {
        assert_eq!(ta, tb);
        assert_eq!(ra.len(), rb.len(), "table {ta}: row count");
        for (x, y) in ra.iter().zip(rb) {
            assert_eq!(x, y, "table {ta}");
        }
    }
}

#[test]
fn rebuilt_index_equals_the_original_table_by_table() {
    let root = tempfile::tempdir().unwrap();
    let index = build(root.path());
    let original = dump_tables(&index);
    let rows: usize = original.iter().map(|(_, r)| r.len()).sum();
    assert!(rows > 300, "{rows}");
    for (t, r) in &original {
        assert!(
            !r.is_empty(),
            "table {t} is empty: the test would prove nothing about it"
        );
    }
    let dir = UserDir::new(root.path(), "lee").unwrap();
    let data = dir.file(&dir.data_files().unwrap()[0]);
    let out = root.path().join("rebuilt.sqlite3");
    let rep = rebuild_index(&data, "lee", &out).unwrap();
    assert_eq!(rep.tail, Tail::Clean);
    assert_eq!(rep.valid_end, std::fs::metadata(&data).unwrap().len());
    assert_same(&original, &dump_tables(&out));

    // A reader keeps the index from being replaced under it.
    let reader = StoreReader::open(root.path(), "lee").unwrap();
    assert!(matches!(
        dir.clone().lock().unwrap().reindex(opts(&TestClock::at(0))),
        Err(StoreError::Locked { .. })
    ));
    drop(reader);
    assert_same(&original, &dump_tables(&index));

    // The same through the store: index deleted, reindex, open.
    std::fs::remove_file(&index).unwrap();
    let (store, rep2) = dir
        .clone()
        .lock()
        .unwrap()
        .reindex(opts(&TestClock::at(0)))
        .unwrap();
    assert_eq!(rep2.entries, rep.entries);
    assert!(store.check(true).unwrap().is_empty());
    drop(store);
    assert_same(&original, &dump_tables(&index));
}

#[test]
fn reindex_ignores_a_torn_tail_and_refuses_damage() {
    let root = tempfile::tempdir().unwrap();
    let index = build(root.path());
    let original = dump_tables(&index);
    let dir = UserDir::new(root.path(), "lee").unwrap();
    let data = dir.file(&dir.data_files().unwrap()[0]);
    let len = std::fs::metadata(&data).unwrap().len();
    // A torn tail: the start of a gzip member.
    let bytes = std::fs::read(&data).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap();
    f.write_all(&bytes[..300]).unwrap();
    drop(f);
    let (store, rep) = dir
        .clone()
        .lock()
        .unwrap()
        .reindex(opts(&TestClock::at(0)))
        .unwrap();
    assert_eq!(rep.tail, Tail::Truncated);
    assert_eq!(rep.valid_end, len);
    assert_eq!(store.open_report().cut_bytes, 300);
    drop(store);
    assert_same(&original, &dump_tables(&index));

    // A flipped byte inside the first chunk: damage, not a tail; nothing is replaced.
    let mut bad = bytes.clone();
    bad[200] ^= 0x55;
    std::fs::write(&data, &bad).unwrap();
    match dir.clone().lock().unwrap().reindex(opts(&TestClock::at(0))) {
        Err(StoreError::Damaged { source, .. }) => assert_eq!(source.chunk_offset(), Some(0)),
        other => panic!("{other:?}"),
    }
    assert!(!dir.file("backupstate.sqlite3.tmp").exists());
    std::fs::write(&data, &bytes).unwrap();
    assert_same(&original, &dump_tables(&index));
}
