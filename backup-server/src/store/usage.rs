//! Compaction's accounting: which entries a restore inside the retention window can still
//! need, and how many bytes the others (the dirty ones) take.
//!
//! Each entry is *needed until* a time (or forever); it is dirty when that time is before
//! the cutoff (now minus retention):
//!
//! * message: dirty at once when marked damaged (`damaged`: no restore can use it);
//!   else forever while a current, non-expunged record of any folder holds its GUID;
//!   else until the last time one did (`max(valid_to)` of its non-expunged records; a
//!   message only ever seen expunged: when last seen; never seen: when stored). A second
//!   entry of a GUID already stored (never written by a run) is dirty at once.
//! * folder-meta: until its folder's next snapshot or trusted tombstone, whichever first;
//!   forever while it is the newest.
//! * name link: until the folder's next name event (rename or tombstone); forever while
//!   newest. Tombstone: until the next name event, else until its own time. A tombstone of
//!   a run that never ended (no `names` row) is dirty at once.
//! * user file: until the next copy of the same file (same kind and script name).
//! * run markers, and kinds this version does not know: forever.
//!
//! Bytes are uncompressed entry spans (headers, data, padding); `total_bytes` is the sum
//! of the chunks' uncompressed lengths, so `dirty_bytes / total_bytes` is the dirty ratio.

use std::collections::BTreeMap;

use formats::Timestamp;

use super::catalog::Catalog;
use super::damage::DAMAGED_SQL;
use super::error::{Result, SqlContext};
use super::ingest::{to_ns, SPAN_SQL};

/// An entry and whether it is dirty at a cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    /// The entry id (its ordinal in the data file).
    pub id: i64,
    /// Offset of its chunk.
    pub chunk_offset: u64,
    /// Offset of its header in the chunk.
    pub header_offset: u64,
    /// Its uncompressed span.
    pub span: u64,
    /// Its kind.
    pub kind: String,
    /// Until when a restore can need it (`None`: for as long as it is current).
    pub needed_until: Option<Timestamp>,
    /// Whether no restore at or after the cutoff can need it.
    pub dirty: bool,
}

/// The dirty-byte accounting of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The data file's committed length (compressed).
    pub file_len: u64,
    /// Uncompressed bytes of all chunks.
    pub total_bytes: u64,
    /// Uncompressed bytes of dirty entries.
    pub dirty_bytes: u64,
    /// Entries.
    pub entries: u64,
    /// Dirty entries.
    pub dirty_entries: u64,
    /// Dirty bytes by entry kind.
    pub dirty_by_kind: BTreeMap<String, u64>,
}

impl Usage {
    /// `dirty_bytes / total_bytes` (0 for an empty store).
    pub fn dirty_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.total_bytes as f64
        }
    }
}

const MIN: &str = "-9223372036854775808";
const MAX: &str = "9223372036854775807";

fn state_sql() -> String {
    format!(
        "SELECT e.id, e.chunk, e.header_offset, {SPAN_SQL}, e.kind,
         CASE e.kind
         WHEN 'message' THEN CASE
           WHEN NOT EXISTS (SELECT 1 FROM messages m WHERE m.entry = e.id) THEN {MIN}
           WHEN EXISTS (SELECT 1 FROM messages m WHERE m.entry = e.id AND {DAMAGED_SQL}) THEN {MIN}
           WHEN EXISTS (SELECT 1 FROM messages m JOIN records r ON r.guid = m.guid
                        WHERE m.entry = e.id AND r.expunged = 0 AND r.valid_to IS NULL) THEN NULL
           ELSE coalesce(
             (SELECT max(r.valid_to) FROM messages m JOIN records r ON r.guid = m.guid
              WHERE m.entry = e.id AND r.expunged = 0),
             (SELECT max(r.valid_from) FROM messages m JOIN records r ON r.guid = m.guid
              WHERE m.entry = e.id),
             e.time)
           END
         WHEN 'folder-meta' THEN (
           SELECT nullif(min(
               coalesce((SELECT min(s.time) FROM snapshots s
                         WHERE s.folder_key = f.folder_key AND s.run > f.run), {MAX}),
               coalesce((SELECT min(n.time) FROM names n
                         WHERE n.folder_key = f.folder_key AND n.deleted = 1 AND n.time > f.time), {MAX})),
             {MAX})
           FROM meta_files f WHERE f.entry = e.id)
         WHEN 'name' THEN CASE
           WHEN NOT EXISTS (SELECT 1 FROM names n WHERE n.entry = e.id) THEN {MIN}
           ELSE (SELECT CASE WHEN n.deleted = 0 THEN
                   (SELECT min(n2.time) FROM names n2
                    WHERE n2.folder_key = n.folder_key AND n2.time > n.time)
                 ELSE coalesce((SELECT min(n2.time) FROM names n2
                                WHERE n2.folder_key = n.folder_key AND n2.time > n.time), n.time)
                 END
                 FROM names n WHERE n.entry = e.id)
           END
         WHEN 'user-file' THEN (
           SELECT (SELECT min(u2.time) FROM user_files u2
                   WHERE u2.kind = u.kind AND u2.script = u.script AND u2.time > u.time)
           FROM user_files u WHERE u.entry = e.id)
         ELSE NULL
         END
         FROM entries e ORDER BY e.id"
    )
}

impl Catalog {
    /// Hands every entry, in file order, with whether it is dirty at `cutoff` (now minus
    /// the retention), to `f`.
    pub fn entry_states(
        &self,
        cutoff: Timestamp,
        mut f: impl FnMut(EntryState) -> Result<()>,
    ) -> Result<()> {
        let c = to_ns(cutoff)?;
        let sql = state_sql();
        let mut st = self.db.conn.prepare(&sql).sql(&self.db.path)?;
        let mut rows = st.query([]).sql(&self.db.path)?;
        while let Some(r) = rows.next().sql(&self.db.path)? {
            let needed: Option<i64> = r.get(5).sql(&self.db.path)?;
            let e = EntryState {
                id: r.get(0).sql(&self.db.path)?,
                chunk_offset: r.get::<_, i64>(1).sql(&self.db.path)? as u64,
                header_offset: r.get::<_, i64>(2).sql(&self.db.path)? as u64,
                span: r.get::<_, i64>(3).sql(&self.db.path)? as u64,
                kind: r.get(4).sql(&self.db.path)?,
                needed_until: needed.map(super::ingest::from_ns),
                dirty: needed.is_some_and(|n| n < c),
            };
            f(e)?;
        }
        Ok(())
    }

    /// The dirty-byte accounting at `cutoff` (now minus the retention).
    pub fn usage(&self, cutoff: Timestamp) -> Result<Usage> {
        let mut u = Usage {
            file_len: self.committed_len()?,
            total_bytes: self
                .db
                .conn
                .query_row(
                    "SELECT coalesce(sum(uncompressed_len), 0) FROM chunks",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .sql(&self.db.path)? as u64,
            ..Usage::default()
        };
        self.entry_states(cutoff, |e| {
            u.entries += 1;
            if e.dirty {
                u.dirty_entries += 1;
                u.dirty_bytes += e.span;
                *u.dirty_by_kind.entry(e.kind).or_default() += e.span;
            }
            Ok(())
        })?;
        Ok(u)
    }
}
