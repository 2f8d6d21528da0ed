//! Appending one backup run: the crash story's writing side.
//!
//! A [`RunWriter`] holds one SQLite write transaction (`BEGIN IMMEDIATE`) for the whole run
//! and appends to the end of the data file through formats::archive's writer:
//!
//! 1. begin: the transaction; a chunk with the run's start marker.
//! 2. each entry: appended to the open chunk (closed first, and recorded, when the entry
//!    would take it past the cap), then its rows written in the transaction. A message is
//!    checked against its GUID *before* a byte of it is written (in memory, or through an
//!    unnamed temporary file when large), because bytes in a gzip stream cannot be taken
//!    back.
//! 3. commit: the end marker (a complete run: its tombstones take effect), the last chunk
//!    closed, the data file fsynced, then COMMIT.
//!
//! A crash before COMMIT leaves bytes past the committed length and no rows: the next open
//! cuts them. A crash after COMMIT leaves everything. Dropping the writer without commit
//! rolls the transaction back and cuts the file back at once (the next open would
//! otherwise). Entry times come from the store's clock but are made strictly increasing
//! per store, so that "as of time T" has one answer.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use formats::archive::{
    ArchiveError, ArchiveWriter, EntryLocation, EntryMeta, FolderMeta, Message, MetaFile, NameLink,
    RunEvent, RunMarker, UserFile, UserFileKind,
};
use formats::{FileStat, Guid, Timestamp};
use rusqlite::OptionalExtension;
use sha1::{Digest, Sha1};

use super::error::{IoContext, Result, SqlContext, StoreError};
use super::ingest::{check_index, user_flags, Ingest};
use super::open::Store;
use super::Catalog;

/// Extra bytes an entry takes beyond its padded data: two header blocks and, usually, one
/// block of PAX records (an estimate used only to decide when to close a chunk).
const ENTRY_OVERHEAD: u64 = 3 * 512;

/// Buffer between the archive writer and the data file.
const WRITE_BUF: usize = 256 * 1024;

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every folder of the user was looked at: the end marker is written and the run's
    /// tombstones take effect.
    Complete,
    /// Some folders were not looked at (errors): what was stored is kept, tombstones are
    /// not trusted (their entries stay, inert).
    Partial,
}

/// What was recorded with a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its internal date.
    pub internal_date: Option<Timestamp>,
    /// The folder (unique id) and UID it is fetched for.
    pub origin: Option<(String, u32)>,
}

/// What [`RunWriter::add_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored, here.
    Stored(EntryLocation),
    /// The store (or this run) already holds the GUID; nothing was read or written.
    AlreadyHeld,
}

/// One meta file of a folder snapshot: its bytes as copied, and its stat data.
#[derive(Debug, Clone, Copy)]
pub struct MetaFileData<'a> {
    /// The file's bytes.
    pub bytes: &'a [u8],
    /// Its stat data on the mail server.
    pub stat: Option<FileStat>,
}

/// A folder's meta files copied together under Cyrus's locks.
#[derive(Debug, Clone, Copy)]
pub struct FolderSnapshot<'a> {
    /// The folder's unique id.
    pub unique_id: &'a str,
    /// Its name (Cyrus internal name).
    pub folder: &'a str,
    /// Its partition.
    pub partition: Option<&'a str>,
    /// cyrus.header.
    pub header: MetaFileData<'a>,
    /// cyrus.index.
    pub index: MetaFileData<'a>,
    /// cyrus.annotations, when the folder has one.
    pub annotations: Option<MetaFileData<'a>>,
}

/// What a committed run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitSummary {
    /// The run id.
    pub run: u64,
    /// Messages stored.
    pub messages_stored: u64,
    /// Their bytes.
    pub message_bytes: u64,
    /// Messages offered that the store already held.
    pub messages_already_held: u64,
    /// Folder snapshots stored.
    pub snapshots: u64,
    /// Name links appended (new folders and renames).
    pub links: u64,
    /// Tombstones appended.
    pub tombstones: u64,
    /// User files stored.
    pub user_files: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Bytes the data file grew by.
    pub data_bytes: u64,
    /// The data file's committed length after the run.
    pub data_len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Broken,
    Done,
}

