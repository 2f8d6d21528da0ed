//! A fleet: two backup hosts (two `backup-server run` processes, each with its own store
//! root and host_name) sharing one state db on a private PostgreSQL 15, against two
//! backupd/Cyrus pairs. Each host backs up its own users, which come from both mail servers:
//! every user exactly once per night (counted by both backupds), no store on two hosts, the
//! fleet report over all of them naming each late user's host; then kill -9 of one host in
//! the middle of its run, 10 times while the other runs beside it: the next run of the
//! killed host takes its leases back at once and finishes its users, nothing lost.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use backup_server::state::{PostgresTarget, StateDb, StateLocation};
use backup_server::store::{Store, StoreOptions};
use testkit::wait;
use tests::postgres::PostgresInstance;
use tests::rig::{backup_server_bin, counts, run_command, test_tls, text, Backupd};
use tests::CyrusInstance;

const SECRET: &str = "fleet-test-secret-0123456789abcdef";

/// Writes host `host`'s config under `dir`: store root `store-<tag>`, the PostgreSQL state
/// db, both mail servers, one RAID set per server and partition.
fn write_config(
    dir: &Path,
    host: &str,
    tag: &str,
    pg: &PostgresInstance,
    servers: &[&Backupd],
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{host}-{tag}.toml"));
    let mut c = testkit::config::ServerConfig::new(dir.join(format!("store-{host}-{tag}")))
        .state_db(pg.url())
        .workers(2)
        .batch_size(2);
    for (i, b) in servers.iter().enumerate() {
        let name = format!("mail{}", i + 1);
        c = c
            .server(&name, &b.addr().to_string(), format!("{name}.secret"))
            .tls_pin(test_tls().pair.pin)
            .raidset(&format!("{name}-default"), &name, &["default"])
            .raidset(&format!("{name}-p2"), &name, &["p2"]);
    }
    c.write_with_secrets(&path, SECRET).unwrap();
    // Top-level keys go before the first table.
    let body = std::fs::read_to_string(&path).unwrap();
    let head = format!(
        "host_name = \"{host}\"\nstate_db_password_file = \"{}\"\n",
        pg.password_file().display()
    );
    std::fs::write(&path, head + &body).unwrap();
    path
}

fn store_root(config: &Path) -> PathBuf {
    let stem = config.file_stem().unwrap().to_str().unwrap();
    config.with_file_name(format!("store-{stem}"))
}

