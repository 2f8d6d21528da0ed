//! The state db on both backends: every test body here runs against SQLite and against a
//! private PostgreSQL 15 (testkit::postgres, started per test), so that the one SQL text
//! behaves the same on both. Then what only a fleet needs: backup hosts, assignment, leases.

use backup_server::state::{
    Attempt, PostgresTarget, StateDb, StateLocation, LEASE_SECS, STATE_SCHEMA_VERSION,
};
use formats::protocol::UserEntry;
use testkit::postgres::PostgresInstance;

/// Opens the test's state db as backup host `host` (a new connection each call: two calls
/// are two hosts, or two runs of one).
type Open<'a> = &'a dyn Fn(&str) -> StateDb;

/// Runs `body` on a new SQLite state db, then on a new PostgreSQL one.
fn on_both(body: fn(Open<'_>)) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = StateLocation::Sqlite(dir.path().join("state.sqlite3"));
    body(&|host| StateDb::open_at(&sqlite, host).unwrap());
    let pg = PostgresInstance::start().unwrap();
    let postgres = location(&pg, None);
    body(&|host| StateDb::open_at(&postgres, host).unwrap_or_else(|e| panic!("{e}\n{}", pg.log())));
}

/// The private PostgreSQL as a state db location, with TLS verified by `ca_file` if given.
fn location(pg: &PostgresInstance, ca_file: Option<std::path::PathBuf>) -> StateLocation {
    StateLocation::Postgres(PostgresTarget {
        url: pg.url(),
        password_file: Some(pg.password_file()),
        ca_file,
    })
}

/// One test per backend for each body.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn sqlite_and_postgres() {
                super::on_both(super::$name);
            }
        })*
    };
}

both!(
    refresh_adds_moves_and_marks_vanished_users,
    attempts_count_and_only_success_moves_last_success,
    the_quiet_key_is_kept_by_success_and_cleared_by_anything_else,
    a_run_killed_before_it_closed_its_record_is_marked_interrupted,
    the_schema_version_is_written_and_a_reopen_keeps_the_data,
    refresh_gives_new_users_to_the_refreshing_host_and_assign_moves_them,
    a_lease_keeps_a_second_run_out_until_released_or_expired,
    a_dead_run_of_this_host_frees_its_leases_at_once,
    hosts_lists_users_last_run_and_state,
);

fn entries(list: &[(&str, &str)]) -> Vec<UserEntry> {
    list.iter()
        .map(|(u, p)| UserEntry {
            user: u.to_string(),
            partition: p.to_string(),
        })
        .collect()
}

fn sets(p: &str) -> Option<String> {
    match p {
        "default" => Some("a".into()),
        "p2" => Some("b".into()),
        _ => None,
    }
}

fn names(db: &StateDb, raidset: &str) -> Vec<String> {
    db.users_to_back_up(raidset)
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect()
}

fn done(n: u64) -> Attempt {
    Attempt::Done {
        messages_stored: n,
        bytes_stored: n * 10,
    }
}

fn refresh_adds_moves_and_marks_vanished_users(open: Open<'_>) {
    let mut db = open("h1");
    let c = db
        .refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("alice", "default"), ("bob", "p2"), ("carol", "p9")]),
            &sets,
            1000,
        )
        .unwrap();
    assert_eq!((c.listed, c.added, c.vanished, c.unassigned), (3, 3, 0, 1));
    db.refresh_server(
        "mail2",
        "m2:2912",
        &entries(&[("dave", "default")]),
        &sets,
        1000,
    )
    .unwrap();
    db.record_attempt(1, "bob", 1100, &done(5)).unwrap();
    let c = db
        .refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("alice", "p2"), ("carol", "p9")]),
            &sets,
            2000,
        )
        .unwrap();
    assert_eq!((c.listed, c.added, c.moved, c.vanished), (2, 0, 1, 1));
    let bob = db.user("bob").unwrap().expect("a vanished user is kept");
    assert_eq!(
        (bob.vanished_at, bob.last_success),
        (Some(2000), Some(1100))
    );
    assert_eq!(names(&db, "b"), ["alice"], "bob vanished, alice moved to b");
    assert_eq!(db.last_refresh("mail1").unwrap(), Some(2000));
    assert_eq!(db.last_refresh("mail3").unwrap(), None);
    let c = db
        .refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("alice", "p2"), ("bob", "p2")]),
            &sets,
            3000,
        )
        .unwrap();
    assert_eq!((c.returned, c.vanished), (1, 1), "bob back, carol gone");
    assert_eq!(db.user("bob").unwrap().unwrap().vanished_at, None);
    db.refresh_failed("mail2", "m2:2912", "connection refused")
        .unwrap();
    assert_eq!(db.last_refresh("mail2").unwrap(), Some(1000));
    assert_eq!(db.users().unwrap().len(), 4);
}

