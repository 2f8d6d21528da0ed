//! The backup-age report against a state db with users at known ages: the library's rows
//! against a hand-computed table, docs/report.sql in the sqlite3 shell giving the same rows,
//! and the binary's formats, exit statuses and mail.

use backup_server::report::{self, AgeRow};
use backup_server::state::StateDb;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::config::ServerConfig;

const BIN: &str = env!("CARGO_BIN_EXE_backup-server");
const SQL_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.sql");

/// 2026-11-23T04:00:00Z.
const NOW: i64 = 1_795_406_400;
const H: i64 = 3600;

/// Users at known ages relative to `now`: (name, last_success, vanished).
fn users(now: i64) -> Vec<(&'static str, Option<i64>, bool)> {
    vec![
        ("a", Some(now - 10), false),             // 0 h
        ("b", Some(now - H + 1), false),          // 0 h (59 min 59 s)
        ("k", Some(now + 500), false),            // in the future (clock step): 0 h
        ("c", Some(now - H), false),              // 1 h exactly
        ("d", Some(now - 5 * H - 1), false),      // 5 h
        ("e", Some(now - 24 * H + 1), false),     // 23 h 59 min 59 s: not over 24
        ("f", Some(now - 24 * H), false),         // 24 h exactly: over
        ("g", Some(now - 24 * H - 100), false),   // 24 h: over
        ("h", Some(now - 100 * H - 1800), false), // 100 h: over
        ("i", None, false),                       // never
        ("j", None, false),                       // never
        ("v1", Some(now - 200 * H), true),        // vanished: left out
        ("v2", None, true),                       // vanished, never: left out
        ("v3", Some(now - 2 * H), true),          // vanished, recent: left out
    ]
}

fn row(age: Option<u64>, users: u64, over: bool) -> AgeRow {
    AgeRow {
        age_hours: age,
        users,
        over,
    }
}

/// The hand-computed table at NOW with a 24 h limit.
fn expected_24() -> Vec<AgeRow> {
    vec![
        row(Some(0), 3, false),
        row(Some(1), 1, false),
        row(Some(5), 1, false),
        row(Some(23), 1, false),
        row(Some(24), 2, true),
        row(Some(100), 1, true),
        row(None, 2, true),
    ]
}

/// The late users the table and the mail name after it, at [`NOW`] with 24 h: never backed
/// up first, then the oldest (all five fit under the default of 20).
const LATE_24: &str = "\nLate users:\n  i\tnever\n  j\tnever\n  h\t100 h\n  g\t24 h\n  f\t24 h\n";

/// The binary's table of `expected_24()`.
const TABLE_24: &str = "\
Backup age at 2026-11-23 04:00:00 UTC: users by whole hours since their last complete backup
(vanished users left out; marked: 24 h or more, or never)

   hours      users
       0          3
       1          1
       5          1
      23          1
      24          2  over
     100          1  over
   never          2  over
   total         11

5 users not backed up complete within 24 h (2 never).
";

/// The variable naming the sendmail the binary runs.
const SENDMAIL_ENV: &str = "MAILBACKUP_SENDMAIL";

/// A state db at `path` holding `users(now)`.
fn make_db(path: &Path, now: i64) {
    let db = StateDb::open(path).unwrap();
    let conn = db.connection();
    for (name, last_success, vanished) in users(now) {
        conn.execute(
            "INSERT INTO users (name, server, partition, raidset, first_seen, last_seen,
                                vanished_at, last_success)
             VALUES (?1, 'mail1', 'default', 'a', ?2, ?2, ?3, ?4)",
            rusqlite::params![
                name,
                now - 1000 * H,
                vanished.then_some(now - H),
                last_success
            ],
        )
        .unwrap();
    }
}

/// A config whose state db is `dir/store/state.sqlite3`.
fn make_config(dir: &Path) -> PathBuf {
    let config = dir.join("backup-server.toml");
    ServerConfig::minimal("127.0.0.1:1")
        .write_with_secrets(&config, "report-test-secret-0123456789")
        .unwrap();
    config
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = make_config(dir.path());
    make_db(&dir.path().join("store/state.sqlite3"), NOW);
    (dir, config)
}

fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).arg("report").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// docs/report.sql in the sqlite3 shell; `params` are `.parameter set` commands. No sqlite3
/// is a failure, not a skip: the file's promise is that it runs there.
fn shell(db: &Path, params: &[String]) -> Vec<AgeRow> {
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-readonly").arg(db);
    for p in params {
        cmd.arg(p);
    }
    cmd.arg(format!(".read {SQL_FILE}"));
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run the sqlite3 shell ({e}): install Debian's sqlite3 package")
    });
    assert!(out.status.success(), "sqlite3: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "sqlite3: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 3, "expected age|users|over, found {l:?}");
            row(
                (!f[0].is_empty()).then(|| f[0].parse().unwrap()),
                f[1].parse().unwrap(),
                match f[2] {
                    "0" => false,
                    "1" => true,
                    o => panic!("expected 0 or 1, found {o:?}"),
                },
            )
        })
        .collect()
}

