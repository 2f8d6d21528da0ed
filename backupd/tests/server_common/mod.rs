//! A fake spool and raw-protocol helpers for the daemon tests: the server runs on
//! 127.0.0.1:0 against the fake, and tests speak bytes to it.

#![allow(dead_code)]

use backupd::server::{self, ServerHandle, Settings, SpoolAccess};
use backupd::spool::{SpoolError, UserList};
use formats::protocol::Secret;
use formats::protocol::{self as wire, Auth, AuthOk, FrameHeader, Greeting, HEADER_LEN};
use formats::protocol::{FolderStat, MetaCopy, UserEntry, UserFileId, UserFileStat, UserListing};
use formats::{FileStat, Timestamp};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &[u8] = b"test-secret-0123456789abcdef";

pub fn secret() -> Secret {
    Secret::from_bytes(SECRET).unwrap()
}

pub fn stat(size: u64) -> FileStat {
    FileStat {
        size,
        mtime: Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
        inode: 4242,
    }
}

/// Deterministic bytes for a message of `uid`.
pub fn message_bytes(uid: u32, len: usize) -> Vec<u8> {
    testkit::Rng::new(u64::from(uid).wrapping_mul(2_654_435_761) | 1).bytes(len)
}

/// Sizes of the fake folder's messages by UID (1-based); UID 7 is gone, UID 8 fails to
/// open, UID 9 claims more bytes than its file has.
pub const SIZES: [usize; 6] = [10, 0, 1000, 300_000, 5 * 1024 * 1024, 1];

pub struct FakeSpool {
    pub dir: tempfile::TempDir,
    pub users: usize,
    /// Milliseconds every `folders` call sleeps (to make requests overlap).
    pub folders_delay_ms: u64,
    pub folders_calls: AtomicUsize,
    /// Calls of `read_user_file`.
    pub user_file_reads: AtomicUsize,
    pub index: Vec<u8>,
}

impl FakeSpool {
    pub fn new(users: usize) -> FakeSpool {
        let dir = tempfile::tempdir().unwrap();
        for (i, &len) in SIZES.iter().enumerate() {
            let uid = i as u32 + 1;
            std::fs::write(dir.path().join(format!("{uid}.")), message_bytes(uid, len)).unwrap();
        }
        // UID 9: 100 bytes on disk, 200 claimed.
        std::fs::write(dir.path().join("9."), message_bytes(9, 100)).unwrap();
        FakeSpool {
            dir,
            users,
            folders_delay_ms: 0,
            folders_calls: AtomicUsize::new(0),
            user_file_reads: AtomicUsize::new(0),
            index: message_bytes(77, 1_500_000),
        }
    }

    fn path(&self, uid: u32) -> PathBuf {
        self.dir.path().join(format!("{uid}."))
    }

    fn known(&self, user: &str) -> Result<(), SpoolError> {
        backupd::spool::check_name("user", user)?;
        if user == "alice" || user == "slow" {
            Ok(())
        } else {
            Err(SpoolError::UnknownUser { user: user.into() })
        }
    }
}

pub fn folder(name: &str, uniqueid: &str) -> FolderStat {
    FolderStat {
        name: name.into(),
        uniqueid: uniqueid.into(),
        partition: "default".into(),
        uidvalidity: 1_700_000_000,
        header: stat(1024),
        index: stat(1_500_000),
        annotations: if name == "INBOX" {
            Some(stat(4096))
        } else {
            None
        },
    }
}

impl SpoolAccess for FakeSpool {
    fn users(&self) -> Result<Arc<UserList>, SpoolError> {
        Ok(Arc::new(UserList::from(
            (0..self.users)
                .map(|i| UserEntry {
                    user: format!("user{i:06}@example.com"),
                    partition: format!("p{}", i % 4),
                })
                .collect::<Vec<_>>(),
        )))
    }

