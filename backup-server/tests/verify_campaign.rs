//! The corruption campaign, detection half: a store of three users (store API), then 200
//! random single-byte flips in backupstate.sqlite3, 50 row edits and deletions of every
//! kind, and 100 byte flips in the data file, each applied to a fresh copy of one user's
//! store and verified at the full level. Every one must be detected (a fault for that
//! user, naming the folder when the damage is in a folder's rows or data) or provably
//! harmless, which the test checks itself:
//!
//! * a flip in the index is harmless when SQLite's `integrity_check` is clean and every
//!   table's rows, the schema (`sqlite_master`) and `user_version` read back identical:
//!   the flip landed in bytes SQLite does not use (free space in a page, a free page, an
//!   unused header field);
//! * a flip in the data file is harmless when the scanner every reader uses still reads
//!   it whole, every gzip member's CRC and length right, to the same entries, locations
//!   and bytes: it landed in the gzip header's MTIME/XFL/OS fields or in the deflate
//!   stream's padding bits, which no reader uses.
//!
//! Seeded (`VERIFY_CAMPAIGN_SEED` overrides); prints the split.

mod store_common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use backup_server::repair::repair_user;
use backup_server::store::{IndexFault, MessageInfo, RunEnd, Store, UserDir};
use backup_server::verify::{verify_user, Fault, StoreVerdict};
use formats::archive::UserFileKind;
use store_common::*;

const USERS: &[&str] = &["ann", "bob", "cy"];

/// Three users: four runs each, INBOX growing with flag changes and expunges, a second
/// folder renamed half-way, a third deleted (tombstone), user files, small chunks.
fn build(root: &Path) {
    for (n, user) in USERS.iter().enumerate() {
        let clock = TestClock::at(1_800_000_000);
        let mut o = opts(&clock);
        o.chunk_cap = 12 * 1024;
        let mut store = Store::open(root, user, o).unwrap();
        let mut inbox: Vec<Vec<u8>> = Vec::new();
        for day in 0..4u64 {
            let mut run = store.begin_run().unwrap();
            let seed = (n as u64 + 1) * 1000 + day * 10;
            let new: Vec<Vec<u8>> = (0..5)
                .map(|i| message(seed + i, 900 + 400 * i as usize))
                .collect();
            for (i, m) in new.iter().enumerate() {
                let info = MessageInfo {
                    internal_date: Some(formats::Timestamp::from_secs(1_700_000_000 + i as i64)),
                    origin: Some(("u-inbox".into(), (inbox.len() + i + 1) as u32)),
                };
                run.add_message(guid(m), m.len() as u64, &m[..], info)
                    .unwrap();
            }
            inbox.extend(new);
            let recs: Vec<Rec> = inbox
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let r = Rec::new(i as u32 + 1, m);
                    let r = if (i as u64 + day) % 3 == 0 {
                        r.seen()
                    } else {
                        r
                    };
                    let r = if i % 4 == 1 { r.flagged() } else { r };
                    if i < 2 && day >= 2 {
                        r.expunged()
                    } else {
                        r
                    }
                })
                .collect();
            run.add_folder_snapshot(
                Snap::new("u-inbox", "INBOX", 3, &recs, clock.secs()).as_snapshot(),
            )
            .unwrap();
            let work = if day < 2 {
                "INBOX/Work"
            } else {
                "INBOX/Projects"
            };
            if day == 0 || day == 2 {
                let r: Vec<Rec> = inbox
                    .iter()
                    .take(3)
                    .enumerate()
                    .map(|(i, m)| Rec::new(i as u32 + 1, m).keyword())
                    .collect();
                run.add_folder_snapshot(
                    Snap::new("u-work", work, 4, &r, clock.secs()).as_snapshot(),
                )
                .unwrap();
            } else {
                run.link_name("u-work", work).unwrap();
            }
            if day == 0 {
                run.add_folder_snapshot(
                    Snap::new("u-tmp", "INBOX/Tmp", 5, &[], clock.secs()).as_snapshot(),
                )
                .unwrap();
            }
            if day == 2 {
                run.tombstone("u-tmp").unwrap();
            }
            let seen = format!("seen state of {user} day {day}");
            run.add_user_file(
                UserFileKind::Seen,
                Some(stat(seen.len(), day as i64, 5)),
                seen.len() as u64,
                seen.as_bytes(),
            )
            .unwrap();
            run.commit(RunEnd::Complete).unwrap();
            clock.advance(86_400);
        }
        drop(store);
    }
}

