//! `backup-server run` end to end: a real Cyrus with 20 users on two partitions (bulk.py
//! alternates them), a real backupd, and the binary with a configuration of two RAID sets
//! (one per partition). Every user is backed up and the state db says so; then users
//! locked by another holder are skipped and the summary says so (exit status 2); then two
//! runs at once share the users between them without failing any.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use backup_server::state::StateDb;
use backup_server::store::{Store, StoreOptions, UserDir};
use tests::rig::{backup_server_bin, counts, run_command, text, write_config, Backupd};
use tests::CyrusInstance;

fn run(bin: &Path, config: &Path, extra: &[&str]) -> Output {
    run_command(bin, config).args(extra).output().unwrap()
}

#[test]
fn run_backs_up_every_user_across_two_raid_sets() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus
        .bulk(&["--users", "20", "--folders", "4", "--messages", "6"])
        .expect("bulk.py");

    let backupd = Backupd::start(&cyrus, "e2e-run-secret-0123456789");

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), backupd.addr(), &backupd.secret_text, 4, 3);
    let bin = backup_server_bin();

    // First run: everybody.
    let o = run(&bin, &config, &[]);
    eprintln!("first run: {}", text(&o));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(counts(&o), (20, 0, 0, 0), "{}", text(&o));
    let db = StateDb::open(&dir.path().join("state/state.sqlite3")).unwrap();
    let users = db.users().unwrap();
    assert_eq!(users.len(), 20);
    let mut per_set = std::collections::BTreeMap::new();
    for u in &users {
        assert!(u.last_success.is_some(), "{u:?}");
        assert_eq!((u.backups_ok, u.last_error.as_deref()), (1, None), "{u:?}");
        *per_set.entry(u.raidset.clone().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_set.len(), 2, "{per_set:?}");
    assert!(per_set.values().all(|n| *n == 10), "{per_set:?}");
    let names: BTreeSet<String> = users.iter().map(|u| u.name.clone()).collect();
    let root = dir.path().join("store");
    for u in &names {
        let s = Store::open_existing(&root, u, StoreOptions::default()).unwrap();
        assert!(s.check(false).unwrap().is_empty(), "{u}");
    }
    drop(db);

    // Another holder of three users' locks (as a concurrent run would be): skipped, said so.
    let locked: Vec<&String> = names.iter().take(3).collect();
    let held: Vec<_> = locked
        .iter()
        .map(|u| UserDir::new(&root, u).unwrap().lock().unwrap())
        .collect();
    let o = run(&bin, &config, &[]);
    eprintln!("run beside a lock holder: {}", text(&o));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(counts(&o), (17, 0, 3, 0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for u in &locked {
        assert!(
            out.contains(&format!("user {u}: skipped, locked by another run")),
            "{u}\n{}",
            text(&o)
        );
    }
    drop(held);
    let db = StateDb::open(&dir.path().join("state/state.sqlite3")).unwrap();
    for u in db.users().unwrap() {
        let was_locked = locked.contains(&&u.name);
        assert_eq!(u.skips, was_locked as i64, "{u:?}");
        assert_eq!(u.backups_ok, if was_locked { 1 } else { 2 }, "{u:?}");
    }
    drop(db);

    // Two runs at once: between them every user is backed up, none fails.
    let a = run_command(&bin, &config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = run(&bin, &config, &[]);
    let a = a.wait_with_output().unwrap();
    for o in [&a, &b] {
        assert!(matches!(o.status.code(), Some(0 | 2)), "{}", text(o));
        let (done, incomplete, skipped, failed) = counts(o);
        assert_eq!(
            (done + skipped, incomplete, failed),
            (20, 0, 0),
            "{}",
            text(o)
        );
    }
    let db = StateDb::open(&dir.path().join("state/state.sqlite3")).unwrap();
    let runs: i64 = db
        .connection()
        .query_row(
            "SELECT count(*) FROM runs WHERE status IN ('done', 'incomplete')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 4);
    for u in &names {
        let s = Store::open_existing(&root, u, StoreOptions::default()).unwrap();
        assert!(s.check(false).unwrap().is_empty(), "{u}");
    }
}
