//! A real `backupd::server` over an in-memory spool of one user, for tests of the backup
//! path that need no Cyrus: the real protocol end to end (the daemon's server, the backup
//! host's [`Client`]), with the spool's contents and its faults set by the test.
//!
//! Each folder keeps its message records and message files apart, as Cyrus does: its
//! cyrus.header and cyrus.index bytes are written with `formats`' own writers from the
//! records (version 17, Cyrus 3.4 to 3.8), and its message files are the bytes whose SHA-1
//! the records carry as GUIDs, unless a test changes one on purpose. Every change to a
//! folder's records rewrites its cyrus.index with a later mtime, so the planner sees it.
//!
//! Faults: a message file that does not hash to its GUID ([`MemFolder::files`] changed), a
//! file removed with or without its record expunged ([`MemFolder::unlink`],
//! [`MemFolder::remove_file`]), a file the daemon cannot read ([`SpoolState::unreadable`]:
//! an item error), and anything a [hook](MemSpool::set_hook) does at a moment of the
//! conversation: after the listing, after a folder's meta copy, when a message is opened.
//!
//! (backupd's own tests have a fake spool too, `backupd/tests/server_common`, built for
//! the daemon's byte-level tests: fixed files, fake meta bytes. It cannot serve a backup;
//! and this crate depends on backupd, so backupd's tests cannot use this one without a
//! dependency cycle.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Seek, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup_server::client::{Client, ClientOptions};
use backupd::server::{self, ServerHandle, Settings, SpoolAccess};
use backupd::spool::{SpoolError, UserList};
use formats::cyrus::header::MailboxHeader;
use formats::cyrus::index::{
    write_index, IndexHeader, IndexLayout, IndexRecord, InternalFlags, SystemFlags,
};
use formats::protocol::{FolderStat, MetaCopy, Secret, UserEntry, UserFileId, UserListing};
use formats::{FileStat, Guid, Timestamp};

/// The shared secret of the in-memory backupd.
pub const SECRET: &[u8] = b"memspool-test-secret-0123456789";

/// Bytes per DATA frame: small, so that a message of a few KiB spans several frames.
pub const DATA_CHUNK: usize = 1024;

/// mtime of every meta file at generation 0; each rewrite adds a second.
const MTIME_BASE: i64 = 1_790_000_000;

/// A deterministic mail message of exactly `len` bytes (at least its header's length),
/// different for every `(seed, uid)`.
pub fn message(seed: u64, uid: u32, len: usize) -> Vec<u8> {
    let mut out = format!(
        "From: sender{seed}@example.org\r\nTo: alice@example.com\r\n\
         Subject: message {uid} of {seed}\r\n\r\n"
    )
    .into_bytes();
    let header_len = out.len();
    let mut x = (seed << 32 | u64::from(uid)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let words = [
            "mail ", "backup ", "of ", "the ", "\r\n", "spool ", "folder ",
        ];
        out.extend_from_slice(words[(x % 7) as usize].as_bytes());
    }
    out.truncate(len.max(header_len));
    out
}

/// One message record of a folder's cyrus.index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemRecord {
    /// UID.
    pub uid: u32,
    /// SHA-1 of the message as delivered.
    pub guid: Guid,
    /// RFC822.SIZE.
    pub size: u64,
    /// INTERNALDATE (seconds).
    pub internaldate: i64,
    /// \Seen.
    pub seen: bool,
    /// Expunged (Cyrus's delayed expunge: the record and, until unlinked, the file stay).
    pub expunged: bool,
    /// The file is removed (Cyrus's UNLINKED internal flag).
    pub unlinked: bool,
}

/// One folder: its name, unique id, records and message files.
#[derive(Debug, Clone)]
pub struct MemFolder {
    /// The name as its owner sees it (`INBOX`, `Work/Sub`).
    pub name: String,
    /// The mailbox unique id.
    pub uniqueid: String,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// The records, in ascending UID order.
    pub records: Vec<MemRecord>,
    /// The message files by UID (what backupd sends). A test may change one so that it no
    /// longer hashes to its record's GUID, or remove one.
    pub files: BTreeMap<u32, Vec<u8>>,
    inode: u64,
    generation: i64,
    header: Vec<u8>,
    index: Vec<u8>,
}