/// Copies `user`'s store directory from `from` into a fresh root.
fn fresh_copy(from: &Path, user: &str) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let src = UserDir::new(from, user).unwrap();
    let dst = UserDir::new(to.path(), user).unwrap();
    std::fs::create_dir_all(dst.path()).unwrap();
    for e in std::fs::read_dir(src.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.path().join(e.file_name())).unwrap();
    }
    to
}

fn index_of(root: &Path, user: &str) -> PathBuf {
    UserDir::new(root, user).unwrap().index_path()
}

fn data_of(root: &Path, user: &str) -> PathBuf {
    let d = UserDir::new(root, user).unwrap();
    d.file(&d.data_files().unwrap()[0])
}

/// Everything a reader of the index can see: every table's rows, the schema, the schema
/// version; `Err` when SQLite cannot read it.
fn index_content(index: &Path) -> Result<Vec<String>, rusqlite::Error> {
    let c =
        rusqlite::Connection::open_with_flags(index, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut out = Vec::new();
    out.push(format!(
        "user_version {}",
        c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
    ));
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for t in ["sqlite_master".to_owned()].into_iter().chain(tables) {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\""))?;
        let n = st.column_count();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.join("|"))
            })?
            .collect::<Result<_, _>>()?;
        rows.sort();
        out.push(format!("table {t}: {}", rows.len()));
        out.extend(rows);
    }
    Ok(out)
}

