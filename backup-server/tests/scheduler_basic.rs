//! The scheduler with a fake per-user backup: no network, no store.

use backup_server::backup::{self, Missing, NoProgress, QuietKey, RunRequest, Verdict};
use backup_server::backup::{BackupError, UserOutcome};
use backup_server::config::Config;
use backup_server::scheduler::{self, Backend, RaidSetQueue, ScheduledUser, SchedulerOptions};
use backup_server::state::StateDb;
use formats::protocol::UserEntry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::config::ServerConfig;
use testkit::wait;

/// Records, per RAID set, how many users are being backed up at once, and every call.
#[derive(Default)]
struct Recorder {
    in_flight: Mutex<HashMap<String, usize>>,
    /// Times a user of a RAID set started while another of the same set was under way.
    overlaps: AtomicU64,
    /// Most users under way at once over all sets.
    max_total: AtomicUsize,
    /// Most users of one set under way at once.
    max_per_set: AtomicUsize,
    total: AtomicUsize,
    calls: Mutex<Vec<String>>,
    /// user → what to return instead of success.
    fail: HashMap<String, &'static str>,
    /// How long each backup takes (work, to make batches overlap; no assertion depends on it).
    sleep: Duration,
    /// Stop the run after this many calls.
    stop_after: Option<(usize, &'static AtomicBool)>,
    /// Called inside every backup, with the user counted as under way and its call number
    /// (1-based): where a test holds a backup until it sees what it waits for.
    gate: Option<Gate>,
}

type Gate = Box<dyn Fn(&Recorder, &ScheduledUser, usize) + Sync>;

impl Backend for Recorder {
    type Worker = usize;
    type Outcome = Result<UserOutcome, BackupError>;
    fn new_worker(&self, index: usize) -> usize {
        index
    }
    fn backup(&self, _w: &mut usize, u: &ScheduledUser) -> Result<UserOutcome, BackupError> {
        {
            let mut m = self.in_flight.lock().unwrap();
            let n = m.entry(u.raidset.clone()).or_default();
            if *n > 0 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            *n += 1;
            self.max_per_set.fetch_max(*n, Ordering::SeqCst);
        }
        let t = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_total.fetch_max(t, Ordering::SeqCst);
        let calls = {
            let mut c = self.calls.lock().unwrap();
            c.push(u.name.clone());
            c.len()
        };
        if let Some(gate) = &self.gate {
            gate(self, u, calls);
        }
        std::thread::sleep(self.sleep);
        if let Some((n, flag)) = self.stop_after {
            if calls >= n {
                flag.store(true, Ordering::SeqCst);
            }
        }
        self.total.fetch_sub(1, Ordering::SeqCst);
        *self.in_flight.lock().unwrap().get_mut(&u.raidset).unwrap() -= 1;
        match self.fail.get(&u.name).copied() {
            None => Ok(UserOutcome {
                messages_fetched: 3,
                bytes_fetched: 3000,
                messages_stored: 2,
                bytes_stored: 2000,
                ..Default::default()
            }),
            Some("locked") => Err(BackupError::Locked {
                user: u.name.clone(),
                holder: "pid 4242".into(),
            }),
            Some("conn") => Err(BackupError::Connection {
                user: u.name.clone(),
                server: "127.0.0.1:1".into(),
                source: backup_server::client::ClientError::Broken {
                    addr: "127.0.0.1:1".into(),
                },
            }),
            Some("incomplete") => Ok(UserOutcome {
                incomplete: vec![missing("INBOX uid 7: GUID mismatch")],
                ..Default::default()
            }),
            Some(_) => Err(BackupError::UnknownServer {
                user: u.name.clone(),
                server: "boom".into(),
            }),
        }
    }
}

fn queues(sets: usize, users: usize) -> Vec<RaidSetQueue> {
    (0..sets)
        .map(|s| RaidSetQueue {
            name: format!("set{s}"),
            users: (0..users)
                .map(|u| ScheduledUser {
                    name: format!("s{s}u{u:03}"),
                    server: "mail1".into(),
                    raidset: format!("set{s}"),
                    quiet_key: None,
                })
                .collect(),
        })
        .collect()
}

#[test]
fn batches_per_raidset_bounds_each_set_and_is_used() {
    // The first backup of each set waits until a second batch of its set is under way: more
    // than one batch per set is used, however the threads happen to be scheduled.
    let first_of_set = Mutex::new(HashSet::new());
    let rec = Recorder {
        sleep: Duration::from_millis(2),
        gate: Some(Box::new(move |rec, u, _| {
            if first_of_set.lock().unwrap().insert(u.raidset.clone()) {
                wait::until("a second batch of the set under way", || {
                    rec.in_flight.lock().unwrap()[&u.raidset] >= 2
                });
            }
        })),
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let report = scheduler::run(
        &rec,
        queues(2, 90),
        SchedulerOptions {
            workers: 8,
            batch_size: 5,
            batches_per_raidset: 3,
        },
        &stop,
        |d| -> Result<(), ()> {
            assert!(d.result.is_ok());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(report.users_attempted, 180);
    assert_eq!(report.batches, 36);
    let per_set = rec.max_per_set.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&per_set),
        "at most 3 batches of a set at once, and more than 1: {per_set}"
    );
    assert!(rec.max_total.load(Ordering::SeqCst) <= 6);
    let mut calls = rec.calls.lock().unwrap().clone();
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), 180, "every user exactly once");
}

