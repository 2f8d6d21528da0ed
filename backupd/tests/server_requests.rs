//! Every request through the client library against the fake spool: replies whole and in
//! order, pipelining, streaming, and 32 clients at once with none starved.

mod server_common;

use backup_server::client::{Client, ClientOptions, Fetched};
use formats::protocol::UserFile;
use formats::protocol::UserFileId;
use formats::protocol::{ErrorCode, Reply, Request};
use server_common::*;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

fn client(addr: std::net::SocketAddr) -> Client {
    Client::connect(addr, &secret(), &ClientOptions::default()).unwrap()
}

#[test]
fn list_users_500k_in_many_frames() {
    let (server, _spool) = start(FakeSpool::new(500_000), settings());
    let mut c = client(server.addr());
    assert_eq!(c.server_name(), "fake backupd");
    let t = Instant::now();
    let users = c.list_users().unwrap();
    let took = t.elapsed();
    assert_eq!(users.len(), 500_000);
    assert_eq!(users[0].user, "user000000@example.com");
    assert_eq!(users[499_999].user, "user499999@example.com");
    assert_eq!(users[7].partition, "p3");
    eprintln!("list users: 500000 users in {took:?}");

    // Raw: the reply spans many frames of one id, then End with the count.
    let mut s = raw_auth(server.addr());
    send(&mut s, &Request::ListUsers, 42);
    let mut frames = 0;
    let mut n = 0;
    loop {
        let (id, reply) = read_reply(&mut s);
        assert_eq!(id, 42);
        match reply {
            Reply::Users(u) => {
                frames += 1;
                n += u.len();
            }
            Reply::End { items } => {
                assert_eq!(items, 500_000);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(n, 500_000);
    assert!(frames > 10, "{frames} frames");
}

#[test]
fn folders_meta_messages_user_files() {
    let (server, spool) = start(FakeSpool::new(3), settings());
    let mut c = client(server.addr());

    let listing = c.list_folders("alice").unwrap();
    assert_eq!(
        listing.folders,
        vec![folder("INBOX", "f1"), folder("Work/Sub", "f2")]
    );
    assert_eq!(listing.user_files.len(), 2);
    assert_eq!(
        listing.user_files[1].id,
        UserFileId::SieveScript("main".into())
    );

    let meta = c.copy_meta("alice", "f1").unwrap();
    assert_eq!(meta.uniqueid, "f1");
    assert_eq!(meta.header.0, b"HEADER".repeat(10));
    assert_eq!(
        meta.index.0, spool.index,
        "1.5 MB index over 64 KiB data frames"
    );
    assert_eq!(meta.index.1, stat(1_500_000));
    assert_eq!(meta.annotations, Some((Vec::new(), stat(0))));

    // Messages: sizes 10, 0, 1000, 300000, 5 MiB, 1; 7 gone; 8 unreadable; 9 shrank;
    // 5 again to see the stream reuse its buffer.
    let uids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 5];
    let mut stream = c.fetch_messages("alice", "f1", &uids).unwrap();
    let mut seen = Vec::new();
    while let Some(item) = stream.next_message().unwrap() {
        match item {
            Fetched::Message {
                uid,
                size,
                mut body,
            } => {
                let mut bytes = Vec::new();
                match body.read_to_end(&mut bytes) {
                    Ok(_) => {
                        assert_eq!(bytes.len() as u64, size);
                        assert_eq!(
                            bytes,
                            message_bytes(uid, SIZES[uid as usize - 1]),
                            "UID {uid}"
                        );
                        seen.push(format!("{uid}:{size}"));
                    }
                    Err(e) => {
                        let item = body.item_error(e).unwrap();
                        assert_eq!(item.code, ErrorCode::Io);
                        assert!(item.text.contains("after 100 of 200 bytes"), "{item}");
                        seen.push(format!("{uid}:shrank"));
                    }
                }
            }
            Fetched::Gone { uid } => seen.push(format!("{uid}:gone")),
            Fetched::Failed(e) => {
                assert_eq!(e.code, ErrorCode::Io);
                assert!(e.text.contains("UID 8") && e.text.contains("8."), "{e}");
                seen.push("failed".into());
            }
        }
    }
    drop(stream);
    assert_eq!(
        seen,
        [
            "1:10",
            "2:0",
            "3:1000",
            "4:300000",
            "5:5242880",
            "6:1",
            "7:gone",
            "failed",
            "9:shrank",
            "5:5242880"
        ]
    );
    // Unknown folder for a message fetch: the whole reply is one error.
    let mut stream = c.fetch_messages("alice", "f2", &[1, 2]).unwrap();
    let e = stream.next_message().unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::UnknownFolder);
    assert!(stream.next_message().unwrap().is_none());
    drop(stream);
    // An empty UID list is an empty reply.
    assert!(c
        .fetch_messages("alice", "f1", &[])
        .unwrap()
        .collect_all()
        .unwrap()
        .is_empty());

    let ids = [
        UserFileId::Seen,
        UserFileId::Subscriptions,
        UserFileId::SieveScript("main".into()),
        UserFileId::SieveScript("broken".into()),
        UserFileId::SieveActive,
    ];
    let files = c.fetch_user_files("alice", &ids).unwrap();
    assert_eq!(files.len(), 5);
    assert_eq!(
        files[0].1,
        UserFile::Found {
            bytes: b"abc".to_vec(),
            stat: stat(3)
        }
    );
    assert_eq!(files[1].1, UserFile::Absent);
    assert!(matches!(&files[2].1, UserFile::Found { bytes, .. } if bytes == b"keep;\r\nstop;"));
    let UserFile::Failed(e) = &files[3].1 else {
        panic!("{:?}", files[3])
    };
    assert!(e.text.contains("broken.script"), "{e}");
    assert_eq!(files[4].0, UserFileId::SieveActive);
    c.ping().unwrap();
}

#[test]
fn pipelined_requests_come_back_in_order() {
    let (server, spool) = start(FakeSpool::new(3), settings());
    let mut c = client(server.addr());
    let t = Instant::now();
    let mut pending = Vec::new();
    for i in 0..200 {
        let user = if i % 10 == 3 { "nobody" } else { "alice" };
        pending.push(c.send_list_folders(user).unwrap());
    }
    let meta = c.send_copy_meta("alice", "f1").unwrap();
    assert_eq!(c.pending(), 201);
    for (i, p) in pending.into_iter().enumerate() {
        match c.recv(p) {
            Ok(l) => {
                assert_ne!(i % 10, 3);
                assert_eq!(l.folders.len(), 2);
            }
            Err(e) => {
                assert_eq!(i % 10, 3, "{e}");
                assert_eq!(e.remote().unwrap().code, ErrorCode::UnknownUser);
            }
        }
    }
    assert_eq!(c.recv(meta).unwrap().index.0.len(), 1_500_000);
    eprintln!(
        "200 pipelined folder listings + 1 meta copy: {:?}",
        t.elapsed()
    );
    assert_eq!(spool.folders_calls.load(Ordering::Relaxed), 200);

    // Out of order is refused, and the connection stays usable.
    let a = c.send_list_folders("alice").unwrap();
    let b = c.send_list_folders("alice").unwrap();
    let e = c.recv(b).unwrap_err();
    assert!(e.to_string().contains("request order"), "{e}");
    c.recv(a).unwrap();

    // Raw pipelining: ids are echoed, one reply after the other.
    let mut s = raw_auth(server.addr());
    let mut out = Vec::new();
    for id in [10u32, 11, 12] {
        Request::Ping.encode(id, &mut out).unwrap();
    }
    std::io::Write::write_all(&mut s, &out).unwrap();
    for id in [10u32, 11, 12] {
        assert_eq!(read_reply(&mut s), (id, Reply::End { items: 0 }));
    }
}

#[test]
fn thirty_two_clients_at_once_none_starved() {
    let mut spool = FakeSpool::new(100);
    spool.folders_delay_ms = 5;
    let mut set = settings();
    set.blocking_threads = 4;
    let (server, _spool) = start(spool, set);
    let addr = server.addr();
    // The clients go in rounds: no client starts a round before every client has finished
    // the one before. A client the server starved (served only after the others were done)
    // would hold every other client at the next round: the test would be stuck. No client's
    // time is compared with another's, which is up to the machine's scheduler.
    const CLIENTS: usize = 32;
    const ROUNDS: usize = 10;
    let rounds = Arc::new(Rounds::new(CLIENTS));
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let rounds = Arc::clone(&rounds);
            std::thread::spawn(move || {
                let mut c = client(addr);
                for round in 0..ROUNDS {
                    rounds.wait_all(round, i);
                    assert_eq!(c.list_folders("alice").unwrap().folders.len(), 2);
                    let got = c
                        .fetch_messages("alice", "f1", &[1, 3, 4, 6])
                        .unwrap()
                        .collect_all()
                        .unwrap();
                    assert_eq!(got.len(), 4);
                    assert_eq!(got[2].as_ref().unwrap().len(), 300_000);
                    if i % 4 == 0 && round == ROUNDS / 2 {
                        // Some also pull the 5 MiB message: heavy neighbours.
                        let got = c
                            .fetch_messages("alice", "f1", &[5])
                            .unwrap()
                            .collect_all()
                            .unwrap();
                        assert_eq!(got[0].as_ref().unwrap().len(), 5 * 1024 * 1024);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("32 clients, {ROUNDS} rounds in step: {:?}", start.elapsed());
}

/// A barrier for numbered rounds that names the clients it still waits for when stuck.
struct Rounds {
    /// Clients that reached each round.
    reached: Mutex<Vec<Vec<usize>>>,
    changed: Condvar,
    clients: usize,
}

impl Rounds {
    fn new(clients: usize) -> Rounds {
        Rounds {
            reached: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            clients,
        }
    }

    /// Client `i` reached `round`; returns when every client has.
    fn wait_all(&self, round: usize, i: usize) {
        let mut reached = self.reached.lock().unwrap();
        if reached.len() <= round {
            reached.resize(round + 1, Vec::new());
        }
        reached[round].push(i);
        self.changed.notify_all();
        let (reached, timeout) = self
            .changed
            .wait_timeout_while(reached, testkit::wait::STUCK, |r| {
                r[round].len() < self.clients
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "stuck: round {round} still waits for clients other than {:?}",
            reached[round]
        );
    }
}
