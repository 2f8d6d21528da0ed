//! Turning entries into index rows: the one code path behind both a backup run and
//! `reindex`, which is what makes invariant 3 hold (a rebuilt index equals the original).
//!
//! A run calls [`Ingest::entry`] right after appending each entry, inside its open write
//! transaction; reindex calls it for each entry the scanner reports, inside a savepoint
//! per chunk that is released at the chunk's end. Both see the same entries in the same
//! order, so both produce the same rows with the same ids.
//!
//! What each kind does:
//! * every entry: an `entries` row, id = its ordinal in the file (1, 2, ...).
//! * a folder's first `meta_files` or `names` row gives it its key in `folders` (so keys
//!   follow the file's order too; a tombstone's row is written at its run's end marker).
//! * message: a `messages` row (the first entry of a GUID wins; a later duplicate stays
//!   only in `entries`, where compaction counts it dirty), unless the copy it names is
//!   marked damaged (`damaged`): then the new entry replaces it and the mark is deleted.
//!   A `headers` row of the entry from its header block (`super::headers`), every copy.
//! * folder-meta: a `meta_files` row; a cyrus.header is parsed for its keyword names; a
//!   cyrus.index becomes a `snapshots` row and is diffed against the folder's current
//!   `records` rows (see [`apply_index`]).
//! * name, live: a `names` row. A tombstone waits until its run's end marker: only a run
//!   that looked at every folder may declare one gone (docs/archive-format.md, `run`).
//! * run start/end: the `runs` row; the end applies the run's tombstones first.

use formats::archive::{
    ChunkInfo, EntryLocation, EntryMeta, FolderMeta, MetaFile, NameLink, RunEvent, UserFileKind,
};
use formats::cyrus::{header, index};
use formats::{FileStat, Guid, Timestamp};
use rusqlite::{params, OptionalExtension};

use super::error::{Result, SqlContext, StoreError};
use super::index::IndexDb;

/// Records read from the index per page while diffing a folder (bounds memory).
const PAGE: i64 = 1000;

/// Nanoseconds since the epoch, as the index stores entry times.
pub(crate) fn to_ns(t: Timestamp) -> Result<i64> {
    let n = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
    i64::try_from(n).map_err(|_| StoreError::TimeOutOfRange(t))
}

/// The inverse of [`to_ns`].
pub(crate) fn from_ns(n: i64) -> Timestamp {
    Timestamp {
        secs: n.div_euclid(1_000_000_000),
        nanos: n.rem_euclid(1_000_000_000) as u32,
    }
}

/// An entry's uncompressed length (headers, data, padding), over the `entries` columns.
pub(crate) const SPAN_SQL: &str =
    "(e.data_offset - e.header_offset + ((e.data_len + 511) / 512) * 512)";

struct PendingHeader {
    unique_id: String,
    run: u64,
    flags: Vec<Option<String>>,
}

struct PendingTombstone {
    entry: i64,
    link: NameLink,
}

/// State carried from entry to entry while ingesting.
pub(crate) struct Ingest {
    user: String,
    /// The store's directory, where `former-names` (store/rename.rs) lists the names the
    /// store had before: their run markers are the store's own. Read only when a run
    /// marker names another user (almost never: no file is opened per backup).
    dir: Option<std::path::PathBuf>,
    /// `former-names` once read.
    former: Option<Vec<String>>,
    next_id: i64,
    header: Option<PendingHeader>,
    tombstones: Vec<PendingTombstone>,
}

impl Ingest {
    /// Ingesting after what `db` already holds, for `user`'s store.
    pub(crate) fn new(db: &IndexDb, user: &str) -> Result<Ingest> {
        let max: i64 = db
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM entries", [], |r| r.get(0))
            .sql(&db.path)?;
        Ok(Ingest {
            user: user.to_owned(),
            dir: db.path.parent().map(|d| d.to_path_buf()),
            former: None,
            next_id: max + 1,
            header: None,
            tombstones: Vec::new(),
        })
    }

    /// Whether the store was once `user`'s (its `former-names` lists it).
    fn is_former_name(&mut self, user: &str) -> Result<bool> {
        if self.former.is_none() {
            let names = match &self.dir {
                Some(dir) => super::rename::former_names(dir).map_err(|source| StoreError::Io {
                    path: dir.join(super::rename::FORMER_NAMES_FILE),
                    op: "reading the store's former names",
                    source,
                })?,
                None => Vec::new(),
            };
            self.former = Some(names);
        }
        Ok(self.former.iter().flatten().any(|n| n == user))
    }

