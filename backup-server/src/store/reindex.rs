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

use formats::archive::{EntryMeta, MetaFile, ScanEvent, Scanner, Tail};
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
    let path = db.path.clone();
    db.conn.execute_batch("BEGIN IMMEDIATE").sql(&path)?;
    let r = (|| {
        db.conn
            .execute(
                "INSERT INTO store (id, user, data_file) VALUES (1, ?1, ?2)",
                params![user, data_name],
            )
            .sql(&path)?;
        let mut ingest = Ingest::new(db, user)?;
        let mut scanner = Scanner::new(file);
        let mut rep = ReindexReport {
            chunks: 0,
            entries: 0,
            unknown_entries: 0,
            valid_end: 0,
            file_len: 0,
            tail: Tail::Clean,
        };
        let mut in_chunk = false;
        let mut chunk_entries = (0u64, 0u64);
        let mut buf = Vec::new();
        loop {
            let ev = scanner.next_event().map_err(|source| StoreError::Damaged {
                path: data_path.to_path_buf(),
                source,
            })?;
            match ev {
                ScanEvent::ChunkStart { .. } => {
                    db.conn.execute_batch("SAVEPOINT chunk").sql(&path)?;
                    in_chunk = true;
                    chunk_entries = (0, 0);
                }
                ScanEvent::Entry(mut e) => {
                    let wants = matches!(
                        &e.header.meta,
                        EntryMeta::FolderMeta(f) if f.file != MetaFile::Annotations
                    );
                    let data = if wants {
                        buf.clear();
                        if e.read_to_end(&mut buf).is_err() {
                            // The scanner keeps the error; its next event says what it
                            // was: the file ending inside this chunk (a torn tail, the
                            // chunk rolled back) or damage (an error).
                            continue;
                        }
                        Some(&buf[..])
                    } else {
                        None
                    };
                    ingest.entry(db, &e.header.meta, &e.location, data)?;
                    chunk_entries.0 += 1;
                    if matches!(e.header.meta, EntryMeta::Unknown { .. }) {
                        chunk_entries.1 += 1;
                    }
                }
                ScanEvent::ChunkEnd(info) => {
                    ingest.chunk(db, &info)?;
                    db.conn.execute_batch("RELEASE chunk").sql(&path)?;
                    in_chunk = false;
                    rep.chunks += 1;
                    rep.entries += chunk_entries.0;
                    rep.unknown_entries += chunk_entries.1;
                }
                ScanEvent::End(end) => {
                    if in_chunk {
                        db.conn
                            .execute_batch("ROLLBACK TO chunk; RELEASE chunk")
                            .sql(&path)?;
                    }
                    rep.valid_end = end.valid_end;
                    rep.file_len = end.file_len;
                    rep.tail = end.tail;
                    return Ok(rep);
                }
            }
        }
    })();
    // Messages a current, live record names but no intact entry holds (a repair or a
    // compaction dropped them): marked lost in the same transaction, so the planner copies
    // their folders again. Nothing, for a whole data file.
    let r = r.and_then(|rep| {
        let now =
            Timestamp::from_system_time(std::time::SystemTime::now()).unwrap_or(Timestamp::EPOCH);
        mark_missing(db, now, "lost: no intact copy in the data file")?;
        Ok(rep)
    });
    match r {
        Ok(rep) => {
            db.conn.execute_batch("COMMIT").sql(&path)?;
            Ok(rep)
        }
        Err(e) => {
            let _ = db.conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
