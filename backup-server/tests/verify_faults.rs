//! `verify` finds a flipped byte, a truncated data file and a deleted index row, each named
//! with user, file and offset; `reindex` rebuilds an index equal to the original.

mod store_common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use backup_server::store::{MessageInfo, RunEnd, Store, StoreReader, UserDir};
use backup_server::verify::{reindex_user, verify, verify_user, Fault, Level, WayOut};
use store_common::*;

const USER: &str = "vic";

/// Three runs, small chunks: about 30 messages over many chunks. Returns the data file.
fn build(root: &Path) -> PathBuf {
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.chunk_cap = 16 * 1024;
    let mut store = Store::open(root, USER, o).unwrap();
    let mut recs = Vec::new();
    for day in 0..3u64 {
        let mut run = store.begin_run().unwrap();
        for i in 0..10u64 {
            let m = message(day * 100 + i, 2000 + 300 * i as usize);
            run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
            recs.push(Rec::new(recs.len() as u32 + 1, &m));
        }
        run.add_folder_snapshot(Snap::new("u-in", "INBOX", 3, &recs, clock.secs()).as_snapshot())
            .unwrap();
        run.commit(RunEnd::Complete).unwrap();
        clock.advance(86_400);
    }
    let data = store.catalog().data_path().to_path_buf();
    drop(store);
    data
}

/// (chunk offset, compressed length) of every chunk, from the index.
fn chunks(root: &Path) -> Vec<(u64, u64)> {
    let r = StoreReader::open(root, USER).unwrap();
    let c = rusqlite::Connection::open_with_flags(
        r.catalog().index_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let v = c
        .prepare("SELECT offset, compressed_len FROM chunks ORDER BY offset")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    v
}

#[test]
fn an_intact_store_verifies_clean() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let rep = verify(root.path(), None, Level::Full).unwrap();
    assert!(rep.is_clean(), "{rep:#?}");
    assert_eq!(rep.stores.len(), 1);
    assert_eq!(rep.stores[0].user, USER);
    assert_eq!(rep.messages(), 30);
    assert_eq!(rep.chunks() as usize, chunks(root.path()).len());
    assert!(rep.chunks() > 5);
    assert_eq!(rep.faults(), 0);
}

#[test]
fn a_store_whose_index_is_gone_is_a_fault() {
    let root = tempfile::tempdir().unwrap();
    let data = build(root.path());
    let dir = data.parent().unwrap();
    for f in [
        "backupstate.sqlite3",
        "backupstate.sqlite3-wal",
        "backupstate.sqlite3-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let rep = verify(root.path(), None, Level::Full).unwrap();
    assert!(!rep.is_clean(), "a store without its index verified clean");
    assert!(rep.stores.is_empty(), "{rep:#?}");
    let f = &rep.unreadable[0];
    assert_eq!(f.fault.file(), dir.join("backupstate.sqlite3"));
    assert!(
        matches!(f.fault, Fault::NoIndex { .. }) && f.fault.way_out() == WayOut::Reindex,
        "{}",
        f.fault
    );
    // A user directory holding only a lock file is no store and no fault.
    UserDir::new(root.path(), "lockonly")
        .unwrap()
        .lock()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    assert!(verify(root.path(), None, Level::Full).unwrap().is_clean());
}

#[test]
fn a_flipped_byte_is_found_and_named() {
    let root = tempfile::tempdir().unwrap();
    let data = build(root.path());
    let cs = chunks(root.path());
    let (off, len) = cs[cs.len() / 2];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data)
        .unwrap();
    let at = off + len / 2;
    let mut b = [0u8];
    f.read_at(&mut b, at).unwrap();
    f.write_at(&[b[0] ^ 0x20], at).unwrap();
    drop(f);
    let rep = verify_user(root.path(), USER);
    assert!(!rep.is_clean());
    let hit = rep
        .faults
        .iter()
        .find(|x| x.file() == data && x.offset() == Some(off))
        .unwrap_or_else(|| panic!("no fault at chunk {off}: {:#?}", rep.faults));
    assert_eq!(rep.user, USER);
    let text = hit.to_string();
    assert!(
        text.starts_with(&format!("{} at offset {off}: ", data.display())),
        "{text}"
    );
}

