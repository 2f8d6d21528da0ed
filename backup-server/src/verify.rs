//! `backup-server verify` and `backup-server reindex`: proving a store is good, and
//! rebuilding its index from the data file alone.
//!
//! Verify reads a store under the readers' lock (a backup may run meanwhile; only the
//! committed length the index names is read) and checks, on top of the index's own rules
//! ([`Catalog::check`](crate::store::Catalog::check), with SQLite's integrity checks):
//!
//! * every committed chunk inflates and its gzip CRC-32 and length check out;
//! * every message entry's SHA-1 equals its GUID;
//! * every entry in the data file has its index row (same chunk, offsets, length, kind), and
//!   every index row points at an entry that is in the data file;
//! * every message entry's GUID has its `messages` row.
//!
//! Each fault names the user, the file and, where one applies, the byte offset (a chunk's
//! offset in the data file; offsets inside a chunk are of its uncompressed data).

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use formats::archive::{EntryMeta, ScanEvent, Scanner, Tail};

use crate::store::{
    is_data_file_name, ReindexReport, StoreError, StoreOptions, StoreReader, UserDir, INDEX_FILE,
};

/// Faults listed per user, at most; more are counted.
const MAX_FAULTS: usize = 1000;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The user whose store it is in.
    pub user: String,
    /// The file it is in (data file or index).
    pub file: PathBuf,
    /// Byte offset in that file, where one applies (a chunk's offset for data files).
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}: {}", self.user, self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What verify did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Stores looked at.
    pub users: u64,
    /// Chunks that inflated and checked out.
    pub chunks: u64,
    /// Entries read.
    pub entries: u64,
    /// Message entries hashed.
    pub messages: u64,
    /// Data file bytes read.
    pub bytes: u64,
    /// The faults (at most 1,000 per user listed).
    pub faults: Vec<Fault>,
    /// Faults found but not listed.
    pub faults_not_listed: u64,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.faults.is_empty() && self.faults_not_listed == 0
    }

    fn merge(&mut self, o: VerifyReport) {
        self.users += o.users;
        self.chunks += o.chunks;
        self.entries += o.entries;
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.faults.extend(o.faults);
        self.faults_not_listed += o.faults_not_listed;
    }
}

/// Every user with a store under `root` (read from each index's `store` row, as user names
/// cannot always be decoded from directory names). Directories whose index cannot be read
/// are returned as faults.
pub fn store_users(root: &Path) -> std::io::Result<(Vec<String>, Vec<Fault>)> {
    let mut users = Vec::new();
    let mut faults = Vec::new();
    let hex2 = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let dirs = |p: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        v.sort();
        Ok(v)
    };
    for a in dirs(root)?.into_iter().filter(|p| hex2(p)) {
        for b in dirs(&a)?.into_iter().filter(|p| hex2(p)) {
            for u in dirs(&b)? {
                let index = u.join(INDEX_FILE);
                if !index.exists() {
                    // A data file with bytes and no index is a store nobody can read or
                    // back up into until it is reindexed: a fault, not an empty directory.
                    if let Some(fault) = index_missing(&u)? {
                        faults.push(fault);
                    }
                    continue;
                }
                let got = rusqlite::Connection::open_with_flags(
                    &index,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .and_then(|c| c.query_row("SELECT user FROM store WHERE id = 1", [], |r| r.get(0)));
                match got {
                    Ok(user) => users.push(user),
                    Err(e) => faults.push(Fault {
                        user: u
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        file: index,
                        offset: None,
                        what: format!("cannot read the store's user: {e}"),
                    }),
                }
            }
        }
    }
    users.sort();
    Ok((users, faults))
}

/// The fault of a store directory without an index whose data file holds bytes (`None`
/// when it holds none: a user directory with only a lock file is not a store).
fn index_missing(dir: &Path) -> std::io::Result<Option<Fault>> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| is_data_file_name(n)) else {
            continue;
        };
        let len = e.metadata()?.len();
        if len > 0 {
            return Ok(Some(Fault {
                user: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                file: dir.join(INDEX_FILE),
                offset: None,
                what: format!(
                    "no index, but data file {name} holds {len} bytes (run backup-server reindex)"
                ),
            }));
        }
    }
    Ok(None)
}

/// Verifies `user`'s store, or every store under `root` when `user` is `None`.
pub fn verify(root: &Path, user: Option<&str>) -> std::io::Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    let users = match user {
        Some(u) => vec![u.to_owned()],
        None => {
            let (users, faults) = store_users(root)?;
            rep.faults.extend(faults);
            users
        }
    };
    for u in &users {
        rep.merge(verify_user(root, u));
    }
    Ok(rep)
}

/// Collects one user's faults, listing at most [`MAX_FAULTS`].
struct Faults<'a> {
    rep: &'a mut VerifyReport,
    user: &'a str,
}

