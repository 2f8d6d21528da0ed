//! Helpers shared by the store tests: a settable clock, synthetic messages, and folder
//! snapshots built with formats' own cyrus.header and cyrus.index writers.
#![allow(dead_code, missing_docs)]

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use backup_server::store::{
    Clock, FolderSnapshot, MessageInfo, MetaFileData, RunEnd, Store, StoreOptions,
};
use formats::archive::UserFileKind;
use formats::cyrus::header::MailboxHeader;
use formats::cyrus::index::{
    write_index, IndexHeader, IndexLayout, IndexRecord, InternalFlags, SystemFlags, UserFlags,
};
use formats::protocol::FolderStat;
use formats::{FileStat, Guid, Timestamp};

/// A clock the test sets (whole seconds).
#[derive(Debug, Default)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn at(secs: i64) -> Arc<TestClock> {
        Arc::new(TestClock(AtomicI64::new(secs)))
    }
    pub fn set(&self, secs: i64) {
        self.0.store(secs, Ordering::SeqCst)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    pub fn secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_secs(self.0.load(Ordering::SeqCst))
    }
}

pub fn opts(clock: &Arc<TestClock>) -> StoreOptions {
    StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    }
}

/// A deterministic message of about `len` bytes, different for every `seed`.
pub fn message(seed: u64, len: usize) -> Vec<u8> {
    let mut out = format!(
        "From: sender{seed}@example.org\r\nTo: user@example.com\r\nSubject: message {seed}\r\n\r\n"
    )
    .into_bytes();
    let mut rng = testkit::Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    while out.len() < len {
        // Text-ish bytes that compress like mail, not like zeros.
        let x = rng.next_u64();
        let words = [
            "the ", "backup ", "of ", "mail ", "store ", "chunk ", "\r\n", "index ",
        ];
        out.extend_from_slice(words[(x % 8) as usize].as_bytes());
        if x % 5 == 0 {
            out.extend_from_slice(format!("{:x} ", x).as_bytes());
        }
    }
    out
}

pub fn guid(data: &[u8]) -> Guid {
    Guid::of(data)
}

/// One message record of a synthetic folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub uid: u32,
    pub guid: Guid,
    pub size: u64,
    pub seen: bool,
    pub flagged: bool,
    /// Keyword bit 0 set (named by the folder's first user flag).
    pub keyword0: bool,
    pub expunged: bool,
    /// `\Deleted` (the user's mark, not Cyrus's internal expunged flag).
    pub deleted: bool,
    pub internaldate: i64,
}

impl Rec {
    pub fn new(uid: u32, data: &[u8]) -> Rec {
        Rec {
            uid,
            guid: Guid::of(data),
            size: data.len() as u64,
            seen: false,
            flagged: false,
            keyword0: false,
            expunged: false,
            deleted: false,
            internaldate: 1_700_000_000 + i64::from(uid),
        }
    }
    pub fn seen(mut self) -> Rec {
        self.seen = true;
        self
    }
    pub fn flagged(mut self) -> Rec {
        self.flagged = true;
        self
    }
    pub fn expunged(mut self) -> Rec {
        self.expunged = true;
        self
    }
    pub fn deleted(mut self) -> Rec {
        self.deleted = true;
        self
    }
    pub fn keyword(mut self) -> Rec {
        self.keyword0 = true;
        self
    }

    /// The IMAP flag names the store should report.
    pub fn flag_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.flagged {
            v.push("\\Flagged".to_owned());
        }
        if self.deleted {
            v.push("\\Deleted".to_owned());
        }
        if self.seen {
            v.push("\\Seen".to_owned());
        }
        if self.keyword0 {
            v.push("$Label1".to_owned());
        }
        v
    }
}

/// cyrus.header bytes of a folder (one keyword, `$Label1`).
pub fn header_bytes(unique_id: &str, name: &str) -> Vec<u8> {
    MailboxHeader {
        mbtype: Some("e".into()),
        name: Some(name.into()),
        unique_id: Some(unique_id.into()),
        user_flags: vec![Some("$Label1".into())],
        ..MailboxHeader::default()
    }
    .to_bytes()
}