#[test]
fn a_truncated_data_file_is_found_and_named() {
    let root = tempfile::tempdir().unwrap();
    let data = build(root.path());
    let len = std::fs::metadata(&data).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let rep = verify_user(root.path(), USER);
    assert_eq!(rep.faults.len(), 1, "{:#?}", rep.faults);
    let x = &rep.faults[0];
    assert_eq!((x.file(), x.offset()), (data.as_path(), Some(len - 100)));
    assert!(matches!(x, Fault::Unopenable { .. }), "{x:#?}");
    assert!(x.to_string().contains(&len.to_string()), "{x}");
}

#[test]
fn a_deleted_index_row_is_found_and_named() {
    let root = tempfile::tempdir().unwrap();
    let data = build(root.path());
    let index = UserDir::new(root.path(), USER).unwrap().index_path();
    // A message's entry row, its messages row and its headers row, as a lost write would
    // leave them.
    let (chunk, hoff, g): (i64, i64, Vec<u8>) = {
        let c = rusqlite::Connection::open(&index).unwrap();
        let row = c
            .query_row(
                "SELECT e.chunk, e.header_offset, m.guid FROM entries e JOIN messages m ON m.entry = e.id
                 ORDER BY e.id LIMIT 1 OFFSET 7",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        c.execute("DELETE FROM messages WHERE guid = ?1", [&row.2])
            .unwrap();
        c.execute(
            "DELETE FROM headers WHERE entry IN
             (SELECT id FROM entries WHERE chunk = ?1 AND header_offset = ?2)",
            [row.0, row.1],
        )
        .unwrap();
        c.execute(
            "DELETE FROM entries WHERE chunk = ?1 AND header_offset = ?2",
            [row.0, row.1],
        )
        .unwrap();
        row
    };
    let rep = verify_user(root.path(), USER);
    let hex = hex::encode(&g);
    let hit = rep
        .faults
        .iter()
        .find(|x| {
            x.file() == data
                && x.offset() == Some(chunk as u64)
                && matches!(x, Fault::NoEntryRow { .. })
        })
        .unwrap_or_else(|| panic!("{:#?}", rep.faults));
    let text = hit.to_string();
    assert!(
        text.contains(&format!("offset {hoff} of chunk {chunk}"))
            && text.contains("expected an index row"),
        "{text}"
    );
    assert!(text.contains(&hex), "{text}");
    assert!(
        rep.faults.iter().any(|x| x.file() == index
            && matches!(x, Fault::NoMessageRow { guid, .. } if guid.to_hex() == hex)),
        "the messages row: {:#?}",
        rep.faults
    );
}

#[test]
fn reindex_rebuilds_an_index_equal_to_the_original() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let index = UserDir::new(root.path(), USER).unwrap().index_path();
    let original = dump_tables(&index);
    std::fs::remove_file(&index).unwrap();
    let rep = reindex_user(root.path(), USER).unwrap();
    assert_eq!(rep.tail, formats::archive::Tail::Clean);
    assert_eq!(dump_tables(&index), original);
    // Held writer lock: reindex refuses at once.
    let held = UserDir::new(root.path(), USER).unwrap().lock().unwrap();
    assert!(reindex_user(root.path(), USER).is_err());
    drop(held);
    assert!(verify_user(root.path(), USER).is_clean());
}

