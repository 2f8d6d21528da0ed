//! Drives a real per-user store (`backup_server::store`) in a temporary directory through a
//! sequence of operations decoded from the input, and checks it after every step against
//! an in-memory model of what a committed store must hold.
//!
//! Operations: runs (messages, honest or lying about their GUID or length; folder
//! snapshots with cyrus.header and cyrus.index written by `formats`; renames; tombstones;
//! user files) ended by a complete or partial commit, an abort, or a crash (the run's
//! bytes that reached the file kept or torn at a random offset, garbage appended, then
//! the store reopened, or reindexed, which keeps the uncommitted run's whole chunks);
//! reopen; compaction at a random retention; reindex; the clock moving on.
//!
//! Checked after every step: each message of the pool is held exactly when the model says
//! so, and a held one reads back byte for byte (so its SHA-1 is its GUID); the folders
//! (`folders_at`, `folder_at` by name), each folder's newest snapshot, its visible and
//! expunged records with their flags and whether their message is stored; the runs and
//! which ended; the newest user files; the store's own deep check. Nothing of an aborted
//! or crashed run is visible after it. Reindex: every table equal row for row and every
//! catalog answer equal at every time used. Compaction: every catalog answer at times
//! inside the retention window unchanged, no message held by a current record dropped.
//!
//! The model follows docs/store.md, except where writing it showed the store wrong:
//! `folder_at(N)` used to answer with the newest name event of N, which after a partial run
//! could be the tombstone of a folder other than the one `folders_at` showed named N (a
//! 25-byte input of this target showed it; backup-server/tests/store_folder_at.rs).
//!
//! Runs fast on tmpfs: `TMPDIR=/dev/shm cargo fuzz run store_model`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use backup_server::compact::{compact_store, CompactOptions};
use backup_server::store::{
    Added, Catalog, Clock, FolderSnapshot, MessageInfo, MessageState, MetaFileData, RunEnd, Store,
    StoreError, StoreOptions, UserDir, TABLES,
};
use formats::archive::{ScanEvent, Scanner, UserFileKind};
use formats::cyrus::header::MailboxHeader;
use formats::cyrus::index::{
    write_index, IndexHeader, IndexRecord, InternalFlags, Layout, SystemFlags,
};
use formats::{FileStat, Guid, Timestamp};
use libfuzzer_sys::arbitrary::{Result as AResult, Unstructured};

const USER: &str = "fuzz@example.com";
const FOLDERS: [&str; 4] = ["F0", "F1", "F2", "F3"];
const NAMES: [&str; 4] = ["INBOX", "A", "B", "A/B"];
const SIEVE: [&str; 2] = ["main", "v1..v2"];
/// Top-level steps per input.
const MAX_STEPS: usize = 40;
/// Operations per run.
const MAX_RUN_OPS: usize = 24;
const START: i64 = 1_800_000_000;

/// The message pool: sizes around tar's 512-byte blocks and the in-memory check limit.
fn pool() -> &'static [(Vec<u8>, Guid)] {
    static POOL: OnceLock<Vec<(Vec<u8>, Guid)>> = OnceLock::new();
    POOL.get_or_init(|| {
        [
            0usize, 1, 64, 511, 512, 513, 1000, 1025, 2048, 3000, 5000, 9000,
        ]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"abcdefgh \r\n"[(x % 11) as usize]
                })
                .collect();
            let g = Guid::of(&bytes);
            (bytes, g)
        })
        .collect()
    })
}

fn guid(m: usize) -> Guid {
    pool()[m].1
}

#[derive(Debug)]
struct FuzzClock(AtomicI64);

impl Clock for FuzzClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// One record of a folder snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    uid: u32,
    msg: usize,
    seen: bool,
    expunged: bool,
}

impl Rec {
    fn flags(&self) -> Vec<String> {
        if self.seen {
            vec!["\\Seen".to_owned()]
        } else {
            Vec::new()
        }
    }
}

#[derive(Debug, Clone, Default)]
struct FolderM {
    /// The newest snapshot: run and records.
    newest: Option<(u64, Vec<Rec>)>,
    /// A trusted tombstone came after the newest snapshot: no record is current.
    closed: bool,
}