/// One backup run being appended. See the module documentation.
pub struct RunWriter<'s> {
    store: &'s mut Store,
    run: u64,
    archive: Option<ArchiveWriter<BufWriter<File>>>,
    ingest: Ingest,
    start_len: u64,
    last_time: Option<Timestamp>,
    /// Unique ids snapshotted or linked in this run (a tombstone of them is refused).
    touched: HashSet<String>,
    /// Unique ids snapshotted in this run (a second snapshot is refused).
    snapshotted: HashSet<String>,
    buf: Vec<u8>,
    summary: CommitSummary,
    state: State,
}

impl std::fmt::Debug for RunWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWriter")
            .field("run", &self.run)
            .field("state", &self.state)
            .field("summary", &self.summary)
            .finish()
    }
}

impl Store {
    /// Starts a backup run: one write transaction and, in the data file, a chunk opening
    /// with the run's start marker. Commit it with [`RunWriter::commit`]; dropping it
    /// aborts it and leaves no trace.
    pub fn begin_run(&mut self) -> Result<RunWriter<'_>> {
        if self.needs_recovery {
            self.recover_tail()?;
        }
        RunWriter::begin(self)
    }
}

impl<'s> RunWriter<'s> {
    pub(crate) fn begin(store: &'s mut Store) -> Result<RunWriter<'s>> {
        let path = store.cat.db.path.clone();
        store
            .cat
            .db
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .sql(&path)?;
        let started = (|| -> Result<(u64, Ingest, File)> {
            let run: i64 = store
                .cat
                .db
                .conn
                .query_row("SELECT coalesce(max(run), 0) + 1 FROM runs", [], |r| {
                    r.get(0)
                })
                .sql(&path)?;
            let ingest = Ingest::new(&store.cat.db, store.cat.user())?;
            let file = store.cat.data.appender(store.committed_len)?;
            Ok((run as u64, ingest, file))
        })();
        let (run, ingest, file) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = store.cat.db.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        let mut archive = ArchiveWriter::new(
            BufWriter::with_capacity(WRITE_BUF, file),
            store.committed_len,
        );
        archive.set_level(store.opts.gzip_level);
        let start_len = store.committed_len;
        let last_time = store.last_time;
        let mut w = RunWriter {
            store,
            run,
            archive: Some(archive),
            ingest,
            start_len,
            last_time,
            touched: HashSet::new(),
            snapshotted: HashSet::new(),
            buf: Vec::new(),
            summary: CommitSummary {
                run,
                ..CommitSummary::default()
            },
            state: State::Open,
        };
        let marker = EntryMeta::Run(RunMarker {
            run,
            user: w.store.cat.user().to_owned(),
            event: RunEvent::Start,
            time: w.tick(),
        });
        w.room(0)?;
        w.append(&marker, 0, &[][..], None)?;
        Ok(w)
    }

    /// The run id.
    pub fn run_id(&self) -> u64 {
        self.run
    }

    /// The queries, seeing this run's uncommitted rows too.
    pub fn catalog(&self) -> &Catalog {
        &self.store.cat
    }

    /// What the run did so far.
    pub fn summary(&self) -> &CommitSummary {
        &self.summary
    }

    /// Whether the store, or this run, already holds a good copy of the message (invariant
    /// 4: then it is not fetched, nor written again). A copy marked damaged does not count:
    /// the message is fetched and stored again, and the good copy replaces it.
    pub fn has_message(&self, guid: &Guid) -> Result<bool> {
        self.store.cat.holds_message(guid)
    }

    /// The current, live records of folder `unique_id` whose message the store holds a
    /// good copy of, as (UID, GUID) in UID order: what a copied cyrus.index is diffed
    /// against (`messages_to_fetch`), in one range scan.
    pub fn held_records(&self, unique_id: &str) -> Result<Vec<(u32, Guid)>> {
        self.store.cat.held_records(unique_id)
    }

    /// Stores a message: `len` bytes read from `data`, whose SHA-1 must be `guid`. Checked
    /// before anything is written: a mismatch is [`StoreError::GuidMismatch`] and leaves
    /// the run usable. A GUID already held is not read at all.
    pub fn add_message(
        &mut self,
        guid: Guid,
        len: u64,
        mut data: impl Read,
        info: MessageInfo,
    ) -> Result<Added> {
        self.check_open()?;
        if guid.is_null() {
            return Err(StoreError::Invalid {
                what: "message GUID",
                expected: "a computed GUID",
                found: "all zeros".into(),
            });
        }
        if self.has_message(&guid)? {
            self.summary.messages_already_held += 1;
            return Ok(Added::AlreadyHeld);
        }
        let what = || format!("message {guid}");
        let meta = EntryMeta::Message(Message {
            guid,
            run: self.run,
            time: self.peek_time(),
            origin: info.origin,
            internal_date: info.internal_date,
        });
        validate(&meta)?;
        let loc = if len <= self.store.opts.verify_in_memory {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let read = (&mut data)
                .take(len)
                .read_to_end(&mut buf)
                .map_err(|source| StoreError::Source {
                    what: what(),
                    source,
                });
            let checked = read.and_then(|n| {
                if n as u64 != len {
                    return Err(StoreError::LengthMismatch {
                        what: what(),
                        expected: len,
                        found: n as u64,
                    });
                }
                check_guid(guid, Guid(Sha1::digest(&buf).into()))
            });
            let loc = match checked {
                Ok(()) => {
                    let head = &buf[..buf.len().min(super::headers::HEADER_BLOCK_MAX)];
                    self.append_message(meta, len, &buf[..], head)
                }
                Err(e) => Err(e),
            };
            self.buf = buf;
            loc?
        } else {
            let dir = self.store.dir.path().to_path_buf();
            let mut tmp = tempfile::tempfile_in(&dir).io(&dir, "creating a spool file")?;
            let mut hasher = Sha1::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let mut got = 0u64;
            // The beginning, for the header index.
            let mut head = Vec::new();
            let mut src = (&mut data).take(len);
            loop {
                let n = src.read(&mut chunk).map_err(|source| StoreError::Source {
                    what: what(),
                    source,
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&chunk[..n]);
                let want = super::headers::HEADER_BLOCK_MAX.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..n.min(want)]);
                tmp.write_all(&chunk[..n])
                    .io(&dir, "writing a spool file")?;
                got += n as u64;
            }
            if got != len {
                return Err(StoreError::LengthMismatch {
                    what: what(),
                    expected: len,
                    found: got,
                });
            }
            check_guid(guid, Guid(hasher.finalize().into()))?;
            tmp.seek(SeekFrom::Start(0))
                .io(&dir, "rewinding a spool file")?;
            self.append_message(meta, len, BufReader::with_capacity(64 * 1024, tmp), &head)?
        };
        self.summary.messages_stored += 1;
        self.summary.message_bytes += len;
        Ok(Added::Stored(loc))
    }