impl MemFolder {
    /// An empty folder; `inode` tells its meta files apart from other folders'.
    pub fn new(name: &str, uniqueid: &str, inode: u64) -> MemFolder {
        let mut f = MemFolder {
            name: name.into(),
            uniqueid: uniqueid.into(),
            uidvalidity: 1_790_000_000 + inode as u32,
            records: Vec::new(),
            files: BTreeMap::new(),
            inode,
            generation: 0,
            header: Vec::new(),
            index: Vec::new(),
        };
        f.header = MailboxHeader {
            mbtype: Some("e".into()),
            name: Some(format!("user.alice.{}", f.name.replace('/', "."))),
            unique_id: Some(f.uniqueid.clone()),
            ..MailboxHeader::default()
        }
        .to_bytes();
        f.write_index();
        f
    }

    /// Delivers `bytes` as the next UID; returns it.
    pub fn append(&mut self, bytes: Vec<u8>) -> u32 {
        let uid = self.records.last().map_or(1, |r| r.uid + 1);
        self.records.push(MemRecord {
            uid,
            guid: Guid::of(&bytes),
            size: bytes.len() as u64,
            internaldate: 1_780_000_000 + i64::from(uid) * 60,
            seen: false,
            expunged: false,
            unlinked: false,
        });
        self.files.insert(uid, bytes);
        self.rewrite();
        uid
    }

    /// Delivers one message of each of these sizes (different for every folder and UID);
    /// returns their UIDs.
    pub fn append_sizes(&mut self, sizes: &[usize]) -> Vec<u32> {
        sizes
            .iter()
            .map(|&len| {
                let uid = self.records.last().map_or(1, |r| r.uid + 1);
                self.append(message(self.inode, uid, len))
            })
            .collect()
    }

    /// The record of `uid`.
    pub fn record(&self, uid: u32) -> &MemRecord {
        self.records
            .iter()
            .find(|r| r.uid == uid)
            .unwrap_or_else(|| panic!("{}: no UID {uid}", self.name))
    }

    fn record_mut(&mut self, uid: u32) -> &mut MemRecord {
        let name = self.name.clone();
        self.records
            .iter_mut()
            .find(|r| r.uid == uid)
            .unwrap_or_else(|| panic!("{name}: no UID {uid}"))
    }

    /// Sets \Seen on `uid` (a flag change: the cyrus.index is rewritten).
    pub fn set_seen(&mut self, uid: u32) {
        self.record_mut(uid).seen = true;
        self.rewrite();
    }

    /// Expunges `uid` the delayed way: flagged expunged, its file kept.
    pub fn expunge(&mut self, uid: u32) {
        self.record_mut(uid).expunged = true;
        self.rewrite();
    }

    /// Expunges `uid` and removes its file (the record stays, expunged and unlinked).
    pub fn unlink(&mut self, uid: u32) {
        let r = self.record_mut(uid);
        r.expunged = true;
        r.unlinked = true;
        self.files.remove(&uid);
        self.rewrite();
    }

    /// Removes `uid`'s file and nothing else: the cyrus.index still shows it live.
    pub fn remove_file(&mut self, uid: u32) -> Vec<u8> {
        self.files
            .remove(&uid)
            .unwrap_or_else(|| panic!("{}: no file for UID {uid}", self.name))
    }

    /// Rewrites the cyrus.index from the records, with a later mtime.
    pub fn rewrite(&mut self) {
        self.generation += 1;
        self.write_index();
    }

