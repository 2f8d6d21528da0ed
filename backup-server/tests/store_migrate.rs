//! A store written by an earlier version (schema version 2, the committed fixture in
//! tests/fixtures/store-v2, made by that version's code with `make_v2_fixture`) still
//! reads, verifies, takes new runs and reindexes, and answers every question exactly as
//! the version that wrote it did (`answers.txt`, written by that version too).

mod store_common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use backup_server::store::{
    DamageAt, MessageInfo, RunEnd, Store, StoreReader, UserDir, SCHEMA_VERSION,
};
use backup_server::verify::verify_user;
use formats::archive::UserFileKind;
use formats::Timestamp;
use store_common::*;

const USER: &str = "lee";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v2")
}

/// Every answer the catalog gives about the store, as text: the runs, the folders and
/// their records (expunged and gone included) at the end of every run and now, the
/// planner's view, user files, damage, coverage.
fn answers(cat: &backup_server::store::Catalog) -> String {
    let mut out = String::new();
    let runs = cat.runs().unwrap();
    let mut times: Vec<Option<Timestamp>> = vec![None];
    for r in &runs {
        writeln!(
            out,
            "run {} started {:?} ended {:?}",
            r.run, r.started, r.ended
        )
        .unwrap();
        times.extend(r.started.map(Some));
        times.extend(r.ended.map(Some));
    }
    for at in times {
        writeln!(out, "at {at:?}").unwrap();
        for f in cat.folders_at(at).unwrap() {
            writeln!(out, "  folder {} {} {:?}", f.name, f.unique_id, f.snapshot).unwrap();
            let by_name = cat.folder_at(&f.name, at).unwrap().map(|x| x.unique_id);
            writeln!(out, "  by name: {by_name:?}").unwrap();
            cat.messages_at(&f.unique_id, at, true, |m| {
                writeln!(out, "    {m:?}").unwrap();
                let one = cat.message_at(&f.unique_id, m.uid, at).unwrap();
                assert_eq!(one.as_ref(), Some(&m));
                writeln!(
                    out,
                    "    expunged ever: {}",
                    cat.was_expunged(&f.unique_id, m.uid).unwrap()
                )
                .unwrap();
                Ok(())
            })
            .unwrap();
            cat.messages_at(&f.unique_id, at, false, |m| {
                writeln!(out, "    visible {}", m.uid).unwrap();
                Ok(())
            })
            .unwrap();
        }
        for u in cat.user_files_at(at).unwrap() {
            writeln!(out, "  user file {u:?}").unwrap();
        }
    }
    for h in cat.held_folders().unwrap() {
        writeln!(out, "held {h:?}").unwrap();
        writeln!(
            out,
            "  oldest {:?}",
            cat.oldest_snapshot(&h.unique_id).unwrap()
        )
        .unwrap();
    }
    writeln!(out, "damaged {:?}", cat.damaged().unwrap()).unwrap();
    writeln!(out, "damaged folders {:?}", {
        let mut v: Vec<_> = cat.damaged_folders().unwrap().into_iter().collect();
        v.sort();
        v
    })
    .unwrap();
    writeln!(out, "first backup {:?}", cat.first_backup().unwrap()).unwrap();
    writeln!(out, "committed {}", cat.committed_len().unwrap()).unwrap();
    out
}

