//! Invariant 1 (torn tails are cut on open, a short data file is an error), invariant 2
//! (every index row points inside a committed chunk), and the other repairs of open.

mod store_common;

use std::fs::OpenOptions;
use std::io::{Read, Write};

use backup_server::store::{IndexFault, MessageInfo, RunEnd, Store, StoreError};
use formats::archive::{ArchiveWriter, EntryMeta, Message};
use formats::Timestamp;
use store_common::*;

/// A store with two committed runs (several chunks), closed.
fn two_runs(root: &std::path::Path, clock: &std::sync::Arc<TestClock>) -> (u64, Vec<Vec<u8>>) {
    let mut o = opts(clock);
    o.chunk_cap = 16 * 1024;
    let mut store = Store::open(root, "tina", o).unwrap();
    let msgs: Vec<Vec<u8>> = (0..30)
        .map(|i| message(i, 1500 + 97 * i as usize))
        .collect();
    for part in msgs.chunks(15) {
        let mut run = store.begin_run().unwrap();
        for m in part {
            run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
        }
        let recs: Vec<Rec> = part
            .iter()
            .enumerate()
            .map(|(i, m)| Rec::new(i as u32 + 1, m))
            .collect();
        run.add_folder_snapshot(Snap::new("u1", "user.tina", 1, &recs, clock.secs()).as_snapshot())
            .unwrap();
        run.commit(RunEnd::Complete).unwrap();
        clock.advance(3600);
    }
    assert!(store.check(true).unwrap().is_empty());
    (store.committed_len(), msgs)
}

/// Appends what a crash leaves: a whole chunk never committed, then a chunk cut short.
fn crash_tail(path: &std::path::Path, len: u64) -> Vec<u8> {
    let f = OpenOptions::new().append(true).open(path).unwrap();
    let mut w = ArchiveWriter::new(f, len);
    for half in 0..2 {
        w.start_chunk().unwrap();
        for i in 0..3u64 {
            let data = message(1000 + half * 10 + i, 4000);
            let meta = EntryMeta::Message(Message {
                guid: guid(&data),
                run: 99,
                time: Timestamp::from_secs(1),
                origin: None,
                internal_date: None,
            });
            w.append(&meta, &data).unwrap();
        }
        if half == 0 {
            w.finish_chunk().unwrap();
        }
    }
    let f = w.into_inner().unwrap();
    f.sync_all().unwrap();
    let mut all = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    all[len as usize..].to_vec()
}

#[test]
fn torn_tails_are_cut_at_every_offset() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let (committed, msgs) = two_runs(root.path(), &clock);
    let data_path = {
        let s = Store::open(root.path(), "tina", opts(&clock)).unwrap();
        s.catalog().data_path().to_path_buf()
    };
    let tail = crash_tail(&data_path, committed);
    let tables = dump_tables(
        &root.path().join(
            Store::open(root.path(), "tina", opts(&clock))
                .unwrap()
                .dir()
                .index_path(),
        ),
    );
    // The open above already cut the whole tail; now every prefix of it, one at a time.
    let mut offsets: Vec<usize> = (0..64).chain((64..tail.len()).step_by(97)).collect();
    offsets.push(tail.len());
    let mut trials = 0;
    for k in offsets {
        {
            let mut f = OpenOptions::new().write(true).open(&data_path).unwrap();
            f.set_len(committed).unwrap();
            std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).unwrap();
            f.write_all(&tail[..k]).unwrap();
        }
        let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
        assert_eq!(store.open_report().cut_bytes, k as u64, "prefix {k}");
        assert_eq!(std::fs::metadata(&data_path).unwrap().len(), committed);
        assert_eq!(dump_tables(&store.dir().index_path()), tables);
        trials += 1;
    }
    assert!(trials > 60);
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    assert!(store.check(true).unwrap().is_empty());
    for m in &msgs {
        let mut out = Vec::new();
        store
            .catalog()
            .open_message(&guid(m))
            .unwrap()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out, m);
    }
}