/// cyrus.index bytes (minor version 17, Cyrus 3.4-3.8) of a folder holding `recs`.
pub fn index_bytes(uidvalidity: u32, recs: &[Rec]) -> Vec<u8> {
    let l = IndexLayout::of(17).unwrap();
    let h = IndexHeader {
        minor_version: 17,
        start_offset: l.header_size as u32,
        record_size: l.record_size as u32,
        num_records: recs.len() as u32,
        uidvalidity,
        last_uid: recs.iter().map(|r| r.uid).max().unwrap_or(0),
        highestmodseq: Some(recs.len() as u64 + 1),
        ..IndexHeader::default()
    };
    let records: Vec<IndexRecord> = recs
        .iter()
        .map(|r| {
            let mut sys = 0u16;
            if r.seen {
                sys |= SystemFlags::SEEN;
            }
            if r.flagged {
                sys |= SystemFlags::FLAGGED;
            }
            if r.deleted {
                sys |= SystemFlags::DELETED;
            }
            let mut uf = UserFlags::default();
            if r.keyword0 {
                uf.set(0);
            }
            IndexRecord {
                uid: r.uid,
                internaldate: Timestamp::from_secs(r.internaldate),
                sentdate: Timestamp::from_secs(r.internaldate),
                size: r.size,
                system_flags: SystemFlags(sys),
                internal_flags: InternalFlags(if r.expunged {
                    InternalFlags::EXPUNGED
                } else {
                    0
                }),
                user_flags: uf,
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
    write_index(&mut out, &h, &records).unwrap();
    out
}

pub fn stat(size: usize, mtime: i64, inode: u64) -> FileStat {
    FileStat {
        size: size as u64,
        mtime: Timestamp::from_secs(mtime),
        inode,
    }
}

/// Owned bytes of a folder snapshot, lent out as a [`FolderSnapshot`].
pub struct Snap {
    pub unique_id: String,
    pub folder: String,
    pub header: Vec<u8>,
    pub index: Vec<u8>,
    pub mtime: i64,
}

impl Snap {
    pub fn new(unique_id: &str, folder: &str, uidvalidity: u32, recs: &[Rec], mtime: i64) -> Snap {
        Snap {
            unique_id: unique_id.into(),
            folder: folder.into(),
            header: header_bytes(unique_id, folder),
            index: index_bytes(uidvalidity, recs),
            mtime,
        }
    }

    pub fn as_snapshot(&self) -> FolderSnapshot<'_> {
        FolderSnapshot {
            unique_id: &self.unique_id,
            folder: &self.folder,
            partition: Some("default"),
            header: MetaFileData {
                bytes: &self.header,
                stat: Some(stat(self.header.len(), self.mtime, 11)),
            },
            index: MetaFileData {
                bytes: &self.index,
                stat: Some(stat(self.index.len(), self.mtime, 12)),
            },
            annotations: None,
        }
    }
}

/// Every row of every table of an index, as text, for table-by-table comparison.
pub fn dump_tables(index: &Path) -> Vec<(String, Vec<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(index, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    backup_server::store::TABLES
        .iter()
        .map(|t| {
            let mut st = conn
                .prepare(&format!("SELECT * FROM {t} ORDER BY 1, 2"))
                .unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    let mut cols = Vec::new();
                    for i in 0..n {
                        let v: rusqlite::types::Value = r.get(i)?;
                        cols.push(format!("{v:?}"));
                    }
                    Ok(cols.join("|"))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            (t.to_string(), rows)
        })
        .collect()
}

/// The listing entry backupd would send for a snapshot built by `Snap` (same stat data).
pub fn listed(s: &Snap) -> FolderStat {
    FolderStat {
        name: s.folder.clone(),
        uniqueid: s.unique_id.clone(),
        partition: "default".into(),
        uidvalidity: 7,
        header: stat(s.header.len(), s.mtime, 11),
        index: stat(s.index.len(), s.mtime, 12),
        annotations: None,
    }
}

/// The stat data of the subscriptions file [`commit_run`] stores.
pub fn subscriptions_stat() -> FileStat {
    stat(10, 50, 99)
}

/// Commits one complete run holding `messages`, the snapshots `snaps` and a 3-byte
/// subscriptions file with [`subscriptions_stat`].
pub fn commit_run(store: &mut Store, messages: &[Vec<u8>], snaps: &[&Snap]) {
    let mut run = store.begin_run().unwrap();
    for d in messages {
        run.add_message(Guid::of(d), d.len() as u64, &d[..], MessageInfo::default())
            .unwrap();
    }
    for s in snaps {
        run.add_folder_snapshot(s.as_snapshot()).unwrap();
    }
    run.add_user_file(
        UserFileKind::Subscriptions,
        Some(subscriptions_stat()),
        3,
        &b"abc"[..],
    )
    .unwrap();
    run.commit(RunEnd::Complete).unwrap();
}

/// A backup-server configuration under `dir` for running the binary against stores only
/// (no mail server is reached): its path.
#[allow(dead_code)]
pub fn binary_config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("backup-server.toml");
    testkit::config::ServerConfig::minimal("127.0.0.1:9")
        .write_with_secrets(&p, "binary-test-secret-0123456789")
        .unwrap();
    p
}
