//! Rebuilding the index from the data file alone (invariant 3).
//!
//! The data file is scanned from its first byte with formats::archive's [`Scanner`]. Each
//! chunk is ingested inside an SQLite savepoint: its entries go through the same
//! [`Ingest`] path a backup run uses, and the savepoint is released only at the chunk's
//! end, once its gzip trailer checked out. A torn tail (the file ends inside a chunk, or
//! garbage follows the last chunk) ends the rebuild normally, its partial chunk rolled
//! back; the next open cuts it off. Damage before the end (a bad chunk with data after it)
//! is an error and no index is produced.
//!
//! A current, live record whose message no entry holds (a repair or a compaction dropped
//! it) gets a `damaged` mark without an entry, in the same transaction: the next run then
//! copies its folder again and fetches it (store/damage.rs).
//!
//! Entry data is read only for cyrus.header and cyrus.index entries (their content makes
//! keyword names, snapshots and records); every other entry's data is skipped (inflated,
//! not kept). Message SHA-1s are not checked here: that is `verify`'s work.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use formats::archive::{
    ChunkInfo, EntryLocation, EntryMeta, MetaFile, ScanEnd, ScanEvent, Scanner, Tail,
};
use rusqlite::params;

use super::damage::mark_missing;
use super::error::{IoContext, Result, SqlContext, StoreError};
use super::index::{IndexDb, OpenMode};
use super::ingest::Ingest;
use formats::Timestamp;

/// What a rebuild found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Valid chunks indexed.
    pub chunks: u64,
    /// Entries indexed.
    pub entries: u64,
    /// Entries of kinds this version does not know (kept in `entries` only).
    pub unknown_entries: u64,
    /// End of the last valid chunk: the committed length of the new index.
    pub valid_end: u64,
    /// The data file's length when scanned.
    pub file_len: u64,
    /// How the data file ended.
    pub tail: Tail,
}