#[test]
fn never_two_batches_of_one_raidset_at_once() {
    // The first backup of all waits until a user of another set is under way too: the sets
    // run side by side, however the threads happen to be scheduled.
    let rec = Recorder {
        sleep: Duration::from_millis(1),
        gate: Some(Box::new(|rec, _, call| {
            if call == 1 {
                wait::until("a second set under way", || {
                    rec.total.load(Ordering::SeqCst) >= 2
                });
            }
        })),
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let mut seen = 0;
    let report = scheduler::run(
        &rec,
        queues(4, 60),
        SchedulerOptions {
            workers: 8,
            batch_size: 5,
            batches_per_raidset: 1,
        },
        &stop,
        |d| -> Result<(), ()> {
            assert!(d.result.is_ok());
            seen += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen, 240);
    assert_eq!(report.users_attempted, 240);
    assert_eq!(report.users_not_reached, 0);
    assert_eq!(report.batches, 48);
    assert!(!report.stopped);
    assert_eq!(
        rec.overlaps.load(Ordering::SeqCst),
        0,
        "two batches of one RAID set at once"
    );
    // The sets did run side by side (4 sets, 8 workers): at most one per set.
    let max = rec.max_total.load(Ordering::SeqCst);
    assert!((2..=4).contains(&max), "max users at once {max}");
    // Every user exactly once.
    let mut calls = rec.calls.lock().unwrap().clone();
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), 240);
}

#[test]
fn each_raidset_is_worked_in_queue_order() {
    let rec = Recorder::default();
    let stop = AtomicBool::new(false);
    let q = queues(3, 23);
    scheduler::run(
        &rec,
        q.clone(),
        SchedulerOptions {
            workers: 4,
            batch_size: 4,
            batches_per_raidset: 1,
        },
        &stop,
        |_| -> Result<(), ()> { Ok(()) },
    )
    .unwrap();
    let calls = rec.calls.lock().unwrap().clone();
    for set in &q {
        let order: Vec<&String> = calls
            .iter()
            .filter(|c| set.users.iter().any(|u| &u.name == *c))
            .collect();
        let want: Vec<&String> = set.users.iter().map(|u| &u.name).collect();
        assert_eq!(order, want, "set {}", set.name);
    }
}

