//! `backup-server run` end to end: a real Cyrus with 20 users on two partitions (bulk.py
//! alternates them), a real backupd, and the binary with a configuration of two RAID sets
//! (one per partition). Every user is backed up and the state db says so; then users
//! locked by another holder are skipped and the summary says so (exit status 2); then two
//! runs at once share the users between them without failing any.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use backup_server::state::StateDb;
use backup_server::store::{Store, StoreOptions, UserDir};
use backupd::auth::Secret;
use backupd::server::{self, Settings};
use backupd::spool::Spool;
use tests::CyrusInstance;

/// target/<profile>/backup-server, built if this test run did not build it.
fn backup_server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = dir.join("backup-server");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "backup-server", "--bin", "backup-server"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(bin.exists(), "{}", bin.display());
    bin
}

fn run(bin: &Path, config: &Path, extra: &[&str]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("run")
        .args(["--progress", "log"])
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (done, incomplete, skipped, failed) from the summary's "users:" line.
fn counts(o: &Output) -> (u64, u64, u64, u64) {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("users: "))
        .unwrap_or_else(|| panic!("no users: line\n{}", text(o)));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

#[test]
fn run_backs_up_every_user_across_two_raid_sets() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus
        .bulk(&["--users", "20", "--folders", "4", "--messages", "6"])
        .expect("bulk.py");

    let secret_text = "e2e-run-secret-0123456789";
    let secret = Secret::from_bytes(secret_text.as_bytes()).unwrap();
    let spool = Spool::open(&cyrus.imapd_conf()).expect("opening the spool");
    let handle = server::spawn(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(spool),
        secret,
        Settings::default(),
    )
    .expect("starting backupd");

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("mail1.secret");
    std::fs::write(&secret_file, format!("{secret_text}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("backup-server.toml");
    std::fs::write(
        &config,
        format!(
            r#"
store_root = "store"
state_db = "state/state.sqlite3"
workers = 4
batch_size = 3
[[server]]
name = "mail1"
address = "{}"
secret_file = "mail1.secret"
[[raidset]]
name = "drives-a"
server = "mail1"
partitions = ["default"]
[[raidset]]
name = "drives-b"
server = "mail1"
partitions = ["p2"]
"#,
            handle.addr()
        ),
    )
    .unwrap();
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
    let a = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["run", "--progress", "log"])
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