    /// Whether a tombstone of `unique_id` waits for its run's end.
    pub(crate) fn tombstone_pending(&self, unique_id: &str) -> bool {
        self.tombstones
            .iter()
            .any(|t| t.link.unique_id == unique_id)
    }

    /// Records a closed chunk.
    pub(crate) fn chunk(&self, db: &IndexDb, c: &ChunkInfo) -> Result<()> {
        db.conn
            .prepare_cached(
                "INSERT INTO chunks (offset, compressed_len, uncompressed_len, entries)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    c.offset as i64,
                    c.compressed_len as i64,
                    c.uncompressed_len as i64,
                    c.entries as i64
                ])
            })
            .sql(&db.path)?;
        Ok(())
    }

    /// Records one entry and what it means. `data` is the entry's bytes for a cyrus.header
    /// or cyrus.index, the message's first bytes (at least its header block, up to
    /// [`HEADER_BLOCK_MAX`](super::headers::HEADER_BLOCK_MAX)) for a message, `None`
    /// otherwise (a message given `None` gets no `headers` row).
    pub(crate) fn entry(
        &mut self,
        db: &IndexDb,
        meta: &EntryMeta,
        loc: &EntryLocation,
        data: Option<&[u8]>,
    ) -> Result<i64> {
        let id = self.next_id;
        let time = meta.time().map(to_ns).transpose()?;
        db.conn
            .prepare_cached(
                "INSERT INTO entries (id, chunk, header_offset, data_offset, data_len, kind, run, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    loc.chunk_offset as i64,
                    loc.header_offset as i64,
                    loc.data_offset as i64,
                    loc.data_len as i64,
                    meta.kind(),
                    meta.run().map(|r| r as i64),
                    time
                ])
            })
            .sql(&db.path)?;
        self.next_id += 1;
        let time = time.unwrap_or(0);
        match meta {
            EntryMeta::Message(m) => {
                // The first entry of a GUID wins, unless the copy the row names is marked
                // damaged: then this good copy takes its place and the mark goes.
                db.conn
                    .prepare_cached(
                        "INSERT INTO messages (guid, entry, internaldate) VALUES (?1, ?2, ?3)
                         ON CONFLICT (guid) DO UPDATE SET entry = excluded.entry,
                           internaldate = excluded.internaldate
                         WHERE EXISTS (SELECT 1 FROM damaged d WHERE d.guid = messages.guid
                           AND (d.entry IS NULL OR d.entry = messages.entry))",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            &m.guid.0[..],
                            id,
                            m.internal_date.map(|t| t.to_string()),
                        ])
                    })
                    .sql(&db.path)?;
                db.conn
                    .prepare_cached(
                        "DELETE FROM damaged WHERE guid = ?1
                         AND (entry IS NULL
                              OR entry != (SELECT m.entry FROM messages m WHERE m.guid = ?1))",
                    )
                    .and_then(|mut st| st.execute([&m.guid.0[..]]))
                    .sql(&db.path)?;
                if let Some(head) = data {
                    insert_headers(db, id, &super::headers::extract(head))?;
                }
            }
            EntryMeta::FolderMeta(f) => self.folder_meta(db, id, time, f, data)?,
            EntryMeta::NameLink(l) if l.deleted => self.tombstones.push(PendingTombstone {
                entry: id,
                link: l.clone(),
            }),
            EntryMeta::NameLink(l) => {
                insert_name(db, id, l, time)?;
            }
            EntryMeta::UserFile(u) => {
                let (kind, script, active) = match &u.kind {
                    UserFileKind::Seen => ("seen", "", None),
                    UserFileKind::Subscriptions => ("subscriptions", "", None),
                    UserFileKind::Sieve { name, active } => ("sieve", name.as_str(), Some(*active)),
                };
                let (size, mtime, ino) = stat_cols(u.stat.as_ref());
                db.conn
                    .prepare_cached(
                        "INSERT INTO user_files
                         (entry, kind, script, active, run, time, stat_size, stat_mtime, stat_ino)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            id,
                            kind,
                            script,
                            active,
                            u.run as i64,
                            time,
                            size,
                            mtime,
                            ino
                        ])
                    })
                    .sql(&db.path)?;
            }
            EntryMeta::Run(r) => {
                if r.user != self.user && !self.is_former_name(&r.user)? {
                    return Err(StoreError::WrongUser {
                        path: db.path.clone(),
                        expected: self.user.clone(),
                        found: r.user.clone(),
                    });
                }
                match r.event {
                    RunEvent::Start => {
                        // A run that never ended leaves its tombstones untrusted.
                        self.tombstones.clear();
                        db.conn
                            .prepare_cached(
                                "INSERT INTO runs (run, user, started, start_entry)
                                 VALUES (?1, ?2, ?3, ?4)
                                 ON CONFLICT (run) DO UPDATE
                                 SET started = excluded.started, start_entry = excluded.start_entry",
                            )
                            .and_then(|mut st| {
                                st.execute(params![r.run as i64, r.user, time, id])
                            })
                            .sql(&db.path)?;
                    }
                    RunEvent::End => {
                        for t in std::mem::take(&mut self.tombstones) {
                            if t.link.run == r.run {
                                apply_tombstone(db, t.entry, &t.link)?;
                            }
                        }
                        db.conn
                            .prepare_cached(
                                "INSERT INTO runs (run, user, ended, end_entry)
                                 VALUES (?1, ?2, ?3, ?4)
                                 ON CONFLICT (run) DO UPDATE
                                 SET ended = excluded.ended, end_entry = excluded.end_entry",
                            )
                            .and_then(|mut st| st.execute(params![r.run as i64, r.user, time, id]))
                            .sql(&db.path)?;
                    }
                }
            }
            EntryMeta::Unknown { .. } => {}
        }
        Ok(id)
    }

    fn folder_meta(
        &mut self,
        db: &IndexDb,
        id: i64,
        time: i64,
        f: &FolderMeta,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let (size, mtime, ino) = stat_cols(f.stat.as_ref());
        let key = folder_key(db, &f.unique_id)?;
        db.conn
            .prepare_cached(
                "INSERT INTO meta_files
                 (entry, folder_key, run, file, folder, partition, time, stat_size, stat_mtime, stat_ino)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    key,
                    f.run as i64,
                    f.file.file_name(),
                    f.folder,
                    f.partition,
                    time,
                    size,
                    mtime,
                    ino
                ])
            })
            .sql(&db.path)?;
        match f.file {
            MetaFile::Header => {
                let flags = user_flags(&f.unique_id, data.unwrap_or_default())?;
                self.header = Some(PendingHeader {
                    unique_id: f.unique_id.clone(),
                    run: f.run,
                    flags,
                });
            }
            MetaFile::Index => {
                let flags = match self.header.take() {
                    Some(h) if h.unique_id == f.unique_id && h.run == f.run => h.flags,
                    _ => Vec::new(),
                };
                apply_index(db, key, id, time, f, &flags, data.unwrap_or_default())?;
            }
            MetaFile::Annotations => {}
        }
        Ok(())
    }
}