#[test]
fn a_failing_user_does_not_stop_the_others() {
    let fail: HashMap<String, &'static str> = [
        ("s0u001", "failed"),
        ("s0u002", "conn"),
        ("s1u010", "failed"),
        ("s1u011", "locked"),
    ]
    .into_iter()
    .map(|(u, k)| (u.to_string(), k))
    .collect();
    let rec = Recorder {
        fail,
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    scheduler::run(
        &rec,
        queues(2, 20),
        SchedulerOptions {
            workers: 3,
            batch_size: 7,
            batches_per_raidset: 1,
        },
        &stop,
        |d| -> Result<(), ()> {
            let r = match &d.result {
                Ok(_) => "ok".to_string(),
                Err(BackupError::Locked { .. }) => "locked".into(),
                Err(BackupError::Connection { .. }) => "conn".into(),
                Err(_) => "failed".into(),
            };
            results.insert(d.user.name.clone(), r);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(results.len(), 40);
    assert_eq!(results.values().filter(|r| *r == "ok").count(), 36);
    assert_eq!(results["s0u002"], "conn");
    assert_eq!(results["s1u011"], "locked");
    assert_eq!(
        results["s0u003"], "ok",
        "the user after a connection failure"
    );
}

#[test]
fn an_error_recording_a_result_stops_the_run() {
    // Backups after the third wait until the run has stopped: however soon the workers
    // get to them and however late the calling thread hears of the third, the error is
    // what ends the run, not the end of the queues.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let rec = Recorder {
        gate: Some(Box::new(move |_, _, call| {
            if call > 3 {
                wait::until("the run to stop", || stopped.load(Ordering::SeqCst));
            }
        })),
        ..Default::default()
    };
    let mut n = 0;
    let mut calls_at_error = 0;
    let r = scheduler::run(
        &rec,
        queues(2, 50),
        SchedulerOptions {
            workers: 2,
            batch_size: 5,
            batches_per_raidset: 1,
        },
        &stop,
        |_| {
            n += 1;
            if n == 3 {
                calls_at_error = rec.calls.lock().unwrap().len();
                Err("state db gone")
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(r.unwrap_err(), "state db gone");
    // No user starts after the error, beyond one per worker that had just checked the flag.
    let calls = rec.calls.lock().unwrap().len();
    assert!(
        calls <= calls_at_error + 2,
        "{calls} calls, {calls_at_error} at the error"
    );
    // Three, and one held at the gate per worker.
    assert!(calls <= 5, "{calls} calls");
}

// ---- through backup::run_with: config, state db, summary, exit status ----

fn setup(dir: &Path, users: &[(&str, &str)]) -> Config {
    let path = dir.join("backup-server.toml");
    ServerConfig::new("store")
        .state_db("state.sqlite3")
        .workers(3)
        .batch_size(2)
        .server("mail1", "127.0.0.1:1", "secret")
        .raidset("a", "mail1", &["default"])
        .raidset("b", "mail1", &["p2"])
        .write(&path)
        .unwrap();
    let config = Config::load(&path).unwrap();
    let mut db = StateDb::open(&config.state_db).unwrap();
    let entries: Vec<UserEntry> = users
        .iter()
        .map(|(u, p)| UserEntry {
            user: u.to_string(),
            partition: p.to_string(),
        })
        .collect();
    let raidset_of = |p: &str| config.raidset_of("mail1", p).map(|r| r.name.clone());
    // Refreshed just now: run_with will not try to reach the (fake) server.
    db.refresh_server(
        "mail1",
        "127.0.0.1:1",
        &entries,
        &raidset_of,
        backup::unix_now(),
    )
    .unwrap();
    config
}

#[test]
fn locked_users_are_skipped_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<(String, &str)> = (0..10)
        .map(|i| (format!("u{i}"), if i % 2 == 0 { "default" } else { "p2" }))
        .collect();
    let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), *p)).collect();
    let config = setup(dir.path(), &refs);
    let fail: HashMap<String, &'static str> =
        [("u3", "locked"), ("u4", "locked"), ("u5", "failed")]
            .into_iter()
            .map(|(u, k)| (u.to_string(), k))
            .collect();
    let rec = Recorder {
        fail,
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let s = backup::run_with(
        &config,
        &RunRequest::default(),
        &stop,
        &mut NoProgress,
        &rec,
    )
    .unwrap();
    assert_eq!(s.users_planned, 10);
    assert_eq!(s.users_done, 7);
    assert_eq!(s.users_skipped, 2);
    assert_eq!(s.users_failed, 1);
    assert_eq!(s.outcome.messages_stored, 14);
    assert_eq!(s.verdict(), Verdict::Incomplete);
    let text = s.to_string();
    assert!(text.contains("2 skipped (locked by another run)"), "{text}");
    assert!(
        text.contains("user u3: skipped, locked by another run (pid 4242)"),
        "{text}"
    );
    assert!(
        text.contains("user u5: server \"boom\" is not in the configuration"),
        "{text}"
    );

    let db = StateDb::open(&config.state_db).unwrap();
    let u3 = db.user("u3").unwrap().unwrap();
    assert_eq!(
        (u3.skips, u3.last_success, u3.last_attempt),
        (1, None, None)
    );
    let u5 = db.user("u5").unwrap().unwrap();
    assert_eq!(u5.last_success, None);
    assert_eq!(
        u5.last_error.as_deref(),
        Some("user u5: server \"boom\" is not in the configuration")
    );
    assert_eq!(u5.backups_failed, 1);
    let u0 = db.user("u0").unwrap().unwrap();
    assert!(u0.last_success.is_some());
    let (status, done, skipped): (String, i64, i64) = db
        .connection()
        .query_row(
            "SELECT status, users_done, users_skipped FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), done, skipped), ("incomplete", 7, 2));

    // The next run: the users that were not backed up come first.
    let rec2 = Recorder::default();
    let s2 = backup::run_with(
        &config,
        &RunRequest {
            raidset: Some("b".into()),
            ..Default::default()
        },
        &stop,
        &mut NoProgress,
        &rec2,
    )
    .unwrap();
    assert_eq!(s2.verdict(), Verdict::Done);
    assert_eq!(s2.users_done, 5);
    let calls = rec2.calls.lock().unwrap().clone();
    assert_eq!(
        &calls[..2],
        ["u3", "u5"],
        "never backed up first: {calls:?}"
    );
}

#[test]
fn oldest_backup_first_never_backed_up_first_of_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        &[
            ("d", "default"),
            ("c", "default"),
            ("b", "default"),
            ("a", "default"),
            ("e", "default"),
        ],
    );
    let mut db = StateDb::open(&config.state_db).unwrap();
    use backup_server::state::Attempt;
    let ok = Attempt::Done {
        messages_stored: 0,
        bytes_stored: 0,
    };
    db.record_attempt(1, "a", 3000, &ok).unwrap();
    db.record_attempt(1, "b", 1000, &ok).unwrap();
    db.record_attempt(1, "c", 2000, &ok).unwrap();
    // e failed after an old success: its last success is what counts.
    db.record_attempt(1, "e", 500, &ok).unwrap();
    db.record_attempt(
        2,
        "e",
        4000,
        &Attempt::Failed {
            message: "x".into(),
        },
    )
    .unwrap();
    let order: Vec<String> = db
        .users_to_back_up("a")
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(order, ["d", "e", "b", "c", "a"]);
    drop(db);
    let rec = Recorder::default();
    let mut config = config;
    config.workers = 1;
    let stop = AtomicBool::new(false);
    backup::run_with(
        &config,
        &RunRequest::default(),
        &stop,
        &mut NoProgress,
        &rec,
    )
    .unwrap();
    assert_eq!(*rec.calls.lock().unwrap(), ["d", "e", "b", "c", "a"]);
}

