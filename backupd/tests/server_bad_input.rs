//! Bad input on the wire: each gets its clear error or a clean close, and the daemon goes
//! on serving other clients after every one of them.

mod server_common;

use backup_server::client::{Client, ClientError, ClientOptions};
use backupd::server::Settings;
use formats::protocol::Secret;
use formats::protocol::{self as wire, kind, ErrorCode, FrameHeader, Reply, Request, MAX_BODY};
use server_common::*;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;
use testkit::wait;

fn client(addr: std::net::SocketAddr) -> Client {
    Client::connect(addr, &secret(), &ClientOptions::default()).unwrap()
}

#[test]
fn every_kind_of_bad_input_leaves_the_daemon_serving() {
    let (server, _spool) = start(FakeSpool::new(10), settings());
    let addr = server.addr();
    // A client that stays connected throughout must keep working.
    let mut bystander = client(addr);

    // 1. A request before authentication: error, close.
    let mut s = connect(addr);
    read_greeting(&mut s);
    send(&mut s, &Request::ListUsers, 1);
    let e = expect_error_and_close(&mut s, ErrorCode::NotAuthenticated);
    assert!(e.text.contains("list users"), "{e}");
    bystander.ping().unwrap();

    // 2. Wrong secret: error, close (and logged with the peer address).
    let wrong = Secret::from_bytes(b"not-the-secret-at-all").unwrap();
    let err = Client::connect(addr, &wrong, &ClientOptions::default()).unwrap_err();
    let remote = err.remote().expect("an error reply").clone();
    assert_eq!(remote.code, ErrorCode::AuthFailed, "{err}");
    assert!(!err.connection_usable());
    bystander.ping().unwrap();

    // 3. An oversize frame before auth (over the 1 KiB pre-auth bound): error, close.
    let mut s = connect(addr);
    read_greeting(&mut s);
    let head = FrameHeader {
        len: 5000,
        kind: kind::AUTH,
        id: 0,
    };
    s.write_all(&head.encode()).unwrap();
    let e = expect_error_and_close(&mut s, ErrorCode::FrameTooLarge);
    assert!(e.text.contains("5000"), "{e}");

    // 4. An oversize frame after auth (over 16 MiB): error naming the request id, close.
    let mut s = raw_auth(addr);
    let head = FrameHeader {
        len: MAX_BODY + 1,
        kind: kind::LIST_FOLDERS,
        id: 99,
    };
    s.write_all(&head.encode()).unwrap();
    let (id, reply) = read_reply(&mut s);
    assert_eq!(id, 99);
    let Reply::Error(e) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    assert!(read_frame(&mut s).is_none());
    bystander.ping().unwrap();

    // 5. Unknown command and malformed bodies: an error reply each, the connection goes on.
    let mut s = raw_auth(addr);
    let mut out = Vec::new();
    wire::frame::write_frame(0x7f, 5, b"whatever", &mut out).unwrap();
    wire::frame::write_frame(kind::LIST_FOLDERS, 6, &[0, 200, b'x'], &mut out).unwrap();
    wire::frame::write_frame(kind::AUTH, 7, &[0; 66], &mut out).unwrap();
    wire::frame::write_frame(kind::PING, 8, b"extra", &mut out).unwrap();
    s.write_all(&out).unwrap();
    let expect = |s: &mut std::net::TcpStream, id: u32, code: ErrorCode, needle: &str| {
        let (got, reply) = read_reply(s);
        assert_eq!(got, id);
        let Reply::Error(e) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(e.code, code, "{e}");
        assert!(e.text.contains(needle), "{e} lacks {needle:?}");
    };
    expect(&mut s, 5, ErrorCode::UnknownCommand, "0x7f");
    expect(&mut s, 6, ErrorCode::BadFrame, "expected user at byte 2");
    expect(&mut s, 7, ErrorCode::UnknownCommand, "auth");
    expect(&mut s, 8, ErrorCode::BadFrame, "5 more bytes");
    raw_ping(&mut s, 9);

    // 6. Garbage, then a half frame, then a disconnect.
    let mut s = raw_auth(addr);
    s.write_all(&[0, 0, 0, 20, kind::PING, 0, 0]).unwrap();
    drop(s);
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    read_greeting(&mut s);
    // "GET " as a length is far over the pre-auth bound.
    expect_error_and_close(&mut s, ErrorCode::FrameTooLarge);

    // 7. Unknown user and path-like names: clear errors, connection usable.
    let mut c = client(addr);
    let e = c.list_folders("mallory").unwrap_err();
    assert!(e.connection_usable());
    let r = e.remote().unwrap();
    assert_eq!(r.code, ErrorCode::UnknownUser);
    assert!(r.text.contains("\"mallory\""), "{r}");
    for bad in ["../etc", "a/b", "a\0b", "..", ""] {
        let e = c.list_folders(bad).unwrap_err();
        assert_eq!(e.remote().unwrap().code, ErrorCode::BadName, "{bad:?}: {e}");
    }
    let e = c.copy_meta("alice", "../../x").unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::BadName, "{e}");
    let e = c.copy_meta("alice", "nosuch").unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::UnknownFolder, "{e}");
    assert!(e.to_string().contains("nosuch"), "{e}");
    let e = c
        .fetch_user_files(
            "alice",
            &[formats::protocol::UserFileId::SieveScript("../x".into())],
        )
        .unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::BadName, "{e}");
    c.ping().unwrap();

    bystander.ping().unwrap();
    server.shutdown().unwrap();
}

