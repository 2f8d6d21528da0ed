//! The state db: refresh, per-user attempts, schema version; the config file's errors.

use backup_server::config::{Config, ConfigError};
use backup_server::state::{Attempt, StateDb, STATE_SCHEMA_VERSION};
use formats::protocol::UserEntry;
use std::path::Path;

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

#[test]
fn refresh_adds_moves_and_marks_vanished_users() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(&dir.path().join("sub/state.sqlite3")).unwrap();
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
    db.record_attempt(
        1,
        "bob",
        1100,
        &Attempt::Done {
            messages_stored: 5,
            bytes_stored: 50,
        },
    )
    .unwrap();

    // bob vanished from mail1, alice moved partition; mail2 is not touched.
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
    assert_eq!(bob.vanished_at, Some(2000));
    assert_eq!(bob.last_success, Some(1100), "its history is kept");
    assert!(db
        .users_to_back_up("b")
        .unwrap()
        .iter()
        .all(|u| u.name != "bob"));
    let alice = db.user("alice").unwrap().unwrap();
    assert_eq!(
        (alice.partition.as_str(), alice.raidset.as_deref()),
        ("p2", Some("b"))
    );
    assert_eq!(db.user("dave").unwrap().unwrap().vanished_at, None);
    assert_eq!(db.last_refresh("mail1").unwrap(), Some(2000));
    assert_eq!(db.last_refresh("mail2").unwrap(), Some(1000));
    assert_eq!(db.last_refresh("mail3").unwrap(), None);

    // A second refresh does not move the vanishing time; bob coming back clears it.
    let c = db
        .refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("alice", "p2")]),
            &sets,
            3000,
        )
        .unwrap();
    assert_eq!(c.vanished, 1, "carol only");
    assert_eq!(db.user("bob").unwrap().unwrap().vanished_at, Some(2000));
    let c = db
        .refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("alice", "p2"), ("bob", "p2")]),
            &sets,
            4000,
        )
        .unwrap();
    assert_eq!(c.returned, 1);
    assert_eq!(db.user("bob").unwrap().unwrap().vanished_at, None);

    // A user that moved to another server is not marked vanished by the old one.
    db.refresh_server(
        "mail2",
        "m2:2912",
        &entries(&[("dave", "default"), ("alice", "default")]),
        &sets,
        5000,
    )
    .unwrap();
    db.refresh_server("mail1", "m1:2912", &entries(&[("bob", "p2")]), &sets, 5001)
        .unwrap();
    let alice = db.user("alice").unwrap().unwrap();
    assert_eq!((alice.server.as_str(), alice.vanished_at), ("mail2", None));

    // A failed refresh keeps the last good time and records why.
    db.refresh_failed("mail2", "m2:2912", "connection refused")
        .unwrap();
    assert_eq!(db.last_refresh("mail2").unwrap(), Some(5000));
    assert_eq!(db.users().unwrap().len(), 4);
}

#[test]
fn last_successful_backup_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(&dir.path().join("state.sqlite3")).unwrap();
    db.refresh_server("m", "m:1", &entries(&[("u", "default")]), &sets, 10)
        .unwrap();
    let run = db.begin_run(100, 1).unwrap();
    db.record_attempt(
        run,
        "u",
        100,
        &Attempt::Done {
            messages_stored: 3,
            bytes_stored: 300,
        },
    )
    .unwrap();
    db.record_attempt(
        run,
        "u",
        200,
        &Attempt::Failed {
            message: "boom".into(),
        },
    )
    .unwrap();
    let u = db.user("u").unwrap().unwrap();
    assert_eq!((u.last_success, u.last_attempt), (Some(100), Some(200)));
    assert_eq!(u.last_error.as_deref(), Some("boom"));
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
    let (commit, stored): (Option<i64>, i64) = db
        .connection()
        .query_row(
            "SELECT last_commit, messages_stored FROM users WHERE name = 'u'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((commit, stored), (Some(300), 4));
    db.record_attempt(
        run,
        "u",
        500,
        &Attempt::Done {
            messages_stored: 0,
            bytes_stored: 0,
        },
    )
    .unwrap();
    let u = db.user("u").unwrap().unwrap();
    assert_eq!((u.last_success, u.last_error), (Some(500), None));
}

#[test]
fn schema_version_is_checked_and_wal_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    {
        let db = StateDb::open(&path).unwrap();
        let mode: String = db
            .connection()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let v: i64 = db
            .connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, STATE_SCHEMA_VERSION);
    }
    StateDb::open(&path).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let e = StateDb::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("schema version 99") && e.contains("state.sqlite3"),
        "{e}"
    );
}

