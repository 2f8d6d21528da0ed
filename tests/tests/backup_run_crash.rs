//! Kill -9 of `backup-server run` at random moments, against a real Cyrus and backupd.
//!
//! A spool of bulk.py users (volume) and populate.py users (the folders backup_changes.py
//! changes). The length of a first run is measured, then each trial: a fresh store root
//! and state db, the binary started, SIGKILLed after a seeded random delay spread over
//! that length; what every store committed is read back (the point-in-time view at the
//! kill); the next run must exit 0 with every user done; then every store passes the deep
//! check, still shows exactly what it showed at the kill, holds every message it held, and
//! every stored message reads back with SHA-1 == GUID; the state db never says a user was
//! backed up later than its store's last complete run. Then a baseline store is copied for
//! each of the second-run trials, after backup_changes.py and new bulk users: the kill
//! lands in a run that has changes to back up. However fast or slow the machine: a kill that
//! came after the run had ended is tried again sooner, and if no kill landed between two
//! users' commits, more trials kill as soon as a first store has committed.
//!
//! Sizes through CRASH_BULK_USERS / CRASH_MESSAGES / CRASH_TRIALS / CRASH_SECOND_TRIALS /
//! CRASH_SEED.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_server::state::StateDb;
use backup_server::store::{MessageState, Store, StoreOptions, StoreReader};
use formats::archive::{EntryMeta, ScanEvent, Scanner, Tail};
use formats::{Guid, Timestamp};
use testkit::{wait, Rng};
use tests::rig::{
    self, backup_changes, backup_server_bin, counts, now, run_command as command, text, Backupd,
};
use tests::CyrusInstance;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One record as the catalog shows it: folder unique id, UID, GUID, state, flags.
type Rec = (String, u32, Guid, &'static str, Vec<String>);

/// What one store shows at a time: folders (unique id -> name), every UID's last state,
/// the GUIDs it holds bytes of, and its complete runs.
#[derive(Debug, Default, PartialEq)]
struct Shown {
    folders: BTreeMap<String, String>,
    records: BTreeSet<Rec>,
    stored: BTreeSet<Guid>,
    complete_runs: usize,
}

fn state_name(s: MessageState) -> &'static str {
    match s {
        MessageState::Visible => "visible",
        MessageState::Expunged => "expunged",
        MessageState::Gone => "gone",
    }
}

/// Every GUID the store's `messages` table holds (read with SQLite directly: the catalog
/// has no "all messages" query, and a message stored without a record must count too).
fn stored_guids(index: &Path) -> BTreeSet<Guid> {
    let db = rusqlite::Connection::open_with_flags(
        index,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let mut st = db.prepare("SELECT guid FROM messages").unwrap();
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|g| Guid(g.unwrap().try_into().unwrap()))
        .collect();
    rows
}

/// What `user`'s store shows at `at` (None: now); None when it has no store yet.
fn shown(root: &Path, user: &str, at: Option<Timestamp>) -> Option<Shown> {
    let r = match StoreReader::open(root, user) {
        Ok(r) => r,
        Err(backup_server::store::StoreError::NoStore { .. }) => return None,
        Err(e) => panic!("{user}: reading the store: {e}"),
    };
    let c = r.catalog();
    let mut s = Shown {
        stored: stored_guids(c.index_path()),
        complete_runs: c
            .runs()
            .unwrap()
            .iter()
            .filter(|r| r.ended.is_some())
            .count(),
        ..Shown::default()
    };
    for f in c.folders_at(at).unwrap() {
        c.messages_at(&f.unique_id, at, true, |m| {
            s.records.insert((
                f.unique_id.clone(),
                m.uid,
                m.guid,
                state_name(m.state),
                m.flags,
            ));
            Ok(())
        })
        .unwrap();
        s.folders.insert(f.unique_id, f.name);
    }
    Some(s)
}

