//! backupd's transport against the backup host's client: TLS 1.3 with the key pinned, a
//! pin that does not match, each side without TLS against the other with it (a clear
//! refusal, not garbage), and the pre-authentication pool: idle unauthenticated sockets
//! neither take the connection slots nor keep a client out.

mod server_common;

use backup_server::client::{Client, ClientError, ClientOptions, TlsSettings, TlsTrust};
use backupd::keygen::Pair;
use backupd::server::Settings;
use formats::protocol::{ErrorCode, Pin};
use server_common::*;
use std::io::Read;
use std::time::{Duration, Instant};

fn tls_pair() -> (Pair, Settings) {
    let pair = backupd::keygen::generate(&["localhost".into()]).unwrap();
    let material =
        backupd::tls::TlsMaterial::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())
            .unwrap();
    let settings = Settings {
        tls: Some(backupd::tls::server_config_of(material).unwrap()),
        ..settings()
    };
    (pair, settings)
}

fn pinned(pin: Pin) -> ClientOptions {
    ClientOptions {
        tls: TlsSettings {
            trust: TlsTrust::Pins(vec![pin]),
            client_cert: None,
            server_name: "localhost".into(),
        },
        ..ClientOptions::default()
    }
}

#[test]
fn a_pinned_client_talks_tls_and_a_wrong_pin_is_refused_naming_both_keys() {
    let (pair, settings) = tls_pair();
    let (server, _spool) = start(FakeSpool::new(3), settings);
    let addr = server.addr();
    let mut c = Client::connect(addr, &secret(), &pinned(pair.pin)).unwrap();
    assert!(c.is_tls());
    assert_eq!(c.version(), 2);
    assert_eq!(c.list_users().unwrap().len(), 3);
    assert_eq!(c.list_folders("alice").unwrap().folders.len(), 2);

    let other = backupd::keygen::generate(&["x".into()]).unwrap();
    let e = Client::connect(addr, &secret(), &pinned(other.pin)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ClientError::Tls { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "backupd at {addr}: TLS handshake: the server's key is {}, not the pinned {}",
            pair.pin, other.pin
        )),
        "{text}"
    );
    // While a key is replaced the backup host pins both: either key is accepted.
    let both = ClientOptions {
        tls: TlsSettings {
            trust: TlsTrust::Pins(vec![other.pin, pair.pin]),
            ..pinned(pair.pin).tls
        },
        ..ClientOptions::default()
    };
    let mut c2 = Client::connect(addr, &secret(), &both).unwrap();
    assert_eq!(c2.list_users().unwrap().len(), 3);
    // The server goes on serving.
    c.ping().unwrap();
    server.shutdown().unwrap();
}

#[test]
fn a_wrong_secret_inside_tls_is_refused() {
    let (pair, settings) = tls_pair();
    let (server, _spool) = start(FakeSpool::new(1), settings);
    let wrong = formats::protocol::Secret::from_bytes(b"not-the-secret-at-all").unwrap();
    let e = Client::connect(server.addr(), &wrong, &pinned(pair.pin)).unwrap_err();
    assert_eq!(
        e.remote().map(|r| r.code),
        Some(ErrorCode::AuthFailed),
        "{e}"
    );
    server.shutdown().unwrap();
}

#[test]
fn each_side_without_tls_gets_a_clear_refusal_from_the_other() {
    // A client without TLS to a TLS backupd: the server tells it, in the plain protocol,
    // once the handshake time is up (short here; nobody else uses this server).
    let (pair, settings) = tls_pair();
    let (server, _spool) = start(
        FakeSpool::new(1),
        Settings {
            auth_timeout: Duration::from_millis(500),
            ..settings
        },
    );
    let e = Client::connect(server.addr(), &secret(), &ClientOptions::default()).unwrap_err();
    assert_eq!(
        e.remote().map(|r| r.code),
        Some(ErrorCode::UnsupportedVersion),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("this backupd speaks the protocol inside TLS only"),
        "{e}"
    );
    server.shutdown().unwrap();

    // A TLS client to a backupd without TLS: its greeting is recognised.
    let (server, _spool) = start(FakeSpool::new(1), server_common::settings());
    let e = Client::connect(server.addr(), &secret(), &pinned(pair.pin)).unwrap_err();
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("this backupd speaks the protocol without TLS"),
        "{e}"
    );
    server.shutdown().unwrap();
}

#[test]
fn idle_unauthenticated_sockets_take_no_slot_and_keep_nobody_out() {
    // Two slots, a pool of four; forty sockets that connect and say nothing.
    let (pair, settings) = tls_pair();
    let (server, _spool) = start(
        FakeSpool::new(2),
        Settings {
            max_connections: 2,
            max_unauthenticated: 4,
            ..settings
        },
    );
    let addr = server.addr();
    let mut idle: Vec<_> = (0..40).map(|_| connect(addr)).collect();
    // Both slots go to clients that authenticate, whatever the idle sockets do.
    let t = Instant::now();
    let mut a = Client::connect(addr, &secret(), &pinned(pair.pin)).unwrap();
    let mut b = Client::connect(addr, &secret(), &pinned(pair.pin)).unwrap();
    eprintln!("two clients in past 40 idle sockets in {:?}", t.elapsed());
    a.ping().unwrap();
    b.ping().unwrap();
    // The oldest idle sockets were evicted: closed without a byte.
    let mut got = Vec::new();
    idle[0].read_to_end(&mut got).unwrap();
    assert!(
        got.is_empty(),
        "an evicted socket was sent {} bytes",
        got.len()
    );
    // A third authenticated client is over the slots: busy, after its proof.
    let e = Client::connect(addr, &secret(), &pinned(pair.pin)).unwrap_err();
    assert_eq!(e.remote().map(|r| r.code), Some(ErrorCode::Busy), "{e}");
    idle.clear();
    server.shutdown().unwrap();
}