    fn write_index(&mut self) {
        let l = IndexLayout::of(17).unwrap();
        let h = IndexHeader {
            minor_version: 17,
            start_offset: l.header_size as u32,
            record_size: l.record_size as u32,
            num_records: self.records.len() as u32,
            uidvalidity: self.uidvalidity,
            last_uid: self.records.last().map_or(0, |r| r.uid),
            highestmodseq: Some(self.generation as u64 + 1),
            exists: Some(self.records.iter().filter(|r| !r.expunged).count() as u32),
            ..IndexHeader::default()
        };
        let recs: Vec<IndexRecord> = self
            .records
            .iter()
            .map(|r| {
                let mut internal = 0;
                if r.expunged {
                    internal |= InternalFlags::EXPUNGED;
                }
                if r.unlinked {
                    internal |= InternalFlags::UNLINKED;
                }
                IndexRecord {
                    uid: r.uid,
                    internaldate: Timestamp::from_secs(r.internaldate),
                    sentdate: Timestamp::from_secs(r.internaldate),
                    size: r.size,
                    system_flags: SystemFlags(if r.seen { SystemFlags::SEEN } else { 0 }),
                    internal_flags: InternalFlags(internal),
                    guid: Some(r.guid),
                    modseq: Some(u64::from(r.uid)),
                    savedate: Some(Timestamp::from_secs(r.internaldate)),
                    cid: Some(0),
                    createdmodseq: Some(u64::from(r.uid)),
                    cache_crc: Some(0),
                    ..IndexRecord::default()
                }
            })
            .collect();
        let mut out = Vec::new();
        write_index(&mut out, &h, &recs).expect("writing a cyrus.index");
        self.index = out;
    }

    fn stat(&self, size: usize, inode: u64) -> FileStat {
        FileStat {
            size: size as u64,
            mtime: Timestamp::from_secs(MTIME_BASE + self.generation),
            inode,
        }
    }

    /// The folder as backupd lists it.
    pub fn listed(&self) -> FolderStat {
        FolderStat {
            name: self.name.clone(),
            uniqueid: self.uniqueid.clone(),
            partition: "default".into(),
            uidvalidity: self.uidvalidity,
            header: FileStat {
                mtime: Timestamp::from_secs(MTIME_BASE),
                ..self.stat(self.header.len(), self.inode * 10)
            },
            index: self.stat(self.index.len(), self.inode * 10 + 1),
            annotations: None,
        }
    }

    /// The folder's meta files as a meta copy returns them.
    pub fn meta(&self) -> MetaCopy {
        let l = self.listed();
        MetaCopy {
            uniqueid: self.uniqueid.clone(),
            header: (self.header.clone(), l.header),
            index: (self.index.clone(), l.index),
            annotations: None,
        }
    }

    /// The records IMAP shows (not expunged), in UID order.
    pub fn visible(&self) -> impl Iterator<Item = &MemRecord> {
        self.records.iter().filter(|r| !r.expunged)
    }
}

/// The spool: one user's folders, in listing order.
#[derive(Debug, Clone)]
pub struct SpoolState {
    /// The user.
    pub user: String,
    /// The folders, in the order backupd lists them.
    pub folders: Vec<MemFolder>,
    /// Message files backupd cannot read (unique id, UID): an item error each.
    pub unreadable: BTreeSet<(String, u32)>,
}

impl SpoolState {
    /// A spool of `user` with no folder.
    pub fn new(user: &str) -> SpoolState {
        SpoolState {
            user: user.into(),
            folders: Vec::new(),
            unreadable: BTreeSet::new(),
        }
    }

    /// The folder with this unique id.
    pub fn folder(&self, uniqueid: &str) -> &MemFolder {
        self.folders
            .iter()
            .find(|f| f.uniqueid == uniqueid)
            .unwrap_or_else(|| panic!("no folder {uniqueid}"))
    }

    /// The folder with this unique id, to change.
    pub fn folder_mut(&mut self, uniqueid: &str) -> &mut MemFolder {
        self.folders
            .iter_mut()
            .find(|f| f.uniqueid == uniqueid)
            .unwrap_or_else(|| panic!("no folder {uniqueid}"))
    }