/// Builds a fresh index of `data_path` (a data file of `user`) at `out`, which must not
/// exist. The result is synced to disk; switching it in is the caller's business.
pub fn rebuild_index(data_path: &Path, user: &str, out: &Path) -> Result<ReindexReport> {
    if out.exists() {
        return Err(StoreError::Invalid {
            what: "reindex output",
            expected: "a path with no file",
            found: out.display().to_string(),
        });
    }
    let data_name = data_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Invalid {
            what: "data file path",
            expected: "a file name in UTF-8",
            found: data_path.display().to_string(),
        })?
        .to_owned();
    let file = File::open(data_path).io(data_path, "opening the data file")?;
    // The bytes past the old committed length may be a killed run's, still only in the
    // page cache: the new index must not name bytes a power loss could take back.
    file.sync_all().io(data_path, "syncing the data file")?;
    let built = (|| {
        let db = IndexDb::open(out, OpenMode::Create)?;
        let report = fill(&db, file, data_path, user, &data_name)?;
        db.checkpoint()?;
        Ok(report)
    })();
    let report = match built {
        Ok(r) => r,
        Err(e) => {
            // Nothing half-built is left behind.
            for suffix in ["", "-wal", "-shm"] {
                let mut p = out.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    File::open(out)
        .and_then(|f| f.sync_all())
        .io(out, "syncing the rebuilt index")?;
    Ok(report)
}

fn fill(
    db: &IndexDb,
    file: File,
    data_path: &Path,
    user: &str,
    data_name: &str,
) -> Result<ReindexReport> {
    let mut rebuild = Rebuild::start(db, user, data_name)?;
    let r = (|| {
        let mut scanner = Scanner::new(file);
        let mut buf = Vec::new();
        loop {
            let ev = scanner.next_event().map_err(|source| StoreError::Damaged {
                path: data_path.to_path_buf(),
                source,
            })?;
            match ev {
                ScanEvent::ChunkStart { .. } => rebuild.chunk_start()?,
                ScanEvent::Entry(mut e) => {
                    let data = if let Some(max) = Rebuild::wants_data(&e.header.meta) {
                        buf.clear();
                        if (&mut e).take(max).read_to_end(&mut buf).is_err() {
                            // The scanner keeps the error; its next event says what it
                            // was: the file ending inside this chunk (a torn tail, the
                            // chunk rolled back) or damage (an error).
                            continue;
                        }
                        Some(&buf[..])
                    } else {
                        None
                    };
                    rebuild.entry(&e.header.meta, &e.location, data)?;
                }
                ScanEvent::ChunkEnd(info) => rebuild.chunk_end(&info)?,
                ScanEvent::End(end) => return rebuild.end(&end),
            }
        }
    })();
    // Messages a current, live record names but no intact entry holds (a repair or a
    // compaction dropped them): marked lost in the same transaction, so the planner copies
    // their folders again. Nothing, for a whole data file. Not in `Rebuild` itself: verify's
    // in-memory rebuild marks nothing.
    let r = r.and_then(|rep| {
        let now =
            Timestamp::from_system_time(std::time::SystemTime::now()).unwrap_or(Timestamp::EPOCH);
        mark_missing(db, now, "lost: no intact copy in the data file")?;
        Ok(rep)
    });
    rebuild.finish(r)
}

/// An index being filled from a data file's scan events, in one transaction with a
/// savepoint per chunk: reindex's path, and verify's (which scans once, hashing messages
/// as it goes, and rebuilds into memory what the index should hold).
pub(crate) struct Rebuild<'a> {
    db: &'a IndexDb,
    ingest: Ingest,
    in_chunk: bool,
    chunk_entries: (u64, u64),
    report: ReindexReport,
}

impl<'a> Rebuild<'a> {
    /// Begins filling `db` (an empty index) for `user`'s data file `data_name`.
    pub(crate) fn start(db: &'a IndexDb, user: &str, data_name: &str) -> Result<Rebuild<'a>> {
        let path = &db.path;
        db.conn.execute_batch("BEGIN IMMEDIATE").sql(path)?;
        let r = (|| {
            db.conn
                .execute(
                    "INSERT INTO store (id, user, data_file) VALUES (1, ?1, ?2)",
                    params![user, data_name],
                )
                .sql(path)?;
            Ingest::new(db, user)
        })();
        let ingest = match r {
            Ok(i) => i,
            Err(e) => {
                let _ = db.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        Ok(Rebuild {
            db,
            ingest,
            in_chunk: false,
            chunk_entries: (0, 0),
            report: ReindexReport {
                chunks: 0,
                entries: 0,
                unknown_entries: 0,
                valid_end: 0,
                file_len: 0,
                tail: Tail::Clean,
            },
        })
    }

    /// How much of an entry's data is read into the index, `None` for none: all of a
    /// cyrus.header or cyrus.index, a message's beginning (its header block, for the header
    /// index). The caller passes it to [`Rebuild::entry`].
    pub(crate) fn wants_data(meta: &EntryMeta) -> Option<u64> {
        match meta {
            EntryMeta::FolderMeta(f) if f.file != MetaFile::Annotations => Some(u64::MAX),
            EntryMeta::Message(_) => Some(super::headers::HEADER_BLOCK_MAX as u64),
            _ => None,
        }
    }

    /// A chunk begins.
    pub(crate) fn chunk_start(&mut self) -> Result<()> {
        self.db
            .conn
            .execute_batch("SAVEPOINT chunk")
            .sql(&self.db.path)?;
        self.in_chunk = true;
        self.chunk_entries = (0, 0);
        Ok(())
    }

    /// One entry; `data` as [`Rebuild::wants_data`] says.
    pub(crate) fn entry(
        &mut self,
        meta: &EntryMeta,
        loc: &EntryLocation,
        data: Option<&[u8]>,
    ) -> Result<()> {
        self.ingest.entry(self.db, meta, loc, data)?;
        self.chunk_entries.0 += 1;
        if matches!(meta, EntryMeta::Unknown { .. }) {
            self.chunk_entries.1 += 1;
        }
        Ok(())
    }

    /// The chunk ended whole (its gzip trailer checked out).
    pub(crate) fn chunk_end(&mut self, info: &ChunkInfo) -> Result<()> {
        self.ingest.chunk(self.db, info)?;
        self.db
            .conn
            .execute_batch("RELEASE chunk")
            .sql(&self.db.path)?;
        self.in_chunk = false;
        self.report.chunks += 1;
        self.report.entries += self.chunk_entries.0;
        self.report.unknown_entries += self.chunk_entries.1;
        Ok(())
    }

    /// The scan ended: a chunk left open (a torn tail) is rolled back.
    pub(crate) fn end(&mut self, end: &ScanEnd) -> Result<ReindexReport> {
        if self.in_chunk {
            self.db
                .conn
                .execute_batch("ROLLBACK TO chunk; RELEASE chunk")
                .sql(&self.db.path)?;
            self.in_chunk = false;
        }
        self.report.valid_end = end.valid_end;
        self.report.file_len = end.file_len;
        self.report.tail = end.tail;
        Ok(self.report.clone())
    }

    /// Commits what [`Rebuild::end`] left when `r` is `Ok`, else rolls everything back.
    pub(crate) fn finish(self, r: Result<ReindexReport>) -> Result<ReindexReport> {
        match r {
            Ok(rep) => {
                self.commit()?;
                Ok(rep)
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Commits the rows (after [`Rebuild::end`]).
    pub(crate) fn commit(self) -> Result<()> {
        self.db.conn.execute_batch("COMMIT").sql(&self.db.path)
    }

    /// Rolls every row back.
    pub(crate) fn abandon(self) {
        let _ = self.db.conn.execute_batch("ROLLBACK");
    }
}