    /// Appends a message entry; `head` is its beginning, for the header index.
    fn append_message(
        &mut self,
        mut meta: EntryMeta,
        len: u64,
        data: impl Read,
        head: &[u8],
    ) -> Result<EntryLocation> {
        let t = self.tick();
        if let EntryMeta::Message(m) = &mut meta {
            m.time = t;
        }
        self.room(len)?;
        self.append(&meta, len, data, Some(head))
    }

    /// Stores a folder's snapshot: its meta files, in one chunk, after a name link when
    /// the store does not already have this name for this unique id. The cyrus.header and
    /// cyrus.index are parsed (and the index's records checked) before anything is written.
    pub fn add_folder_snapshot(&mut self, s: FolderSnapshot<'_>) -> Result<()> {
        self.check_open()?;
        if self.snapshotted.contains(s.unique_id) {
            return Err(StoreError::Invalid {
                what: "folder snapshot",
                expected: "one snapshot per folder per run",
                found: format!("a second one of {}", s.unique_id),
            });
        }
        if self.ingest.tombstone_pending(s.unique_id) {
            return Err(StoreError::Invalid {
                what: "folder snapshot",
                expected: "no snapshot of a folder this run declared deleted",
                found: s.unique_id.to_owned(),
            });
        }
        let metas: Vec<(EntryMeta, MetaFileData<'_>)> = [
            (MetaFile::Header, Some(s.header)),
            (MetaFile::Index, Some(s.index)),
            (MetaFile::Annotations, s.annotations),
        ]
        .into_iter()
        .filter_map(|(file, d)| d.map(|d| (file, d)))
        .map(|(file, d)| {
            let meta = EntryMeta::FolderMeta(FolderMeta {
                unique_id: s.unique_id.to_owned(),
                folder: s.folder.to_owned(),
                partition: s.partition.map(str::to_owned),
                file,
                run: self.run,
                time: Timestamp::EPOCH,
                stat: d.stat,
            });
            (meta, d)
        })
        .collect();
        for (m, _) in &metas {
            validate(m)?;
        }
        let h =
            formats::cyrus::header::parse(s.header.bytes).map_err(|e| StoreError::MetaFile {
                unique_id: s.unique_id.to_owned(),
                file: "cyrus.header",
                found: e.to_string(),
            })?;
        if let Some(u) = h.unique_id.as_deref() {
            if u != s.unique_id {
                return Err(StoreError::MetaFile {
                    unique_id: s.unique_id.to_owned(),
                    file: "cyrus.header",
                    found: format!("expected unique id {}, found {u}", s.unique_id),
                });
            }
        }
        user_flags(s.unique_id, s.header.bytes)?;
        check_index(s.unique_id, s.index.bytes)?;

        self.link_name(s.unique_id, s.folder)?;
        let total: u64 = metas
            .iter()
            .map(|(_, d)| ENTRY_OVERHEAD + (d.bytes.len() as u64).div_ceil(512) * 512)
            .sum();
        self.room(total)?;
        for (mut meta, d) in metas {
            let t = self.tick();
            let mut parse = false;
            if let EntryMeta::FolderMeta(f) = &mut meta {
                f.time = t;
                // The index reads cyrus.header (keyword names) and cyrus.index (records).
                parse = f.file != MetaFile::Annotations;
            }
            self.append(
                &meta,
                d.bytes.len() as u64,
                d.bytes,
                parse.then_some(d.bytes),
            )?;
        }
        self.snapshotted.insert(s.unique_id.to_owned());
        self.summary.snapshots += 1;
        Ok(())
    }

