//! Store throughput figures (ignored by default; run with
//! `cargo test --release -p backup-server --test store_bench -- --ignored --nocapture`).

mod store_common;

use std::io::Read;
use std::time::Instant;

use backup_server::store::{rebuild_index, MessageInfo, RunEnd, Store, StoreOptions};
use store_common::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore]
fn store_figures() {
    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path(), "bench", StoreOptions::default()).unwrap();
    let msgs: Vec<Vec<u8>> = (0..4000)
        .map(|i| message(i, 2000 + (i as usize * 7919) % 40_000))
        .collect();
    let bytes: usize = msgs.iter().map(Vec::len).sum();

    let t = Instant::now();
    let mut run = store.begin_run().unwrap();
    for m in &msgs {
        run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
    }
    let recs: Vec<Rec> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| Rec::new(i as u32 + 1, m))
        .collect();
    run.add_folder_snapshot(Snap::new("u1", "user.bench", 1, &recs, 1).as_snapshot())
        .unwrap();
    let before_commit = Instant::now();
    let s = run.commit(RunEnd::Complete).unwrap();
    let commit_big = before_commit.elapsed().as_secs_f64();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "full run: {} messages, {:.1} MB in {:.2} s = {:.1} MB/s (SHA-1 check, gzip -1, index rows); {} chunks, file {:.1} MB ({:.1} %); commit {:.1} ms",
        msgs.len(),
        bytes as f64 / 1e6,
        secs,
        bytes as f64 / 1e6 / secs,
        s.chunks,
        s.data_len as f64 / 1e6,
        100.0 * s.data_len as f64 / bytes as f64,
        commit_big * 1e3
    );

    let idx = store.dir().index_path();
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = std::path::PathBuf::from(format!("{}-wal", idx.display()));
    println!(
        "index after it: {:.2} MB (database and WAL) for {} messages and their {} records",
        (size(&idx) + size(&wal)) as f64 / 1e6,
        msgs.len(),
        recs.len()
    );

    let mut lat = Vec::new();
    let mut nochange = Vec::new();
    let mut empty_bytes = 0;
    for i in 0..100 {
        let m = message(100_000 + i, 3000);
        let t = Instant::now();
        let mut run = store.begin_run().unwrap();
        run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
        run.commit(RunEnd::Complete).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        empty_bytes = store
            .begin_run()
            .unwrap()
            .commit(RunEnd::Complete)
            .unwrap()
            .data_bytes;
        nochange.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "small run (1 message) begin..commit median {:.2} ms; empty run {:.2} ms (two fsyncs each), {empty_bytes} bytes",
        median(lat),
        median(nochange)
    );

    let mut rl = Vec::new();
    let mut inflated = 0u64;
    for i in (0..msgs.len()).step_by(40) {
        let t = Instant::now();
        let mut r = store
            .catalog()
            .open_message(&guid(&msgs[i]))
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        rl.push(t.elapsed().as_secs_f64() * 1e3);
        inflated = inflated.max(r.inflated());
    }
    println!(
        "single-message read: median {:.2} ms, at most {:.1} MiB inflated",
        median(rl),
        inflated as f64 / (1 << 20) as f64
    );

    let t = Instant::now();
    let mut n = 0;
    store
        .catalog()
        .messages_at("u1", None, false, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    println!(
        "ls of a {n}-message folder: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // A big folder changed by one message: the diff walks its 100,000 current rows.
    let fake: Vec<Rec> = (1..=100_000u32)
        .map(|uid| Rec::new(uid, &uid.to_be_bytes()))
        .collect();
    let big1 = Snap::new("u-big", "user.bench.Big", 1, &fake, 1);
    let t = Instant::now();
    let mut run = store.begin_run().unwrap();
    run.add_folder_snapshot(big1.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
    let first = t.elapsed().as_secs_f64();
    let mut fake2 = fake.clone();
    fake2[500] = fake2[500].clone().seen();
    fake2.push(Rec::new(100_001, b"new"));
    let big2 = Snap::new("u-big", "user.bench.Big", 1, &fake2, 2);
    let t = Instant::now();
    let mut run = store.begin_run().unwrap();
    run.add_folder_snapshot(big2.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
    println!(
        "100,000-message folder ({:.1} MB cyrus.index): first snapshot {:.2} s, next one (1 new, 1 flag change) {:.2} s",
        big1.index.len() as f64 / 1e6,
        first,
        t.elapsed().as_secs_f64()
    );
    // The fetch list of that changed folder: one store lookup per GUID (as before schema
    // version 3), or one diff against the folder's stored records. (Its fake GUIDs are not
    // stored, so the first asks 100,001 lookups that miss and the second 2: a miss costs
    // what a hit does, one descent of `messages`.)
    let run = store.begin_run().unwrap();
    let t = Instant::now();
    let (all, _) =
        backup_server::backup::plan::messages_to_fetch(&big2.index, &[], |g| run.has_message(g))
            .unwrap();
    let per_guid = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let stored = run.held_records("u-big").unwrap();
    let (few, _) = backup_server::backup::plan::messages_to_fetch(&big2.index, &stored, |g| {
        run.has_message(g)
    })
    .unwrap();
    let diffed = t.elapsed().as_secs_f64();
    drop(run);
    println!(
        "fetch list of it: a lookup per GUID {:.0} ms ({} to fetch); diffed against its {} stored records {:.0} ms ({} to fetch)",
        per_guid * 1e3,
        all.len(),
        stored.len(),
        diffed * 1e3,
        few.len()
    );
    let t = Instant::now();
    let mut n = 0;
    store
        .catalog()
        .messages_at("u-big", None, true, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    println!(
        "ls --include-expunged of it: {n} rows in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let data = store.catalog().data_path().to_path_buf();
    drop(store);
    let t = Instant::now();
    let rep = rebuild_index(&data, "bench", &root.path().join("re.sqlite3")).unwrap();
    println!(
        "reindex: {} entries, {:.1} MB file in {:.2} s",
        rep.entries,
        rep.valid_end as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
}

/// The fixed cost of a new small user's store, phase by phase (issue 16): creating the
/// store, one run of 4 folders x 5 messages of 2 kB, and closing it. Run with
/// `cargo test --release -p backup-server --test store_bench -- --ignored --nocapture
/// new_user_fixed_cost`; `MB_FIXED_USERS` sets the number of users (default 300) and
/// `MB_FIXED_ROOT` the store root (default a temporary directory: use one on the disk the
/// figures are for).
#[test]
#[ignore]
fn new_user_fixed_cost() {
    let users: u64 = std::env::var("MB_FIXED_USERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let tmp =
        tempfile::tempdir_in(std::env::var("MB_FIXED_ROOT").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
    let (mut open, mut run_t, mut commit, mut close) = (vec![], vec![], vec![], vec![]);
    for u in 0..users {
        let msgs: Vec<Vec<u8>> = (0..20).map(|i| message(u * 100 + i, 2000)).collect();
        let snaps: Vec<Snap> = (0..4)
            .map(|f| {
                let recs: Vec<Rec> = (0..5)
                    .map(|i| Rec::new(i as u32 + 1, &msgs[f * 5 + i]))
                    .collect();
                Snap::new(
                    &format!("uid-{u}-{f}"),
                    &format!("user.u{u}.F{f}"),
                    1,
                    &recs,
                    1,
                )
            })
            .collect();
        let t = Instant::now();
        let mut store = Store::open(tmp.path(), &format!("u{u}"), StoreOptions::default()).unwrap();
        open.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let mut run = store.begin_run().unwrap();
        for m in &msgs {
            run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
        }
        for s in &snaps {
            run.add_folder_snapshot(s.as_snapshot()).unwrap();
        }
        run_t.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        run.commit(RunEnd::Complete).unwrap();
        commit.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        drop(store);
        close.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let sum = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "new small user ({users} users, 4 folders x 5 messages of 2 kB), mean (median) ms: \
         open+create {:.2} ({:.2}), run {:.2} ({:.2}), commit {:.2} ({:.2}), close {:.2} ({:.2}), total {:.2}",
        sum(&open),
        median(open.clone()),
        sum(&run_t),
        median(run_t.clone()),
        sum(&commit),
        median(commit.clone()),
        sum(&close),
        median(close.clone()),
        sum(&open) + sum(&run_t) + sum(&commit) + sum(&close)
    );
}

/// A churn night of many small users, store side only: each user's store opened, one new
/// message and its folder's new snapshot written, committed, closed. Run under
/// `strace -f -c -e trace=fsync,fdatasync` (or `-T`) to see what each user's syncs cost.
/// `STORE_CHURN_USERS` users (default 200), 4 folders of 5 messages each.
#[test]
#[ignore]
fn store_churn_night() {
    let users: usize = std::env::var("STORE_CHURN_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let root =
        tempfile::tempdir_in(std::env::var("STORE_CHURN_DIR").unwrap_or("/tmp".into())).unwrap();
    let clock = TestClock::at(1_800_000_000);
    let folders = ["INBOX", "Sent", "Drafts", "Trash"];
    let mut held: Vec<Vec<Vec<Vec<u8>>>> = Vec::new();
    let t = Instant::now();
    for u in 0..users {
        let mut store = Store::open(root.path(), &format!("u{u:05}"), opts(&clock)).unwrap();
        let msgs: Vec<Vec<Vec<u8>>> = (0..4)
            .map(|f| {
                (0..5)
                    .map(|i| message((u * 100 + f * 10 + i) as u64, 8000))
                    .collect()
            })
            .collect();
        let snaps: Vec<Snap> = folders
            .iter()
            .enumerate()
            .map(|(f, name)| {
                let recs: Vec<Rec> = msgs[f]
                    .iter()
                    .enumerate()
                    .map(|(i, m)| Rec::new(i as u32 + 1, m))
                    .collect();
                Snap::new(
                    &format!("u{u}-{f}"),
                    &format!("user.u{u}.{name}"),
                    1,
                    &recs,
                    1,
                )
            })
            .collect();
        let all: Vec<Vec<u8>> = msgs.iter().flatten().cloned().collect();
        commit_run(&mut store, &all, &snaps.iter().collect::<Vec<_>>());
        drop(store);
        held.push(msgs);
    }
    let full = t.elapsed().as_secs_f64();
    let (mut index, mut data) = (0u64, 0u64);
    for e in walk(root.path()) {
        let len = std::fs::metadata(&e).unwrap().len();
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        if name == "backupstate.sqlite3" {
            index += len;
        } else if name.starts_with("backupdata-") {
            data += len;
        }
    }
    clock.advance(86_400);
    let t = Instant::now();
    for (u, msgs) in held.iter_mut().enumerate() {
        let mut store = Store::open(root.path(), &format!("u{u:05}"), opts(&clock)).unwrap();
        let m = message((1_000_000 + u) as u64, 8000);
        msgs[0].push(m.clone());
        let recs: Vec<Rec> = msgs[0]
            .iter()
            .enumerate()
            .map(|(i, m)| Rec::new(i as u32 + 1, m))
            .collect();
        let snap = Snap::new(&format!("u{u}-0"), &format!("user.u{u}.INBOX"), 1, &recs, 2);
        let mut run = store.begin_run().unwrap();
        run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
        run.add_folder_snapshot(snap.as_snapshot()).unwrap();
        run.commit(RunEnd::Complete).unwrap();
        drop(store);
    }
    let night = t.elapsed().as_secs_f64();
    println!(
        "{users} users x 4 folders x 5 messages: first backup {:.2} ms a user; index {} B a user, data {} B a user ({:.1} %); churn night (1 message, 1 snapshot) {:.2} ms a user",
        full * 1e3 / users as f64,
        index / users as u64,
        data / users as u64,
        index as f64 * 100.0 / data as f64,
        night * 1e3 / users as f64
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What the header index costs (ignored by default; run with
/// `cargo test -p backup-server --test store_bench header_index_cost -- --ignored --nocapture`):
/// 4,000 messages made from the captured spool's (tests/fixtures: real Cyrus deliveries,
/// each made distinct by a first header line) stored in one run; the index's size with its
/// `headers` rows and without them (both copies vacuumed), and the time `extract` takes
/// over the same messages against the whole run's.
#[test]
#[ignore]
fn header_index_cost() {
    use backup_server::store::headers::{extract, header_block};
    fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                files(&p, out);
            } else if name.ends_with('.') && name[..name.len() - 1].parse::<u32>().is_ok() {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    let mut real = Vec::new();
    files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cyrus-3.6/spool"),
        &mut real,
    );
    assert!(!real.is_empty());
    let msgs: Vec<Vec<u8>> = (0..4000)
        .map(|i| {
            let mut m = format!("X-Seq: {i}\r\n").into_bytes();
            m.extend_from_slice(&real[i % real.len()]);
            m
        })
        .collect();
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path(), "bench", StoreOptions::default()).unwrap();
    let t = Instant::now();
    let mut run = store.begin_run().unwrap();
    for m in &msgs {
        run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
    }
    let recs: Vec<Rec> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| Rec::new(i as u32 + 1, m))
        .collect();
    run.add_folder_snapshot(Snap::new("u1", "user.bench", 1, &recs, 1).as_snapshot())
        .unwrap();
    let data_len = run.commit(RunEnd::Complete).unwrap().data_len;
    let run_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for m in &msgs {
        std::hint::black_box(extract(header_block(m)));
    }
    let extract_secs = t.elapsed().as_secs_f64();
    let idx = store.dir().index_path();
    drop(store);
    let vacuumed = |drop_headers: bool| -> u64 {
        let copy = root.path().join(format!("copy-{drop_headers}.sqlite3"));
        let c = rusqlite::Connection::open(&idx).unwrap();
        c.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        drop(c);
        let c = rusqlite::Connection::open(&copy).unwrap();
        if drop_headers {
            c.execute_batch("DROP TABLE headers; VACUUM;").unwrap();
        }
        drop(c);
        std::fs::metadata(&copy).unwrap().len()
    };
    let (with, without) = (vacuumed(false), vacuumed(true));
    println!(
        "header index: {} messages ({:.1} MB, data file {data_len} bytes); index {with} bytes with headers ({:.1} % of the data file), \
         {without} without ({:.1} %): +{:.1} %, {:.0} bytes a message; \
         run {run_secs:.2} s, header extraction {extract_secs:.3} s ({:.1} us a message, {:.1} % of the run)",
        msgs.len(),
        bytes as f64 / 1e6,
        100.0 * with as f64 / data_len as f64,
        100.0 * without as f64 / data_len as f64,
        100.0 * (with - without) as f64 / without as f64,
        (with - without) as f64 / msgs.len() as f64,
        extract_secs * 1e6 / msgs.len() as f64,
        100.0 * extract_secs / run_secs
    );
}