    /// Removes a folder (deleted in Cyrus); returns it.
    pub fn remove_folder(&mut self, uniqueid: &str) -> MemFolder {
        let i = self
            .folders
            .iter()
            .position(|f| f.uniqueid == uniqueid)
            .unwrap_or_else(|| panic!("no folder {uniqueid}"));
        self.folders.remove(i)
    }

    /// Every GUID whose message file is in the spool and hashes to it (what a complete
    /// backup must hold, at least).
    pub fn good_guids(&self) -> BTreeSet<Guid> {
        self.folders
            .iter()
            .flat_map(|f| {
                f.records.iter().filter(move |r| {
                    !r.unlinked && f.files.get(&r.uid).is_some_and(|b| Guid::of(b) == r.guid)
                })
            })
            .map(|r| r.guid)
            .collect()
    }
}

/// A moment of the conversation at which a [hook](MemSpool::set_hook) runs, after the
/// spool has answered (the answer already taken is not changed; the next one is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolEvent {
    /// The user's folders were listed.
    Listed,
    /// A folder's meta files were copied.
    MetaCopied {
        /// The folder.
        uniqueid: String,
    },
    /// A message file was opened (or found gone, or failed).
    MessageOpened {
        /// The folder.
        uniqueid: String,
        /// The UID.
        uid: u32,
    },
}

/// What a hook is: it sees the event and may change the spool.
pub type Hook = Box<dyn FnMut(&SpoolEvent, &mut SpoolState) + Send>;

/// What the spool served, counted on the daemon's side.
#[derive(Debug, Default)]
pub struct Served {
    /// Folder listings.
    pub listings: AtomicU64,
    /// Meta copies.
    pub meta_copies: AtomicU64,
    /// Message files asked for (opened, gone or failed).
    pub messages: AtomicU64,
}

/// The in-memory spool as backupd serves it.
pub struct MemSpool {
    state: Mutex<SpoolState>,
    hook: Mutex<Option<Hook>>,
    /// What was served.
    pub served: Served,
}

impl std::fmt::Debug for MemSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemSpool")
            .field("state", &self.state)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl MemSpool {
    /// Serves `state`.
    pub fn new(state: SpoolState) -> MemSpool {
        MemSpool {
            state: Mutex::new(state),
            hook: Mutex::new(None),
            served: Served::default(),
        }
    }

    /// Changes the spool (between backups, or from a test thread).
    pub fn with<T>(&self, f: impl FnOnce(&mut SpoolState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// A copy of the spool as it is now.
    pub fn snapshot(&self) -> SpoolState {
        self.state.lock().unwrap().clone()
    }

    /// Runs `hook` at every [`SpoolEvent`] from now on (replacing any other).
    pub fn set_hook(&self, hook: impl FnMut(&SpoolEvent, &mut SpoolState) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }

    /// No hook from now on.
    pub fn clear_hook(&self) {
        *self.hook.lock().unwrap() = None;
    }

    fn event(&self, state: &mut SpoolState, e: SpoolEvent) {
        if let Some(h) = self.hook.lock().unwrap().as_mut() {
            h(&e, state);
        }
    }

    fn user<'s>(state: &'s SpoolState, user: &str) -> Result<&'s SpoolState, SpoolError> {
        if state.user == user {
            Ok(state)
        } else {
            Err(SpoolError::UnknownUser { user: user.into() })
        }
    }

    fn unknown_folder(user: &str, uniqueid: &str) -> SpoolError {
        SpoolError::UnknownFolder {
            user: user.into(),
            uniqueid: uniqueid.into(),
        }
    }
}

impl SpoolAccess for MemSpool {
    fn users(&self) -> Result<Arc<UserList>, SpoolError> {
        let s = self.state.lock().unwrap();
        Ok(Arc::new(UserList::from(vec![UserEntry {
            user: s.user.clone(),
            partition: "default".into(),
        }])))
    }