/// Reads every stored message back and checks its SHA-1: one pass over the data file
/// (reading each message through the catalog would inflate its chunk up to it, quadratic in
/// a chunk's entries), then every GUID the index holds must have been met at the place the
/// index says. Returns how many messages and their bytes.
fn read_back(root: &Path, user: &str) -> (u64, u64) {
    let r = StoreReader::open(root, user).unwrap();
    let c = r.catalog();
    let committed = c.committed_len().unwrap();
    let file = std::fs::File::open(c.data_path()).unwrap();
    let mut scan = Scanner::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut met: BTreeMap<Guid, (u64, u64)> = BTreeMap::new();
    let mut bytes = 0;
    loop {
        match scan.next_event().unwrap() {
            ScanEvent::Entry(mut e) => {
                if let EntryMeta::Message(m) = &e.header.meta {
                    let (guid, size, at) = (
                        m.guid,
                        e.header.size,
                        (e.location.chunk_offset, e.location.header_offset),
                    );
                    let got = e.sha1().unwrap();
                    assert_eq!(got, guid, "{user}: message at {at:?} reads back");
                    bytes += size;
                    met.insert(guid, at);
                }
            }
            ScanEvent::End(end) => {
                assert_eq!(
                    (end.valid_end, end.tail),
                    (committed, Tail::Clean),
                    "{user}: the data file ends at the committed length"
                );
                break;
            }
            ScanEvent::ChunkStart { .. } | ScanEvent::ChunkEnd(_) => {}
        }
    }
    let stored = stored_guids(c.index_path());
    for g in &stored {
        let m = c.message(g).unwrap().unwrap();
        assert_eq!(
            met.get(g),
            Some(&(m.entry.chunk_offset, m.entry.header_offset)),
            "{user}: message {} where the index says",
            hex::encode(g.0)
        );
    }
    (stored.len() as u64, bytes)
}

/// One configuration: its own store root and state db under `dir`.
fn write_config(dir: &Path, addr: std::net::SocketAddr, secret: &str) -> PathBuf {
    rig::write_config(dir, addr, secret, 3, 2)
}

fn cp_r(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Where one kill landed, for the report.
#[derive(Debug)]
struct Landed {
    delay_ms: u64,
    /// Stores with a complete run (beyond the baseline's) at the kill, of all users.
    committed: usize,
    users: usize,
    /// Stores whose data file had bytes past the committed length (a run mid-write).
    torn: usize,
    /// The process had already exited when the kill came.
    missed: bool,
}

struct Setup {
    bin: PathBuf,
    addr: std::net::SocketAddr,
    secret: String,
}

/// Runs to completion; asserts exit 0 with every user done; returns the time taken.
fn run_whole(s: &Setup, config: &Path, users: usize, what: &str) -> Duration {
    let t = Instant::now();
    let o = command(&s.bin, config).output().unwrap();
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o));
    assert_eq!(counts(&o), (users as u64, 0, 0, 0), "{what}: {}", text(&o));
    took
}

/// When a trial's kill comes.
#[derive(Debug, Clone, Copy)]
enum When {
    /// This long after the start (the moment drawn at random: what the trial is about).
    After(Duration),
    /// As soon as a store is seen to have committed this run.
    FirstCommit,
}

/// Complete runs in `user`'s store (0 while it has none, or cannot be read yet).
fn complete_runs(root: &Path, user: &str) -> usize {
    StoreReader::open(root, user)
        .ok()
        .and_then(|r| r.catalog().runs().ok())
        .map_or(0, |runs| runs.iter().filter(|r| r.ended.is_some()).count())
}

