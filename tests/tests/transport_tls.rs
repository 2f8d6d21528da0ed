//! The transport against a real Cyrus, a real backupd and the backup-server binary, with
//! machines in the middle (docs/protocol.md, "What TLS and the handshake protect"):
//!
//! * a capture of all the loopback traffic of a TLS backup holds none of the spool's
//!   message body text or sieve script text, while the same capture of a plain-TCP backup
//!   holds all of it (the check finds what it looks for);
//! * a relay that flips one byte of what backupd sends makes the run fail for the users
//!   whose connection carried it, naming the alteration, and nothing altered is stored
//!   (`verify` is clean; a byte flipped in the TLS handshake leaves no store at all);
//! * a relay that terminates TLS with its own certificate is refused by the pin, naming
//!   both keys; one the client was wrongly told to trust (its pin configured) gets through
//!   TLS, but the handshake's binding to the TLS session fails the authentication on both
//!   sides, and nothing is stored;
//! * 200 idle unauthenticated connections held open to backupd: the run completes.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use formats::protocol::Pin;
use tests::proxy::{ByteProxy, TlsRelay};
use tests::rig::{backup_server_bin, counts, run_command, test_tls, text, Backupd, TestTls};
use tests::CyrusInstance;

const SECRET: &str = "transport-e2e-secret-0123456789";

/// Writes `<dir>/<name>.toml`: the store and state db shared by every configuration in
/// `dir`, server `mail1` at `addr`, trusted by `pin` (TLS) or not (plain TCP on loopback).
fn config(dir: &Path, name: &str, addr: SocketAddr, pin: Option<Pin>) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let mut c = testkit::config::ServerConfig::new("store")
        .state_db("state.sqlite3")
        .workers(1)
        .server("mail1", &addr.to_string(), "mail1.secret");
    if let Some(pin) = pin {
        c = c.tls_pin(pin);
    }
    c.raidset("drives-a", "mail1", &["default"])
        .raidset("drives-b", "mail1", &["p2"])
        .write_with_secrets(&path, SECRET)
        .unwrap();
    path
}

fn backup_server(config: &Path, args: &[&str]) -> Output {
    Command::new(backup_server_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn run(config: &Path) -> Output {
    run_command(&backup_server_bin(), config).output().unwrap()
}

/// Files under `dir` whose name starts with `prefix`.
fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, prefix));
        } else if e.file_name().to_string_lossy().starts_with(prefix) {
            out.push(p);
        }
    }
    out
}