#[test]
fn a_client_that_disconnects_mid_stream_harms_nobody() {
    let (server, _spool) = start(FakeSpool::new(10), settings());
    let addr = server.addr();
    let mut bystander = client(addr);
    for round in 0..20 {
        // Ask for the 5 MiB message many times, read a little, vanish.
        let mut s = raw_auth(addr);
        send(
            &mut s,
            &Request::FetchMessages {
                user: "alice".into(),
                uniqueid: "f1".into(),
                uids: vec![5; 20],
            },
            1,
        );
        let mut buf = vec![0u8; 100_000];
        s.read_exact(&mut buf).unwrap();
        if round % 2 == 0 {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        // Closing with unread bytes in the socket makes the kernel send a reset.
        drop(s);
        bystander.ping().unwrap();
    }
    // The same through the client library: drop a stream half-read, then go on using the
    // same connection (the client skips the rest of the reply).
    let mut c = client(addr);
    {
        let mut stream = c.fetch_messages("alice", "f1", &[5, 5, 1]).unwrap();
        let Some(backup_server::client::Fetched::Message { mut body, .. }) =
            stream.next_message().unwrap()
        else {
            panic!()
        };
        let mut buf = [0u8; 1000];
        body.read_exact(&mut buf).unwrap();
    }
    assert_eq!(c.list_folders("alice").unwrap().folders.len(), 2);
    // All connection slots came back: with the bystander and `c`, 62 more make the limit
    // of 64 (retried while the server is still seeing the last resets).
    let many = wait::until_some("every connection slot back", || {
        let tries: Result<Vec<Client>, _> = (0..62)
            .map(|_| Client::connect(addr, &secret(), &ClientOptions::default()))
            .collect();
        match tries {
            Ok(all) => Some(all),
            Err(e) => {
                assert_eq!(e.remote().map(|r| r.code), Some(ErrorCode::Busy), "{e}");
                None
            }
        }
    });
    drop(many);
    bystander.ping().unwrap();
    server.shutdown().unwrap();
}

#[test]
fn limits_and_timeouts() {
    // Over the connection limit: "busy" instead of the server's proof, close. (Only
    // authenticated connections take slots: the refusal comes after the client's proof.)
    let mut set = settings();
    set.max_connections = 2;
    let (server, _spool) = start(FakeSpool::new(1), set);
    let addr = server.addr();
    let mut a = client(addr);
    let _b = client(addr);
    let (mut s, _) = send_auth(addr);
    let e = expect_error_and_close(&mut s, ErrorCode::Busy);
    assert!(e.text.contains("limit 2"), "{e}");
    let err = Client::connect(addr, &secret(), &ClientOptions::default()).unwrap_err();
    assert_eq!(err.remote().unwrap().code, ErrorCode::Busy, "{err}");
    a.ping().unwrap();
    // A client that leaves gives its slot back (once the server has seen it go).
    drop(a);
    let c = wait::until_some("the slot of a client that left", || {
        match Client::connect(addr, &secret(), &ClientOptions::default()) {
            Ok(c) => Some(c),
            Err(e) => {
                assert_eq!(e.remote().map(|r| r.code), Some(ErrorCode::Busy), "{e}");
                None
            }
        }
    });
    drop(c);
    server.shutdown().unwrap();

    // Silent before authentication: timeout error, close. Nobody authenticates on this
    // server, so its short timeout cannot catch out a client slowed down by the machine.
    let mut set = settings();
    set.auth_timeout = Duration::from_millis(300);
    let (server, _spool) = start(FakeSpool::new(1), set);
    let mut s = connect(server.addr());
    read_greeting(&mut s);
    expect_error_and_close(&mut s, ErrorCode::Timeout);
    server.shutdown().unwrap();

    // Silent after authentication: timeout error with id 0, close. The client sends nothing
    // after authenticating, so here too only the silence under test can time out.
    let mut set = settings();
    set.idle_timeout = Duration::from_millis(500);
    let (server, _spool) = start(FakeSpool::new(1), set);
    let mut s = raw_auth(server.addr());
    let e = expect_error_and_close(&mut s, ErrorCode::Timeout);
    assert!(e.text.contains("request"), "{e}");
    server.shutdown().unwrap();
}

#[test]
fn peers_not_in_allow_from_are_closed_before_the_greeting() {
    // Listening on both families; only ::1 may connect, so 127.0.0.1 (seen on this socket
    // as ::ffff:127.0.0.1) is a peer from elsewhere.
    let settings = Settings {
        max_connections: 1,
        allow_from: vec!["::1".parse().unwrap()],
        ..settings()
    };
    let server = match backupd::server::spawn(
        "[::]:0".parse().unwrap(),
        std::sync::Arc::new(FakeSpool::new(3)),
        secret(),
        settings.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            // No IPv6 here: the same with IPv4 alone.
            eprintln!("no IPv6 ({e}); checking refusals over IPv4 only");
            let settings = Settings {
                allow_from: vec!["192.0.2.0/24".parse().unwrap()],
                ..settings
            };
            let (server, _) = start(FakeSpool::new(3), settings);
            let port = server.addr().port();
            let mut s = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert!(got.is_empty());
            return;
        }
    };
    let port = server.addr().port();
    // More refused peers than connection slots, kept open on our side: each is closed
    // without a byte, and none takes the one slot.
    let refused: Vec<_> = (0..3)
        .map(|_| {
            let mut s = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert!(
                got.is_empty(),
                "a refused peer was sent {} bytes",
                got.len()
            );
            s
        })
        .collect();
    let mut allowed = client(std::net::SocketAddr::from((
        std::net::Ipv6Addr::LOCALHOST,
        port,
    )));
    allowed.ping().unwrap();
    drop(refused);
}