/// A user file's key: kind (0 seen, 1 subscriptions, 2 sieve) and script name.
type FileKey = (u8, String);

/// What the committed store must hold.
#[derive(Debug, Clone, Default)]
struct Model {
    messages: BTreeSet<usize>,
    /// Name events in time order: folder, name, deleted.
    names: Vec<(usize, usize, bool)>,
    folders: [FolderM; 4],
    /// Runs: id, ended.
    runs: Vec<(u64, bool)>,
    user_files: BTreeMap<FileKey, (Vec<u8>, bool)>,
}

impl Model {
    fn next_run(&self) -> u64 {
        self.runs.iter().map(|r| r.0).max().unwrap_or(0) + 1
    }

    fn newest_event(&self, f: usize) -> Option<(usize, bool)> {
        self.names
            .iter()
            .rev()
            .find(|e| e.0 == f)
            .map(|e| (e.1, e.2))
    }

    /// Live folders: (folder, name).
    fn live(&self) -> Vec<(usize, usize)> {
        (0..FOLDERS.len())
            .filter_map(|f| match self.newest_event(f) {
                Some((n, false)) => Some((f, n)),
                _ => None,
            })
            .collect()
    }

    /// The folder `folders_at` shows named `n` with the newest link.
    fn folder_named(&self, n: usize) -> Option<usize> {
        let live: BTreeSet<(usize, usize)> = self.live().into_iter().collect();
        self.names
            .iter()
            .rev()
            .find(|e| {
                !e.2 && e.1 == n && live.contains(&(e.0, e.1)) && {
                    // this link is its folder's newest event
                    self.names.iter().rev().find(|x| x.0 == e.0) == Some(*e)
                }
            })
            .map(|e| e.0)
    }

    fn current(&self, f: usize) -> &[Rec] {
        match &self.folders[f] {
            FolderM {
                newest: Some((_, recs)),
                closed: false,
            } => recs,
            _ => &[],
        }
    }
}

/// What a run appended, in file order, with its number of entries.
#[derive(Debug, Clone)]
enum Ev {
    Start,
    Message(usize),
    Link(usize, usize),
    Metas(usize, Vec<Rec>, usize),
    Tombstone(usize),
    UserFile(FileKey, Vec<u8>, bool),
}

impl Ev {
    fn entries(&self) -> usize {
        match self {
            Ev::Metas(_, _, n) => *n,
            _ => 1,
        }
    }
}

/// Applies a run's events to the model: all of them (`upto` None) or those within the
/// first `upto` entries (a crashed run's whole chunks, found by reindex).
fn apply(m: &mut Model, run: u64, evs: &[Ev], upto: Option<usize>, complete: bool) {
    let mut used = 0;
    let mut tombstones = Vec::new();
    for ev in evs {
        let n = ev.entries();
        if let Some(k) = upto {
            if used + n > k {
                assert!(
                    used >= k,
                    "a snapshot split across a chunk boundary: {ev:?}"
                );
                break;
            }
        }
        used += n;
        match ev {
            Ev::Start => m.runs.push((run, complete)),
            Ev::Message(i) => {
                m.messages.insert(*i);
            }
            Ev::Link(f, n) => m.names.push((*f, *n, false)),
            Ev::Metas(f, recs, _) => {
                m.folders[*f] = FolderM {
                    newest: Some((run, recs.clone())),
                    closed: false,
                }
            }
            Ev::Tombstone(f) => tombstones.push((m.names.len(), *f)),
            Ev::UserFile(k, b, a) => {
                m.user_files.insert(k.clone(), (b.clone(), *a));
            }
        }
    }
    if complete {
        // Tombstones take effect at the end marker, each at its own place in time.
        // Named as the folder was named then (no link of it in this run: it was not
        // touched), inserted from the last so that the places stay right.
        let named: Vec<(usize, usize, usize)> = tombstones
            .iter()
            .map(|&(at, f)| (at, f, m.newest_event(f).expect("a named folder").0))
            .collect();
        for (at, f, name) in named.into_iter().rev() {
            m.names.insert(at, (f, name, true));
            m.folders[f].closed = true;
        }
    }
}