    fn folders(&self, user: &str) -> Result<UserListing, SpoolError> {
        self.served.listings.fetch_add(1, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        let listing = UserListing {
            folders: Self::user(&s, user)?
                .folders
                .iter()
                .map(MemFolder::listed)
                .collect(),
            user_files: Vec::new(),
        };
        self.event(&mut s, SpoolEvent::Listed);
        Ok(listing)
    }

    fn copy_meta(&self, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError> {
        self.served.meta_copies.fetch_add(1, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        let meta = Self::user(&s, user)?
            .folders
            .iter()
            .find(|f| f.uniqueid == uniqueid)
            .map(MemFolder::meta)
            .ok_or_else(|| Self::unknown_folder(user, uniqueid))?;
        self.event(
            &mut s,
            SpoolEvent::MetaCopied {
                uniqueid: uniqueid.into(),
            },
        );
        Ok(meta)
    }

    fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(File, u64)>, SpoolError> {
        self.served.messages.fetch_add(1, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        let folder = Self::user(&s, user)?
            .folders
            .iter()
            .find(|f| f.uniqueid == uniqueid)
            .ok_or_else(|| Self::unknown_folder(user, uniqueid))?;
        let path = format!("memspool/{user}/{uniqueid}/{uid}.");
        let answer = if s.unreadable.contains(&(uniqueid.to_owned(), uid)) {
            Err(SpoolError::Io {
                path: path.into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            })
        } else {
            match folder.files.get(&uid) {
                None => Ok(None),
                Some(bytes) => {
                    // An unnamed file carries the bytes: the server reads a File.
                    let io = |source| SpoolError::Io {
                        path: path.clone().into(),
                        source,
                    };
                    let mut f = tempfile::tempfile().map_err(io)?;
                    f.write_all(bytes).map_err(io)?;
                    f.rewind().map_err(io)?;
                    Ok(Some((f, bytes.len() as u64)))
                }
            }
        };
        self.event(
            &mut s,
            SpoolEvent::MessageOpened {
                uniqueid: uniqueid.into(),
                uid,
            },
        );
        answer
    }

    fn read_user_file(
        &self,
        user: &str,
        _id: &UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
        Self::user(&self.state.lock().unwrap(), user)?;
        Ok(None)
    }
}

/// backupd serving a [`MemSpool`] on 127.0.0.1, in this process.
#[derive(Debug)]
pub struct MemBackupd {
    /// The spool it serves.
    pub spool: Arc<MemSpool>,
    handle: ServerHandle,
    secret: Secret,
}

impl MemBackupd {
    /// Starts serving `state` on a free port of 127.0.0.1.
    pub fn start(state: SpoolState) -> MemBackupd {
        let spool = Arc::new(MemSpool::new(state));
        let secret = Secret::from_bytes(SECRET).unwrap();
        let settings = Settings {
            max_connections: 8,
            blocking_threads: 2,
            idle_timeout: Duration::from_secs(120),
            auth_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            data_chunk: DATA_CHUNK,
            server_name: "in-memory backupd".into(),
            allow_from: backupd::allow::loopback(),
            max_unauthenticated: 16,
            // Plain TCP: the fault tests' proxy (`crate::proxy::FrameProxy`) reads and
            // rewrites frames, which TLS exists to prevent.
            tls: None,
        };
        let handle = server::spawn(
            "127.0.0.1:0".parse().unwrap(),
            spool.clone(),
            secret.clone(),
            settings,
        )
        .expect("starting the in-memory backupd");
        MemBackupd {
            spool,
            handle,
            secret,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// A client connected to `addr` (this server, or a proxy in front of it) with this
    /// server's secret.
    pub fn connect_via(
        &self,
        addr: SocketAddr,
    ) -> Result<Client, backup_server::client::ClientError> {
        let opts = ClientOptions {
            connect_timeout: Duration::from_secs(30),
            io_timeout: Some(Duration::from_secs(120)),
            tls: Default::default(),
        };
        Client::connect(addr, &self.secret, &opts)
    }

    /// A client connected straight to this server.
    pub fn connect(&self) -> Client {
        self.connect_via(self.addr())
            .expect("connecting to the in-memory backupd")
    }
}