    /// Points `folder` at `unique_id` from now on (a new folder, or a rename: a pointer
    /// change, no data). Returns whether a link was appended (false: already so).
    pub fn link_name(&mut self, unique_id: &str, folder: &str) -> Result<bool> {
        self.check_open()?;
        if self.ingest.tombstone_pending(unique_id) {
            return Err(StoreError::Invalid {
                what: "name link",
                expected: "no link to a folder this run declared deleted",
                found: unique_id.to_owned(),
            });
        }
        let mut meta = EntryMeta::NameLink(NameLink {
            folder: folder.to_owned(),
            unique_id: unique_id.to_owned(),
            deleted: false,
            run: self.run,
            time: Timestamp::EPOCH,
        });
        validate(&meta)?;
        self.touched.insert(unique_id.to_owned());
        if let Some((name, false)) = self.newest_name(unique_id)? {
            if name == folder {
                return Ok(false);
            }
        }
        let t = self.tick();
        if let EntryMeta::NameLink(l) = &mut meta {
            l.time = t;
        }
        self.room(0)?;
        self.append(&meta, 0, &[][..], None)?;
        self.summary.links += 1;
        Ok(true)
    }

    /// Declares a folder gone (a tombstone; its data stay until retention ends). Takes
    /// effect when the run commits as [`RunEnd::Complete`]. Returns false when there is
    /// nothing to delete (unknown, or already deleted).
    pub fn tombstone(&mut self, unique_id: &str) -> Result<bool> {
        self.check_open()?;
        if self.touched.contains(unique_id) {
            return Err(StoreError::Invalid {
                what: "tombstone",
                expected: "no tombstone for a folder this run copied or linked",
                found: unique_id.to_owned(),
            });
        }
        if self.ingest.tombstone_pending(unique_id) {
            return Ok(false);
        }
        let Some((folder, false)) = self.newest_name(unique_id)? else {
            return Ok(false);
        };
        let meta = EntryMeta::NameLink(NameLink {
            folder,
            unique_id: unique_id.to_owned(),
            deleted: true,
            run: self.run,
            time: self.tick(),
        });
        validate(&meta)?;
        self.room(0)?;
        self.append(&meta, 0, &[][..], None)?;
        self.summary.tombstones += 1;
        Ok(true)
    }