#[test]
fn the_binary_verifies_reindexes_and_exits_1_on_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_common::binary_config(dir.path());
    let root = dir.path().join("store");
    let data = build(&root);
    let bin = env!("CARGO_BIN_EXE_backup-server");
    let run = |args: &[&str]| {
        let o = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("1 stores") && out.contains("0 faults"),
        "{out}"
    );
    let (code, out) = run(&["reindex", "--user", USER]);
    assert_eq!(code, Some(0), "{out}");
    let eml = dir.path().join("eml");
    let to = format!("eml:{}", eml.display());
    let (code, out) = run(&[
        "restore", "--user", USER, "--folder", "INBOX", "--uid", "30", "--to", &to,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("restored 1 messages"), "{out}");
    assert!(eml.join("INBOX/30.eml").exists());
    let (code, _) = run(&["restore", "--user", USER, "--uid", "3", "--to", &to]);
    assert_eq!(code, Some(1), "--uid without --folder");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let (code, out) = run(&["verify", "--user", USER]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("user {USER}: {}", data.display())),
        "{out}"
    );
}

#[test]
fn a_message_whose_bytes_do_not_hash_to_its_guid_is_named() {
    // A store cannot write one (it hashes first), so the data file is written by hand and
    // indexed by reindex, which does not hash.
    use formats::archive::{ArchiveWriter, EntryMeta, Message};
    let root = tempfile::tempdir().unwrap();
    let dir = UserDir::new(root.path(), USER).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let data = dir.file(&backup_server::store::data_file_name(1_800_000_000));
    let good = message(1, 3000);
    let bad = message(2, 3000);
    let mut w = ArchiveWriter::new(std::fs::File::create(&data).unwrap(), 0);
    w.start_chunk().unwrap();
    let meta = |g| {
        EntryMeta::Message(Message {
            guid: g,
            run: 1,
            time: formats::Timestamp::from_secs(1_800_000_000),
            origin: None,
            internal_date: None,
        })
    };
    w.append(&meta(guid(&good)), &good).unwrap();
    let wrong = guid(b"something else");
    let loc = w.append(&meta(wrong), &bad).unwrap();
    w.finish_chunk().unwrap();
    drop(w);
    reindex_user(root.path(), USER).unwrap();
    let rep = verify_user(root.path(), USER);
    assert_eq!(rep.faults.len(), 1, "{:#?}", rep.faults);
    let x = &rep.faults[0];
    assert_eq!((x.file(), x.offset()), (data.as_path(), Some(0)));
    let Fault::WrongHash {
        entry,
        sha1,
        guid: expected,
        ..
    } = x
    else {
        panic!("{x:#?}");
    };
    assert_eq!(
        (entry.header_offset, *sha1, *expected),
        (loc.header_offset, guid(&bad), wrong)
    );
    let text = x.to_string();
    assert!(
        text.contains(&format!("offset {} of chunk 0", loc.header_offset))
            && text.contains(&guid(&bad).to_hex())
            && text.contains(&wrong.to_hex()),
        "{text}"
    );
}

#[test]
fn index_damage_alone_is_named_by_folder_and_uid() {
    // The damage the old verify could not see: a current record deleted (the message
    // vanishes from ls and restore), flags, size and internal date changed.
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let index = UserDir::new(root.path(), USER).unwrap().index_path();
    {
        let c = rusqlite::Connection::open(&index).unwrap();
        c.execute_batch(
            "DELETE FROM records WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = 'u-in') AND uid = 5 AND valid_to IS NULL;
             UPDATE records SET flags = '\\Flagged' WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = 'u-in') AND uid = 6 AND valid_to IS NULL;
             UPDATE records SET size = size + 1 WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = 'u-in') AND uid = 7 AND valid_to IS NULL;
             UPDATE records SET internaldate = '1600000000' WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = 'u-in') AND uid = 8 AND valid_to IS NULL;",
        )
        .unwrap();
    }
    // The quick level does not compare rows with the data file: none of this breaks a rule.
    let quick = backup_server::verify::verify_user_at(root.path(), USER, Level::Quick);
    assert!(quick.is_clean(), "{:#?}", quick.faults);
    let rep = verify_user(root.path(), USER);
    let text: Vec<String> = rep.faults.iter().map(|f| f.to_string()).collect();
    assert_eq!(rep.faults.len(), 4, "{text:#?}");
    assert_eq!(
        (rep.rows.missing, rep.rows.differing, rep.rows.extra),
        (1, 3, 0)
    );
    for (uid, what) in [
        (5, "missing from the index; the data file implies ("),
        (6, "flags is \"\\\\Flagged\", the data file implies \"\""),
        (7, "size is "),
        (
            8,
            "internaldate is \"1600000000\", the data file implies \"1700000008\"",
        ),
    ] {
        let needle =
            format!("folder \"INBOX\" (u-in) UID {uid} - records row folder_key=1 uid={uid} ");
        assert!(
            text.iter()
                .any(|t| t.starts_with(&format!("{}: {needle}", index.display()))
                    && t.contains(what)),
            "UID {uid}: {what}: {text:#?}"
        );
    }
    assert!(rep.faults.iter().all(|f| f.way_out() == WayOut::Repair));
}

