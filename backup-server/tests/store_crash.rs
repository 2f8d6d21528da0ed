//! kill -9 trials: a child process (this test binary, re-run with an environment variable)
//! appends runs in a loop and logs each committed run; the parent kills it at random
//! moments, reopens the store, and checks that everything committed is there and readable
//! with the right SHA-1, and that nothing half-written is visible.

mod store_common;

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_server::store::{MessageInfo, RunEnd, Store, StoreError, StoreOptions};
use formats::archive::{ScanEvent, Scanner, Tail, UserFileKind};
use formats::Guid;
use store_common::*;

const CHILD_ENV: &str = "MAILBACKUP_STORE_CRASH_CHILD";
const USER: &str = "crash";
const TRIALS: u32 = 24;

/// A small xorshift generator: no dependency needed for test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn child_opts() -> StoreOptions {
    StoreOptions {
        chunk_cap: 64 * 1024,
        verify_in_memory: 100_000,
        ..StoreOptions::default()
    }
}

/// The child: appends runs forever (until killed). Not a test when the variable is unset.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = Path::new(&root);
    let mut store = loop {
        match Store::open(root, USER, child_opts()) {
            Ok(s) => break s,
            // The killed predecessor's lock goes with its process; wait for the kernel.
            Err(StoreError::Locked { .. }) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("{e}"),
        }
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("committed.log"))
        .unwrap();
    let mut rng = Rng(u64::from(std::process::id()) << 20 | 1);
    let mut seed = u64::from(std::process::id()) << 32;
    for n in 0u32.. {
        let mut run = store.begin_run().unwrap();
        let mut guids = Vec::new();
        let mut recs = Vec::new();
        for i in 0..1 + rng.below(40) {
            seed += 1;
            let len = match rng.below(20) {
                0 => 150_000 + rng.below(100_000) as usize,
                _ => 200 + rng.below(20_000) as usize,
            };
            let m = message(seed, len);
            let g = guid(&m);
            run.add_message(g, m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
            recs.push(Rec::new(i as u32 + 1, &m));
            guids.push(g);
        }
        let folder = format!("u-{}", n % 3);
        run.add_folder_snapshot(
            Snap::new(&folder, &format!("user.crash.f{}", n % 3), 1, &recs, 0).as_snapshot(),
        )
        .unwrap();
        if n % 4 == 0 {
            let seen = vec![b's'; rng.below(5000) as usize];
            run.add_user_file(UserFileKind::Seen, None, seen.len() as u64, &seen[..])
                .unwrap();
        }
        let s = run.commit(RunEnd::Complete).unwrap();
        let line: Vec<String> = guids.iter().map(|g| g.to_string()).collect();
        writeln!(log, "{} {}", s.run, line.join(" ")).unwrap();
        log.sync_data().unwrap();
    }
}

/// Checks the reopened store. Only what earlier trials did not check is read again:
/// messages not in `checked`, chunks from `scanned_to` on (a kill can only leave bytes
/// after the committed end, which the open must cut; the final call checks everything).
fn check_store(
    root: &Path,
    checked: &mut HashSet<Guid>,
    scanned_to: &mut u64,
) -> (u64, usize, usize) {
    let store = Store::open(root, USER, child_opts()).unwrap();
    let cut = store.open_report().cut_bytes;
    assert_eq!(store.check(true).unwrap(), Vec::<String>::new());
    // Every run the child logged as committed is there, every message reads back whole.
    let log = std::fs::read_to_string(root.join("committed.log")).unwrap_or_default();
    let mut logged = 0;
    for line in log.lines() {
        let mut parts = line.split(' ');
        let _run = parts.next();
        for g in parts {
            let g: Guid = g.parse().unwrap();
            assert!(
                store.catalog().has_message(&g).unwrap(),
                "committed {g} lost"
            );
            logged += 1;
        }
    }
    // Every message the index holds (logged or committed just before the kill) has the
    // right SHA-1.
    let conn = rusqlite::Connection::open(store.dir().index_path()).unwrap();
    let guids: Vec<Vec<u8>> = conn
        .prepare("SELECT guid FROM messages")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for g in &guids {
        let g = Guid(g.as_slice().try_into().unwrap());
        if !checked.insert(g) {
            continue;
        }
        let mut r = store.catalog().open_message(&g).unwrap().unwrap();
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(Guid::of(&data), g);
    }
    // The data file holds exactly the committed chunks, nothing half-written.
    let from = *scanned_to as i64;
    let (chunks, entries): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM chunks WHERE offset >= ?1),
                    (SELECT count(*) FROM entries WHERE chunk >= ?1)",
            [from],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut f = std::fs::File::open(store.catalog().data_path()).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(*scanned_to)).unwrap();
    let mut sc = Scanner::starting_at(f, *scanned_to);
    let (mut c, mut e) = (0, 0);
    loop {
        match sc.next_event().unwrap() {
            ScanEvent::ChunkEnd(_) => c += 1,
            ScanEvent::Entry(_) => e += 1,
            ScanEvent::End(end) => {
                assert_eq!(end.tail, Tail::Clean);
                assert_eq!(end.valid_end, store.committed_len());
                break;
            }
            ScanEvent::ChunkStart { .. } => {}
        }
    }
    assert_eq!((c, e), (chunks, entries));
    *scanned_to = store.committed_len();
    (cut, logged, guids.len())
}

#[test]
fn kill_9_at_random_moments_loses_nothing_committed() {
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut cuts = 0;
    let mut last = (0, 0);
    let mut checked = HashSet::new();
    let mut scanned_to = 0;
    for trial in 0..TRIALS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            for l in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
                err.push_str(&l.unwrap());
                err.push('\n');
            }
            panic!("trial {trial}: the child ended by itself ({status}): {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (cut, logged, held) = check_store(root.path(), &mut checked, &mut scanned_to);
        if cut > 0 {
            cuts += 1;
        }
        assert!(held >= logged);
        assert!(logged >= last.0, "the log shrank");
        last = (logged, held);
        assert!(started.elapsed() < Duration::from_secs(240), "too slow");
    }
    // Finally every message once more, from scratch.
    check_store(root.path(), &mut HashSet::new(), &mut 0);
    eprintln!(
        "{TRIALS} kill -9 trials in {:.1} s: {cuts} left a torn tail to cut; {} messages committed ({} logged)",
        started.elapsed().as_secs_f64(),
        last.1,
        last.0
    );
    // Most kills land mid-run (the child spends its time appending).
    assert!(cuts >= TRIALS / 4, "only {cuts} trials cut a tail");
    assert!(last.0 > 0, "no run ever committed");
}
