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
    run.commit(RunEnd::Complete).unwrap();
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
        "header index: {} messages ({:.1} MB); index {with} bytes with headers, {without} without (+{:.1} %, {:.0} bytes a message); \
         run {run_secs:.2} s, header extraction {extract_secs:.3} s ({:.1} us a message, {:.1} % of the run)",
        msgs.len(),
        bytes as f64 / 1e6,
        100.0 * (with - without) as f64 / without as f64,
        (with - without) as f64 / msgs.len() as f64,
        extract_secs * 1e6 / msgs.len() as f64,
        100.0 * extract_secs / run_secs
    );
}