/// Text the backup must carry: 24 bytes from the middle of each message body in the
/// spool, and the longest line of each sieve script (Cyrus keeps a script's source as a
/// message of the user's hidden `#sieve` folder); the number of sieve scripts.
fn known_text(cyrus: &CyrusInstance) -> (BTreeSet<String>, usize) {
    let mut out = BTreeSet::new();
    let mut scripts = 0;
    for (_, dir) in cyrus.partitions() {
        for f in files_named(&dir, "") {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let is_message =
                name.ends_with('.') && name[..name.len() - 1].bytes().all(|b| b.is_ascii_digit());
            if !is_message {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap();
            let Some(start) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body = &bytes[start + 4..];
            if body.starts_with(b"require") || contains(body, b"\nrequire") {
                let longest = body.split(|b| *b == b'\n').max_by_key(|l| l.len()).unwrap();
                assert!(longest.len() >= 16, "{}", f.display());
                out.insert(String::from_utf8(longest.to_vec()).expect("a sieve script is text"));
                scripts += 1;
            } else if body.len() >= 64 {
                let mid = body.len() / 2;
                let marker = &body[mid - 12..mid + 12];
                // Something a body says, not a run of one byte.
                if marker.iter().collect::<BTreeSet<_>>().len() >= 6 {
                    if let Ok(m) = std::str::from_utf8(marker) {
                        out.insert(m.to_string());
                    }
                }
            }
        }
    }
    (out, scripts)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_capture_of_a_tls_backup_holds_no_message_or_sieve_text() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let (known, scripts) = known_text(&cyrus);
    assert!(known.len() >= 20, "only {} markers", known.len());
    assert!(
        scripts >= 2,
        "populate.py writes sieve scripts; found {scripts}"
    );

    let dir = tempfile::tempdir().unwrap();
    for tls in [true, false] {
        let backupd = Backupd::start_with(&cyrus, SECRET, tls);
        let proxy = ByteProxy::start(backupd.addr(), None);
        let sub = dir.path().join(if tls { "tls" } else { "plain" });
        let pin = tls.then(|| test_tls().pair.pin);
        let cfg = config(&sub, "via-capture", proxy.addr(), pin);
        let o = run(&cfg);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let cap = proxy.capture();
        // Searched as text with the standard library's substring search (fast even in a
        // debug build); a marker is valid UTF-8, and stays findable in the lossy text.
        let (down, up) = (
            String::from_utf8_lossy(&cap.to_client),
            String::from_utf8_lossy(&cap.to_server),
        );
        let found: Vec<&String> = known
            .iter()
            .filter(|m| down.contains(m.as_str()) || up.contains(m.as_str()))
            .collect();
        eprintln!(
            "tls={tls}: {} connections, {} bytes to the client, {} to the server; {} of {} markers found",
            cap.connections,
            cap.to_client.len(),
            cap.to_server.len(),
            found.len(),
            known.len()
        );
        assert!(
            cap.to_client.len() > 1_000_000,
            "the mail crossed the proxy"
        );
        if tls {
            assert!(
                found.is_empty(),
                "text of the spool in the TLS capture: {:?}",
                found.iter().collect::<Vec<_>>()
            );
        } else {
            // The check sees what is there: every marker crossed in clear.
            assert_eq!(found.len(), known.len(), "the check would find the text");
        }
    }
}

#[test]
fn a_relay_that_flips_a_byte_fails_the_user_and_nothing_altered_is_stored() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let backupd = Backupd::start(&cyrus, SECRET);
    let pin = Some(test_tls().pair.pin);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let direct = config(dir.path(), "direct", backupd.addr(), pin);

    // A byte of the TLS handshake: no connection is made at all, nothing is stored.
    let early = ByteProxy::start(backupd.addr(), Some(100));
    let o = run(&config(dir.path(), "early", early.addr(), pin));
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("TLS handshake"), "{}", text(&o));
    assert!(files_named(&store, "backupdata").is_empty(), "{}", text(&o));

    // A byte in the middle of the mail: the users read in the altered connection fail,
    // saying why. The user list is read directly first, so that users are what fails.
    let o = backup_server(&direct, &["users", "refresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let late = ByteProxy::start(backupd.addr(), Some(300_000));
    let o = run(&config(dir.path(), "late", late.addr(), pin));
    eprintln!("run through a byte flipper: {}", text(&o));
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let (_, _, _, failed) = counts(&o);
    assert!(failed >= 1, "{}", text(&o));
    assert!(
        text(&o).contains("the bytes from the server were altered on the way"),
        "{}",
        text(&o)
    );
    // What was stored before the altered record is what backupd sent (each TLS record
    // authenticated): every stored message matches its GUID, every index its data.
    let o = backup_server(&direct, &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Without the relay, the next run completes and verifies.
    let o = run(&direct);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = backup_server(&direct, &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn relays_that_terminate_tls_are_refused_and_store_nothing() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let backupd = Backupd::start(&cyrus, SECRET);
    let backupd_pin = test_tls().pair.pin;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let direct = config(dir.path(), "direct", backupd.addr(), Some(backupd_pin));
    let o = backup_server(&direct, &["users", "refresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let relay_identity = TestTls::generate();
    let relay = TlsRelay::start(
        backupd.addr(),
        relay_identity.server.clone(),
        &test_tls().client_settings(),
    );

    // The backup host pins backupd's key: the relay's certificate is refused.
    let o = run(&config(
        dir.path(),
        "pinned",
        relay.addr(),
        Some(backupd_pin),
    ));
    eprintln!("through a relay with its own key: {}", text(&o));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains(&format!(
            "backupd at {}: TLS handshake: the server's key is {}, not the pinned {}",
            relay.addr(),
            relay_identity.pair.pin,
            backupd_pin
        )),
        "{all}"
    );
    assert!(files_named(&store, "backupdata").is_empty(), "{all}");

    // The backup host was told to trust the relay's key: TLS completes with the relay, but
    // the proofs are bound to that session, not to the relay's session with backupd.
    let o = run(&config(
        dir.path(),
        "fooled",
        relay.addr(),
        Some(relay_identity.pair.pin),
    ));
    eprintln!("through a relay the client trusts: {}", text(&o));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains(
            "authentication failed: the proof does not match this server's secret and TLS session"
        ) && all.contains("a relay in the middle that terminates TLS"),
        "{all}"
    );
    assert!(files_named(&store, "backupdata").is_empty(), "{all}");

    // Straight to backupd: everyone is backed up.
    let o = run(&direct);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!files_named(&store, "backupdata").is_empty());
}

#[test]
fn two_hundred_idle_unauthenticated_connections_do_not_stop_the_run() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let backupd = Backupd::start(&cyrus, SECRET);
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(backupd.addr()).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "direct",
        backupd.addr(),
        Some(test_tls().pair.pin),
    );
    let t = std::time::Instant::now();
    let o = run(&cfg);
    eprintln!(
        "run beside 200 idle connections in {:?}: {}",
        t.elapsed(),
        text(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (done, _, _, failed) = counts(&o);
    assert_eq!((done, failed), (3, 0), "{}", text(&o));
    drop(idle);
}