/// What a run in progress knows, beyond the committed model.
struct RunView<'m> {
    model: &'m Model,
    evs: Vec<Ev>,
    touched: BTreeSet<usize>,
    snapshotted: BTreeSet<usize>,
}

impl RunView<'_> {
    fn held(&self, i: usize) -> bool {
        self.model.messages.contains(&i)
            || self
                .evs
                .iter()
                .any(|e| matches!(e, Ev::Message(j) if *j == i))
    }

    fn tombstone_pending(&self, f: usize) -> bool {
        self.evs
            .iter()
            .any(|e| matches!(e, Ev::Tombstone(g) if *g == f))
    }

    /// The newest name row of `f` as the run's transaction sees it (its own links, not
    /// its tombstones, which wait for the end marker).
    fn newest_name(&self, f: usize) -> Option<(usize, bool)> {
        self.evs
            .iter()
            .rev()
            .find_map(|e| match e {
                Ev::Link(g, n) if *g == f => Some((*n, false)),
                _ => None,
            })
            .or_else(|| self.model.newest_event(f))
    }
}

fn header_bytes(f: usize) -> Vec<u8> {
    MailboxHeader {
        mbtype: Some("e".into()),
        name: Some(format!("user.fuzz.{}", FOLDERS[f])),
        unique_id: Some(FOLDERS[f].into()),
        user_flags: vec![Some("$Label1".into())],
        ..MailboxHeader::default()
    }
    .to_bytes()
}

fn index_bytes(recs: &[Rec]) -> Vec<u8> {
    let l = Layout::of(17).unwrap();
    let h = IndexHeader {
        minor_version: 17,
        start_offset: l.header_size as u32,
        record_size: l.record_size as u32,
        num_records: recs.len() as u32,
        uidvalidity: 7,
        last_uid: recs.last().map_or(0, |r| r.uid),
        highestmodseq: Some(recs.len() as u64 + 1),
        ..IndexHeader::default()
    };
    let records: Vec<IndexRecord> = recs
        .iter()
        .map(|r| IndexRecord {
            uid: r.uid,
            internaldate: Timestamp::from_secs(1_700_000_000 + i64::from(r.uid)),
            size: pool()[r.msg].0.len() as u64,
            system_flags: SystemFlags(if r.seen { SystemFlags::SEEN } else { 0 }),
            internal_flags: InternalFlags(if r.expunged {
                InternalFlags::EXPUNGED
            } else {
                0
            }),
            guid: Some(guid(r.msg)),
            modseq: Some(u64::from(r.uid)),
            ..IndexRecord::default()
        })
        .collect();
    let mut out = Vec::new();
    write_index(&mut out, &h, &records).unwrap();
    out
}

fn stat(size: usize, secs: i64, inode: u64) -> FileStat {
    FileStat {
        size: size as u64,
        mtime: Timestamp::from_secs(secs),
        inode,
    }
}

fn file_kind(k: &FileKey, active: bool) -> UserFileKind {
    match k.0 {
        0 => UserFileKind::Seen,
        1 => UserFileKind::Subscriptions,
        _ => UserFileKind::Sieve {
            name: k.1.clone(),
            active,
        },
    }
}

/// A folder in a view: unique id, name, snapshot (run, time, records, exists, index bytes).
type FolderView = (String, String, Option<(u64, Timestamp, u32, u32, Vec<u8>)>);
/// A record in a view: UID, GUID, flags, state, stored, valid from, valid to.
type RecordView = (
    u32,
    Guid,
    Vec<String>,
    MessageState,
    bool,
    Timestamp,
    Option<Timestamp>,
);
/// A user file in a view: kind, run, time, stat data, bytes.
type UserFileView = (String, u64, Timestamp, Option<FileStat>, Vec<u8>);

/// Everything the catalog answers at one time, for comparing a store with itself.
#[derive(Debug, PartialEq)]
struct View {
    folders: Vec<FolderView>,
    by_name: Vec<Option<String>>,
    messages: Vec<Vec<RecordView>>,
    visible: Vec<Vec<(u32, Guid, bool)>>,
    user_files: Vec<UserFileView>,
}