    fn folders(&self, user: &str) -> Result<UserListing, SpoolError> {
        self.folders_calls.fetch_add(1, Ordering::Relaxed);
        self.known(user)?;
        if self.folders_delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.folders_delay_ms));
        }
        Ok(UserListing {
            folders: vec![folder("INBOX", "f1"), folder("Work/Sub", "f2")],
            user_files: vec![
                UserFileStat {
                    id: UserFileId::Seen,
                    stat: stat(3),
                },
                UserFileStat {
                    id: UserFileId::SieveScript("main".into()),
                    stat: stat(11),
                },
            ],
        })
    }

    fn copy_meta(&self, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError> {
        self.known(user)?;
        if uniqueid != "f1" {
            return Err(SpoolError::UnknownFolder {
                user: user.into(),
                uniqueid: uniqueid.into(),
            });
        }
        Ok(MetaCopy {
            uniqueid: uniqueid.into(),
            header: (b"HEADER".repeat(10), stat(60)),
            index: (self.index.clone(), stat(self.index.len() as u64)),
            annotations: Some((Vec::new(), stat(0))),
        })
    }

    fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(File, u64)>, SpoolError> {
        self.known(user)?;
        if uniqueid != "f1" {
            return Err(SpoolError::UnknownFolder {
                user: user.into(),
                uniqueid: uniqueid.into(),
            });
        }
        let path = self.path(uid);
        match uid {
            7 => Ok(None),
            8 => Err(SpoolError::Io {
                path,
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            }),
            9 => Ok(Some((File::open(&path).unwrap(), 200))),
            _ => match File::open(&path) {
                Ok(f) => {
                    let len = f.metadata().unwrap().len();
                    Ok(Some((f, len)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(SpoolError::Io { path, source }),
            },
        }
    }

    fn read_user_file(
        &self,
        user: &str,
        id: &UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
        self.user_file_reads.fetch_add(1, Ordering::Relaxed);
        self.known(user)?;
        Ok(match id {
            UserFileId::Seen => Some((b"abc".to_vec(), stat(3))),
            UserFileId::Subscriptions => None,
            UserFileId::SieveScript(n) if n == "main" => {
                Some((b"keep;\r\nstop;".to_vec(), stat(11)))
            }
            UserFileId::SieveScript(n) if n == "broken" => {
                return Err(SpoolError::Io {
                    path: "/sieve/broken.script".into(),
                    source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                })
            }
            UserFileId::SieveScript(_) => None,
            UserFileId::SieveActive => Some((b"main".to_vec(), stat(4))),
        })
    }
}

pub fn settings() -> Settings {
    Settings {
        max_connections: 64,
        blocking_threads: 4,
        // Far longer than any test takes on a loaded machine: only the tests of the timeouts
        // set them short, on a server where nothing else can be caught out by them.
        idle_timeout: Duration::from_secs(600),
        auth_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(5),
        data_chunk: 64 * 1024,
        server_name: "fake backupd".into(),
        allow_from: backupd::allow::loopback(),
        max_unauthenticated: 16,
        tls: None,
    }
}

pub fn start(spool: FakeSpool, settings: Settings) -> (ServerHandle, Arc<FakeSpool>) {
    let spool = Arc::new(spool);
    let h = server::spawn(
        "127.0.0.1:0".parse().unwrap(),
        spool.clone(),
        secret(),
        settings,
    )
    .unwrap();
    (h, spool)
}

// ---- raw protocol

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // Only a stuck server is that slow.
    s.set_read_timeout(Some(testkit::wait::STUCK)).unwrap();
    s
}

/// Reads one frame; `None` on a clean close before any header byte.
pub fn read_frame(s: &mut TcpStream) -> Option<(FrameHeader, Vec<u8>)> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match s.read(&mut head[got..]) {
            Ok(0) if got == 0 => return None,
            Ok(0) => panic!("closed inside a frame header"),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && got == 0 => return None,
            Err(e) => panic!("reading a frame: {e}"),
        }
    }
    let h = FrameHeader::decode(&head).unwrap();
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body).unwrap();
    Some((h, body))
}

pub fn frame_of<'a>(h: &FrameHeader, body: &'a [u8]) -> wire::Frame<'a> {
    wire::Frame {
        kind: h.kind,
        id: h.id,
        body,
    }
}

/// The next frame as a reply.
pub fn read_reply(s: &mut TcpStream) -> (u32, wire::Reply) {
    let (h, body) = read_frame(s).expect("a frame, not the end of the connection");
    (h.id, wire::Reply::decode(&frame_of(&h, &body)).unwrap())
}

/// Asserts the server sends an error frame with `code` and then closes.
pub fn expect_error_and_close(s: &mut TcpStream, code: wire::ErrorCode) -> wire::ErrorReply {
    let (_, reply) = read_reply(s);
    let wire::Reply::Error(e) = reply else {
        panic!("expected an error, found {reply:?}")
    };
    assert_eq!(e.code, code, "{e}");
    assert!(read_frame(s).is_none(), "the server should close after {e}");
    e
}

pub fn read_greeting(s: &mut TcpStream) -> Greeting {
    let (h, body) = read_frame(s).unwrap();
    Greeting::decode(&frame_of(&h, &body)).unwrap()
}

/// Connects, reads the greeting and sends a right auth frame (plain TCP); returns the
/// stream and the greeting's nonce.
pub fn send_auth(addr: SocketAddr) -> (TcpStream, [u8; 32]) {
    let mut s = connect(addr);
    let g = read_greeting(&mut s);
    let nonce = [7u8; 32];
    let mut out = Vec::new();
    Auth {
        version: wire::VERSION,
        nonce,
        proof: secret().client_proof(wire::VERSION, &g.nonce, &nonce, &wire::Binding::Plain),
    }
    .encode(&mut out)
    .unwrap();
    s.write_all(&out).unwrap();
    (s, g.nonce)
}

/// Connects and authenticates by hand; returns the stream after AuthOk.
pub fn raw_auth(addr: SocketAddr) -> TcpStream {
    let (mut s, server_nonce) = send_auth(addr);
    let (h, body) = read_frame(&mut s).unwrap();
    let ok = AuthOk::decode(&frame_of(&h, &body)).unwrap();
    assert!(secret().verify_server(
        wire::VERSION,
        &server_nonce,
        &[7u8; 32],
        &wire::Binding::Plain,
        &ok.proof
    ));
    s
}

pub fn send(s: &mut TcpStream, req: &wire::Request, id: u32) {
    let mut out = Vec::new();
    req.encode(id, &mut out).unwrap();
    s.write_all(&out).unwrap();
}

/// Ping over a raw connection: the connection still works.
pub fn raw_ping(s: &mut TcpStream, id: u32) {
    send(s, &wire::Request::Ping, id);
    assert_eq!(read_reply(s), (id, wire::Reply::End { items: 0 }));
}