fn integrity_ok(index: &Path) -> bool {
    rusqlite::Connection::open_with_flags(index, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
        .is_ok_and(|s| s == "ok")
}

/// What every reader gets from the data file: each entry's header, location and bytes,
/// with every gzip member's CRC and length checked, to a clean end; `None` otherwise.
fn inflated(data: &Path) -> Option<Vec<u8>> {
    use formats::archive::{ScanEvent, Scanner, Tail};
    let mut scanner = Scanner::new(std::fs::File::open(data).unwrap());
    let mut out = Vec::new();
    loop {
        match scanner.next_event().ok()? {
            ScanEvent::ChunkStart { offset } => out.extend(format!("chunk {offset}\n").bytes()),
            ScanEvent::Entry(mut e) => {
                out.extend(format!("{:?} {:?}\n", e.header, e.location).bytes());
                e.read_to_end(&mut out).ok()?;
            }
            ScanEvent::ChunkEnd(info) => out.extend(format!("{info:?}\n").bytes()),
            ScanEvent::End(end) => {
                return (end.tail == Tail::Clean).then_some(out);
            }
        }
    }
}

fn faults_text(v: &StoreVerdict) -> String {
    v.faults
        .iter()
        .map(|f| format!("{f}\n"))
        .collect::<String>()
}

#[derive(Default)]
struct Tally {
    detected: u64,
    harmless: u64,
    named_folder: u64,
    folder_damage: u64,
    kinds: BTreeMap<String, u64>,
}

impl Tally {
    fn fault_kinds(&mut self, v: &StoreVerdict) {
        for f in &v.faults {
            let k = format!("{f:?}");
            let k = k.split([' ', '{', '(']).next().unwrap_or("").to_owned();
            *self.kinds.entry(k).or_default() += 1;
        }
    }
}

/// Flips one byte: XOR with a non-zero mask.
/// The way out every fault names: after `repair`, verify at the full level finds nothing
/// but the messages the repair named as lost (each a current record whose message no intact
/// chunk holds, marked for the next run to fetch again: `tests/tests/heal_damage.rs` runs
/// that against a real Cyrus, to a clean verify and `ls` equal to IMAP).
fn repaired_clean(root: &Path, user: &str, what: &str) {
    let rep = match repair_user(root, user, Default::default()) {
        Ok(r) => r,
        Err(e) => panic!("{what}: repair failed: {e}"),
    };
    let v = verify_user(root, user);
    assert_eq!(v.faults_not_listed, 0, "{what}: {v:?}");
    for f in &v.faults {
        let lost = match f {
            Fault::IndexRule {
                problem:
                    IndexFault::RecordWithoutMessage {
                        folder, uid, guid, ..
                    },
                ..
            } => rep.lost_messages.iter().any(|l| {
                // The new index may not know the folder's name: the lost chunk can have held
                // its name entry too (the repair named it from the old index).
                folder.as_ref().is_none_or(|f| *f == l.folder)
                    && l.uid == *uid
                    && l.guid.to_string() == *guid
            }),
            _ => false,
        };
        assert!(
            lost,
            "{what}: after repair, verify finds what the repair did not name as lost: {f}\nrepair: {rep:?}"
        );
    }
}

fn flip(path: &Path, at: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}

fn seed() -> u64 {
    std::env::var("VERIFY_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0014)
}

#[test]
fn every_corruption_is_detected_or_provably_harmless() {
    let base = tempfile::tempdir().unwrap();
    build(base.path());
    for u in USERS {
        let v = verify_user(base.path(), u);
        assert!(v.is_clean(), "{u}: {}", faults_text(&v));
        assert!(v.rows.found > 100, "{:?}", v.rows);
    }
    let seed = seed();
    println!("verify campaign: seed {seed}");
    let mut rng = testkit::Rng::new(seed);
    let mut pick = |n: u64| rng.next_u64() % n;

    // 1. Single-byte flips in backupstate.sqlite3.
    let mut t = Tally::default();
    for i in 0..200 {
        let user = USERS[i % USERS.len()];
        let copy = fresh_copy(base.path(), user);
        let index = index_of(copy.path(), user);
        let before = index_content(&index).unwrap();
        let len = std::fs::metadata(&index).unwrap().len();
        let at = pick(len);
        let mask = 1 + pick(255) as u8;
        flip(&index, at, mask);
        let v = verify_user(copy.path(), user);
        if v.is_clean() {
            let after = index_content(&index);
            let changed: Vec<String> = match &after {
                Ok(a) => before
                    .iter()
                    .zip(a)
                    .filter(|(x, y)| x != y)
                    .map(|(x, y)| format!("{x}\n  became {y}"))
                    .take(3)
                    .collect(),
                Err(e) => vec![e.to_string()],
            };
            assert!(
                integrity_ok(&index) && after.as_ref().is_ok_and(|a| *a == before),
                "index flip {i} ({user}, byte {at} ^ {mask:#04x}): verify is clean but what SQLite reads changed: {changed:#?}"
            );
            t.harmless += 1;
        } else {
            assert_eq!(v.user, user);
            t.detected += 1;
            t.fault_kinds(&v);
            repaired_clean(copy.path(), user, &format!("index flip {i}"));
        }
    }
    println!(
        "index byte flips: 200: {} detected, {} harmless (unused bytes: integrity_check clean, every table, the schema and user_version unchanged); faults by kind {:?}",
        t.detected, t.harmless, t.kinds
    );
    assert_eq!(t.detected + t.harmless, 200);

    // 2. Row edits and deletions, each naming the folder it is about when there is one.
    let edits: &[(&str, &str, Option<&str>)] = &[
        // (what, SQL on a row picked by `?1` = its rank, the table whose uniqueid names the folder)
        ("delete a current records row", "DELETE FROM records WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records WHERE valid_to IS NULL ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("change a record's flags", "UPDATE records SET flags = flags || ' \\Deleted' WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("change a record's size", "UPDATE records SET size = size + 1 WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("change a record's internal date", "UPDATE records SET internaldate = '1600000000' WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("change a record's GUID", "UPDATE records SET guid = x'00112233445566778899aabbccddeeff00112233' WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("flip a record's expunged", "UPDATE records SET expunged = 1 - expunged WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("end a current record", "UPDATE records SET valid_to = valid_from + 1, to_run = from_run WHERE (folder_key, uid, from_run) = (SELECT folder_key, uid, from_run FROM records WHERE valid_to IS NULL ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1)", Some("records")),
        ("add a ghost record", "INSERT INTO records (folder_key, uid, guid, size, internaldate, flags, expunged, from_run, valid_from) SELECT folder_key, uid + 1000, guid, size, internaldate, flags, expunged, from_run, valid_from FROM records ORDER BY folder_key, uid, from_run LIMIT 1 OFFSET ?1", Some("records")),
        ("delete a snapshot", "DELETE FROM snapshots WHERE (folder_key, run) = (SELECT folder_key, run FROM snapshots ORDER BY folder_key, run LIMIT 1 OFFSET (?1 % 6))", Some("snapshots")),
        ("change a snapshot's counts", "UPDATE snapshots SET exists_count = exists_count + 1 WHERE (folder_key, run) = (SELECT folder_key, run FROM snapshots ORDER BY folder_key, run LIMIT 1 OFFSET (?1 % 6))", Some("snapshots")),
        ("delete a name", "DELETE FROM names WHERE entry = (SELECT entry FROM names ORDER BY entry LIMIT 1 OFFSET (?1 % 4))", Some("names")),
        ("rename a folder in names", "UPDATE names SET folder = 'Elsewhere' WHERE entry = (SELECT entry FROM names ORDER BY entry LIMIT 1 OFFSET (?1 % 4))", Some("names")),
        ("change a meta file's folder", "UPDATE meta_files SET folder = 'Elsewhere' WHERE entry = (SELECT entry FROM meta_files ORDER BY entry LIMIT 1 OFFSET ?1)", Some("meta_files")),
        ("delete a messages row", "DELETE FROM messages WHERE guid = (SELECT guid FROM messages ORDER BY entry LIMIT 1 OFFSET ?1)", None),
        ("change a message's internal date", "UPDATE messages SET internaldate = '1' WHERE guid = (SELECT guid FROM messages ORDER BY entry LIMIT 1 OFFSET ?1)", None),
        ("change a chunk's length", "UPDATE chunks SET compressed_len = compressed_len + 1 WHERE offset = (SELECT offset FROM chunks ORDER BY offset LIMIT 1 OFFSET ?1)", None),
        ("delete the last chunk", "DELETE FROM chunks WHERE offset = (SELECT max(offset) FROM chunks) AND ?1 >= 0", None),
        ("change an entry's data length", "UPDATE entries SET data_len = data_len + 1 WHERE id = (SELECT id FROM entries ORDER BY id LIMIT 1 OFFSET ?1)", None),
        ("change a run's end", "UPDATE runs SET ended = NULL WHERE run = 1 + (?1 % 4)", None),
        ("change a user file", "UPDATE user_files SET stat_size = 999 WHERE entry = (SELECT entry FROM user_files ORDER BY entry LIMIT 1 OFFSET (?1 % 4))", None),
    ];
    let mut r = Tally::default();
    for i in 0..50 {
        let user = USERS[i % USERS.len()];
        let (what, sql, folder_table) = edits[i % edits.len()];
        let copy = fresh_copy(base.path(), user);
        let index = index_of(copy.path(), user);
        let rank = pick(8) as i64;
        let folder: Option<String> = {
            let c = rusqlite::Connection::open(&index).unwrap();
            // Damage, not a transaction the schema's keys would refuse.
            c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
            // The folder the edited row is about, read before the edit.
            let uid_of = folder_table.map(|t| {
                let key = match t {
                    "records" => "folder_key, uid, from_run",
                    "snapshots" => "folder_key, run",
                    _ => "entry",
                };
                let offset = match t {
                    "snapshots" => rank % 6,
                    "names" => rank % 4,
                    _ => rank,
                };
                let filter = if sql.contains("valid_to IS NULL ORDER") {
                    "WHERE valid_to IS NULL"
                } else {
                    ""
                };
                c.query_row(
                    &format!(
                        "SELECT (SELECT uniqueid FROM folders WHERE id = t.folder_key)
                         FROM {t} t {filter} ORDER BY {key} LIMIT 1 OFFSET {offset}"
                    ),
                    [],
                    |r| r.get::<_, String>(0),
                )
                .unwrap()
            });
            let n = c.execute(sql, [rank]).unwrap();
            assert!(n >= 1, "edit {i} ({what}) changed nothing");
            uid_of
        };
        let v = verify_user(copy.path(), user);
        assert!(
            !v.is_clean(),
            "row edit {i} ({user}: {what}, row {rank}) went undetected"
        );
        r.detected += 1;
        r.fault_kinds(&v);
        repaired_clean(copy.path(), user, &format!("row edit {i} ({what})"));
        if let Some(u) = folder {
            r.folder_damage += 1;
            let text = faults_text(&v);
            assert!(
                text.contains(&u),
                "row edit {i} ({user}: {what}): no fault names folder {u}:\n{text}"
            );
            r.named_folder += 1;
        }
    }
    println!(
        "row edits: 50: {} detected, 0 harmless; {} of {} edits of a folder's rows named the folder; faults by kind {:?}",
        r.detected, r.named_folder, r.folder_damage, r.kinds
    );

    // 3. Single-byte flips in the data file.
    let mut d = Tally::default();
    for i in 0..100 {
        let user = USERS[i % USERS.len()];
        let copy = fresh_copy(base.path(), user);
        let data = data_of(copy.path(), user);
        let before = inflated(&data).unwrap();
        let len = std::fs::metadata(&data).unwrap().len();
        let at = pick(len);
        let mask = 1 + pick(255) as u8;
        // Folders with data in the chunk hit, from the intact index.
        let folders: Vec<String> = {
            let c = rusqlite::Connection::open_with_flags(
                index_of(copy.path(), user),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let v = c.prepare(
                "SELECT DISTINCT u FROM (
                   SELECT k.uniqueid AS u FROM meta_files f JOIN entries e ON e.id = f.entry
                     JOIN folders k ON k.id = f.folder_key
                     JOIN chunks c ON c.offset = e.chunk WHERE ?1 >= c.offset AND ?1 < c.offset + c.compressed_len
                   UNION
                   SELECT k.uniqueid FROM records r JOIN messages m ON m.guid = r.guid JOIN entries e ON e.id = m.entry
                     JOIN folders k ON k.id = r.folder_key
                     JOIN chunks c ON c.offset = e.chunk
                     WHERE r.valid_to IS NULL AND ?1 >= c.offset AND ?1 < c.offset + c.compressed_len)",
            )
            .unwrap()
            .query_map([at as i64], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<String>, _>>()
            .unwrap();
            v
        };
        flip(&data, at, mask);
        let v = verify_user(copy.path(), user);
        if v.is_clean() {
            assert_eq!(
                inflated(&data).as_deref(),
                Some(&before[..]),
                "data flip {i} ({user}, byte {at} ^ {mask:#04x}): verify is clean but the data inflates differently"
            );
            d.harmless += 1;
        } else {
            d.detected += 1;
            d.fault_kinds(&v);
            assert!(
                v.faults.iter().any(|f| matches!(
                    f,
                    Fault::DamagedChunk { .. }
                        | Fault::WrongHash { .. }
                        | Fault::TornCommitted { .. }
                ) && f.file() == data),
                "data flip {i}: no fault names the data file: {}",
                faults_text(&v)
            );
            if !folders.is_empty() {
                d.folder_damage += 1;
                let text = faults_text(&v);
                if folders.iter().any(|u| text.contains(u.as_str())) {
                    d.named_folder += 1;
                } else {
                    panic!("data flip {i} ({user}, byte {at}): the chunk holds data of {folders:?}, no fault names them:\n{text}");
                }
            }
            repaired_clean(copy.path(), user, &format!("data flip {i}"));
        }
    }
    println!(
        "data file byte flips: 100: {} detected, {} harmless (the file inflates to the same bytes: gzip header MTIME/XFL/OS or deflate padding); {} of {} flips in a chunk holding folder data named the folder; faults by kind {:?}",
        d.detected, d.harmless, d.named_folder, d.folder_damage, d.kinds
    );
}