/// One trial in `dir` (its config written, maybe a store already there): start, kill
/// (`when`), record, recover, check. `base_runs` is each store's complete runs before.
fn trial(
    s: &Setup,
    dir: &Path,
    users: &BTreeSet<String>,
    base_runs: &BTreeMap<String, usize>,
    when: When,
    label: &str,
) -> Landed {
    let config = dir.join("backup-server.toml");
    let root = dir.join("store");
    let state = dir.join("state/state.sqlite3");
    let started = Instant::now();
    let mut child = command(&s.bin, &config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match when {
        When::After(delay) => std::thread::sleep(delay),
        When::FirstCommit => wait::until("a store to commit, or the run to end", || {
            child.try_wait().unwrap().is_some()
                || users
                    .iter()
                    .any(|u| complete_runs(&root, u) > base_runs.get(u).copied().unwrap_or(0))
        }),
    }
    let delay = started.elapsed();
    let missed = child.try_wait().unwrap().is_some();
    child.kill().ok(); // SIGKILL
    child.wait().unwrap();
    let t_kill = now();

    // What each store committed, and what the state db says.
    let before: BTreeMap<&String, Option<Shown>> =
        users.iter().map(|u| (u, shown(&root, u, None))).collect();
    let committed = before
        .iter()
        .filter(|(u, b)| {
            b.as_ref()
                .is_some_and(|b| b.complete_runs > base_runs.get(**u).copied().unwrap_or(0))
        })
        .count();
    // Stores caught mid-write: bytes past the committed length (a torn tail the next open
    // cuts).
    let torn = users
        .iter()
        .filter(|u| before[u].is_some())
        .filter(|u| {
            let r = StoreReader::open(&root, u).unwrap();
            let c = r.catalog();
            std::fs::metadata(c.data_path()).unwrap().len() > c.committed_len().unwrap()
        })
        .count();
    check_state_db(&state, &root, users, &format!("{label}: after the kill"));

    // The next run completes.
    let took = run_whole(
        s,
        &config,
        users.len(),
        &format!("{label}: the run after the kill"),
    );

    let (mut t_check, mut t_shown, mut t_read) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for u in users {
        let t = Instant::now();
        let store = Store::open_existing(&root, u, StoreOptions::default())
            .unwrap_or_else(|e| panic!("{label}: {u}: {e}"));
        let problems = store.check(true).unwrap();
        assert!(problems.is_empty(), "{label}: {u}: {problems:#?}");
        drop(store);
        t_check += t.elapsed();
        let t = Instant::now();
        if let Some(b) = &before[u] {
            let a = shown(&root, u, Some(t_kill)).unwrap();
            assert_eq!(
                (&a.folders, &a.records),
                (&b.folders, &b.records),
                "{label}: {u}: the store at the kill's time shows what it showed then"
            );
            let now = shown(&root, u, None).unwrap();
            let lost: Vec<_> = b.stored.difference(&now.stored).collect();
            assert!(lost.is_empty(), "{label}: {u}: messages lost: {lost:?}");
            // A store already complete for its listing gets no new run (nothing to do is
            // nothing written); every store is complete now.
            assert!(now.complete_runs >= b.complete_runs.max(1), "{label}: {u}");
        }
        t_shown += t.elapsed();
        let t = Instant::now();
        read_back(&root, u);
        t_read += t.elapsed();
    }

    check_state_db(&state, &root, users, &format!("{label}: after recovery"));
    eprintln!(
        "{label}: killed after {} ms{}: {committed} of {} stores had committed this run, \
         {torn} caught mid-write; \
         recovery run {:.2} s; checks: store {:.2} s, views {:.2} s, read back {:.2} s",
        delay.as_millis(),
        if missed {
            " (the run had already exited)"
        } else {
            ""
        },
        users.len(),
        took.as_secs_f64(),
        t_check.as_secs_f64(),
        t_shown.as_secs_f64(),
        t_read.as_secs_f64(),
    );
    Landed {
        delay_ms: delay.as_millis() as u64,
        committed,
        torn,
        users: users.len(),
        missed,
    }
}

/// A user's last successful backup (the state db) never comes after its store's last
/// complete run started, unless the backup found nothing to do (its store already held the
/// listing, so no run was written): then the row holds the unchanged key that says so. The
/// state db is written only after the store committed.
fn check_state_db(state: &Path, root: &Path, users: &BTreeSet<String>, label: &str) {
    if !state.exists() {
        return;
    }
    let db = StateDb::open(state).unwrap();
    for row in db.users().unwrap() {
        assert!(users.contains(&row.name), "{label}: {row:?}");
        let Some(success) = row.last_success else {
            continue;
        };
        let r = StoreReader::open(root, &row.name)
            .unwrap_or_else(|e| panic!("{label}: {} backed up, says the state db: {e}", row.name));
        let last = r.catalog().last_complete_run().unwrap();
        let started = last.and_then(|l| l.started).map(|t| t.secs);
        assert!(
            started.is_some_and(|s| s >= success) || (started.is_some() && row.quiet_key.is_some()),
            "{label}: {}: the state db says backed up at {success}, the store's last \
             complete run started at {started:?}, unchanged key {:?}",
            row.name,
            row.quiet_key
        );
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let t_test = Instant::now();
    let seed = env("CRASH_SEED", 20261123);
    let trials = env("CRASH_TRIALS", 22) as usize;
    let second_trials = env("CRASH_SECOND_TRIALS", 6) as usize;
    let bulk_users = env("CRASH_BULK_USERS", 10).to_string();
    let messages = env("CRASH_MESSAGES", 30).to_string();
    let mut rng = Rng::new(seed);

    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus
        .bulk(&[
            "--users",
            &bulk_users,
            "--folders",
            "4",
            "--messages",
            &messages,
        ])
        .expect("bulk.py");
    cyrus
        .populate_with(&["--users", "3", "--messages", "10", "--large", "1"])
        .expect("populate.py");
    let backupd = Backupd::start(&cyrus, "crash-trials-secret-0123456789");
    let s = Setup {
        bin: backup_server_bin(),
        addr: backupd.addr(),
        secret: backupd.secret_text.clone(),
    };
    let work = tempfile::tempdir().unwrap();
    eprintln!("spool ready after {:.1} s", t_test.elapsed().as_secs_f64());

    // The baseline: a whole first run, timed (it is also the store the second-run trials
    // start from).
    let base = work.path().join("base");
    let config = write_config(&base, s.addr, &s.secret);
    let t0 = Instant::now();
    let o = command(&s.bin, &config).output().unwrap();
    let first_len = t0.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let db = StateDb::open(&base.join("state/state.sqlite3")).unwrap();
    let users: BTreeSet<String> = db.users().unwrap().into_iter().map(|u| u.name).collect();
    drop(db);
    assert_eq!(counts(&o).0 as usize, users.len(), "{}", text(&o));
    // Once more in a scratch store: the first run met cold caches; the shorter of the two
    // is the length the kills are spread over.
    let scratch = work.path().join("scratch");
    let scratch_config = write_config(&scratch, s.addr, &s.secret);
    let first_len = first_len.min(run_whole(&s, &scratch_config, users.len(), "scratch"));
    std::fs::remove_dir_all(&scratch).unwrap();
    eprintln!(
        "first run: {} users in {:.2} s",
        users.len(),
        first_len.as_secs_f64()
    );

    // First-run trials: fresh stores, kills spread over the first run's length. A kill that
    // came after the run had ended (the machine was quicker then than when the run was
    // timed) is tried again, sooner: every trial kills a live run, at any speed.
    let none = BTreeMap::new();
    let mut landed = Vec::new();
    for i in 0..trials {
        // Spread evenly (stratified) so every part of the run is hit, jittered by the RNG.
        let f = (i as f64 + rng.unit()) / trials as f64;
        let mut delay = first_len.mul_f64(f * 0.9);
        loop {
            let dir = work.path().join(format!("first-{i}"));
            write_config(&dir, s.addr, &s.secret);
            let l = trial(
                &s,
                &dir,
                &users,
                &none,
                When::After(delay),
                &format!("first-run trial {i}"),
            );
            std::fs::remove_dir_all(&dir).unwrap();
            let missed = l.missed;
            landed.push(l);
            if !missed {
                break;
            }
            delay /= 2;
        }
    }

    // Changes: backup_changes.py for every populate.py user, and new bulk.py users.
    let populate_users: Vec<&String> = users.iter().filter(|u| u.starts_with('u')).collect();
    assert!(!populate_users.is_empty(), "{users:?}");
    for u in &populate_users {
        backup_changes(&cyrus, u);
    }
    eprintln!("changes made after {:.1} s", t_test.elapsed().as_secs_f64());
    cyrus
        .bulk(&[
            "--users",
            "4",
            "--folders",
            "3",
            "--messages",
            &messages,
            "--prefix",
            "c",
            "--seed",
            "2",
        ])
        .expect("bulk.py, new users");
    eprintln!("new users after {:.1} s", t_test.elapsed().as_secs_f64());
    // The baseline's state db learns the new users (a run refreshes only once a day).
    let st = Command::new(&s.bin)
        .arg("--config")
        .arg(&config)
        .args(["users", "refresh"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", text(&st));
    let db = StateDb::open(&base.join("state/state.sqlite3")).unwrap();
    let users2: BTreeSet<String> = db.users().unwrap().into_iter().map(|u| u.name).collect();
    drop(db);
    assert_eq!(users2.len(), users.len() + 4, "{users2:?}");
    // A whole second run, timed, in a copy.
    let timing = work.path().join("second-timing");
    cp_r(&base, &timing);
    let second_len = run_whole(
        &s,
        &timing.join("backup-server.toml"),
        users2.len(),
        "second",
    );
    std::fs::remove_dir_all(&timing).unwrap();
    eprintln!(
        "second run (changes, {} new users): {:.2} s",
        4,
        second_len.as_secs_f64()
    );
    let base_runs: BTreeMap<String, usize> = users
        .iter()
        .map(|u| {
            (
                u.clone(),
                shown(&base.join("store"), u, None).unwrap().complete_runs,
            )
        })
        .collect();

    let mut landed2 = Vec::new();
    for i in 0..second_trials {
        let f = (i as f64 + rng.unit()) / second_trials as f64;
        let mut delay = second_len.mul_f64(f * 0.9);
        loop {
            let dir = work.path().join(format!("second-{i}"));
            cp_r(&base, &dir);
            let l = trial(
                &s,
                &dir,
                &users2,
                &base_runs,
                When::After(delay),
                &format!("second-run trial {i}"),
            );
            std::fs::remove_dir_all(&dir).unwrap();
            let missed = l.missed;
            landed2.push(l);
            if !missed {
                break;
            }
            delay /= 2;
        }
    }

    // A kill between two users' commits: if no random moment gave one, kills timed by the
    // first commit seen (any machine leaves time between the first user's commit and the
    // last's for a look at the stores).
    let is_mid = |l: &Landed| !l.missed && l.committed > 0 && l.committed < l.users;
    let mut landed3 = Vec::new();
    while !landed.iter().chain(&landed2).chain(&landed3).any(is_mid) {
        assert!(
            landed3.len() < 10,
            "no kill landed between two users' commits, even timed by the first commit: \
             {landed3:?}"
        );
        let dir = work.path().join(format!("mid-{}", landed3.len()));
        write_config(&dir, s.addr, &s.secret);
        landed3.push(trial(
            &s,
            &dir,
            &users,
            &none,
            When::FirstCommit,
            &format!("first-commit trial {}", landed3.len()),
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    let all: Vec<&Landed> = landed.iter().chain(&landed2).chain(&landed3).collect();
    let killed = all.iter().filter(|l| !l.missed).count();
    let mid = all.iter().filter(|l| is_mid(l)).count();
    let before_any = all.iter().filter(|l| !l.missed && l.committed == 0).count();
    let torn = all.iter().filter(|l| l.torn > 0).count();
    let all_in = all
        .iter()
        .filter(|l| !l.missed && l.committed == l.users)
        .count();
    let (lo, hi) = (
        all.iter().map(|l| l.delay_ms).min().unwrap_or(0),
        all.iter().map(|l| l.delay_ms).max().unwrap_or(0),
    );
    eprintln!(
        "{} trials (kills {lo}..{hi} ms after the start), {killed} killed a live run: \
         {before_any} before any store committed, {mid} with some stores committed, \
         {all_in} after every store committed; {torn} caught a store mid-write; in {:.1} s",
        all.len(),
        t_test.elapsed().as_secs_f64()
    );
    assert!(
        killed >= trials + second_trials,
        "only {killed} kills hit a live run"
    );
    assert!(mid >= 1, "no kill landed between two users' commits");
    backupd.shutdown();
}