#[test]
fn library_matches_hand_computed_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    make_db(&path, NOW);
    let conn = report::open_state_db(&path).unwrap();
    let r = report::query(&conn, NOW, 24).unwrap();
    assert_eq!(r.rows, expected_24());
    assert_eq!(r.users(), 11);
    assert_eq!(r.never_backed_up(), 2);
    assert_eq!(r.over_max_age(), 5);
    assert!(!r.all_recent());

    // A higher limit moves the mark; never-backed-up users stay over.
    let r = report::query(&conn, NOW, 100).unwrap();
    let over: Vec<(Option<u64>, bool)> = r.rows.iter().map(|r| (r.age_hours, r.over)).collect();
    assert_eq!(
        over,
        [
            (Some(0), false),
            (Some(1), false),
            (Some(5), false),
            (Some(23), false),
            (Some(24), false),
            (Some(100), true),
            (None, true)
        ]
    );
    assert_eq!(r.over_max_age(), 3);

    // An hour later every age moves by one.
    let r = report::query(&conn, NOW + H, 24).unwrap();
    let ages: Vec<Option<u64>> = r.rows.iter().map(|r| r.age_hours).collect();
    assert_eq!(
        ages,
        [
            Some(0),
            Some(1),
            Some(2),
            Some(6),
            Some(24),
            Some(25),
            Some(101),
            None
        ]
    );
}

#[test]
fn empty_state_db_is_all_recent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    drop(StateDb::open(&path).unwrap());
    let conn = report::open_state_db(&path).unwrap();
    let r = report::query(&conn, NOW, 24).unwrap();
    assert_eq!(r.rows, []);
    assert!(r.all_recent());
}

#[test]
fn sql_file_gives_the_same_rows_in_the_sqlite3_shell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    make_db(&path, NOW);
    let conn = report::open_state_db(&path).unwrap();
    for (now, h) in [
        (NOW, 24u32),
        (NOW, 100),
        (NOW + H, 24),
        (NOW + 7 * H + 5, 1),
    ] {
        let lib = report::query(&conn, now, h).unwrap().rows;
        let sh = shell(
            &path,
            &[
                format!(".parameter set :now {now}"),
                format!(".parameter set :max_age_hours {h}"),
            ],
        );
        assert_eq!(sh, lib, "now {now}, max {h}");
    }
    assert_eq!(
        shell(&path, &[format!(".parameter set :now {NOW}")]),
        expected_24(),
        "without :max_age_hours the file defaults to 24"
    );
}

#[test]
fn sql_file_without_parameters_uses_the_clock() {
    // Ages half an hour off every boundary, so a second ticking between the two clocks
    // cannot move a user to another row.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    make_db(&path, now + 1800);
    let conn = report::open_state_db(&path).unwrap();
    let lib = report::query(&conn, now, 24).unwrap().rows;
    assert_eq!(shell(&path, &[]), lib);
}

#[test]
fn report_sql_is_the_file() {
    assert_eq!(
        report::REPORT_SQL,
        std::fs::read_to_string(SQL_FILE).unwrap()
    );
}