#[test]
fn the_quick_level_reads_no_message_and_finds_broken_framing() {
    let root = tempfile::tempdir().unwrap();
    let data = build(root.path());
    let quick = |root: &Path| backup_server::verify::verify_user_at(root, USER, Level::Quick);
    let v = quick(root.path());
    assert!(v.is_clean(), "{:#?}", v.faults);
    let cs = chunks(root.path());
    assert_eq!((v.chunks as usize, v.entries, v.messages), (cs.len(), 0, 0));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data)
        .unwrap();
    let flip = |at: u64| {
        let mut b = [0u8];
        f.read_at(&mut b, at).unwrap();
        f.write_at(&[b[0] ^ 0x01], at).unwrap();
    };
    // A chunk's gzip header, then another's ISIZE: each named at its chunk.
    let (a, _) = cs[2];
    let (b, blen) = cs[5];
    flip(a + 1);
    flip(b + blen - 2);
    let v = quick(root.path());
    let at: Vec<(Option<u64>, String)> = v
        .faults
        .iter()
        .map(|x| (x.offset(), x.to_string()))
        .collect();
    assert_eq!(v.faults.len(), 2, "{at:#?}");
    assert!(
        at[0].0 == Some(a) && at[0].1.contains("expected a gzip header"),
        "{at:#?}"
    );
    assert!(
        at[1].0 == Some(b) && at[1].1.contains("uncompressed length"),
        "{at:#?}"
    );
    assert!(v.faults.iter().all(|x| x.file() == data));
    // A flip inside the deflate data is the full level's to find.
    flip(a + 1);
    flip(b + blen - 2);
    let (c, clen) = cs[3];
    flip(c + clen / 2);
    assert!(quick(root.path()).is_clean());
    assert!(!verify_user(root.path(), USER).is_clean());
}

#[test]
fn the_binary_names_the_way_out_on_every_fault_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_common::binary_config(dir.path());
    let root = dir.path().join("store");
    build(&root);
    let index = UserDir::new(&root, USER).unwrap().index_path();
    rusqlite::Connection::open(&index)
        .unwrap()
        .execute_batch(
            "DELETE FROM records WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = 'u-in') AND uid = 12 AND valid_to IS NULL",
        )
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_backup-server");
    let run = |args: &[&str]| {
        let o = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["verify", "--quick"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("verify --quick: 1 stores, "), "{out}");
    let (code, out) = run(&["verify"]);
    assert_eq!(code, Some(1), "{out}");
    let line = out.lines().next().unwrap();
    assert!(
        line.starts_with(&format!(
            "user {USER}: {}: folder \"INBOX\" (u-in) UID 12 - records row folder_key=1 uid=12 ",
            index.display()
        )) && line.ends_with(&format!("; run backup-server repair --user {USER}")),
        "{out}"
    );
    assert!(out.contains("index rows compared; 1 faults"), "{out}");
}