#[test]
fn only_named_users_and_unknown_names_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &[("x", "default"), ("y", "p2"), ("z", "p3")]);
    let stop = AtomicBool::new(false);
    let rec = Recorder::default();
    let req = RunRequest {
        users: vec!["y".into()],
        ..Default::default()
    };
    let s = backup::run_with(&config, &req, &stop, &mut NoProgress, &rec).unwrap();
    assert_eq!(
        (s.users_planned, s.users_done, s.verdict()),
        (1, 1, Verdict::Done)
    );
    assert_eq!(*rec.calls.lock().unwrap(), ["y"]);
    // z's partition is in no RAID set: asking for it is an error that says so.
    let req = RunRequest {
        users: vec!["z".into()],
        ..Default::default()
    };
    let e = backup::run_with(&config, &req, &stop, &mut NoProgress, &rec).unwrap_err();
    assert!(format!("{e:#}").contains("partition \"p3\""), "{e:#}");
    let req = RunRequest {
        raidset: Some("nope".into()),
        ..Default::default()
    };
    let e = backup::run_with(&config, &req, &stop, &mut NoProgress, &rec).unwrap_err();
    assert!(format!("{e:#}").contains("--raidset nope"), "{e:#}");
    assert!(
        matches!(e, backup_server::backup::RunError::Request { .. }),
        "{e}"
    );
}

static STOP: AtomicBool = AtomicBool::new(false);

#[test]
fn a_stop_finishes_the_current_user_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..40).map(|i| format!("u{i:02}")).collect();
    let refs: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), "default")).collect();
    let config = setup(dir.path(), &refs);
    let rec = Recorder {
        stop_after: Some((5, &STOP)),
        ..Default::default()
    };
    let s = backup::run_with(
        &config,
        &RunRequest::default(),
        &STOP,
        &mut NoProgress,
        &rec,
    )
    .unwrap();
    // One RAID set: one user at a time; the fifth call set the flag and was finished.
    assert_eq!(s.users_done, 5);
    assert!(s.interrupted);
    assert_eq!(s.users_not_reached, 35);
    assert_eq!(s.verdict(), Verdict::Incomplete);
    let db = StateDb::open(&config.state_db).unwrap();
    let status: String = db
        .connection()
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");
}

#[test]
fn exit_status_is_decided_by_the_summary() {
    use backup_server::backup::summary::RunSummary;
    let mut s = RunSummary {
        users_planned: 3,
        ..Default::default()
    };
    assert_eq!(s.verdict(), Verdict::Done);
    s.add("a", &Ok(UserOutcome::default()));
    assert_eq!(s.verdict(), Verdict::Done);
    s.add(
        "b",
        &Ok(UserOutcome {
            incomplete: vec![missing("INBOX uid 3: gone")],
            ..Default::default()
        }),
    );
    assert_eq!(s.verdict(), Verdict::Incomplete);
    let mut all_failed = RunSummary::default();
    all_failed.add(
        "c",
        &Err(BackupError::UnknownServer {
            user: "c".into(),
            server: "x".into(),
        }),
    );
    assert_eq!(all_failed.verdict(), Verdict::Failed);
    let mut unreachable = RunSummary {
        servers_unreachable: 1,
        ..Default::default()
    };
    unreachable.add("d", &Ok(UserOutcome::default()));
    assert_eq!(unreachable.verdict(), Verdict::Incomplete);
}