impl Faults<'_> {
    fn push(&mut self, file: &Path, offset: Option<u64>, what: String) {
        if self.rep.faults.len() < MAX_FAULTS {
            self.rep.faults.push(Fault {
                user: self.user.to_owned(),
                file: file.to_path_buf(),
                offset,
                what,
            });
        } else {
            self.rep.faults_not_listed += 1;
        }
    }
}

/// An index row of table `entries`.
struct Row {
    id: i64,
    data_offset: u64,
    data_len: u64,
    kind: String,
}

/// Verifies one user's store. Never fails: what cannot be read is a fault.
pub fn verify_user(root: &Path, user: &str) -> VerifyReport {
    let mut rep = VerifyReport {
        users: 1,
        ..VerifyReport::default()
    };
    let reader = match StoreReader::open(root, user) {
        Ok(r) => r,
        Err(e) => {
            let (file, offset) = match &e {
                StoreError::DataFileShort { path, actual, .. } => (path.clone(), Some(*actual)),
                StoreError::DataFileMissing { path, .. } => (path.clone(), None),
                _ => (
                    UserDir::new(root, user)
                        .map(|d| d.path().to_path_buf())
                        .unwrap_or_else(|_| root.to_path_buf()),
                    None,
                ),
            };
            Faults {
                rep: &mut rep,
                user,
            }
            .push(&file, offset, format!("cannot open the store: {e}"));
            return rep;
        }
    };
    let cat = reader.catalog();
    let index = cat.index_path().to_path_buf();
    let data = cat.data_path().to_path_buf();
    let mut found = Vec::new();
    let mut stats = (0u64, 0u64, 0u64, 0u64);
    let r = scan(&reader, &mut found, &mut stats);
    rep.chunks = stats.0;
    rep.entries = stats.1;
    rep.messages = stats.2;
    rep.bytes = stats.3;
    let mut faults = Faults {
        rep: &mut rep,
        user,
    };
    match cat.check(true) {
        Ok(problems) => {
            for p in problems {
                faults.push(&index, None, p);
            }
        }
        Err(e) => faults.push(&index, None, format!("checking the index: {e}")),
    }
    if let Err(e) = r {
        faults.push(&index, None, format!("reading the index: {e}"));
    }
    for (file, offset, what) in found {
        let file = if file { &data } else { &index };
        faults.push(file, offset, what);
    }
    rep
}

type Found = Vec<(bool, Option<u64>, String)>;

/// Scans the committed part of the data file and compares it with the index. Faults go
/// to `found` as (in the data file?, offset, what).
fn scan(
    reader: &StoreReader,
    found: &mut Found,
    stats: &mut (u64, u64, u64, u64),
) -> crate::store::Result<()> {
    let cat = reader.catalog();
    let data = cat.data_path();
    let committed = cat.committed_len()?;
    let conn = &cat.db.conn;
    let mut rows: HashMap<(u64, u64), Row> = HashMap::new();
    {
        let mut st = conn
            .prepare("SELECT id, chunk, header_offset, data_offset, data_len, kind FROM entries")
            .map_err(|e| sql_err(cat.index_path(), e))?;
        let mut q = st.query([]).map_err(|e| sql_err(cat.index_path(), e))?;
        while let Some(r) = q.next().map_err(|e| sql_err(cat.index_path(), e))? {
            let get = |i| r.get::<_, i64>(i);
            let (id, chunk, hoff, doff, dlen) =
                (|| Ok((get(0)?, get(1)?, get(2)?, get(3)?, get(4)?)))()
                    .map_err(|e| sql_err(cat.index_path(), e))?;
            let kind: String = r.get(5).map_err(|e| sql_err(cat.index_path(), e))?;
            rows.insert(
                (chunk as u64, hoff as u64),
                Row {
                    id,
                    data_offset: doff as u64,
                    data_len: dlen as u64,
                    kind,
                },
            );
        }
    }
    let file = std::fs::File::open(data).map_err(|source| StoreError::Io {
        path: data.to_path_buf(),
        op: "opening the data file",
        source,
    })?;
    // Only what the index committed: a backup may be appending past it.
    let mut scanner = Scanner::new(file.take(committed));
    let mut chunk = 0u64;
    let scanned_to: u64;
    loop {
        let ev = match scanner.next_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = e.chunk_offset().unwrap_or(chunk);
                found.push((true, Some(at), format!("chunk at {at} is damaged: {e}")));
                scanned_to = at;
                break;
            }
        };
        match ev {
            ScanEvent::ChunkStart { offset } => chunk = offset,
            ScanEvent::Entry(mut e) => {
                stats.1 += 1;
                let loc = e.location;
                let kind = e.header.meta.kind().to_owned();
                let here = format!(
                    "entry {} at offset {} of chunk {}",
                    e.header.path, loc.header_offset, loc.chunk_offset
                );
                if let EntryMeta::Message(m) = &e.header.meta {
                    let guid = m.guid;
                    stats.2 += 1;
                    match e.sha1() {
                        Ok(sha) if sha != guid => found.push((
                            true,
                            Some(loc.chunk_offset),
                            format!(
                                "{here}: SHA-1 of the data is {}, expected its GUID {}",
                                sha.to_hex(),
                                guid.to_hex()
                            ),
                        )),
                        Ok(_) => {}
                        // The scanner reports the error again at its next step.
                        Err(_) => continue,
                    }
                    if !cat.has_message(&guid)? {
                        found.push((
                            false,
                            None,
                            format!(
                                "messages: no row for GUID {} (stored as {here} of the data file)",
                                guid.to_hex()
                            ),
                        ));
                    }
                }
                match rows.remove(&(loc.chunk_offset, loc.header_offset)) {
                    None => found.push((
                        true,
                        Some(loc.chunk_offset),
                        format!("{here}: expected an index row (table entries), found none"),
                    )),
                    Some(r) => {
                        if r.data_offset != loc.data_offset
                            || r.data_len != loc.data_len
                            || r.kind != kind
                        {
                            found.push((
                                false,
                                None,
                                format!(
                                    "entries: row {} says data at {} length {} kind {:?}; the data file has {here} with data at {} length {} kind {kind:?}",
                                    r.id, r.data_offset, r.data_len, r.kind, loc.data_offset, loc.data_len
                                ),
                            ));
                        }
                    }
                }
            }
            ScanEvent::ChunkEnd(info) => {
                stats.0 += 1;
                stats.3 = info.end();
            }
            ScanEvent::End(end) => {
                if end.tail != Tail::Clean {
                    found.push((
                        true,
                        Some(end.valid_end),
                        format!(
                            "the committed data ({committed} bytes) is not whole chunks: unreadable from offset {} ({:?})",
                            end.valid_end, end.tail
                        ),
                    ));
                }
                scanned_to = end.valid_end;
                break;
            }
        }
    }
    // Index rows the data file did not have (in the part that was read).
    let mut left: Vec<(u64, u64, Row)> = rows
        .into_iter()
        .filter(|((c, _), _)| *c < scanned_to)
        .map(|((c, h), r)| (c, h, r))
        .collect();
    left.sort_by_key(|(c, h, _)| (*c, *h));
    for (c, h, r) in left {
        found.push((
            false,
            None,
            format!(
                "entries: row {} points at offset {h} of chunk {c}: expected a {} entry there, the data file has none",
                r.id, r.kind
            ),
        ));
    }
    Ok(())
}

