//! Checking an index against the store's rules, without reading the data file's content.
//!
//! * Chunks tile the data file from byte 0 without gaps; the file is at least as long.
//! * Invariant 2: every entry lies inside a committed chunk, and a chunk's entries tile its
//!   uncompressed data exactly (first at 0, each starting where the previous ended, the last
//!   ending at the chunk's end), as many as the chunk row says.
//! * Every kind table's row points at an entry of its kind.
//! * Every current, non-expunged record points at a stored message (a restore could not
//!   give it back otherwise).
//! * With `deep`: SQLite's `integrity_check` and `foreign_key_check`.
//!
//! `backup-server verify` (crate::verify) runs this at both levels; the full level then
//! reads and hashes every entry and compares the index with the one the data file implies.

use super::catalog::Catalog;
use super::error::{Result, SqlContext};
use super::ingest::SPAN_SQL;
use std::fmt;
use std::path::PathBuf;

/// Problems listed per check, at most this many each.
const MAX_LISTED: usize = 20;

/// One way an index breaks the store's rules, naming the rows and offsets concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexFault {
    /// SQLite's own `integrity_check` or `foreign_key_check` said this.
    Sqlite(String),
    /// A chunk does not start where the previous one ends.
    ChunkGap {
        /// The chunk's offset.
        chunk: i64,
        /// Where it should start.
        expected: u64,
    },
    /// A chunk's lengths are impossible.
    ChunkLengths {
        /// The chunk's offset.
        chunk: i64,
        /// Its compressed length.
        compressed: i64,
        /// Its uncompressed length.
        uncompressed: i64,
    },
    /// The data file is shorter than what the index committed.
    DataFileShort {
        /// The data file.
        path: PathBuf,
        /// Bytes the index committed.
        committed: u64,
        /// Bytes the file holds.
        found: u64,
    },
    /// A chunk's entries do not tile it, or are not as many as its row says.
    ChunkEntries {
        /// The chunk's offset.
        chunk: i64,
        /// Entries its row counts.
        expected: i64,
        /// Its uncompressed length.
        uncompressed: i64,
        /// Entries found.
        found: i64,
        /// Where the last one ends.
        ends_at: i64,
    },
    /// An entry in no committed chunk.
    EntryOutsideChunk {
        /// The entry's id.
        entry: i64,
        /// The chunk it names.
        chunk: i64,
    },
    /// An entry not where the previous one ends, or running past its chunk.
    EntryMisplaced {
        /// The entry's id.
        entry: i64,
        /// Its chunk.
        chunk: i64,
        /// Where it should be.
        expected_at: i64,
        /// The chunk's uncompressed length.
        uncompressed: i64,
        /// Its header's offset.
        header: i64,
        /// Its data's offset.
        data: i64,
        /// Its span.
        span: i64,
    },
    /// A committed chunk without entries.
    EmptyChunk {
        /// The chunk's offset.
        chunk: i64,
    },
    /// A kind table's row points at an entry of another kind (or at none).
    KindMismatch {
        /// The table.
        table: &'static str,
        /// The entry.
        entry: i64,
        /// The kind it should have.
        kind: &'static str,
    },
    /// A snapshot whose index entry is no cyrus.index.
    SnapshotNotIndex {
        /// The entry.
        entry: i64,
    },
    /// A current, live record whose message the store lacks.
    RecordWithoutMessage {
        /// The folder's unique id.
        uniqueid: String,
        /// The folder's newest name, when the index has one.
        folder: Option<String>,
        /// The record's UID.
        uid: u32,
        /// The message's GUID (hex).
        guid: String,
    },
}

