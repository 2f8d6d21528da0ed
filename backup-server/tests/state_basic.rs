//! The SQLite state db's own rules (WAL, schema versions and upgrades) and the config
//! file's errors. What the state db does on either backend is in state_fleet.rs.

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
fn config_postgres_state_db_and_host_name() {
    use backup_server::state::StateLocation;
    let c = parse(GOOD).unwrap();
    assert_eq!(c.state, StateLocation::Sqlite(c.state_db.clone()));
    assert_eq!(c.host_name, backup_server::state::machine_hostname());
    let c = parse(&format!(
        "state_db = \"postgres://mb@db1:5432/mailbackup\"\nstate_db_password_file = \"db.pw\"\n\
         state_db_ca_file = \"ca.pem\"\nhost_name = \"backup1\"\n{GOOD}"
    ))
    .unwrap();
    let StateLocation::Postgres(t) = &c.state else {
        panic!("{:?}", c.state)
    };
    assert_eq!(t.url, "postgres://mb@db1:5432/mailbackup");
    assert_eq!(
        t.password_file.as_deref(),
        Some(Path::new("/etc/mailbackup/db.pw"))
    );
    assert_eq!(
        t.ca_file.as_deref(),
        Some(Path::new("/etc/mailbackup/ca.pem"))
    );
    assert_eq!(c.host_name, "backup1");
    let cases: &[(&str, &str)] = &[
        (
            "state_db = \"postgres://mb:hunter2@db1/x\"",
            "key state_db: holds a password",
        ),
        (
            "state_db_password_file = \"db.pw\"",
            "key state_db_password_file: only for a PostgreSQL",
        ),
        (
            "state_db = \"postgres://db1/x\"",
            "key state_db: names no user",
        ),
        ("host_name = \" \"", "key host_name"),
    ];
    for (line, want) in cases {
        let e = parse(&format!("{line}\n{GOOD}")).unwrap_err().to_string();
        assert!(
            e.contains(want) && !e.contains("hunter2"),
            "want {want:?} in: {e}"
        );
    }
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

/// What version 4 was: the same without the lifecycle's columns.
const TO_VERSION_4: &str = "ALTER TABLE users DROP COLUMN removed_at;
    ALTER TABLE users DROP COLUMN renamed_to; ALTER TABLE users DROP COLUMN store_from;
    PRAGMA user_version = 4;";

/// What version 3 was (after [`TO_VERSION_4`]): the same without the fleet's hosts,
/// assignments and leases.
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
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(TO_VERSION_4).unwrap();
    c.execute_batch(TO_VERSION_3).unwrap();
    drop(c);
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

/// A state db with user `u` (and its quiet key `key`) turned back into an older version by
/// `downgrade` (applied in order), then opened by this version, which must have upgraded it.
fn upgraded(path: &std::path::Path, key: Option<&str>, downgrade: &[&str]) -> StateDb {
    {
        let mut db = StateDb::open(path).unwrap();
        db.refresh_server(
            "mail1",
            "m1:2912",
            &entries(&[("u", "default")]),
            &sets,
            100,
        )
        .unwrap();
        db.set_quiet_key("u", key).unwrap();
    }
    let c = rusqlite::Connection::open(path).unwrap();
    for sql in downgrade {
        c.execute_batch(sql).unwrap();
    }
    drop(c);
    let db = StateDb::open(path).unwrap();
    let v: i64 = db
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, STATE_SCHEMA_VERSION);
    db
}

#[test]
fn a_version_1_state_db_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    // What version 1 was: the same without users.quiet_key.
    let mut db = upgraded(
        &dir.path().join("state.sqlite3"),
        None,
        &[
            TO_VERSION_4,
            TO_VERSION_3,
            "ALTER TABLE users DROP COLUMN quiet_key; PRAGMA user_version = 1;",
        ],
    );
    let u = db.user("u").unwrap().unwrap();
    assert_eq!((u.name.as_str(), u.quiet_key), ("u", None));
    db.set_quiet_key("u", Some("k")).unwrap();
}

#[test]
fn a_version_2_state_db_keeps_its_keys_under_the_new_column_name() {
    let dir = tempfile::tempdir().unwrap();
    // What version 2 was: the same column, called unchanged_key.
    let db = upgraded(
        &dir.path().join("state.sqlite3"),
        Some("k1 abc"),
        &[
            TO_VERSION_4,
            TO_VERSION_3,
            "ALTER TABLE users RENAME COLUMN quiet_key TO unchanged_key; PRAGMA user_version = 2;",
        ],
    );
    let u = db.user("u").unwrap().unwrap();
    assert_eq!(u.quiet_key.as_deref(), Some("k1 abc"), "the key survives");
}

#[test]
fn a_version_4_state_db_gains_the_lifecycle_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = upgraded(
        &dir.path().join("state.sqlite3"),
        Some("k1 abc"),
        &[TO_VERSION_4],
    );
    let cols: (Option<i64>, Option<String>, Option<String>) = db
        .connection()
        .query_row(
            "SELECT removed_at, renamed_to, store_from FROM users WHERE name = 'u'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(cols, (None, None, None));
    assert_eq!(
        db.user("u").unwrap().unwrap().quiet_key.as_deref(),
        Some("k1 abc"),
        "the key survives"
    );
}
