//! The `backup-server` binary without a mail server: config errors, a server that refuses
//! connections, and SIGTERM during a run (the user under way is finished, then the run
//! ends with its summary).

use backup_server::state::StateDb;
use formats::protocol::UserEntry;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_backup-server");

/// A config for one server at `address`, with `users` already in the state db (refreshed
/// just now, so the run does not ask the server for its list).
fn setup(dir: &Path, address: &str, users: usize) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, "binary-test-secret-0123456789\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("backup-server.toml");
    std::fs::write(
        &config,
        format!(
            r#"
store_root = "store"
workers = 2
batch_size = 10
[[server]]
name = "mail1"
address = "{address}"
secret_file = "secret"
connect_timeout_secs = 2
io_timeout_secs = 2
[[raidset]]
name = "a"
server = "mail1"
partitions = ["default"]
"#
        ),
    )
    .unwrap();
    let mut db = StateDb::open(&dir.join("store/state.sqlite3")).unwrap();
    let entries: Vec<UserEntry> = (0..users)
        .map(|i| UserEntry {
            user: format!("user{i:02}"),
            partition: "default".into(),
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    db.refresh_server("mail1", address, &entries, &|_| Some("a".into()), now)
        .unwrap();
    config
}

#[test]
fn a_bad_config_exits_1_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("b.toml");
    std::fs::write(&config, "store_root = \"s\"\nworkers = 0\n").unwrap();
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("b.toml: key workers: expected 1 to 1024, found 0"),
        "{err}"
    );
}

#[test]
fn a_refusing_server_fails_every_user_and_the_run() {
    // A port nobody listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &format!("127.0.0.1:{port}"), 5);
    let t = Instant::now();
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["run", "--progress", "log"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("users: 0 done, 0 incomplete, 0 skipped (locked by another run), 5 failed"),
        "{out}"
    );
    assert!(out.contains("user user00: backupd 127.0.0.1:"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let db = StateDb::open(&dir.path().join("store/state.sqlite3")).unwrap();
    for u in db.users().unwrap() {
        assert_eq!(u.last_success, None);
        assert!(u.last_error.is_some(), "{u:?}");
        assert_eq!(u.backups_failed, 1);
    }
}

#[test]
fn sigterm_finishes_the_user_under_way_then_ends_the_run() {
    // A server that accepts and never says a word: each user's connect waits out
    // io_timeout_secs (2 s).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &addr, 30);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["run", "--progress", "log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    nix_kill(child.id());
    let status = child.wait().unwrap();
    let waited = t.elapsed();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    // The user under way (its connect times out after 2 s) was finished, no other begun.
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(out.contains("run failed: 30 users planned"), "{out}");
    assert!(
        out.contains("stopped by a signal; 29 users not reached"),
        "{out}"
    );
    assert!(out.contains("1 failed"), "{out}");
    assert_eq!(status.code(), Some(1), "{out}");
    let db = StateDb::open(&dir.path().join("store/state.sqlite3")).unwrap();
    let (st, msg): (String, Option<String>) = db
        .connection()
        .query_row("SELECT status, message FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(st, "failed");
    assert!(msg.unwrap().contains("29 users not reached"));
}

fn nix_kill(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