/// The catalog at `at`. `window`: only what a restore at `at` can need (compaction keeps
/// that): records gone by then left out, when a record entered its state not compared,
/// nor whether an expunged record's message is still stored.
fn view(cat: &Catalog, at: Option<Timestamp>, window: bool) -> View {
    let folders = cat
        .folders_at(at)
        .unwrap()
        .into_iter()
        .map(|f| {
            let s = f.snapshot.map(|s| {
                let bytes = cat.read_entry(&s.index).unwrap();
                (s.run, s.time, s.records, s.exists, bytes)
            });
            (f.unique_id, f.name, s)
        })
        .collect();
    let by_name = NAMES
        .iter()
        .map(|n| cat.folder_at(n, at).unwrap().map(|f| f.unique_id))
        .collect();
    let mut messages = Vec::new();
    let mut visible = Vec::new();
    for u in FOLDERS {
        let mut all = Vec::new();
        cat.messages_at(u, at, true, |m| {
            if !(window && m.state == MessageState::Gone) {
                let from = if window {
                    Timestamp::EPOCH
                } else {
                    m.valid_from
                };
                let stored = m.stored && !(window && m.state != MessageState::Visible);
                all.push((m.uid, m.guid, m.flags, m.state, stored, from, m.valid_to));
            }
            Ok(())
        })
        .unwrap();
        messages.push(all);
        let mut vis = Vec::new();
        cat.messages_at(u, at, false, |m| {
            vis.push((m.uid, m.guid, m.stored));
            Ok(())
        })
        .unwrap();
        visible.push(vis);
    }
    let user_files = cat
        .user_files_at(at)
        .unwrap()
        .into_iter()
        .map(|f| {
            let bytes = cat.read_entry(&f.entry).unwrap();
            (format!("{:?}", f.kind), f.run, f.time, f.stat, bytes)
        })
        .collect();
    View {
        folders,
        by_name,
        messages,
        visible,
        user_files,
    }
}

/// Every row of every table, as text.
fn dump(index: &Path) -> Vec<(String, Vec<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        index,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    TABLES
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

/// Checks the store against the model.
fn check(store: &Store, m: &Model) {
    let cat = store.catalog();
    for (i, (bytes, g)) in pool().iter().enumerate() {
        let held = cat.has_message(g).unwrap();
        assert_eq!(held, m.messages.contains(&i), "message {i} held");
        if held {
            let mut r = cat.open_message(g).unwrap().expect("a held message opens");
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert!(got == *bytes, "message {i} reads back whole");
        }
    }
    // Folders and their names.
    let got: Vec<(String, String, Option<u64>)> = cat
        .folders_at(None)
        .unwrap()
        .into_iter()
        .map(|f| (f.unique_id, f.name, f.snapshot.map(|s| s.run)))
        .collect();
    let mut want: Vec<(String, String, Option<u64>)> = m
        .live()
        .into_iter()
        .map(|(f, n)| {
            (
                FOLDERS[f].to_owned(),
                NAMES[n].to_owned(),
                m.folders[f].newest.as_ref().map(|s| s.0),
            )
        })
        .collect();
    want.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    assert_eq!(got, want, "folders_at");
    for (n, name) in NAMES.iter().enumerate() {
        let got = cat.folder_at(name, None).unwrap().map(|f| f.unique_id);
        let want = m.folder_named(n).map(|f| FOLDERS[f].to_owned());
        assert_eq!(got, want, "folder_at({name})");
    }
    // Records.
    for (f, u) in FOLDERS.iter().enumerate() {
        let cur = m.current(f);
        let mut vis = Vec::new();
        cat.messages_at(u, None, false, |r| {
            vis.push((r.uid, r.guid, r.flags, r.stored));
            Ok(())
        })
        .unwrap();
        let want: Vec<_> = cur
            .iter()
            .filter(|r| !r.expunged)
            .map(|r| (r.uid, guid(r.msg), r.flags(), m.messages.contains(&r.msg)))
            .collect();
        assert_eq!(vis, want, "visible records of {u}");
        let mut all = Vec::new();
        cat.messages_at(u, None, true, |r| {
            if r.state != MessageState::Gone {
                all.push((r.uid, r.guid, r.flags, r.state));
            }
            Ok(())
        })
        .unwrap();
        let want: Vec<_> = cur
            .iter()
            .map(|r| {
                let st = if r.expunged {
                    MessageState::Expunged
                } else {
                    MessageState::Visible
                };
                (r.uid, guid(r.msg), r.flags(), st)
            })
            .collect();
        assert_eq!(all, want, "records of {u}");
    }
    // Runs.
    let runs: Vec<(u64, bool)> = cat
        .runs()
        .unwrap()
        .into_iter()
        .map(|r| {
            assert!(r.started.is_some());
            (r.run, r.ended.is_some())
        })
        .collect();
    assert_eq!(runs, m.runs, "runs");
    // User files.
    let got: Vec<(String, Vec<u8>)> = cat
        .user_files_at(None)
        .unwrap()
        .into_iter()
        .map(|f| (format!("{:?}", f.kind), cat.read_entry(&f.entry).unwrap()))
        .collect();
    let mut want: Vec<(String, Vec<u8>)> = m
        .user_files
        .iter()
        .map(|(k, (b, a))| (format!("{:?}", file_kind(k, *a)), b.clone()))
        .collect();
    let order = |s: &(String, Vec<u8>)| s.0.clone();
    let mut got = got;
    got.sort_by_key(order);
    want.sort_by_key(order);
    assert_eq!(got, want, "user files");
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<String>::new(),
        "store check"
    );
}

