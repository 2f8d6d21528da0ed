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
//! `backup-server verify` (crate::verify) runs this, then reads and hashes every entry.

use super::catalog::Catalog;
use super::error::{Result, SqlContext};
use super::ingest::SPAN_SQL;

/// Problems listed per check, at most this many each.
const MAX_LISTED: usize = 20;

impl Catalog {
    /// Checks the index (see the module documentation); returns the problems found, each
    /// a sentence naming the rows and offsets. Empty means consistent.
    pub fn check(&self, deep: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if deep {
            out.extend(self.db.integrity_check()?);
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
                    push(&mut out, format!("chunk at {off}: expected it to start at {end}, where the previous chunk ends"));
                }
                if clen <= 0 || ulen <= 0 || ulen % 512 != 0 {
                    push(&mut out, format!("chunk at {off}: expected positive lengths, uncompressed a multiple of 512; found {clen} and {ulen}"));
                }
                end = (off + clen) as u64;
            }
        }
        let file_len = self.data.len()?;
        if file_len < end {
            out.push(format!(
                "data file {}: the index committed {end} bytes, the file holds {file_len}",
                self.data.path.display()
            ));
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
            let finish = |cur: Option<(i64, i64, i64, i64)>,
                          expected: i64,
                          out: &mut Vec<String>| {
                if let Some((chunk, next, ulen, n)) = cur {
                    if next != ulen || n != expected {
                        out.push(format!("chunk at {chunk}: expected {expected} entries ending at {ulen}, found {n} ending at {next}"));
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
                        out.push(format!(
                            "entry {id}: points at chunk {chunk}, which is not a committed chunk"
                        ));
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
                    out.push(format!(
                        "entry {id}: expected it at offset {} of chunk {chunk} (length {ulen}), found header at {hoff}, data at {doff}, span {span}",
                        c.1
                    ));
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
                out.push(format!(
                    "chunk at {c}: expected entries, found none in the index"
                ));
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
                out.push(format!(
                    "{table}: row for entry {id}: expected an entry of kind {kind}"
                ));
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
            out.push(format!(
                "snapshots: row for entry {id}: expected a cyrus.index entry"
            ));
        }

        // Current records point at stored messages.
        let missing: Vec<(String, u32, Vec<u8>)> = conn
            .prepare(&format!(
                "SELECT r.uniqueid, r.uid, r.guid FROM records r
                 WHERE r.valid_to IS NULL AND r.expunged = 0
                   AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.guid = r.guid)
                 ORDER BY r.uniqueid, r.uid LIMIT {MAX_LISTED}"
            ))
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .sql(path)?;
        for (u, uid, g) in missing {
            out.push(format!(
                "folder {u} UID {uid}: its message {} is not stored",
                hex::encode(g)
            ));
        }
        Ok(out)
    }
}

fn push(out: &mut Vec<String>, s: String) {
    if out.len() < 10 * MAX_LISTED {
        out.push(s);
    }
}