#[test]
fn binary_table_and_exit_status() {
    let (_dir, config) = setup();
    let out = run(&config, &["--now", "2026-11-23T04:00:00Z"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{TABLE_24}{LATE_24}"));
    let t = text(&out.stdout);
    assert!(t.contains("      24          2  over\n"), "{t}");
    assert!(t.contains("   never          2  over\n"), "{t}");
    assert!(t.contains("      23          1\n"), "{t}");
    assert!(t.contains("   total         11\n"), "{t}");
    assert!(t.contains("5 users not backed up complete within 24 h (2 never)."));

    // A limit above every age still fails: never-backed-up users are always over.
    let out = run(
        &config,
        &["--now", &NOW.to_string(), "--max-age-hours", "200"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));

    // A state db with only recent users exits 0.
    let dir = tempfile::tempdir().unwrap();
    let config = make_config(dir.path());
    let db = StateDb::open(&dir.path().join("store/state.sqlite3")).unwrap();
    db.connection()
        .execute(
            "INSERT INTO users (name, server, partition, raidset, first_seen, last_seen, last_success)
             VALUES ('x', 'mail1', 'default', 'a', 0, 0, ?1), ('y', 'mail1', 'default', 'a', 0, 0, ?2)",
            [NOW - 3 * H, NOW - 24 * H + 1],
        )
        .unwrap();
    // ... and a vanished user never backed up does not count.
    db.connection()
        .execute(
            "INSERT INTO users (name, server, partition, raidset, first_seen, last_seen, vanished_at)
             VALUES ('z', 'mail1', 'default', 'a', 0, 0, 5)",
            [],
        )
        .unwrap();
    drop(db);
    let out = run(&config, &["--now", &NOW.to_string()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("All users backed up complete within 24 h."));
    // One second later y is 24 h old: over.
    let out = run(&config, &["--now", &(NOW + 1).to_string()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}

#[test]
fn binary_json_and_prometheus() {
    let (_dir, config) = setup();
    let now = NOW.to_string();
    let out = run(&config, &["--now", &now, "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{{\"now\":{NOW},\"max_age_hours\":24,\"users\":11,\"never_backed_up\":2,\"over_max_age\":5,\"rows\":[\
{{\"age_hours\":0,\"users\":3,\"over\":false}},\
{{\"age_hours\":1,\"users\":1,\"over\":false}},\
{{\"age_hours\":5,\"users\":1,\"over\":false}},\
{{\"age_hours\":23,\"users\":1,\"over\":false}},\
{{\"age_hours\":24,\"users\":2,\"over\":true}},\
{{\"age_hours\":100,\"users\":1,\"over\":true}},\
{{\"age_hours\":null,\"users\":2,\"over\":true}}],\
\"late\":[{{\"user\":\"i\",\"age_hours\":null}},{{\"user\":\"j\",\"age_hours\":null}},\
{{\"user\":\"h\",\"age_hours\":100}},{{\"user\":\"g\",\"age_hours\":24}},{{\"user\":\"f\",\"age_hours\":24}}]}}\n"
        )
    );

    let out = run(&config, &["--now", &now, "--format", "prometheus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let samples: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert_eq!(
        samples,
        [
            "mailbackup_users_by_backup_age_hours{age=\"0\"} 3",
            "mailbackup_users_by_backup_age_hours{age=\"1\"} 1",
            "mailbackup_users_by_backup_age_hours{age=\"5\"} 1",
            "mailbackup_users_by_backup_age_hours{age=\"23\"} 1",
            "mailbackup_users_by_backup_age_hours{age=\"24\"} 2",
            "mailbackup_users_by_backup_age_hours{age=\"100\"} 1",
            "mailbackup_users_never_backed_up 2",
            "mailbackup_users_over_max_age 5",
            "mailbackup_users 11",
            "mailbackup_report_max_age_hours 24",
            &format!("mailbackup_report_time_seconds {NOW}"),
        ]
    );
    // Every sample's family is announced, once.
    let t = text(&out.stdout);
    for family in [
        "mailbackup_users_by_backup_age_hours",
        "mailbackup_users_never_backed_up",
        "mailbackup_users_over_max_age",
    ] {
        assert_eq!(t.matches(&format!("# TYPE {family} gauge\n")).count(), 1);
    }
}

#[test]
fn binary_missing_state_db_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = make_config(dir.path());
    let out = run(&config, &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("state.sqlite3: no such file"), "{err}");
    assert!(
        !dir.path().join("store/state.sqlite3").exists(),
        "the report must not create a state db"
    );
}

#[test]
fn binary_mails_the_table() {
    let (dir, config) = setup();
    let fake = dir.path().join("sendmail");
    let got = dir.path().join("mail.txt");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"ARGS: $*\" > '{g}'\ncat >> '{g}'\n",
            g = got.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake_s = fake.to_str().unwrap();
    let out = run(
        &config,
        &[
            "--now",
            &NOW.to_string(),
            "--mail-to",
            "backup-admin@example.org",
        ],
        &[(SENDMAIL_ENV, fake_s)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let mail = std::fs::read_to_string(&got).unwrap();
    let table = TABLE_24;
    assert!(
        mail.starts_with("ARGS: -i -- backup-admin@example.org\nTo: backup-admin@example.org\n"),
        "{mail}"
    );
    assert!(mail.contains("\nSubject: mailbackup: 5 users not backed up within 24 h\n"));
    // The table, then the late users by name.
    assert!(mail.ends_with(&format!("\n\n{table}{LATE_24}")), "{mail}");

    // sendmail refusing the mail fails the report.
    std::fs::write(&fake, "#!/bin/sh\ncat >/dev/null\nexit 75\n").unwrap();
    let out = run(&config, &["--mail-to", "root"], &[(SENDMAIL_ENV, fake_s)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("did not take the report"),
        "{}",
        text(&out.stderr)
    );

    // No sendmail: a clear error, exit 1.
    let out = run(
        &config,
        &["--mail-to", "root"],
        &[(SENDMAIL_ENV, "/nonexistent/sendmail")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run /nonexistent/sendmail to mail the report")
            && err.contains("install an MTA"),
        "{err}"
    );

    // A header-breaking address is refused before sendmail runs.
    let out = run(
        &config,
        &["--mail-to", "root\nBcc: x@example.org"],
        &[(SENDMAIL_ENV, "/nonexistent/sendmail")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--mail-to: expected one address"));
}

#[test]
fn binary_stdout_closed_is_141_quietly() {
    // The reader (`true`) is gone before the report is written: EPIPE, as in `report | head`.
    let (_dir, config) = setup();
    let out = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; (sleep 1; exec \"$@\") | true",
            "_",
            BIN,
        ])
        .arg("--config")
        .arg(&config)
        .args(["report", "--now", &NOW.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