struct Harness {
    root: tempfile::TempDir,
    clock: Arc<FuzzClock>,
    opts: StoreOptions,
    model: Model,
    /// Clock seconds at which entries may have been written.
    times: BTreeSet<i64>,
}

enum End {
    Commit(bool),
    Abort,
    Crash {
        reindex: bool,
        cut: u32,
        garbage: Vec<u8>,
    },
}

impl Harness {
    fn secs(&self) -> i64 {
        self.clock.0.load(Ordering::SeqCst)
    }

    fn open(&self) -> Store {
        Store::open(self.root.path(), USER, self.opts.clone()).expect("opening the store")
    }

    fn data_path(store: &Store) -> std::path::PathBuf {
        store.catalog().data_path().to_path_buf()
    }

    fn advance(&mut self, u: &mut Unstructured<'_>) -> AResult<()> {
        let step = [0, 1, 1, 7, 3600, 86_400, 5 * 86_400][u.choose_index(7)?];
        self.clock.0.fetch_add(step, Ordering::SeqCst);
        Ok(())
    }

    /// One run, from begin to its end; returns the store (reopened after a crash).
    fn run(&mut self, mut store: Store, u: &mut Unstructured<'_>) -> AResult<Store> {
        let committed_len = store.committed_len();
        let run_id = self.model.next_run();
        let data_path = Self::data_path(&store);
        let mut rv = RunView {
            model: &self.model,
            evs: vec![Ev::Start],
            touched: BTreeSet::new(),
            snapshotted: BTreeSet::new(),
        };
        let mut run = store.begin_run().expect("begin_run");
        assert_eq!(run.run_id(), run_id);
        let mut end = End::Abort;
        for _ in 0..MAX_RUN_OPS {
            self.times.insert(self.clock.0.load(Ordering::SeqCst));
            match u.int_in_range(0u8..=11)? {
                0..=2 => {
                    let i = u.choose_index(pool().len())?;
                    let lie = u.int_in_range(0u8..=5)?;
                    let (bytes, g) = &pool()[i];
                    let info = MessageInfo {
                        internal_date: Some(Timestamp::from_secs(1_700_000_000 + i as i64)),
                        origin: Some((FOLDERS[i % 4].to_owned(), i as u32 + 1)),
                    };
                    let held = rv.held(i);
                    let r = match lie {
                        0 if !bytes.is_empty() => {
                            let mut b = bytes.clone();
                            b[bytes.len() / 2] ^= 0x20;
                            run.add_message(*g, b.len() as u64, &b[..], info)
                        }
                        1 => run.add_message(*g, bytes.len() as u64 + 1, &bytes[..], info),
                        _ => run.add_message(*g, bytes.len() as u64, &bytes[..], info),
                    };
                    match (held, lie, r) {
                        (true, _, Ok(Added::AlreadyHeld)) => {}
                        (false, 0, Err(StoreError::GuidMismatch { .. })) if !bytes.is_empty() => {}
                        (false, 1, Err(StoreError::LengthMismatch { .. })) => {}
                        (false, _, Ok(Added::Stored(_)))
                            if lie > 1 || (lie == 0 && bytes.is_empty()) =>
                        {
                            rv.evs.push(Ev::Message(i))
                        }
                        (h, l, r) => panic!("message {i} held {h} lie {l}: {r:?}"),
                    }
                }
                3..=4 => {
                    let f = u.choose_index(4)?;
                    let n = u.choose_index(4)?;
                    // The folder's records changed from its newest snapshot, and new ones.
                    let mut recs: Vec<Rec> = Vec::new();
                    for r in self.model.current(f) {
                        let b = u.int_in_range(0u8..=7)?;
                        if b & 1 == 0 {
                            recs.push(Rec {
                                seen: r.seen ^ (b & 2 != 0),
                                expunged: r.expunged ^ (b & 4 != 0),
                                ..r.clone()
                            });
                        }
                    }
                    let mut uid = recs.last().map_or(0, |r| r.uid);
                    for _ in 0..u.int_in_range(0u8..=3)? {
                        uid += 1 + u32::from(u.int_in_range(0u8..=2)?);
                        recs.push(Rec {
                            uid,
                            msg: u.choose_index(pool().len())?,
                            seen: u.arbitrary()?,
                            expunged: u.int_in_range(0u8..=3)? == 0,
                        });
                    }
                    // Only an expunged record may lack its message (backup_user's rule).
                    for r in &mut recs {
                        if !rv.held(r.msg) {
                            r.expunged = true;
                        }
                    }
                    let annotations = u.arbitrary::<bool>()?;
                    let header = header_bytes(f);
                    let index = index_bytes(&recs);
                    let secs = self.secs();
                    let snap = FolderSnapshot {
                        unique_id: FOLDERS[f],
                        folder: NAMES[n],
                        partition: Some("default"),
                        header: MetaFileData {
                            bytes: &header,
                            stat: Some(stat(header.len(), secs, 10 + f as u64)),
                        },
                        index: MetaFileData {
                            bytes: &index,
                            stat: Some(stat(index.len(), secs, 20 + f as u64)),
                        },
                        annotations: annotations.then_some(MetaFileData {
                            bytes: b"annotations",
                            stat: Some(stat(11, secs, 30 + f as u64)),
                        }),
                    };
                    let links = run.summary().links;
                    let r = run.add_folder_snapshot(snap);
                    if rv.snapshotted.contains(&f) || rv.tombstone_pending(f) {
                        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
                    } else {
                        r.unwrap_or_else(|e| panic!("snapshot of {f}: {e}"));
                        let link = rv.newest_name(f) != Some((n, false));
                        assert_eq!(run.summary().links - links, u64::from(link));
                        if link {
                            rv.evs.push(Ev::Link(f, n));
                        }
                        rv.evs
                            .push(Ev::Metas(f, recs, 2 + usize::from(annotations)));
                        rv.touched.insert(f);
                        rv.snapshotted.insert(f);
                    }
                }
                5 => {
                    // A rename: only of a folder the store holds live (the planner's rule).
                    let f = u.choose_index(4)?;
                    let n = u.choose_index(4)?;
                    let pending = rv.tombstone_pending(f);
                    let live = matches!(rv.newest_name(f), Some((_, false)));
                    if pending {
                        let r = run.link_name(FOLDERS[f], NAMES[n]);
                        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
                    } else if live {
                        let appended = run.link_name(FOLDERS[f], NAMES[n]).unwrap();
                        assert_eq!(appended, rv.newest_name(f) != Some((n, false)));
                        if appended {
                            rv.evs.push(Ev::Link(f, n));
                        }
                        rv.touched.insert(f);
                    }
                }
                6 => {
                    let f = u.choose_index(4)?;
                    let r = run.tombstone(FOLDERS[f]);
                    if rv.touched.contains(&f) {
                        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
                    } else {
                        let want = !rv.tombstone_pending(f)
                            && matches!(rv.newest_name(f), Some((_, false)));
                        assert_eq!(r.unwrap(), want, "tombstone of {f}");
                        if want {
                            rv.evs.push(Ev::Tombstone(f));
                        }
                    }
                }
                7 => {
                    let k: FileKey = match u.int_in_range(0u8..=3)? {
                        0 => (0, String::new()),
                        1 => (1, String::new()),
                        s => (2, SIEVE[usize::from(s - 2)].to_owned()),
                    };
                    let active = k.0 == 2 && u.arbitrary()?;
                    let len = u.int_in_range(0usize..=40)?;
                    let bytes = u.bytes(len)?.to_vec();
                    let secs = self.secs();
                    run.add_user_file(
                        file_kind(&k, active),
                        Some(stat(bytes.len(), secs, 99)),
                        bytes.len() as u64,
                        &bytes[..],
                    )
                    .unwrap();
                    rv.evs.push(Ev::UserFile(k, bytes, active));
                }
                8 => {
                    self.clock
                        .0
                        .fetch_add(u.int_in_range(0..=2)?, Ordering::SeqCst);
                }
                9 | 10 => {
                    end = End::Commit(u.arbitrary()?);
                    break;
                }
                _ => {
                    end = match u.int_in_range(0u8..=2)? {
                        0 => End::Abort,
                        r => End::Crash {
                            reindex: r == 2,
                            cut: u.arbitrary()?,
                            garbage: {
                                let n = u.int_in_range(0usize..=64)?;
                                u.bytes(n)?.to_vec()
                            },
                        },
                    };
                    break;
                }
            }
        }
        let evs = std::mem::take(&mut rv.evs);
        match end {
            End::Commit(complete) => {
                let s = run
                    .commit(if complete {
                        RunEnd::Complete
                    } else {
                        RunEnd::Partial
                    })
                    .unwrap_or_else(|e| panic!("commit: {e}"));
                assert_eq!(s.run, run_id);
                apply(&mut self.model, run_id, &evs, None, complete);
                Ok(store)
            }
            End::Abort => {
                run.abort();
                assert_eq!(store.committed_len(), committed_len);
                assert_eq!(std::fs::metadata(&data_path).unwrap().len(), committed_len);
                Ok(store)
            }
            End::Crash {
                reindex,
                cut,
                garbage,
            } => {
                // What reached the file: the run's whole chunks (each flushed as it closes).
                let bytes = std::fs::read(&data_path).unwrap();
                let tail = bytes[committed_len as usize..].to_vec();
                drop(run);
                drop(store);
                let keep = if tail.is_empty() {
                    0
                } else {
                    (cut as usize) % (tail.len() + 1)
                };
                // Torn at `keep`; garbage after it when the store is reopened (reindex
                // cannot tell garbage from a damaged chunk).
                let mut written = tail[..keep].to_vec();
                if !reindex {
                    written.extend_from_slice(&garbage);
                }
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&data_path)
                    .unwrap();
                assert_eq!(f.metadata().unwrap().len(), committed_len, "cut on drop");
                f.write_all(&written).unwrap();
                drop(f);
                if reindex {
                    // The whole chunks that survived count, as a partial run.
                    let mut entries = 0;
                    let mut in_chunk = 0;
                    let mut sc = Scanner::new(Cursor::new(&written[..]));
                    loop {
                        match sc.next_event() {
                            Ok(ScanEvent::ChunkStart { .. }) => in_chunk = 0,
                            Ok(ScanEvent::Entry(_)) => in_chunk += 1,
                            Ok(ScanEvent::ChunkEnd(_)) => entries += in_chunk,
                            Ok(ScanEvent::End(_)) | Err(_) => break,
                        }
                    }
                    let locked = UserDir::new(self.root.path(), USER)
                        .unwrap()
                        .lock()
                        .unwrap();
                    let (store, _) = locked
                        .reindex(self.opts.clone())
                        .unwrap_or_else(|e| panic!("reindex after a crash: {e}"));
                    apply(&mut self.model, run_id, &evs, Some(entries), false);
                    Ok(store)
                } else {
                    let store = self.open();
                    assert_eq!(store.open_report().cut_bytes, written.len() as u64);
                    assert_eq!(store.committed_len(), committed_len);
                    Ok(store)
                }
            }
        }
    }

    /// Views at every time used, and now.
    fn views(&self, store: &Store, from: Option<Timestamp>) -> Vec<View> {
        let cat = store.catalog();
        let mut out = vec![view(cat, None, from.is_some())];
        if let Some(c) = from {
            out.push(view(cat, Some(c), true));
        }
        for &s in &self.times {
            if from.is_some_and(|c| s < c.secs) {
                continue;
            }
            let t = Timestamp::new(s, 999_999_999).unwrap();
            out.push(view(cat, Some(t), from.is_some()));
        }
        out
    }

    fn reindex(&mut self, store: Store) -> Store {
        let before = self.views(&store, None);
        let index = store.dir().index_path();
        let locked = store.close().unwrap();
        let rows = dump(&index);
        let (store, report) = locked.reindex(self.opts.clone()).expect("reindex");
        assert_eq!(report.tail, formats::archive::Tail::Clean);
        assert_eq!(dump(&index), rows, "reindex: tables row for row");
        assert_eq!(self.views(&store, None), before, "reindex: catalog answers");
        store
    }

    fn compact(&mut self, store: Store, u: &mut Unstructured<'_>) -> AResult<Store> {
        let retention = [0, 1, 3600, 86_400, 3 * 86_400][u.choose_index(5)?];
        let o = CompactOptions {
            threshold: 0.0,
            min_bytes: 0,
            dry_run: false,
            now: Timestamp::from_secs(self.secs()),
            retention_secs: retention,
            store: self.opts.clone(),
        };
        let cutoff = o.cutoff();
        let before = self.views(&store, Some(cutoff));
        let (store, _) = compact_store(store, &o).unwrap_or_else(|e| panic!("compaction: {e}"));
        assert_eq!(
            self.views(&store, Some(cutoff)),
            before,
            "compaction: answers inside the window"
        );
        let cat = store.catalog();
        let held: BTreeSet<usize> = (0..pool().len())
            .filter(|&i| cat.has_message(&guid(i)).unwrap())
            .collect();
        assert!(
            held.is_subset(&self.model.messages),
            "compaction added messages"
        );
        for f in 0..FOLDERS.len() {
            for r in self.model.current(f) {
                if !r.expunged {
                    assert!(held.contains(&r.msg), "compaction dropped a live message");
                }
            }
        }
        self.model.messages = held;
        Ok(store)
    }
}