fn attempts_count_and_only_success_moves_last_success(open: Open<'_>) {
    let mut db = open("h1");
    db.refresh_server("m", "m:1", &entries(&[("u", "default")]), &sets, 10)
        .unwrap();
    let run = db.begin_run(100, 1).unwrap();
    db.record_attempt(run, "u", 100, &done(3)).unwrap();
    db.record_attempt(
        run,
        "u",
        200,
        &Attempt::Failed {
            message: "boom".into(),
        },
    )
    .unwrap();
    db.record_attempt(
        run,
        "u",
        300,
        &Attempt::Incomplete {
            messages_stored: 1,
            bytes_stored: 10,
            message: "INBOX uid 4: GUID mismatch".into(),
        },
    )
    .unwrap();
    db.record_attempt(run, "u", 400, &Attempt::Skipped).unwrap();
    let u = db.user("u").unwrap().unwrap();
    assert_eq!((u.last_success, u.last_attempt), (Some(100), Some(300)));
    assert_eq!(u.last_error.as_deref(), Some("INBOX uid 4: GUID mismatch"));
    assert_eq!(
        (
            u.backups_ok,
            u.backups_incomplete,
            u.backups_failed,
            u.skips
        ),
        (1, 1, 1, 1)
    );
    let row = db
        .query_ints(
            "SELECT last_commit, messages_stored, bytes_stored FROM users WHERE name = 'u'",
            &[],
        )
        .unwrap();
    assert_eq!(row, [[Some(300), Some(4), Some(40)]]);
    // Byte sums past 32 bits (PostgreSQL's INTEGER would overflow: BIGINT it is).
    db.record_attempt(run, "u", 500, &done(1 << 33)).unwrap();
    let u = db.user("u").unwrap().unwrap();
    assert_eq!((u.last_success, u.last_error), (Some(500), None));
}

fn the_quiet_key_is_kept_by_success_and_cleared_by_anything_else(open: Open<'_>) {
    let mut db = open("h1");
    db.refresh_server(
        "mail1",
        "m1:2912",
        &entries(&[("u", "default")]),
        &sets,
        100,
    )
    .unwrap();
    let key = |db: &StateDb| db.user("u").unwrap().unwrap().quiet_key;
    db.begin_batch().unwrap();
    db.record_attempt(1, "u", 200, &done(0)).unwrap();
    db.set_quiet_key("u", Some("k1 x")).unwrap();
    db.end_batch().unwrap();
    assert_eq!(key(&db).as_deref(), Some("k1 x"));
    db.record_attempt(2, "u", 300, &done(0)).unwrap();
    db.record_attempt(2, "u", 300, &Attempt::Skipped).unwrap();
    assert_eq!(key(&db).as_deref(), Some("k1 x"));
    db.record_attempt(
        4,
        "u",
        500,
        &Attempt::Failed {
            message: "x".into(),
        },
    )
    .unwrap();
    assert_eq!(key(&db), None);
}