/// The users with a store under `root` (`<root>/<aa>/<bb>/<name>`).
fn stores(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(a) = std::fs::read_dir(root) else {
        return out;
    };
    for a in a.flatten().filter(|e| e.path().is_dir()) {
        for b in std::fs::read_dir(a.path()).unwrap().flatten() {
            for u in std::fs::read_dir(b.path()).unwrap().flatten() {
                out.insert(u.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn state(pg: &PostgresInstance) -> StateDb {
    let loc = StateLocation::Postgres(PostgresTarget {
        url: pg.url(),
        password_file: Some(pg.password_file()),
        ca_file: None,
    });
    StateDb::open_at(&loc, "test-reader").unwrap()
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(backup_server_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Every store under `root` passes the deep check (every message hashes to its GUID, index
/// and data file agree).
fn check_stores(root: &Path, users: &BTreeSet<String>, label: &str) {
    for u in users {
        let store = Store::open_existing(root, u, StoreOptions::default())
            .unwrap_or_else(|e| panic!("{label}: {u}: {e}"));
        let problems = store.check(true).unwrap();
        assert!(problems.is_empty(), "{label}: {u}: {problems:#?}");
    }
}

#[test]
fn two_backup_hosts_share_one_postgres_and_a_killed_host_loses_nothing() {
    let pg = PostgresInstance::start().unwrap();
    let cyrus1 = CyrusInstance::start().expect("starting Cyrus 1");
    let cyrus2 = CyrusInstance::start().expect("starting Cyrus 2");
    for (c, prefix) in [(&cyrus1, "m1u"), (&cyrus2, "m2u")] {
        c.bulk(&[
            "--users",
            "6",
            "--folders",
            "2",
            "--messages",
            "12",
            "--prefix",
            prefix,
        ])
        .expect("bulk.py");
    }
    // Each host has its own backupd on each mail server (same spool), so that what each
    // host asked for is counted apart, and h1's can stop it at a chosen user.
    let b1 = Backupd::start(&cyrus1, SECRET);
    let b2 = Backupd::start(&cyrus2, SECRET);
    let b1x = Backupd::start(&cyrus1, SECRET);
    let b2x = Backupd::start(&cyrus2, SECRET);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let h1 = write_config(dir, "h1", "night", &pg, &[&b1, &b2]);
    let h2 = write_config(dir, "h2", "night", &pg, &[&b1x, &b2x]);
    let listings = || {
        (
            b1.served.counts().0 + b1x.served.counts().0,
            b2.served.counts().0 + b2x.served.counts().0,
        )
    };

    // h1 reads both user lists: every user is h1's; then every other user of each server
    // goes to h2, so each host backs up users of both mail servers.
    let o = cli(&h1, &["users", "refresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let db = state(&pg);
    let all: Vec<String> = db.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(all.len(), 12, "{all:?}");
    let to_h2: Vec<String> = all.iter().skip(1).step_by(2).cloned().collect();
    let mut args = vec!["users", "assign"];
    args.extend(to_h2.iter().map(String::as_str));
    args.extend(["--to", "h2"]);
    let o = cli(&h1, &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users_of = |host: &str| -> BTreeSet<String> {
        db.users()
            .unwrap()
            .into_iter()
            .filter(|u| u.host.as_deref() == Some(host))
            .map(|u| u.name)
            .collect()
    };
    let (u1, u2) = (users_of("h1"), users_of("h2"));
    assert_eq!((u1.len(), u2.len()), (6, 6));
    assert!(u1.iter().any(|u| u.starts_with("m1u")) && u1.iter().any(|u| u.starts_with("m2u")));

    // The night: both hosts at once.
    let listed_before = listings();
    let c1 = run_command(&backup_server_bin(), &h1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c2 = run_command(&backup_server_bin(), &h2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    assert_eq!(o1.status.code(), Some(0), "h1: {}", text(&o1));
    assert_eq!(o2.status.code(), Some(0), "h2: {}", text(&o2));
    assert_eq!(counts(&o1), (6, 0, 0, 0), "h1: {}", text(&o1));
    assert_eq!(counts(&o2), (6, 0, 0, 0), "h2: {}", text(&o2));
    // Every user backed up exactly once: each backupd listed each of its users once.
    let listed = (
        listings().0 - listed_before.0,
        listings().1 - listed_before.1,
    );
    assert_eq!(listed, (6, 6), "folder listings served by mail1, mail2");
    for u in db.users().unwrap() {
        assert_eq!((u.backups_ok, u.skips), (1, 0), "{u:?}");
    }
    // Each store on its own host only.
    assert_eq!(stores(&store_root(&h1)), u1);
    assert_eq!(stores(&store_root(&h2)), u2);
    check_stores(&store_root(&h1), &u1, "night h1");
    check_stores(&store_root(&h2), &u2, "night h2");

    // `hosts` and the fleet report, from either host.
    let o = cli(&h2, &["hosts"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for h in ["h1", "h2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(h))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.contains(" 6 ") && line.contains("idle") && line.contains("done"),
            "{line}"
        );
    }
    let o = cli(&h1, &["report"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("All users backed up complete within 24 h."),
        "{}",
        text(&o)
    );
    let late = to_h2[0].clone();
    state_set_late(&pg, &late);
    let o = cli(&h1, &["report"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1 users not backed up complete within 24 h"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&late))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("h2"), "the late user's host is named: {line}");

    // kill -9 of h1 mid-run, 10 times, while h2 runs beside it. Each trial starts both from
    // fresh store roots (so both have a whole backup to do) on the same state db. h1 is
    // stopped at its (k+1)-th user of mail1 (k = 0, 1, 2: h1 has 3 there) by its backupd's
    // gate, an observable point whatever the machine's speed, and killed there.
    let mine_on_mail1 = u1.iter().filter(|u| u.starts_with("m1u")).count() as u64;
    assert_eq!(mine_on_mail1, 3);
    for i in 0..10u64 {
        let tag = format!("trial{i}");
        let k1 = write_config(dir, "h1", &tag, &pg, &[&b1, &b2]);
        let k2 = write_config(dir, "h2", &tag, &pg, &[&b1x, &b2x]);
        let t0 = backup_server::backup::unix_now();
        b1.served
            .gate
            .hold_after(b1.served.counts().0 + i % mine_on_mail1);
        let mut c1 = run_command(&backup_server_bin(), &k1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c2 = run_command(&backup_server_bin(), &k2)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait::until("h1 to reach the gate", || {
            assert!(
                c1.try_wait().unwrap().is_none(),
                "{tag}: h1 ended before the gate"
            );
            b1.served.gate.waiting() > 0
        });
        c1.kill().unwrap(); // SIGKILL
        c1.wait().unwrap();
        b1.served.gate.open();
        let run = db
            .query_ints("SELECT max(id) FROM runs WHERE host = 'h1'", &[])
            .unwrap()[0][0]
            .unwrap();
        let o2 = c2.wait_with_output().unwrap();
        assert_eq!(o2.status.code(), Some(0), "{tag} h2: {}", text(&o2));
        assert_eq!(counts(&o2), (6, 0, 0, 0), "{tag} h2: {}", text(&o2));
        // h1's leases outlive it (another host cannot tell that it is dead before they
        // expire): at least the user it was stopped at is still leased.
        let held = db
            .query_ints("SELECT count(*) FROM users WHERE lease_run = ?1", &[run])
            .unwrap()[0][0]
            .unwrap();
        assert!(held >= 1, "{tag}: the killed run's leases");
        // Its own next run marks the run interrupted and takes them back at once.
        let o = run_command(&backup_server_bin(), &k1).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{tag} h1 after the kill: {}",
            text(&o)
        );
        assert_eq!(
            counts(&o),
            (6, 0, 0, 0),
            "{tag} h1 after the kill: {}",
            text(&o)
        );
        let status = db
            .query_ints(
                "SELECT CASE status WHEN 'interrupted' THEN 1 ELSE 0 END FROM runs WHERE id = ?1",
                &[run],
            )
            .unwrap()[0][0];
        assert_eq!(
            status,
            Some(1),
            "{tag}: the killed run's row says interrupted"
        );
        assert_eq!(
            db.query_ints(
                "SELECT count(*) FROM users WHERE lease_run IS NOT NULL",
                &[]
            )
            .unwrap()[0][0],
            Some(0),
            "{tag}: leases left"
        );
        // Every user backed up since the trial began; no store on two hosts.
        for u in db.users().unwrap() {
            assert!(
                u.last_success >= Some(t0) && u.last_error.is_none(),
                "{tag}: {u:?}"
            );
        }
        assert_eq!(stores(&store_root(&k1)), u1, "{tag}");
        assert_eq!(stores(&store_root(&k2)), u2, "{tag}");
        check_stores(&store_root(&k1), &u1, &tag);
        check_stores(&store_root(&k2), &u2, &tag);
        std::fs::remove_dir_all(store_root(&k1)).unwrap();
        std::fs::remove_dir_all(store_root(&k2)).unwrap();
    }
    drop(pg);
}
/// Makes `user`'s last complete backup three days old (text parameter: plain SQL through
/// the test's own PostgreSQL client).
fn state_set_late(pg: &PostgresInstance, user: &str) {
    let mut c = postgres::Client::connect(&pg.conn_string(pg.password()), postgres::NoTls).unwrap();
    let n = c
        .execute(
            "UPDATE users SET last_success = last_success - 3 * 86400 WHERE name = $1",
            &[&user],
        )
        .unwrap();
    assert_eq!(n, 1);
}