fn stat_cols(s: Option<&FileStat>) -> (Option<i64>, Option<String>, Option<i64>) {
    match s {
        Some(s) => (
            Some(s.size as i64),
            Some(s.mtime.to_string()),
            Some(s.inode as i64),
        ),
        None => (None, None, None),
    }
}

fn insert_headers(db: &IndexDb, id: i64, h: &super::headers::MessageHeaders) -> Result<()> {
    db.conn
        .prepare_cached(
            "INSERT INTO headers (entry, from_addr, to_addr, subject, date, message_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| st.execute(params![id, h.from, h.to, h.subject, h.date, h.message_id]))
        .sql(&db.path)?;
    Ok(())
}

/// The key of folder `unique_id` in `folders`, given it now if it has none. Called only
/// where ingest writes a row of the folder (its `meta_files` and `names` rows), so keys
/// follow the data file's order and a rebuild gives the same ones (the copy from version
/// 2, `COPY_V2_TO_V3`, orders them the same way).
fn folder_key(db: &IndexDb, unique_id: &str) -> Result<i64> {
    let found: Option<i64> = db
        .conn
        .prepare_cached("SELECT id FROM folders WHERE uniqueid = ?1")
        .and_then(|mut st| st.query_row([unique_id], |r| r.get(0)).optional())
        .sql(&db.path)?;
    if let Some(k) = found {
        return Ok(k);
    }
    db.conn
        .prepare_cached("INSERT INTO folders (uniqueid) VALUES (?1)")
        .and_then(|mut st| st.insert([unique_id]))
        .sql(&db.path)
}

/// Returns the folder's key.
fn insert_name(db: &IndexDb, id: i64, l: &NameLink, time: i64) -> Result<i64> {
    let key = folder_key(db, &l.unique_id)?;
    db.conn
        .prepare_cached(
            "INSERT INTO names (entry, folder_key, folder, deleted, run, time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| st.execute(params![id, key, l.folder, l.deleted, l.run as i64, time]))
        .sql(&db.path)?;
    Ok(key)
}

/// A trusted tombstone: the name row, and every current record of the folder closed at
/// the tombstone's time.
fn apply_tombstone(db: &IndexDb, id: i64, l: &NameLink) -> Result<()> {
    let time = to_ns(l.time)?;
    let key = insert_name(db, id, l, time)?;
    db.conn
        .prepare_cached(
            "UPDATE records SET to_run = ?1, valid_to = ?2
             WHERE folder_key = ?3 AND valid_to IS NULL",
        )
        .and_then(|mut st| st.execute(params![l.run as i64, time, key]))
        .sql(&db.path)?;
    Ok(())
}

/// The keyword names of a cyrus.header.
pub(crate) fn user_flags(unique_id: &str, data: &[u8]) -> Result<Vec<Option<String>>> {
    header::parse(data)
        .map(|h| h.user_flags)
        .map_err(|e| StoreError::MetaFile {
            unique_id: unique_id.to_owned(),
            file: "cyrus.header",
            found: e.to_string(),
        })
}

/// Checks a cyrus.index the way [`apply_index`] will read it: parsable, every record's
/// CRC good, UIDs strictly ascending (Cyrus appends in UID order and the diff relies on
/// it). Returns the number of records.
pub(crate) fn check_index(unique_id: &str, data: &[u8]) -> Result<u32> {
    let idx = parse_index(unique_id, data)?;
    let mut prev = None;
    for (i, r) in idx.records().enumerate() {
        let r = r.map_err(|e| index_err(unique_id, e.to_string()))?;
        check_order(unique_id, prev, r.uid, i)?;
        prev = Some(r.uid);
    }
    Ok(idx.len())
}

fn parse_index<'a>(unique_id: &str, data: &'a [u8]) -> Result<index::Index<'a>> {
    index::Index::parse(data).map_err(|e| index_err(unique_id, e.to_string()))
}

