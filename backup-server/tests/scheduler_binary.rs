//! The `backup-server` binary without a mail server: config errors, a server that refuses
//! connections, and SIGTERM during a run (the user under way is finished, then the run
//! ends with its summary).

use backup_server::state::StateDb;
use formats::protocol::UserEntry;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use testkit::config::ServerConfig;
use testkit::wait;

const BIN: &str = env!("CARGO_BIN_EXE_backup-server");

/// A config for one server at `address` (connect and I/O timeouts `timeout_secs`), with
/// `users` already in the state db (refreshed just now, so the run does not ask the server
/// for its list).
fn setup(dir: &Path, address: &str, users: usize, timeout_secs: u64) -> PathBuf {
    let config = dir.join("backup-server.toml");
    ServerConfig::minimal(address)
        .workers(2)
        .batch_size(10)
        .timeouts(timeout_secs, timeout_secs)
        .write_with_secrets(&config, "binary-test-secret-0123456789")
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
    let config = setup(dir.path(), &format!("127.0.0.1:{port}"), 5, 2);
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
    // One connect refused, and the other users of the batch fail at once instead of each
    // trying (and, with a server that does not answer, waiting out the connect timeout).
    assert!(out.contains("not retried yet"), "{out}");
    let db = StateDb::open(&dir.path().join("store/state.sqlite3")).unwrap();
    for u in db.users().unwrap() {
        assert_eq!(u.last_success, None);
        assert!(u.last_error.is_some(), "{u:?}");
        assert_eq!(u.backups_failed, 1);
    }
}

#[test]
fn sigterm_finishes_the_user_under_way_then_ends_the_run() {
    // A server that accepts and never says a word: the first user's backup waits for the
    // greeting (the timeouts are far longer than the test) until the test closes the
    // connection, after the run has taken the signal.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (conn_tx, conn_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in silent.incoming() {
            if conn_tx.send(s.unwrap()).is_err() {
                break;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &addr, 30, 3600);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["run", "--progress", "log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first user's backup is under way: its connection came.
    let first = wait::recv(&conn_rx, "the run's first connection");
    nix_kill(child.id());
    // The run says it took the signal only once its stop flag is set.
    let mut log = Vec::new();
    loop {
        let line = wait::recv(&err_rx, "backup-server saying it took SIGTERM");
        let said = line.contains("stopping after the work under way");
        log.push(line);
        if said {
            break;
        }
    }
    // Now the user under way ends (its server closed the connection); no other begins.
    drop(first);
    let status = wait::exit(&mut child, "backup-server run after SIGTERM");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    // The user under way was finished (it failed: its server closed), no other begun.
    let log = log.join("\n");
    assert!(out.contains("run failed: 30 users planned"), "{out}\n{log}");
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