impl fmt::Display for IndexFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexFault::Sqlite(s) => f.write_str(s),
            IndexFault::ChunkGap { chunk, expected } => write!(
                f,
                "chunk at {chunk}: expected it to start at {expected}, where the previous chunk ends"
            ),
            IndexFault::ChunkLengths {
                chunk,
                compressed,
                uncompressed,
            } => write!(
                f,
                "chunk at {chunk}: expected positive lengths, uncompressed a multiple of 512; found {compressed} and {uncompressed}"
            ),
            IndexFault::DataFileShort {
                path,
                committed,
                found,
            } => write!(
                f,
                "data file {}: the index committed {committed} bytes, the file holds {found}",
                path.display()
            ),
            IndexFault::ChunkEntries {
                chunk,
                expected,
                uncompressed,
                found,
                ends_at,
            } => write!(
                f,
                "chunk at {chunk}: expected {expected} entries ending at {uncompressed}, found {found} ending at {ends_at}"
            ),
            IndexFault::EntryOutsideChunk { entry, chunk } => write!(
                f,
                "entry {entry}: points at chunk {chunk}, which is not a committed chunk"
            ),
            IndexFault::EntryMisplaced {
                entry,
                chunk,
                expected_at,
                uncompressed,
                header,
                data,
                span,
            } => write!(
                f,
                "entry {entry}: expected it at offset {expected_at} of chunk {chunk} (length {uncompressed}), found header at {header}, data at {data}, span {span}"
            ),
            IndexFault::EmptyChunk { chunk } => write!(
                f,
                "chunk at {chunk}: expected entries, found none in the index"
            ),
            IndexFault::KindMismatch { table, entry, kind } => write!(
                f,
                "{table}: row for entry {entry}: expected an entry of kind {kind}"
            ),
            IndexFault::SnapshotNotIndex { entry } => write!(
                f,
                "snapshots: row for entry {entry}: expected a cyrus.index entry"
            ),
            IndexFault::RecordWithoutMessage {
                uniqueid,
                folder,
                uid,
                guid,
            } => {
                match folder {
                    Some(name) => write!(f, "folder {name:?} ({uniqueid})")?,
                    None => write!(f, "folder {uniqueid}")?,
                }
                write!(f, " UID {uid}: its message {guid} is not stored")
            }
        }
    }
}