fn sql_err(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// `backup-server reindex --user U`: takes the user's writer lock (a running backup makes
/// this fail at once), rebuilds `backupstate.sqlite3` from the data file alone, switches it
/// in and opens the store (which cuts a torn tail). See docs/store.md, "Reindex".
pub fn reindex_user(root: &Path, user: &str) -> crate::store::Result<ReindexReport> {
    let dir = UserDir::new(root, user)?;
    if !dir.exists() {
        return Err(StoreError::NoStore {
            user: user.to_owned(),
            dir: dir.path().to_path_buf(),
        });
    }
    let (store, report) = dir.lock()?.reindex(StoreOptions::default())?;
    drop(store);
    Ok(report)
}

/// The `verify` subcommand: prints each fault, then a summary; exit status 0 when clean, 1
/// on any fault.
pub fn run_verify(root: &Path, user: Option<&str>) -> u8 {
    match verify(root, user) {
        Ok(rep) => {
            for f in &rep.faults {
                crate::out::out(format_args!("{f}"));
            }
            if rep.faults_not_listed > 0 {
                crate::out::out(format_args!(
                    "... and {} more faults",
                    rep.faults_not_listed
                ));
            }
            crate::out::out(format_args!(
                "verify: {} stores, {} chunks, {} entries, {} messages hashed, {} bytes; {} faults",
                rep.users,
                rep.chunks,
                rep.entries,
                rep.messages,
                rep.bytes,
                rep.faults.len() as u64 + rep.faults_not_listed
            ));
            if rep.is_clean() {
                crate::summary::EXIT_OK
            } else {
                crate::summary::EXIT_FAILED
            }
        }
        Err(e) => {
            eprintln!("backup-server: verify: reading {}: {e}", root.display());
            crate::summary::EXIT_FAILED
        }
    }
}

/// The `reindex` subcommand.
pub fn run_reindex(root: &Path, user: &str) -> u8 {
    match reindex_user(root, user) {
        Ok(r) => {
            crate::out::out(format_args!(
                "reindex {user}: {} chunks, {} entries ({} of unknown kinds), {} of {} bytes valid, tail {:?}",
                r.chunks, r.entries, r.unknown_entries, r.valid_end, r.file_len, r.tail
            ));
            crate::summary::EXIT_OK
        }
        Err(e) => {
            eprintln!("backup-server: reindex {user}: {e}");
            crate::summary::EXIT_FAILED
        }
    }
}