const GOOD: &str = r#"
store_root = "/srv/mailbackup"
[[server]]
name = "mail1"
address = "mail1.example.com:2912"
secret_file = "mail1.secret"
tls_pin = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
[[raidset]]
name = "mail1-a"
server = "mail1"
partitions = ["default", "p2"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/mailbackup/backup-server.toml"))
}

#[test]
fn config_defaults_and_relative_paths() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.workers, 8);
    assert_eq!(c.batch_size, 50);
    assert_eq!(c.state_db, Path::new("/srv/mailbackup/state.sqlite3"));
    assert_eq!(
        c.servers[0].secret_file,
        Path::new("/etc/mailbackup/mail1.secret")
    );
    assert_eq!(c.raidset_of("mail1", "p2").unwrap().name, "mail1-a");
    assert!(c.raidset_of("mail1", "p3").is_none());
    assert_eq!(c.refresh_after.as_secs(), 86400);
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let cases: &[(&str, &str)] = &[
        (&GOOD.replace("store_root", "stor_root"), "stor_root"),
        (&format!("workers = 0\n{GOOD}"), "key workers: expected 1 to 1024, found 0"),
        (&format!("batch_size = 0\n{GOOD}"), "key batch_size"),
        (&format!("gzip_level = 12\n{GOOD}"), "key gzip_level: expected 0 to 9, found 12"),
        (&format!("workers = \"eight\"\n{GOOD}"), "workers"),
        (&GOOD.replace("server = \"mail1\"", "server = \"mail9\""), "key raidset[0].server: no [[server]] is named \"mail9\""),
        (&GOOD.replace("mail1.example.com:2912", "mail1"), "key server[0].address: expected host:port"),
        (
            &format!("{GOOD}[[raidset]]\nname = \"mail1-b\"\nserver = \"mail1\"\npartitions = [\"p2\"]\n"),
            "key raidset[1].partitions: partition \"p2\" of server \"mail1\" is already in RAID set \"mail1-a\"",
        ),
        (
            &format!("{GOOD}[[raidset]]\nname = \"mail1-a\"\nserver = \"mail1\"\npartitions = [\"p3\"]\n"),
            "key raidset[1].name",
        ),
        (GOOD.split("[[raidset]]").next().unwrap(), "key raidset: no [[raidset]]"),
    ];
    for (text, want) in cases {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.starts_with("/etc/mailbackup/backup-server.toml: "), "{e}");
        assert!(e.contains(want), "want {want:?} in: {e}");
    }
    let e = Config::load(Path::new("/nonexistent/b.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/b.toml: "), "{e}");
}

#[test]
fn the_example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/backup-server.toml.example");
    let c = Config::load(&path).unwrap();
    assert_eq!((c.workers, c.batch_size, c.gzip_level), (8, 50, 1));
    assert_eq!(c.retention_days, 14);
    assert_eq!(c.raidsets.len(), 2);
    assert_eq!(c.raidset_of("mail1", "p3").unwrap().name, "mail1-b");
}

#[test]
fn ls_at_takes_rfc3339_or_unix_seconds() {
    use backup_server::point_in_time::parse_time;
    assert_eq!(parse_time("1795406400").unwrap().secs, 1795406400);
    assert_eq!(parse_time("2026-11-23T04:00:00Z").unwrap().secs, 1795406400);
    let t = parse_time("2026-11-23T05:00:00.25+01:00").unwrap();
    assert_eq!((t.secs, t.nanos), (1795406400, 250_000_000));
    let e = parse_time("yesterday").unwrap_err().to_string();
    assert!(
        e.contains("expected RFC 3339") && e.contains("\"yesterday\""),
        "{e}"
    );
}