fn a_run_killed_before_it_closed_its_record_is_marked_interrupted(open: Open<'_>) {
    let mut db = open("h1");
    let ours = db.begin_run(100, 1).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = i64::from(child.id());
    child.wait().unwrap();
    db.execute_sql(
        "INSERT INTO runs (started, status, host, pid) SELECT 50, 'running', host, ?1 FROM runs WHERE id = ?2",
        &[dead_pid, ours],
    )
    .unwrap();
    let killed = db.query_ints("SELECT max(id) FROM runs", &[]).unwrap()[0][0].unwrap();
    // Another host's run is not this host's to judge.
    let mut other = open("h2");
    other.begin_run(150, 1).unwrap();
    db.begin_run(200, 1).unwrap();
    let status = |id: i64| {
        db.query_ints(
            "SELECT CASE status WHEN 'interrupted' THEN 1 WHEN 'running' THEN 0 END, ended FROM runs WHERE id = ?1",
            &[id],
        )
        .unwrap()[0]
            .clone()
    };
    assert_eq!(status(killed), [Some(1), Some(200)]);
    assert_eq!(status(ours), [Some(0), None], "a live run is left alone");
}

fn the_schema_version_is_written_and_a_reopen_keeps_the_data(open: Open<'_>) {
    let mut db = open("h1");
    db.refresh_server("m", "m:1", &entries(&[("u", "default")]), &sets, 10)
        .unwrap();
    let sql = if db.is_postgres() {
        "SELECT version FROM state_schema"
    } else {
        "PRAGMA user_version"
    };
    assert_eq!(
        db.query_ints(sql, &[]).unwrap(),
        [[Some(STATE_SCHEMA_VERSION)]]
    );
    drop(db);
    let db = open("h1");
    assert_eq!(db.users().unwrap().len(), 1);
}

fn refresh_gives_new_users_to_the_refreshing_host_and_assign_moves_them(open: Open<'_>) {
    let mut h1 = open("h1");
    let mut h2 = open("h2");
    h1.refresh_server(
        "mail1",
        "m1:2912",
        &entries(&[("a", "default"), ("b", "default")]),
        &sets,
        10,
    )
    .unwrap();
    // h2 lists the same server: the users stay h1's.
    h2.refresh_server(
        "mail1",
        "m1:2912",
        &entries(&[("a", "default"), ("b", "default"), ("c", "default")]),
        &sets,
        20,
    )
    .unwrap();
    let host = |db: &StateDb, u: &str| db.user(u).unwrap().unwrap().host;
    assert_eq!(host(&h1, "a").as_deref(), Some("h1"));
    assert_eq!(host(&h1, "c").as_deref(), Some("h2"), "new at h2's refresh");
    if !h1.is_postgres() {
        // SQLite is one host: whatever name a user was given (a hostname that changed),
        // it is this host's, and a claim gives it this host's name.
        assert_eq!(names(&h2, "a"), ["a", "b", "c"]);
        let run = h2.begin_run(40, 3).unwrap();
        assert_eq!(h2.claim_users(run, &["a".into()], 40).unwrap(), ["a"]);
        assert_eq!(host(&h1, "a").as_deref(), Some("h2"));
        return;
    }
    assert_eq!(names(&h1, "a"), ["a", "b"]);
    assert_eq!(names(&h2, "a"), ["c"]);
    assert_eq!(h1.assign_users(&["b".into()], "h2", 30).unwrap(), 1);
    assert_eq!(names(&h1, "a"), ["a"]);
    assert_eq!(names(&h2, "a"), ["b", "c"]);
    let e = h1
        .assign_users(&["a".into(), "nobody".into()], "h2", 30)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no user nobody"), "{e}");
    assert_eq!(
        host(&h1, "a").as_deref(),
        Some("h1"),
        "one transaction: nothing changed"
    );
    // A user of no host yet (a state db from before hosts) is anyone's until claimed.
    h1.execute_sql("UPDATE users SET host = NULL WHERE name = 'a'", &[])
        .unwrap();
    assert_eq!(names(&h2, "a"), ["a", "b", "c"]);
    let run = h2.begin_run(40, 1).unwrap();
    assert_eq!(h2.claim_users(run, &["a".into()], 40).unwrap(), ["a"]);
    assert_eq!(host(&h1, "a").as_deref(), Some("h2"), "claimed: now h2's");
}