/// Builds the fixture with the code of the version it stands for (run by hand, with that
/// version checked out: `cargo test -p backup-server --test store_migrate -- --ignored`).
#[test]
#[ignore]
fn make_v2_fixture() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.chunk_cap = 16 * 1024;
    let mut store = Store::open(root.path(), USER, o).unwrap();
    let mut all: Vec<Vec<u8>> = Vec::new();
    for day in 0..5u64 {
        let mut run = store.begin_run().unwrap();
        let new: Vec<Vec<u8>> = (0..6)
            .map(|i| message(day * 100 + i, 600 + 90 * i as usize))
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
        let first = all.len().saturating_sub(15);
        let recs: Vec<Rec> = all
            .iter()
            .enumerate()
            .skip(first.saturating_sub(3))
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
        let name = if day < 2 {
            "user.lee.Old"
        } else {
            "user.lee.New"
        };
        if day == 0 || day == 3 {
            let r: Vec<Rec> = all
                .iter()
                .take(4 + day as usize)
                .enumerate()
                .map(|(i, m)| Rec::new(i as u32 + 1, m).keyword())
                .collect();
            run.add_folder_snapshot(Snap::new("u-other", name, 6, &r, clock.secs()).as_snapshot())
                .unwrap();
        } else {
            run.link_name("u-other", name).unwrap();
        }
        if day == 1 {
            let r = vec![Rec::new(1, &all[2]).flagged()];
            run.add_folder_snapshot(
                Snap::new("u-tmp", "user.lee.Tmp", 7, &r, clock.secs()).as_snapshot(),
            )
            .unwrap();
        }
        if day == 3 {
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
        }
        let end = if day == 4 {
            RunEnd::Partial
        } else {
            RunEnd::Complete
        };
        run.commit(end).unwrap();
        clock.advance(86_400);
    }
    // One message marked damaged (a verify's finding), kept across the upgrade.
    store
        .mark_damaged(
            &[DamageAt::Message {
                guid: guid(&all[20]),
            }],
            "found by verify",
        )
        .unwrap();
    assert!(store.check(true).unwrap().is_empty());
    drop(store.close().unwrap());
    let dir = UserDir::new(root.path(), USER).unwrap();
    let out = fixture();
    let _ = std::fs::remove_dir_all(&out);
    let rel = dir.path().strip_prefix(root.path()).unwrap();
    let dest = out.join("root").join(rel);
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name == "lock" || name == "readers.lock" {
            continue;
        }
        std::fs::copy(e.path(), dest.join(&name)).unwrap();
    }
    let reader = StoreReader::open(root.path(), USER).unwrap();
    std::fs::write(out.join("answers.txt"), answers(reader.catalog())).unwrap();
}

/// A copy of the fixture's store root in a new temporary directory.
fn copy_fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), &dest).unwrap();
            }
        }
    }
    copy(&fixture().join("root"), root.path());
    root
}

