//! The IMAP restore client against a fake server (a TcpListener in the test) that lies
//! about literal lengths or sends a line without end: each gives a clear error naming the
//! bound, never a panic, an abort or an allocation of the server's choosing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

use backup_server::restore::imap::{ImapError, ImapSink, ImapTarget};
use formats::imap::ResponseError;

/// Starts a one-connection server that sends `greeting`, then, for each command line it
/// reads, the next of `replies`; returns the error the client got connecting.
fn connect_to(greeting: Vec<u8>, replies: Vec<Vec<u8>>) -> ImapError {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // The client hangs up as soon as it sees the lie: later writes may fail.
        let _ = s.write_all(&greeting);
        if replies.is_empty() {
            // Hang up: the client has all there is.
            return;
        }
        let mut r = BufReader::new(s.try_clone().unwrap());
        for reply in replies {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let _ = s.write_all(&reply);
        }
        // Wait for the client to close.
        let mut rest = String::new();
        let _ = r.read_line(&mut rest);
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut t = ImapTarget::parse(&format!("imap://admin@127.0.0.1:{port}/")).unwrap();
    t.password_file = Some(pw);
    let e = match ImapSink::connect(&t, "amy") {
        Ok(_) => panic!("a lying server was accepted"),
        Err(e) => e,
    };
    server.join().unwrap();
    e
}

const CAPS: &[u8] = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] fake\r\n";

fn too_large(e: &ImapError, digits: &str) {
    match e {
        ImapError::Response {
            source: ResponseError::LiteralTooLarge { announced, .. },
            ..
        } => assert_eq!(announced, digits),
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("a literal of {digits} bytes announced")),
        "{text}"
    );
    assert!(
        text.contains("more than the 268435456 bytes allowed"),
        "{text}"
    );
}

#[test]
fn absurd_literal_in_the_greeting() {
    for digits in [
        "18446744073709551615",
        "1000000000000",
        "99999999999999999999999",
    ] {
        let e = connect_to(format!("* OK hi {{{digits}}}\r\n").into_bytes(), Vec::new());
        too_large(&e, digits);
    }
}

#[test]
fn absurd_literal_in_an_answer() {
    for digits in ["18446744073709551615", "1000000000000"] {
        let answer = format!("* 1 FETCH (BODY[] {{{digits}}}\r\n").into_bytes();
        let e = connect_to(CAPS.to_vec(), vec![answer]);
        too_large(&e, digits);
    }
}

#[test]
fn endless_line() {
    // 2 MiB without a line end, more than the 1 MiB bound: refused once the bound is
    // passed, not read to the end.
    let mut line = CAPS.to_vec();
    line.extend(std::iter::repeat_n(b'x', 2 << 20));
    let e = connect_to(CAPS.to_vec(), vec![line[CAPS.len()..].to_vec()]);
    match &e {
        ImapError::Response {
            source: ResponseError::LineTooLong { limit, .. },
            server,
        } => {
            assert_eq!(*limit, 1 << 20);
            assert!(server.starts_with("127.0.0.1:"), "{server}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .contains("a response line longer than 1048576 bytes"),
        "{e}"
    );
}

#[test]
fn a_server_that_hangs_up_mid_literal() {
    let e = connect_to(b"* OK hi {100}\r\nonly this".to_vec(), Vec::new());
    assert!(matches!(e, ImapError::Closed), "{e:?}");
}
