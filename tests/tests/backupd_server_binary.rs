//! The backupd binary against a real Cyrus: `backupd keygen` makes the TLS key (0600) and
//! prints the pin; `backupd check` passes on a good configuration and fails on a
//! group-readable secret; the daemon refuses to start with that secret, starts with a good
//! one, drops root for the cyrus user, serves in TLS to a client that pins the printed key,
//! and exits 0 on SIGTERM.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use backup_server::client::{Client, ClientOptions, TlsSettings, TlsTrust};
use formats::protocol::Secret;
use testkit::wait;
use tests::CyrusInstance;

/// target/<profile>/backupd, built if this test run did not build it.
fn backupd_bin() -> PathBuf {
    tests::rig::workspace_bin("backupd")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok() // effective uid
}

#[test]
fn the_daemon_checks_starts_drops_root_and_stops_on_sigterm() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let bin = backupd_bin();
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("secret");
    std::fs::write(&secret_path, "e2e-binary-secret-0123456789\n").unwrap();
    let port = free_port();
    // The key and certificate, as an administrator makes them; the pin from what it printed.
    let out = Command::new(&bin)
        .args(["keygen", "--name", "localhost", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    let key_mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let pin_line = printed
        .lines()
        .find(|l| l.starts_with("tls_pin = "))
        .unwrap_or_else(|| panic!("no tls_pin line: {printed}"));
    let pin: formats::protocol::Pin = pin_line
        .trim_start_matches("tls_pin = ")
        .trim_matches('"')
        .parse()
        .unwrap();
    let config_lines: String = printed
        .lines()
        .filter(|l| l.starts_with("tls_cert_file") || l.starts_with("tls_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = dir.path().join("backupd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nsecret_file = \"{}\"\nimapd_conf = \"{}\"\n\
             shutdown_grace_secs = 5\n{config_lines}",
            secret_path.display(),
            cyrus.imapd_conf().display()
        ),
    )
    .unwrap();
    let run_as_root = uid_of(std::process::id()) == Some(0);

    // A group-readable secret: check fails and says so, the daemon refuses to start.
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = Command::new(&bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL secret file") && stdout.contains("mode 0640"),
        "{stdout}"
    );
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("mode 0640"), "{stderr}");

    // Mode 0600: check passes.
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(&bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("checks passed"), "{stdout}");
    assert!(stdout.contains("mailbox list: 3 users"), "{stdout}");
    assert!(
        stdout.contains("matches the certificate") && stdout.contains(&pin.to_string()),
        "{stdout}"
    );
    eprintln!("backupd check:\n{stdout}");

    // The daemon: serves, as cyrus if started as root.
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let secret = Secret::from_bytes(b"e2e-binary-secret-0123456789").unwrap();
    let opts = ClientOptions {
        tls: TlsSettings {
            trust: TlsTrust::Pins(vec![pin]),
            client_cert: None,
            server_name: "localhost".into(),
        },
        ..ClientOptions::default()
    };
    let t = Instant::now();
    let mut client = wait::until_some("backupd to come up", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backupd exited before serving: {status}");
        }
        Client::connect(("127.0.0.1", port), &secret, &opts).ok()
    });
    assert!(client.is_tls());
    eprintln!("backupd up in {:?}", t.elapsed());
    assert_eq!(client.list_users().unwrap().len(), 3);
    if run_as_root {
        let out = Command::new("id").args(["-u", "cyrus"]).output().unwrap();
        let cyrus_uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(uid_of(child.id()), Some(cyrus_uid), "dropped to cyrus");
    }

    // SIGTERM: exit 0, promptly, even with a client connected.
    let t = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait::exit(&mut child, "backupd after SIGTERM");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    eprintln!("stopped {:?} after SIGTERM", t.elapsed());
    let err = client.ping().unwrap_err();
    assert!(!err.connection_usable(), "{err}");
}