#[test]
fn a_short_data_file_is_an_error_naming_both_lengths() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let (committed, _) = two_runs(root.path(), &clock);
    let data_path = Store::open(root.path(), "tina", opts(&clock))
        .unwrap()
        .catalog()
        .data_path()
        .to_path_buf();
    let saved = std::fs::read(&data_path).unwrap();
    for cut in [committed - 1, committed / 2, 1, 0] {
        std::fs::write(&data_path, &saved[..cut as usize]).unwrap();
        match Store::open(root.path(), "tina", opts(&clock)) {
            Err(e @ StoreError::DataFileShort { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&committed.to_string()), "{msg}");
                assert!(msg.contains(&format!("only {cut} bytes")), "{msg}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        // Never "fixed": the file is as it was left.
        assert_eq!(std::fs::metadata(&data_path).unwrap().len(), cut);
    }
    std::fs::remove_file(&data_path).unwrap();
    assert!(matches!(
        Store::open(root.path(), "tina", opts(&clock)),
        Err(StoreError::DataFileMissing { .. })
    ));
    std::fs::write(&data_path, &saved).unwrap();
    Store::open(root.path(), "tina", opts(&clock)).unwrap();
}

#[test]
fn a_run_that_vanishes_mid_way_is_cut_on_the_next_open() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let (committed, _) = two_runs(root.path(), &clock);
    let mut o = opts(&clock);
    o.chunk_cap = 8 * 1024;
    let mut store = Store::open(root.path(), "tina", o).unwrap();
    let mut run = store.begin_run().unwrap();
    let lost: Vec<Vec<u8>> = (500..520).map(|i| message(i, 3000)).collect();
    for m in &lost {
        run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
    }
    // As if the process died here: no commit, no rollback, no cleanup.
    std::mem::forget(run);
    let data_path = store.catalog().data_path().to_path_buf();
    drop(store);
    assert!(std::fs::metadata(&data_path).unwrap().len() > committed);
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    assert!(store.open_report().cut_bytes > 0);
    assert_eq!(store.committed_len(), committed);
    for m in &lost {
        assert!(!store.catalog().has_message(&guid(m)).unwrap());
    }
    assert!(store.check(true).unwrap().is_empty());
}

#[test]
fn every_index_row_points_inside_a_committed_chunk() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    two_runs(root.path(), &clock);
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    assert!(store.check(true).unwrap().is_empty());
    let index = store.dir().index_path();
    drop(store);
    let conn = rusqlite::Connection::open(&index).unwrap();
    let chunks: i64 = conn
        .query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))
        .unwrap();
    assert!(chunks >= 3, "{chunks}");
    // Every entry inside its chunk, checked here independently of Store::check.
    let outside: i64 = conn
        .query_row(
            "SELECT count(*) FROM entries e LEFT JOIN chunks c ON c.offset = e.chunk
             WHERE c.offset IS NULL
                OR e.data_offset + e.data_len > c.uncompressed_len",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outside, 0);

    // Damage the index, and check() names it.
    conn.execute_batch("UPDATE entries SET header_offset = header_offset + 512 WHERE id = 3")
        .unwrap();
    drop(conn);
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    let problems = store.check(false).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, IndexFault::EntryMisplaced { entry: 3, .. })),
        "{problems:?}"
    );
    drop(store);
    let conn = rusqlite::Connection::open(&index).unwrap();
    conn.execute_batch(
        "UPDATE entries SET header_offset = header_offset - 512 WHERE id = 3;
         PRAGMA foreign_keys = OFF;
         DELETE FROM chunks WHERE offset = (SELECT max(offset) FROM chunks);",
    )
    .unwrap();
    drop(conn);
    // The last chunk's rows now point outside any committed chunk: check() says so (the
    // open cut the chunk's bytes as a torn tail, since the index no longer commits them).
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    assert!(store.open_report().cut_bytes > 0);
    let problems = store.check(true).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, IndexFault::EntryOutsideChunk { .. })),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, IndexFault::Sqlite(s) if s.starts_with("foreign key"))),
        "{problems:?}"
    );
}

#[test]
fn open_finishes_an_interrupted_switch_and_removes_leftovers() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    two_runs(root.path(), &clock);
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    let dir = store.dir().clone();
    let want = dump_tables(&dir.index_path());
    let data_name = store.catalog().data_file_name().to_owned();
    let locked = store.close().unwrap();
    drop(locked);
    // A replacement index fully written (as reindex leaves it just before the rename),
    // an old index beside it with its own journal, a half-built index, and a stray data
    // file from an unfinished compaction.
    std::fs::copy(dir.index_path(), dir.file("backupstate.sqlite3.new")).unwrap();
    std::fs::write(dir.index_path(), b"not a database").unwrap();
    std::fs::write(dir.file("backupstate.sqlite3-wal"), b"stale journal").unwrap();
    std::fs::write(dir.file("backupstate.sqlite3.tmp"), b"half built").unwrap();
    std::fs::write(dir.file("backupdata-1.tar.gz"), b"\x1f\x8b unfinished").unwrap();
    let store = Store::open(root.path(), "tina", opts(&clock)).unwrap();
    let r = store.open_report();
    assert!(r.finished_switch);
    assert!(
        r.removed.contains(&"backupstate.sqlite3.tmp".to_owned()),
        "{r:?}"
    );
    assert!(
        r.removed.contains(&"backupdata-1.tar.gz".to_owned()),
        "{r:?}"
    );
    assert_eq!(dir.data_files().unwrap(), vec![data_name]);
    assert!(!dir.file("backupstate.sqlite3.new").exists());
    assert_eq!(dump_tables(&dir.index_path()), want);
    assert!(store.check(true).unwrap().is_empty());
}