    /// Stores a per-user file (seen state, subscriptions, a sieve script), `len` bytes
    /// streamed from `data`.
    pub fn add_user_file(
        &mut self,
        kind: UserFileKind,
        stat: Option<FileStat>,
        len: u64,
        data: impl Read,
    ) -> Result<EntryLocation> {
        self.check_open()?;
        let mut meta = EntryMeta::UserFile(UserFile {
            kind,
            run: self.run,
            time: Timestamp::EPOCH,
            stat,
        });
        validate(&meta)?;
        let t = self.tick();
        if let EntryMeta::UserFile(u) = &mut meta {
            u.time = t;
        }
        self.room(len)?;
        let loc = self.append(&meta, len, data, None)?;
        self.summary.user_files += 1;
        Ok(loc)
    }

    /// Commits the run: end marker (when complete), last chunk closed, data file fsynced,
    /// then the index transaction committed. On error nothing of the run is committed.
    pub fn commit(mut self, end: RunEnd) -> Result<CommitSummary> {
        self.check_open()?;
        let r = self.commit_inner(end);
        if r.is_err() {
            self.state = State::Broken;
        }
        r
    }

    fn commit_inner(&mut self, end: RunEnd) -> Result<CommitSummary> {
        if end == RunEnd::Complete {
            let marker = EntryMeta::Run(RunMarker {
                run: self.run,
                user: self.store.cat.user().to_owned(),
                event: RunEvent::End,
                time: self.tick(),
            });
            self.room(0)?;
            self.append(&marker, 0, &[][..], None)?;
        }
        self.finish_chunk()?;
        let data = &self.store.cat.data;
        data.file
            .sync_data()
            .io(&data.path, "syncing the data file")?;
        let path = self.store.cat.db.path.clone();
        self.store.cat.db.conn.execute_batch("COMMIT").sql(&path)?;
        self.state = State::Done;
        let len = self
            .archive
            .as_ref()
            .map_or(self.start_len, |a| a.file_len());
        self.store.committed_len = len;
        self.store.last_time = self.last_time;
        self.summary.data_len = len;
        self.summary.data_bytes = len - self.start_len;
        Ok(self.summary.clone())
    }

    /// Abandons the run (the same as dropping it).
    pub fn abort(self) {}