#[test]
fn a_run_killed_before_it_closed_its_record_is_marked_interrupted() {
    // A run whose process died (kill -9) leaves its row 'running'; the next run closes it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    let mut db = StateDb::open(&path).unwrap();
    let ours = db.begin_run(100, 1).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO runs (started, status, host, pid) SELECT 50, 'running', host, ?1 FROM runs WHERE id = ?2",
        rusqlite::params![dead_pid, ours],
    )
    .unwrap();
    let killed = conn.last_insert_rowid();

    db.begin_run(200, 1).unwrap();
    let status = |id: i64| -> (String, Option<i64>) {
        conn.query_row("SELECT status, ended FROM runs WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    assert_eq!(status(killed), ("interrupted".to_string(), Some(200)));
    assert_eq!(
        status(ours),
        ("running".to_string(), None),
        "a live run is left alone"
    );
}

#[test]
fn the_quiet_key_is_kept_by_success_and_skips_cleared_by_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(&dir.path().join("state.sqlite3")).unwrap();
    db.refresh_server(
        "mail1",
        "m1:2912",
        &entries(&[("u", "default")]),
        &sets,
        100,
    )
    .unwrap();
    let key = |db: &StateDb| db.user("u").unwrap().unwrap().quiet_key;
    assert_eq!(key(&db), None);
    let done = Attempt::Done {
        messages_stored: 0,
        bytes_stored: 0,
    };
    db.begin_batch().unwrap();
    db.record_attempt(1, "u", 200, &done).unwrap();
    db.set_quiet_key("u", Some("k1 x")).unwrap();
    db.end_batch().unwrap();
    assert_eq!(key(&db).as_deref(), Some("k1 x"));
    // A later success without a new key leaves it; a skip (locked) too.
    db.record_attempt(2, "u", 300, &done).unwrap();
    db.record_attempt(2, "u", 300, &Attempt::Skipped).unwrap();
    assert_eq!(key(&db).as_deref(), Some("k1 x"));
    // Whatever the store holds after an incomplete or failed attempt, not that.
    db.record_attempt(
        3,
        "u",
        400,
        &Attempt::Incomplete {
            messages_stored: 1,
            bytes_stored: 1,
            message: "m".into(),
        },
    )
    .unwrap();
    assert_eq!(key(&db), None);
    db.set_quiet_key("u", Some("k1 y")).unwrap();
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

/// What version 3 was: the same without the fleet's hosts, assignments and leases.
const TO_VERSION_3: &str = "DROP INDEX users_host; DROP TABLE hosts;
    ALTER TABLE users DROP COLUMN host; ALTER TABLE users DROP COLUMN lease_run;
    ALTER TABLE users DROP COLUMN lease_until; PRAGMA user_version = 3;";

#[test]
fn a_version_3_state_db_gets_hosts_and_its_users_go_to_the_first_host_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    {
        let mut db = StateDb::open(&path).unwrap();
        db.refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("u", "default")]),
            &sets,
            100,
        )
        .unwrap();
        db.record_attempt(
            1,
            "u",
            150,
            &Attempt::Done {
                messages_stored: 1,
                bytes_stored: 1,
            },
        )
        .unwrap();
    }
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(TO_VERSION_3)
        .unwrap();
    let loc = backup_server::state::StateLocation::Sqlite(path.clone());
    let mut db = StateDb::open_at(&loc, "backup1").unwrap();
    let u = db.user("u").unwrap().unwrap();
    assert_eq!(
        (u.host, u.last_success),
        (None, Some(150)),
        "kept, no host yet"
    );
    // The next run plans and claims it as before: it becomes this host's.
    assert_eq!(db.users_to_back_up("a").unwrap().len(), 1);
    let run = db.begin_run(200, 1).unwrap();
    assert_eq!(db.claim_users(run, &["u".into()], 200).unwrap(), ["u"]);
    assert_eq!(
        db.user("u").unwrap().unwrap().host.as_deref(),
        Some("backup1")
    );
}

#[test]
fn a_version_1_state_db_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    {
        let mut db = StateDb::open(&path).unwrap();
        db.refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("u", "default")]),
            &sets,
            100,
        )
        .unwrap();
    }
    // What version 1 was: the same without users.quiet_key.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(TO_VERSION_3).unwrap();
        c.execute_batch("ALTER TABLE users DROP COLUMN quiet_key; PRAGMA user_version = 1;")
            .unwrap();
    }
    let mut db = StateDb::open(&path).unwrap();
    let v: i64 = db
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, STATE_SCHEMA_VERSION);
    let u = db.user("u").unwrap().unwrap();
    assert_eq!((u.name.as_str(), u.quiet_key), ("u", None));
    db.set_quiet_key("u", Some("k")).unwrap();
}

#[test]
fn a_version_2_state_db_keeps_its_keys_under_the_new_column_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    {
        let mut db = StateDb::open(&path).unwrap();
        db.refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("u", "default")]),
            &sets,
            100,
        )
        .unwrap();
        db.set_quiet_key("u", Some("k1 abc")).unwrap();
    }
    // What version 2 was: the same column, called unchanged_key.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(TO_VERSION_3).unwrap();
        c.execute_batch(
            "ALTER TABLE users RENAME COLUMN quiet_key TO unchanged_key; PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let db = StateDb::open(&path).unwrap();
    let v: i64 = db
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, STATE_SCHEMA_VERSION);
    let u = db.user("u").unwrap().unwrap();
    assert_eq!(u.quiet_key.as_deref(), Some("k1 abc"), "the key survives");
}