fn run_input(data: &[u8]) -> AResult<()> {
    let mut u = Unstructured::new(data);
    let cap = 1024 * (1 + u64::from(u.int_in_range(0u8..=7)?));
    let clock = Arc::new(FuzzClock(AtomicI64::new(START)));
    let mut h = Harness {
        root: tempfile::tempdir().unwrap(),
        clock: clock.clone(),
        opts: StoreOptions {
            chunk_cap: cap,
            gzip_level: 1,
            verify_in_memory: 1024,
            clock,
        },
        model: Model::default(),
        times: BTreeSet::new(),
    };
    let mut store = Some(h.open());
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        h.times.insert(h.secs());
        let s = store.take().unwrap();
        let s = match u.int_in_range(0u8..=9)? {
            0..=4 => h.run(s, &mut u)?,
            5 => {
                // Reopen; with garbage after the committed length first, sometimes.
                let path = Harness::data_path(&s);
                let len = s.committed_len();
                drop(s);
                let n = u.int_in_range(0usize..=32)?;
                let garbage = u.bytes(n)?;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(garbage).unwrap();
                drop(f);
                let s = h.open();
                assert_eq!(s.open_report().cut_bytes, garbage.len() as u64);
                assert_eq!(s.committed_len(), len);
                s
            }
            6 => h.compact(s, &mut u)?,
            7 => h.reindex(s),
            _ => {
                h.advance(&mut u)?;
                s
            }
        };
        check(&s, &h.model);
        store = Some(s);
    }
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = run_input(data);
});