    fn check_open(&self) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(StoreError::RunBroken),
        }
    }

    /// The time the next entry will get (without taking it).
    fn peek_time(&self) -> Timestamp {
        next_time(self.store.opts.clock.now(), self.last_time)
    }

    /// The next entry's time: the clock, but always after the previous entry's.
    fn tick(&mut self) -> Timestamp {
        let t = self.peek_time();
        self.last_time = Some(t);
        t
    }

    fn newest_name(&self, unique_id: &str) -> Result<Option<(String, bool)>> {
        let db = &self.store.cat.db;
        db.conn
            .prepare_cached(
                "SELECT folder, deleted FROM names
                 WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1)
                 ORDER BY time DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([unique_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .sql(&db.path)
    }

    /// Makes room for an entry of `len` data bytes in the open chunk, closing it first if
    /// the entry would take it past the cap; opens a chunk if none is open.
    fn room(&mut self, len: u64) -> Result<()> {
        let span = ENTRY_OVERHEAD + len.div_ceil(512) * 512;
        let cap = self.store.opts.chunk_cap;
        let open = self.archive.as_ref().and_then(|a| a.chunk_len());
        match open {
            Some(n) if n > 0 && n + span > cap => {
                self.finish_chunk()?;
                self.start_chunk()
            }
            Some(_) => Ok(()),
            None => self.start_chunk(),
        }
    }

    fn start_chunk(&mut self) -> Result<()> {
        let r = match self.archive.as_mut() {
            Some(a) => a.start_chunk().map(|_| ()),
            None => return Err(StoreError::RunBroken),
        };
        r.map_err(|e| self.broken(e))
    }

    fn finish_chunk(&mut self) -> Result<()> {
        let r = match self.archive.as_mut() {
            Some(a) if a.chunk_len().is_some() => a.finish_chunk(),
            Some(_) => return Ok(()),
            None => return Err(StoreError::RunBroken),
        };
        let info = r.map_err(|e| self.broken(e))?;
        self.summary.chunks += 1;
        let res = self.ingest.chunk(&self.store.cat.db, &info);
        res.inspect_err(|_| self.state = State::Broken)
    }

    fn append(
        &mut self,
        meta: &EntryMeta,
        len: u64,
        data: impl Read,
        index_data: Option<&[u8]>,
    ) -> Result<EntryLocation> {
        let r = match self.archive.as_mut() {
            Some(a) => a.append_reader(meta, len, data),
            None => return Err(StoreError::RunBroken),
        };
        let loc = r.map_err(|e| self.broken(e))?;
        let res = self
            .ingest
            .entry(&self.store.cat.db, meta, &loc, index_data);
        match res {
            Ok(_) => Ok(loc),
            Err(e) => {
                self.state = State::Broken;
                Err(e)
            }
        }
    }

    fn broken(&mut self, e: ArchiveError) -> StoreError {
        self.state = State::Broken;
        let path = self.store.cat.data.path.clone();
        match e {
            ArchiveError::DataLength { expected, found } => StoreError::LengthMismatch {
                what: "entry data".into(),
                expected,
                found,
            },
            ArchiveError::DataSource(source) => StoreError::Source {
                what: "entry data".into(),
                source,
            },
            source => StoreError::Archive { path, source },
        }
    }
}

impl Drop for RunWriter<'_> {
    fn drop(&mut self) {
        if self.state == State::Done {
            return;
        }
        // Withhold the buffered bytes of the open chunk from the file: they are garbage now.
        if let Some(a) = self.archive.take() {
            if let Some(bw) = a.into_inner() {
                let _ = bw.into_parts();
            }
        }
        let _ = self.store.cat.db.conn.execute_batch("ROLLBACK");
        // The index is the authority on what is committed; cut the file back to it now.
        if self.store.recover_tail().is_err() {
            self.store.needs_recovery = true;
        }
    }
}

fn next_time(now: Timestamp, last: Option<Timestamp>) -> Timestamp {
    match last {
        Some(l) if now <= l => {
            if l.nanos + 1 < 1_000_000_000 {
                Timestamp {
                    secs: l.secs,
                    nanos: l.nanos + 1,
                }
            } else {
                Timestamp {
                    secs: l.secs + 1,
                    nanos: 0,
                }
            }
        }
        _ => now,
    }
}

fn validate(meta: &EntryMeta) -> Result<()> {
    meta.validate().map_err(|e| match e {
        ArchiveError::InvalidMeta {
            what,
            expected,
            found,
        } => StoreError::Invalid {
            what,
            expected,
            found,
        },
        other => StoreError::Invalid {
            what: "entry",
            expected: "valid metadata",
            found: other.to_string(),
        },
    })
}

fn check_guid(expected: Guid, found: Guid) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(StoreError::GuidMismatch { expected, found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_strictly_increase() {
        let t = Timestamp::from_secs(10);
        assert_eq!(next_time(t, None), t);
        assert_eq!(next_time(t, Some(Timestamp::from_secs(5))), t);
        assert_eq!(next_time(t, Some(t)), Timestamp { secs: 10, nanos: 1 });
        assert_eq!(
            next_time(
                t,
                Some(Timestamp {
                    secs: 11,
                    nanos: 999_999_999
                })
            ),
            Timestamp::from_secs(12)
        );
    }
}