fn index_err(unique_id: &str, found: String) -> StoreError {
    StoreError::MetaFile {
        unique_id: unique_id.to_owned(),
        file: "cyrus.index",
        found,
    }
}

fn check_order(unique_id: &str, prev: Option<u32>, uid: u32, i: usize) -> Result<()> {
    if prev.is_some_and(|p| uid <= p) {
        return Err(index_err(
            unique_id,
            format!(
                "record {}: expected a UID above {}, found {uid} (records out of UID order)",
                i + 1,
                prev.unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// One record as the index keeps it: what, when changed, makes a new row.
#[derive(PartialEq)]
struct RecordState {
    guid: Guid,
    size: i64,
    internaldate: String,
    flags: String,
    expunged: bool,
}

impl RecordState {
    fn of(r: &index::IndexRecord, flags: &[Option<String>]) -> Self {
        RecordState {
            guid: r.guid.unwrap_or(Guid::NULL),
            size: r.size as i64,
            internaldate: r.internaldate.to_string(),
            flags: r.flag_names(flags).join(" "),
            expunged: r.is_expunged(),
        }
    }
}

/// A folder's cyrus.index snapshot: its `snapshots` row, and the diff of its records
/// against the folder's current rows. Rows whose record is unchanged stay; a changed
/// record closes its row (`valid_to` = this snapshot's time) and opens a new one; a record
/// gone from the file closes its row; a new record opens one. Both sides are walked in UID
/// order, the index side a page at a time, so memory stays bounded whatever the folder's
/// size.
fn apply_index(
    db: &IndexDb,
    key: i64,
    entry: i64,
    time: i64,
    f: &FolderMeta,
    flags: &[Option<String>],
    data: &[u8],
) -> Result<()> {
    let uid_ = f.unique_id.as_str();
    let idx = parse_index(uid_, data)?;
    let h = idx.header().clone();
    let run = f.run as i64;
    let mut snap = idx.records().enumerate().peekable();
    let mut prev = None;
    let mut exists = 0i64;
    let mut after: i64 = -1;
    let sql = |e: rusqlite::Error| StoreError::Sqlite {
        path: db.path.clone(),
        source: e,
    };
    let insert = |r: &index::IndexRecord| -> Result<()> {
        let s = RecordState::of(r, flags);
        db.conn
            .prepare_cached(
                "INSERT INTO records
                 (folder_key, uid, guid, size, internaldate, flags, expunged, from_run, valid_from)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    key,
                    r.uid,
                    &s.guid.0[..],
                    s.size,
                    s.internaldate,
                    s.flags,
                    s.expunged,
                    run,
                    time
                ])
            })
            .map_err(sql)?;
        Ok(())
    };
    // A current row is named by (uid, from_run) within the folder: the primary key.
    let close = |(uid, from): (u32, i64)| -> Result<()> {
        db.conn
            .prepare_cached(
                "UPDATE records SET to_run = ?1, valid_to = ?2
                 WHERE folder_key = ?3 AND uid = ?4 AND from_run = ?5",
            )
            .and_then(|mut st| st.execute(params![run, time, key, uid, from]))
            .map_err(sql)?;
        Ok(())
    };
    loop {
        let page: Vec<(i64, u32, RecordState)> = {
            let mut st = db
                .conn
                .prepare_cached(
                    "SELECT from_run, uid, guid, size, internaldate, flags, expunged FROM records
                     WHERE folder_key = ?1 AND uid > ?2 AND valid_to IS NULL
                     ORDER BY uid LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = st
                .query_map(params![key, after, PAGE], |r| {
                    let g: Vec<u8> = r.get(2)?;
                    let mut guid = Guid::NULL;
                    if g.len() == 20 {
                        guid.0.copy_from_slice(&g);
                    }
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        RecordState {
                            guid,
                            size: r.get(3)?,
                            internaldate: r.get(4)?,
                            flags: r.get(5)?,
                            expunged: r.get(6)?,
                        },
                    ))
                })
                .map_err(sql)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql)?
        };
        let last = (page.len() as i64 == PAGE).then(|| i64::from(page[page.len() - 1].1));
        let mut cur = page.into_iter().peekable();
        loop {
            let next = match snap.peek() {
                Some((i, Ok(r))) if last.is_none_or(|l| i64::from(r.uid) <= l) => {
                    check_order(uid_, prev, r.uid, *i)?;
                    Some(r.uid)
                }
                Some((_, Err(e))) => return Err(index_err(uid_, e.to_string())),
                _ => None,
            };
            match (next, cur.peek().map(|c| c.1)) {
                (None, None) => break,
                (Some(s), c) if c.is_none_or(|c| s < c) => {
                    if let Some((_, Ok(r))) = snap.next() {
                        exists += i64::from(!r.is_expunged());
                        insert(&r)?;
                        prev = Some(r.uid);
                    }
                }
                (s, Some(c)) if s.is_none_or(|s| c < s) => {
                    if let Some((from, uid, _)) = cur.next() {
                        close((uid, from))?;
                    }
                }
                _ => {
                    // Same UID on both sides.
                    if let (Some((_, Ok(r))), Some((from, uid, old))) = (snap.next(), cur.next()) {
                        exists += i64::from(!r.is_expunged());
                        if RecordState::of(&r, flags) != old {
                            close((uid, from))?;
                            insert(&r)?;
                        }
                        prev = Some(r.uid);
                    }
                }
            }
        }
        match last {
            Some(l) => after = l,
            None => break,
        }
    }
    db.conn
        .prepare_cached(
            "INSERT INTO snapshots (folder_key, run, time, folder, partition, index_entry,
             minor_version, uidvalidity, last_uid, highestmodseq, records, exists_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut st| {
            st.execute(params![
                key,
                run,
                time,
                f.folder,
                f.partition,
                entry,
                h.minor_version,
                h.uidvalidity,
                h.last_uid,
                h.highestmodseq.map(|m| m as i64),
                h.num_records,
                exists
            ])
        })
        .map_err(sql)?;
    Ok(())
}

/// Whether the index holds a message.
pub(crate) fn has_message(db: &IndexDb, guid: &Guid) -> Result<bool> {
    db.conn
        .prepare_cached("SELECT 1 FROM messages WHERE guid = ?1")
        .and_then(|mut st| st.query_row([&guid.0[..]], |_| Ok(())).optional())
        .map(|o| o.is_some())
        .sql(&db.path)
}