fn a_lease_keeps_a_second_run_out_until_released_or_expired(open: Open<'_>) {
    let mut db = open("h1");
    db.refresh_server(
        "mail1",
        "m1:2912",
        &entries(&[("a", "default"), ("b", "default")]),
        &sets,
        10,
    )
    .unwrap();
    let all = ["a".to_string(), "b".to_string()];
    let r1 = db.begin_run(100, 2).unwrap();
    assert_eq!(db.claim_users(r1, &all, 100).unwrap(), all);
    // A second run of the same host (its own connection, as a second process has).
    let mut second = open("h1");
    let r2 = second.begin_run(110, 2).unwrap();
    assert!(second.claim_users(r2, &all, 110).unwrap().is_empty());
    assert_eq!(
        second.lease_holder("a", 110).unwrap(),
        Some(("h1".into(), r1))
    );
    // a is done (its lease freed); b's lease is renewed, then left to expire.
    db.record_attempt(r1, "a", 100, &done(1)).unwrap();
    assert_eq!(db.renew_leases(r1, 200).unwrap(), 1);
    assert_eq!(second.claim_users(r2, &all, 210).unwrap(), ["a"]);
    assert!(second
        .claim_users(r2, &["b".into()], 200 + LEASE_SECS)
        .unwrap()
        .is_empty());
    assert_eq!(
        second
            .claim_users(r2, &["b".into()], 201 + LEASE_SECS)
            .unwrap(),
        ["b"],
        "expired"
    );
    assert_eq!(second.release_leases(r2, 300 + LEASE_SECS).unwrap(), 2);
    assert_eq!(db.lease_holder("a", 300 + LEASE_SECS).unwrap(), None);
}

fn a_dead_run_of_this_host_frees_its_leases_at_once(open: Open<'_>) {
    let mut db = open("h1");
    db.refresh_server("mail1", "m1:2912", &entries(&[("a", "default")]), &sets, 10)
        .unwrap();
    let r1 = db.begin_run(100, 1).unwrap();
    assert_eq!(db.claim_users(r1, &["a".into()], 100).unwrap(), ["a"]);
    // The run's process is gone (kill -9): its row says a pid that is not backup-server.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = i64::from(child.id());
    child.wait().unwrap();
    db.execute_sql("UPDATE runs SET pid = ?1 WHERE id = ?2", &[dead, r1])
        .unwrap();
    // Another host's next run cannot know the pid is dead: it waits for expiry.
    db.execute_sql("UPDATE users SET host = NULL", &[]).unwrap();
    let mut h2 = open("h2");
    let r2 = h2.begin_run(110, 1).unwrap();
    assert!(h2.claim_users(r2, &["a".into()], 110).unwrap().is_empty());
    h2.release_leases(r2, 111).unwrap();
    // This host's next run marks it interrupted and takes the user at once.
    let mut next = open("h1");
    let r3 = next.begin_run(120, 1).unwrap();
    assert_eq!(next.claim_users(r3, &["a".into()], 120).unwrap(), ["a"]);
}

fn hosts_lists_users_last_run_and_state(open: Open<'_>) {
    let mut h1 = open("h1");
    h1.refresh_server(
        "mail1",
        "m1:2912",
        &entries(&[("a", "default"), ("b", "default")]),
        &sets,
        10,
    )
    .unwrap();
    h1.assign_users(&["b".into()], "h3", 20).unwrap();
    let r = h1.begin_run(100, 1).unwrap();
    let hosts = h1.hosts().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["h1", "h3"]);
    assert_eq!((hosts[0].users, hosts[0].state(100)), (1, "running"));
    assert_eq!(hosts[0].last_run.as_ref().map(|r| r.0), Some(r));
    assert_eq!(hosts[0].state(101 + LEASE_SECS), "dead", "stopped renewing");
    assert_eq!((hosts[1].users, hosts[1].state(100)), (1, "never ran"));
    h1.update_run(r, &Default::default(), "done", Some(150), None)
        .unwrap();
    h1.release_leases(r, 150).unwrap();
    assert_eq!(h1.hosts().unwrap()[0].state(10_000), "idle");
}