fn version_on_disk(root: &Path) -> u32 {
    let index = UserDir::new(root, USER).unwrap().index_path();
    let conn =
        rusqlite::Connection::open_with_flags(&index, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_version_2_store_reads_verifies_upgrades_and_takes_new_runs() {
    let expected = std::fs::read_to_string(fixture().join("answers.txt")).unwrap();
    let root = copy_fixture();
    assert_eq!(version_on_disk(root.path()), 2);

    // Read as it is (a copy in memory), written nowhere: every answer as its writer gave it.
    let reader = StoreReader::open(root.path(), USER).unwrap();
    assert_eq!(answers(reader.catalog()), expected);
    drop(reader);
    let v = verify_user(root.path(), USER);
    assert!(v.is_clean(), "{:#?}", v.faults);
    assert!(v.rows.implied > 100, "{:?}", v.rows);
    assert_eq!(version_on_disk(root.path()), 2);

    // A writer upgrades it: same answers, clean check, verify compares it row by row with
    // the index the data file implies (so the copy gave exactly ingest's rows).
    let clock = TestClock::at(1_900_000_000);
    let store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    assert_eq!(store.open_report().upgraded_from, Some(2));
    assert_eq!(answers(store.catalog()), expected);
    assert!(store.check(true).unwrap().is_empty());
    drop(store.close().unwrap());
    assert_eq!(version_on_disk(root.path()), SCHEMA_VERSION);
    let v = verify_user(root.path(), USER);
    assert!(v.is_clean(), "{:#?}", v.faults);

    // The damage mark survived; a new run on the upgraded store adds a message and two
    // snapshots (one of a new folder), then another heals the damaged message.
    let mut store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    assert_eq!(store.open_report().upgraded_from, None);
    assert_eq!(store.catalog().damaged().unwrap().len(), 1);
    let damaged = store.catalog().damaged().unwrap()[0].guid;
    let mut all: Vec<Vec<u8>> = (0..5u64)
        .flat_map(|day| (0..6).map(move |i| message(day * 100 + i, 600 + 90 * i as usize)))
        .collect();
    assert_eq!(guid(&all[20]), damaged);
    let fresh = message(9_000, 700);
    {
        let mut run = store.begin_run().unwrap();
        run.add_message(
            guid(&fresh),
            fresh.len() as u64,
            &fresh[..],
            MessageInfo::default(),
        )
        .unwrap();
        all.push(fresh.clone());
        let first = all.len() - 15;
        let recs: Vec<Rec> = all
            .iter()
            .enumerate()
            .skip(first)
            .map(|(i, m)| Rec::new(i as u32 + 1, m))
            .collect();
        run.add_folder_snapshot(
            Snap::new("u-inbox", "user.lee", 5, &recs, clock.secs()).as_snapshot(),
        )
        .unwrap();
        run.add_folder_snapshot(
            Snap::new("u-new", "user.lee.Newer", 8, &recs[..2], clock.secs()).as_snapshot(),
        )
        .unwrap();
        run.commit(RunEnd::Complete).unwrap();
    }
    assert!(store.check(true).unwrap().is_empty());
    let inbox: Vec<u32> = {
        let mut v = Vec::new();
        store
            .catalog()
            .messages_at("u-inbox", None, false, |m| {
                v.push(m.uid);
                Ok(())
            })
            .unwrap();
        v
    };
    assert_eq!(
        inbox,
        ((all.len() - 14) as u32..=all.len() as u32).collect::<Vec<_>>()
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut store
            .catalog()
            .open_message(&guid(&fresh))
            .unwrap()
            .unwrap(),
        &mut bytes,
    )
    .unwrap();
    assert_eq!(bytes, fresh);
    drop(store.close().unwrap());
    let v = verify_user(root.path(), USER);
    assert!(v.is_clean(), "{:#?}", v.faults);

    // Reindex gives the same rows (folder keys included), and header rows for the messages
    // stored before the upgrade too (the upgraded index has them from its `headers_start`
    // on: one past the copied index's last entry).
    let index = UserDir::new(root.path(), USER).unwrap().index_path();
    let start = |index: &Path| -> i64 {
        rusqlite::Connection::open(index)
            .unwrap()
            .query_row("SELECT entry FROM headers_start", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(start(&index), 64, "one past the copied index's last entry");
    let entry_of = |row: &String| -> i64 {
        row.strip_prefix("Integer(")
            .and_then(|r| r.split(')').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let split = |mut tables: Vec<(String, Vec<String>)>, from: i64| {
        let i = tables.iter().position(|(t, _)| t == "headers").unwrap();
        let (_, rows) = tables.remove(i);
        let rows: Vec<String> = rows.into_iter().filter(|r| entry_of(r) >= from).collect();
        (tables, rows)
    };
    let (before, before_headers) = split(dump_tables(&index), 0);
    assert_eq!(before_headers.len(), 1, "{before_headers:?}");
    let (store, _) = UserDir::new(root.path(), USER)
        .unwrap()
        .lock()
        .unwrap()
        .reindex(opts(&clock))
        .unwrap();
    drop(store);
    assert_eq!(start(&index), 1);
    let (after, after_headers) = split(dump_tables(&index), 0);
    assert_eq!(after, before);
    let messages = after
        .iter()
        .find(|(t, _)| t == "entries")
        .unwrap()
        .1
        .iter()
        .filter(|r| r.contains("Text(\"message\")"))
        .count();
    assert_eq!(after_headers.len(), messages);
    assert_eq!(split(dump_tables(&index), 64).1, before_headers);

    // The damaged message healed by a good copy (a reindex forgot the mark: mark it again).
    let mut store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    store
        .mark_damaged(&[DamageAt::Message { guid: damaged }], "found by verify")
        .unwrap();
    let mut run = store.begin_run().unwrap();
    assert!(!run.has_message(&damaged).unwrap());
    run.add_message(
        damaged,
        all[20].len() as u64,
        &all[20][..],
        MessageInfo::default(),
    )
    .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    assert!(store.catalog().damaged().unwrap().is_empty());
    assert!(store.catalog().has_message(&damaged).unwrap());
    assert!(store.check(true).unwrap().is_empty());
}

#[test]
fn a_kill_during_the_upgrade_leaves_the_old_index_or_the_new() {
    // The upgrade builds the new index aside (.tmp) and switches it in as a reindex does:
    // the two moments a kill can leave are a .tmp beside the old index, and a .new not yet
    // renamed over it. Both open to the upgraded store with the same answers.
    let expected = std::fs::read_to_string(fixture().join("answers.txt")).unwrap();
    let clock = TestClock::at(1_900_000_000);
    // A half-built .tmp: removed, the old index upgraded again.
    let root = copy_fixture();
    let dir = UserDir::new(root.path(), USER).unwrap();
    std::fs::write(dir.file("backupstate.sqlite3.tmp"), b"half").unwrap();
    let store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    assert_eq!(store.open_report().upgraded_from, Some(2));
    assert_eq!(answers(store.catalog()), expected);
    drop(store);
    // A complete .new (the upgraded index) beside the old one: the switch is finished.
    let root2 = copy_fixture();
    let dir2 = UserDir::new(root2.path(), USER).unwrap();
    std::fs::copy(dir.index_path(), dir2.file("backupstate.sqlite3.new")).unwrap();
    let store = Store::open(root2.path(), USER, opts(&clock)).unwrap();
    assert!(store.open_report().finished_switch);
    assert_eq!(store.open_report().upgraded_from, None);
    assert_eq!(answers(store.catalog()), expected);
    assert!(store.check(true).unwrap().is_empty());
}
