//! What the two verify levels cost (ignored by default; run with
//! `cargo test --release -p backup-server --test verify_bench -- --ignored --nocapture`):
//! one user of 10,000 messages (about 200 MB) in two folders over six nightly runs with
//! flag changes and expunges, verified quick and full, beside a reindex for scale.

mod store_common;

use std::time::Instant;

use backup_server::store::{rebuild_index, MessageInfo, RunEnd, Store, StoreOptions, UserDir};
use backup_server::verify::{verify_user_at, Level};
use store_common::*;

#[test]
#[ignore]
fn verify_figures() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let mut store = Store::open(
        root.path(),
        "bench",
        StoreOptions {
            clock: clock.clone(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut all: Vec<Vec<u8>> = Vec::new();
    let t = Instant::now();
    for day in 0..6u64 {
        let mut run = store.begin_run().unwrap();
        let n = if day == 0 { 5000 } else { 1000 };
        for _ in 0..n {
            let seed = all.len() as u64;
            let m = message(seed, 2000 + (seed as usize * 7919) % 40_000);
            run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
            all.push(m);
        }
        let half = all.len() / 2;
        for (uid, part, range) in [
            ("u-inbox", "user.bench", 0..half),
            ("u-arch", "user.bench.Archive", half..all.len()),
        ] {
            let recs: Vec<Rec> = all[range]
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let r = Rec::new(i as u32 + 1, m);
                    let r = if (i as u64 + day) % 7 == 0 {
                        r.seen()
                    } else {
                        r
                    };
                    if i < day as usize * 10 {
                        r.expunged()
                    } else {
                        r
                    }
                })
                .collect();
            run.add_folder_snapshot(Snap::new(uid, part, 1, &recs, clock.secs()).as_snapshot())
                .unwrap();
        }
        run.commit(RunEnd::Complete).unwrap();
        clock.advance(86_400);
    }
    let bytes: usize = all.iter().map(Vec::len).sum();
    println!(
        "store: {} messages, {:.0} MB of mail, built in {:.1} s",
        all.len(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    drop(store);
    let dir = UserDir::new(root.path(), "bench").unwrap();
    let data = dir.file(&dir.data_files().unwrap()[0]);
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64 / 1e6;
    println!(
        "data file {:.0} MB, index {:.1} MB",
        size(&data),
        size(&dir.index_path())
    );
    for level in [Level::Quick, Level::Full, Level::Quick, Level::Full] {
        let t = Instant::now();
        let v = verify_user_at(root.path(), "bench", level);
        let secs = t.elapsed().as_secs_f64();
        assert!(v.is_clean(), "{:#?}", v.faults);
        println!(
            "verify {level:?}: {secs:.3} s; {} chunks, {} entries, {} messages hashed, {} index rows compared",
            v.chunks, v.entries, v.messages, v.rows.found
        );
    }
    let out = root.path().join("rebuilt.sqlite3");
    let t = Instant::now();
    rebuild_index(&data, "bench", &out).unwrap();
    println!(
        "reindex (for scale: inflate, ingest into a file): {:.3} s",
        t.elapsed().as_secs_f64()
    );
}