/// Hands out unchanged keys and records the keys it was given.
#[derive(Default)]
struct KeyBackend {
    /// user → (key it was scheduled with, on each call).
    seen: Mutex<BTreeMap<String, Vec<Option<String>>>>,
    /// users that come out incomplete.
    incomplete: Vec<&'static str>,
}

impl Backend for KeyBackend {
    type Worker = ();
    type Outcome = Result<UserOutcome, BackupError>;
    fn new_worker(&self, _: usize) {}
    fn backup(&self, _: &mut (), u: &ScheduledUser) -> Result<UserOutcome, BackupError> {
        self.seen
            .lock()
            .unwrap()
            .entry(u.name.clone())
            .or_default()
            .push(u.quiet_key.clone());
        if self.incomplete.contains(&u.name.as_str()) {
            return Ok(UserOutcome {
                incomplete: vec![missing("x")],
                ..Default::default()
            });
        }
        Ok(UserOutcome {
            quiet_key: Some(QuietKey::from_stored(format!("key-{}", u.name))),
            quiet: u.quiet_key.is_some(),
            ..Default::default()
        })
    }
}

#[test]
fn quiet_keys_go_to_the_state_db_and_back_to_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<(String, &str)> = (0..1200)
        .map(|i| {
            (
                format!("u{i:04}"),
                if i % 2 == 0 { "default" } else { "p2" },
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), *p)).collect();
    let config = setup(dir.path(), &refs);
    let stop = AtomicBool::new(false);
    let run = |b: &KeyBackend| {
        backup::run_with(&config, &RunRequest::default(), &stop, &mut NoProgress, b).unwrap()
    };
    let first = KeyBackend::default();
    assert_eq!(run(&first).users_done, 1200);
    assert!(first.seen.lock().unwrap().values().all(|k| k == &[None]));
    // Every row was written (the batches committed), keys included.
    let db = StateDb::open(&config.state_db).unwrap();
    for (u, _) in &users {
        let row = db.user(u).unwrap().unwrap();
        assert_eq!(row.quiet_key, Some(format!("key-{u}")), "{u}");
        assert!(row.last_success.is_some(), "{u}");
    }
    drop(db);
    // The next run is handed the keys; an incomplete backup clears its user's.
    let second = KeyBackend {
        incomplete: vec!["u0003"],
        ..Default::default()
    };
    let s = run(&second);
    assert_eq!((s.users_done, s.users_incomplete), (1199, 1));
    for (u, k) in second.seen.lock().unwrap().iter() {
        assert_eq!(k, &[Some(format!("key-{u}"))], "{u}");
    }
    let third = KeyBackend::default();
    run(&third);
    let seen = third.seen.lock().unwrap();
    assert_eq!(seen["u0003"], [None]);
    assert_eq!(seen["u0004"], [Some("key-u0004".to_string())]);
}

#[test]
fn a_long_backup_brings_idle_events_and_every_result_once() {
    // Each backup lasts until the calling thread has heard one more Idle event: long
    // backups, whatever the machine's speed.
    let idle_seen = Arc::new(AtomicUsize::new(0));
    let heard = Arc::clone(&idle_seen);
    let rec = Recorder {
        gate: Some(Box::new(move |_, _, call| {
            wait::until("an Idle event while a backup is under way", || {
                heard.load(Ordering::SeqCst) >= call
            });
        })),
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let (mut done, mut idle) = (0, 0);
    let report = scheduler::run_events(
        &rec,
        queues(1, 2),
        SchedulerOptions {
            workers: 2,
            batch_size: 2,
            batches_per_raidset: 1,
        },
        &stop,
        |e| -> Result<(), ()> {
            match e {
                scheduler::Event::Done(d) => {
                    assert!(d.result.is_ok());
                    done += 1;
                }
                scheduler::Event::Idle => {
                    idle += 1;
                    idle_seen.store(idle, Ordering::SeqCst);
                }
            }
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((done, report.users_attempted), (2, 2));
    // Two users one after another, each under way until an Idle event came.
    assert!(idle >= 2, "only {idle} idle events over two long backups");
}

/// What is missing, for a fake backend: one user file that could not be read.
fn missing(what: &str) -> Missing {
    Missing::UserFiles {
        reason: what.into(),
    }
}