/// The same users (ages 0 h to 100 h, never, vanished) on both backends: report.sql and its
/// PostgreSQL twin give the same rows, and the same late users with their hosts.
#[test]
fn the_report_and_its_postgres_twin_give_the_same_rows_and_late_users() {
    const NOW: i64 = 1_795_406_400;
    let fill = |db: &mut StateDb| {
        let users: Vec<(String, String)> = (0..12)
            .map(|i| (format!("u{i:02}"), "default".to_string()))
            .collect();
        let list: Vec<(&str, &str)> = users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        db.refresh_server("mail1", "m1:2912", &entries(&list), &sets, NOW - 1000)
            .unwrap();
        db.assign_users(&["u03".into(), "u07".into()], "h2", NOW)
            .unwrap();
        for (i, age_secs) in [
            0,
            60,
            3599,
            3600,
            5 * 3600,
            23 * 3600,
            24 * 3600,
            25 * 3600,
            100 * 3600,
            -50,
        ]
        .into_iter()
        .enumerate()
        {
            db.record_attempt(1, &format!("u{i:02}"), NOW - age_secs, &done(1))
                .unwrap();
        }
        // u10 never backed up; u11 vanished (left out).
        db.execute_sql(
            "UPDATE users SET vanished_at = ?1 WHERE name = 'u11'",
            &[NOW],
        )
        .unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = StateLocation::Sqlite(dir.path().join("state.sqlite3"));
    fill(&mut StateDb::open_at(&sqlite, "h1").unwrap());
    let pg = PostgresInstance::start().unwrap();
    let postgres = location(&pg, None);
    fill(&mut StateDb::open_at(&postgres, "h1").unwrap());
    use backup_server::report::{age_report_at, late_users_at};
    for max in [0, 1, 24, 36] {
        let a = age_report_at(&sqlite, NOW, max).unwrap();
        let b = age_report_at(&postgres, NOW, max).unwrap();
        assert_eq!(a, b, "max_age_hours {max}");
        assert_eq!(
            late_users_at(&sqlite, NOW, max, None).unwrap(),
            late_users_at(&postgres, NOW, max, None).unwrap(),
            "max_age_hours {max}"
        );
    }
    let a = age_report_at(&sqlite, NOW, 24).unwrap();
    assert_eq!(
        (a.users(), a.over_max_age(), a.never_backed_up()),
        (11, 4, 1)
    );
    let late = late_users_at(&postgres, NOW, 24, None).unwrap();
    let named: Vec<(&str, Option<&str>)> = late
        .oldest
        .iter()
        .map(|u| (u.user.as_str(), u.host.as_deref()))
        .collect();
    assert_eq!(
        named,
        [
            ("u10", Some("h1")),
            ("u08", Some("h1")),
            ("u07", Some("h2")),
            ("u06", Some("h1"))
        ]
    );
}

/// TLS to the database: with `state_db_ca_file` the server's certificate is verified (and
/// the server takes TLS connections only); an unrelated CA is refused, and so is a plain
/// connection.
#[test]
fn tls_to_postgres_is_verified_against_the_ca_file() {
    let pg = PostgresInstance::start_tls().unwrap();
    let at = |ca_file| location(&pg, ca_file);
    let mut db = StateDb::open_at(&at(Some(pg.ca_file())), "h1")
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    db.refresh_server("m", "m:1", &entries(&[("u", "default")]), &sets, 10)
        .unwrap();
    assert_eq!(db.users().unwrap().len(), 1);
    let e = StateDb::open_at(&at(Some(pg.other_ca_file())), "h1")
        .unwrap_err()
        .to_string();
    assert!(e.contains(&pg.url()) && e.contains("cannot connect"), "{e}");
    assert!(
        e.to_lowercase().contains("certificate"),
        "names the certificate: {e}"
    );
    let e = StateDb::open_at(&at(None), "h1").unwrap_err().to_string();
    assert!(
        e.contains("no encryption") || e.contains("pg_hba.conf"),
        "{e}"
    );
    assert!(!e.contains(pg.password()), "{e}");
}