#[test]
fn shutdown_tells_idle_clients_and_finishes() {
    // An hour's grace: a shutdown that waited for idle clients instead of telling them would
    // be stuck, whatever the machine's speed.
    let mut set = settings();
    set.shutdown_grace = Duration::from_secs(3600);
    let (server, _spool) = start(FakeSpool::new(1), set);
    let addr = server.addr();
    let mut s = raw_auth(addr);
    raw_ping(&mut s, 1);
    let mut c = client(addr);
    c.ping().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || done_tx.send(server.shutdown()));
    wait::recv(&done_rx, "the shutdown with idle clients").expect("a clean shutdown");
    let e = expect_error_and_close(&mut s, ErrorCode::Busy);
    assert!(e.text.contains("shutting down"), "{e}");
    let err = c.ping().unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { .. } | ClientError::Io { .. }),
        "{err}"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}

#[test]
fn the_client_checks_the_server_proof() {
    // A fake server that knows no secret: greets, then sends a made-up proof.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = Vec::new();
        wire::Greeting {
            min_version: wire::VERSION,
            max_version: wire::VERSION,
            nonce: [1; 32],
            server: "impostor".into(),
        }
        .encode(&mut out)
        .unwrap();
        s.write_all(&out).unwrap();
        let _ = read_frame(&mut s).unwrap();
        out.clear();
        wire::AuthOk { proof: [9; 32] }.encode(&mut out).unwrap();
        s.write_all(&out).unwrap();
        // Hold the socket until the client is done.
        let _ = s.read(&mut [0u8; 1]);
    });
    let err = Client::connect(addr, &secret(), &ClientOptions::default()).unwrap_err();
    assert!(matches!(err, ClientError::ServerProof { .. }), "{err}");
    drop(err);
    t.join().unwrap();

    // Not a backupd at all (an IMAP banner).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"* OK [CAPABILITY IMAP4rev1] Cyrus IMAP ready\r\n")
            .unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    let err = Client::connect(addr, &secret(), &ClientOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a backupd greeting"), "{err}");
    drop(err);
    t.join().unwrap();
}

#[test]
fn a_huge_user_file_list_is_refused_from_its_count() {
    // 16 MiB of one-byte ids ("seen state", again and again) would decode into about
    // 400 MB of ids and millions of spool reads; it is refused as a bad frame instead,
    // and the connection goes on.
    let (server, spool) = start(FakeSpool::new(10), settings());
    let mut s = raw_auth(server.addr());
    let n = MAX_BODY as usize - 2 - 5 - 4;
    let mut body = vec![0, 5];
    body.extend_from_slice(b"alice");
    body.extend_from_slice(&(n as u32).to_be_bytes());
    body.resize(MAX_BODY as usize, 1);
    let mut out = Vec::new();
    wire::frame::write_frame(kind::FETCH_USER_FILES, 3, &body, &mut out).unwrap();
    s.write_all(&out).unwrap();
    let (id, reply) = read_reply(&mut s);
    assert_eq!(id, 3);
    let Reply::Error(e) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(e.code, ErrorCode::BadFrame, "{e}");
    assert!(e.text.contains("at most 1024 ids"), "{e}");
    assert_eq!(
        spool.user_file_reads.load(Ordering::Relaxed),
        0,
        "refused from the count, before any spool read"
    );
    raw_ping(&mut s, 4);
    server.shutdown().unwrap();
}