impl Catalog {
    /// Checks the index (see the module documentation); returns the problems found, each
    /// naming the rows and offsets. Empty means consistent.
    pub fn check(&self, deep: bool) -> Result<Vec<IndexFault>> {
        let mut out = Vec::new();
        if deep {
            out.extend(
                self.db
                    .integrity_check()?
                    .into_iter()
                    .map(IndexFault::Sqlite),
            );
        }
        let path = &self.db.path;
        let conn = &self.db.conn;

        // Chunks tile the file.
        let mut end = 0u64;
        {
            let mut st = conn
                .prepare(
                    "SELECT offset, compressed_len, uncompressed_len FROM chunks ORDER BY offset",
                )
                .sql(path)?;
            let mut rows = st.query([]).sql(path)?;
            while let Some(r) = rows.next().sql(path)? {
                let (off, clen, ulen): (i64, i64, i64) = (
                    r.get(0).sql(path)?,
                    r.get(1).sql(path)?,
                    r.get(2).sql(path)?,
                );
                if off as u64 != end {
                    push(
                        &mut out,
                        IndexFault::ChunkGap {
                            chunk: off,
                            expected: end,
                        },
                    );
                }
                if clen <= 0 || ulen <= 0 || ulen % 512 != 0 {
                    push(
                        &mut out,
                        IndexFault::ChunkLengths {
                            chunk: off,
                            compressed: clen,
                            uncompressed: ulen,
                        },
                    );
                }
                end = (off + clen) as u64;
            }
        }
        let file_len = self.data.len()?;
        if file_len < end {
            out.push(IndexFault::DataFileShort {
                path: self.data.path.clone(),
                committed: end,
                found: file_len,
            });
        }

        // Entries tile their chunks (invariant 2).
        {
            let sql = format!(
                "SELECT e.id, e.chunk, e.header_offset, e.data_offset, {SPAN_SQL}, c.uncompressed_len, c.entries
                 FROM entries e LEFT JOIN chunks c ON c.offset = e.chunk
                 ORDER BY e.chunk, e.header_offset"
            );
            let mut st = conn.prepare(&sql).sql(path)?;
            let mut rows = st.query([]).sql(path)?;
            let mut cur: Option<(i64, i64, i64, i64)> = None; // chunk, next offset, ulen, counted
            let mut expected_count = 0i64;
            let mut listed = 0usize;
            let finish =
                |cur: Option<(i64, i64, i64, i64)>, expected: i64, out: &mut Vec<IndexFault>| {
                    if let Some((chunk, next, ulen, n)) = cur {
                        if next != ulen || n != expected {
                            out.push(IndexFault::ChunkEntries {
                                chunk,
                                expected,
                                uncompressed: ulen,
                                found: n,
                                ends_at: next,
                            });
                        }
                    }
                };
            while let Some(r) = rows.next().sql(path)? {
                let id: i64 = r.get(0).sql(path)?;
                let chunk: i64 = r.get(1).sql(path)?;
                let hoff: i64 = r.get(2).sql(path)?;
                let doff: i64 = r.get(3).sql(path)?;
                let span: i64 = r.get(4).sql(path)?;
                let ulen: Option<i64> = r.get(5).sql(path)?;
                let count: Option<i64> = r.get(6).sql(path)?;
                let Some(ulen) = ulen else {
                    if listed < MAX_LISTED {
                        out.push(IndexFault::EntryOutsideChunk { entry: id, chunk });
                        listed += 1;
                    }
                    continue;
                };
                if cur.map(|c| c.0) != Some(chunk) {
                    finish(cur, expected_count, &mut out);
                    cur = Some((chunk, 0, ulen, 0));
                    expected_count = count.unwrap_or(0);
                }
                let c = cur.as_mut().expect("set above");
                let misplaced = hoff != c.1 || doff < hoff + 1024 || hoff + span > ulen;
                if misplaced && listed < MAX_LISTED {
                    out.push(IndexFault::EntryMisplaced {
                        entry: id,
                        chunk,
                        expected_at: c.1,
                        uncompressed: ulen,
                        header: hoff,
                        data: doff,
                        span,
                    });
                    listed += 1;
                }
                c.1 = hoff + span;
                c.3 += 1;
            }
            finish(cur, expected_count, &mut out);
            let empty: Vec<i64> = conn
                .prepare("SELECT offset FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.chunk = c.offset)")
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .sql(path)?;
            for c in empty.into_iter().take(MAX_LISTED) {
                out.push(IndexFault::EmptyChunk { chunk: c });
            }
        }

        // Kind tables point at entries of their kind.
        for (table, kind) in [
            ("messages", "message"),
            ("names", "name"),
            ("meta_files", "folder-meta"),
            ("user_files", "user-file"),
        ] {
            let bad: Vec<i64> = conn
                .prepare(&format!(
                    "SELECT t.entry FROM {table} t LEFT JOIN entries e ON e.id = t.entry
                     WHERE e.id IS NULL OR e.kind != '{kind}' LIMIT {MAX_LISTED}"
                ))
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .sql(path)?;
            for id in bad {
                out.push(IndexFault::KindMismatch {
                    table,
                    entry: id,
                    kind,
                });
            }
        }
        let bad: Vec<i64> = conn
            .prepare(&format!(
                "SELECT s.index_entry FROM snapshots s LEFT JOIN meta_files f ON f.entry = s.index_entry
                 WHERE f.entry IS NULL OR f.file != 'cyrus.index' LIMIT {MAX_LISTED}"
            ))
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .sql(path)?;
        for id in bad {
            out.push(IndexFault::SnapshotNotIndex { entry: id });
        }

        // Current records point at stored messages.
        type Missing = (String, Option<String>, u32, Vec<u8>);
        let missing: Vec<Missing> = conn
            .prepare(&format!(
                "SELECT k.uniqueid,
                        (SELECT n.folder FROM names n WHERE n.folder_key = r.folder_key
                         ORDER BY n.time DESC LIMIT 1),
                        r.uid, r.guid FROM records r JOIN folders k ON k.id = r.folder_key
                 WHERE r.valid_to IS NULL AND r.expunged = 0
                   AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.guid = r.guid)
                 ORDER BY k.uniqueid, r.uid LIMIT {MAX_LISTED}"
            ))
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .sql(path)?;
        for (u, folder, uid, g) in missing {
            out.push(IndexFault::RecordWithoutMessage {
                uniqueid: u,
                folder,
                uid,
                guid: hex::encode(g),
            });
        }
        Ok(out)
    }
}

fn push(out: &mut Vec<IndexFault>, s: IndexFault) {
    if out.len() < 10 * MAX_LISTED {
        out.push(s);
    }
}
