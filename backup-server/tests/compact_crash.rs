//! kill -9 during compaction: a child process (this test binary, re-run with an
//! environment variable) compacts a copy of a store; the parent kills it at a random
//! moment of the compaction, reopens the store and checks that it opens, checks out
//! (check(true)), restores every entry restorable before, and holds one data file.

mod compact_common;
mod store_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_server::compact::compact_store;
use backup_server::store::{MessageInfo, RunEnd, Store, StoreError};
use compact_common::*;
use store_common::*;
use testkit::Rng;

const CHILD_ENV: &str = "MAILBACKUP_COMPACT_CRASH_CHILD";
const USER: &str = "crash";
const TRIALS: u32 = 30;
const T0: i64 = 1_700_000_000;
const NOW: i64 = T0 + 16 * DAY;

/// The child: one compaction of the store under the given root. Started by
/// kill_9_during_compaction_loses_nothing_restorable with CHILD_ENV set; on its own (even
/// with --ignored) it refuses to run.
#[test]
#[ignore = "the child process kill_9_during_compaction_loses_nothing_restorable starts"]
fn compact_child() {
    let root = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!(
            "compact_child is the process kill_9_during_compaction_loses_nothing_restorable \
             starts and kills ({CHILD_ENV} unset); run that test instead"
        )
    });
    let clock = TestClock::at(NOW);
    let store = loop {
        match Store::open_existing(Path::new(&root), USER, opts(&clock)) {
            Ok(s) => break s,
            Err(StoreError::Locked { .. }) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("{e}"),
        }
    };
    // The parent times its kill from this line.
    println!("go");
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    let t = Instant::now();
    compact_store(store, &copts(NOW, 0.0, 0)).unwrap();
    println!("took {}", t.elapsed().as_micros());
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
}

/// Day 0: 300 messages in INBOX; day 1: 200 leave it (dirty by NOW); day 10: 50 more
/// leave (still inside the window at NOW).
fn build(root: &Path) {
    let clock = TestClock::at(T0);
    let m: Vec<Vec<u8>> = (0..300)
        .map(|i| message(i + 7000, 6_000 + (i as usize * 37) % 9_000))
        .collect();
    let recs: Vec<Rec> = m
        .iter()
        .enumerate()
        .map(|(i, x)| Rec::new(i as u32 + 1, x))
        .collect();
    let mut store = Store::open(root, USER, opts(&clock)).unwrap();
    let mut run = store.begin_run().unwrap();
    for x in &m {
        run.add_message(guid(x), x.len() as u64, &x[..], MessageInfo::default())
            .unwrap();
    }
    run.add_folder_snapshot(Snap::new("u-inbox", "user.crash", 1, &recs, T0 - 1).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    for (day, keep) in [(1, 100), (10, 50)] {
        clock.set(T0 + day * DAY);
        let mut run = store.begin_run().unwrap();
        run.add_folder_snapshot(
            Snap::new(
                "u-inbox",
                "user.crash",
                1,
                &recs[..keep],
                T0 + day * DAY - 1,
            )
            .as_snapshot(),
        )
        .unwrap();
        run.commit(RunEnd::Complete).unwrap();
    }
    drop(store.close().unwrap());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

const WINDOW: [i64; 3] = [T0 + 2 * DAY + 1, T0 + 10 * DAY - 1, NOW];

fn spawn(root: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "compact_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_during_compaction_loses_nothing_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    build(&template);
    let clock = TestClock::at(NOW);
    let (want, before_file) = {
        let s = Store::open_existing(&template, USER, opts(&clock)).unwrap();
        let u = s.catalog().usage(copts(NOW, 0.0, 0).cutoff()).unwrap();
        eprintln!(
            "template: {} B in {} entries, dirty {} B ({:.3}), file {} B",
            u.total_bytes,
            u.entries,
            u.dirty_bytes,
            u.dirty_ratio(),
            u.file_len
        );
        (
            restorable(s.catalog(), &WINDOW),
            s.catalog().data_file_name().to_owned(),
        )
    };
    assert_eq!(want.len(), 100 + 100 + 50);

    // One undisturbed compaction, timed, to know where kills can land.
    let full = tmp.path().join("full");
    copy_dir(&template, &full);
    let mut child = spawn(&full);
    let out: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    let span = Duration::from_micros(
        out.iter()
            .find_map(|l| l.strip_prefix("took ")?.parse().ok())
            .expect("the child reports its time"),
    );
    let done = Store::open_existing(&full, USER, opts(&clock)).unwrap();
    assert_ne!(done.catalog().data_file_name(), before_file);
    assert_eq!(restorable(done.catalog(), &WINDOW), want);
    drop(done);

    let (mut rng, seed) = Rng::from_clock();
    eprintln!("kill moments from seed {seed}");
    let (mut old_kept, mut new_kept, mut switched, mut removed) = (0, 0, 0, 0);
    let t = Instant::now();
    for trial in 0..TRIALS {
        let root = tmp.path().join(format!("t{trial}"));
        copy_dir(&template, &root);
        let mut child = spawn(&root);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(l) => {
                    if l.unwrap().ends_with("go") {
                        break;
                    }
                }
                None => panic!("trial {trial}: the child never started compacting"),
            }
        }
        // Over the whole compaction and a little past it; every other trial in its last
        // part, where the index is built and switched (copying takes most of the time).
        let us = span.as_micros() as u64;
        let wait = if trial % 2 == 0 {
            rng.below(us * 11 / 10 + 1)
        } else {
            us * 7 / 10 + rng.below(us * 4 / 10 + 1)
        };
        std::thread::sleep(Duration::from_micros(wait));
        let _ = child.kill(); // SIGKILL; it may have finished already
        child.wait().unwrap();
        let s = Store::open_existing(&root, USER, opts(&clock))
            .unwrap_or_else(|e| panic!("trial {trial}: the store does not open: {e}"));
        let rep = s.open_report().clone();
        if rep.finished_switch {
            switched += 1;
        }
        if !rep.removed.is_empty() {
            removed += 1;
        }
        assert_eq!(
            s.check(true).unwrap(),
            Vec::<backup_server::store::IndexFault>::new(),
            "trial {trial}"
        );
        assert_eq!(restorable(s.catalog(), &WINDOW), want, "trial {trial}");
        assert_eq!(s.dir().data_files().unwrap().len(), 1, "trial {trial}");
        if s.catalog().data_file_name() == before_file {
            old_kept += 1;
        } else {
            new_kept += 1;
        }
        // A later compaction finishes the job.
        let (s, _) = compact_store(s, &copts(NOW, 0.0, 0)).unwrap();
        assert_eq!(restorable(s.catalog(), &WINDOW), want, "trial {trial}");
        assert_eq!(s.dir().data_files().unwrap().len(), 1);
    }
    eprintln!(
        "{TRIALS} kill -9 trials in {:.1} s (an undisturbed compaction took {} ms as a child): \
         {old_kept} left the old file, {new_kept} the compacted one; {switched} opens finished \
         a switch, {removed} removed leftovers",
        t.elapsed().as_secs_f64(),
        span.as_millis()
    );
}
