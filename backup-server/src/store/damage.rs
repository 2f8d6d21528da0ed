//! Damaged messages: marking them in the index (table `damaged`, schema version 2) and
//! asking which they are.
//!
//! A message is *damaged* when its entry no longer gives back the bytes its GUID names (a
//! chunk that does not inflate, SHA-1 ≠ GUID), or when the store lost its entry altogether
//! (a repair dropped the chunk it was in) while a current record still names it. A damaged
//! GUID counts as not held: the planner copies every folder with a live record of it again
//! and the run fetches it (the store then points `messages` at the good copy and deletes the
//! mark); a restore skips it with a note; compaction drops its damaged entry.
//!
//! Who finds damage is read-only (verify, restore): marking it needs the user's writer lock.
//! [`record_damage`] takes it without waiting; a lock held by a run, or an index that
//! cannot be written (a full disk), is reported as [`DamageRecording::NotRecorded`] with
//! the reason, never as a failure of the operation that found the damage.

use std::collections::HashSet;
use std::path::Path;

use formats::{Guid, Timestamp};
use rusqlite::{params, OptionalExtension};

use super::catalog::Catalog;

/// A current record holding a message: its folder and UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The folder's unique id.
    pub uniqueid: String,
    /// The folder's newest name, when the index has one.
    pub folder: Option<String>,
    /// The record's UID.
    pub uid: u32,
    /// Whether the record is flagged expunged (Cyrus's delayed expunge).
    pub expunged: bool,
}
use super::error::{IoContext, Result, SqlContext};
use super::index::IndexDb;
use super::ingest::{from_ns, to_ns};
use super::open::Store;
use super::{StoreOptions, UserDir};

/// Where damage was found, as the finder knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageAt {
    /// A whole chunk (gzip member) does not inflate or check out: every message entry in
    /// it is damaged.
    Chunk {
        /// The chunk's offset in the data file.
        offset: u64,
    },
    /// One entry, by its place (a message whose bytes do not hash to its GUID).
    Entry {
        /// Its chunk's offset.
        chunk: u64,
        /// Its header's offset in the chunk's uncompressed data.
        header_offset: u64,
    },
    /// One message, by GUID (a restore that could not read it back).
    Message {
        /// The GUID.
        guid: Guid,
    },
}

/// A damaged message as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedMessage {
    /// Its GUID.
    pub guid: Guid,
    /// The damaged entry's id; `None` when the store holds no entry of it any more.
    pub entry: Option<i64>,
    /// When the damage was recorded.
    pub found: Timestamp,
    /// What was wrong.
    pub why: String,
}

/// What became of a request to record damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageRecording {
    /// Recorded: this many messages newly marked (0 when all were marked already or the
    /// damaged entries are no message's current copy).
    Recorded {
        /// Messages marked.
        marked: u64,
    },
    /// Not recorded, and why (a run holds the user's lock, the disk is full, ...). The
    /// next verify finds the damage again.
    NotRecorded {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for DamageRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DamageRecording::Recorded { marked: 0 } => f.write_str(
                "no damaged message left to mark (marked already, or good copies stored since); \
                 backup-server repair drops the damaged bytes",
            ),
            DamageRecording::Recorded { marked } => write!(
                f,
                "{marked} damaged messages marked: the next run fetches again those Cyrus still has"
            ),
            DamageRecording::NotRecorded { reason } => write!(
                f,
                "damage not recorded ({reason}); run verify again when no run holds the store"
            ),
        }
    }
}

/// Records damage in `user`'s store under `root`: takes the writer lock without waiting,
/// opens the store, marks every message entry `found` covers (see [`Store::mark_damaged`]).
/// Never fails: what stops it is the [`DamageRecording::NotRecorded`] reason.
pub fn record_damage(root: &Path, user: &str, found: &[DamageAt], why: &str) -> DamageRecording {
    let r = (|| -> Result<u64> {
        let mut store = UserDir::new(root, user)?
            .lock()?
            .open_existing(StoreOptions::default())?;
        store.mark_damaged(found, why)
    })();
    match r {
        Ok(marked) => DamageRecording::Recorded { marked },
        Err(e) => DamageRecording::NotRecorded {
            reason: e.to_string(),
        },
    }
}

impl Store {
    /// Marks the messages `found` covers as damaged, in one transaction: each message
    /// entry there that is its GUID's current copy (`messages.entry`). An entry that is
    /// not (a later good copy superseded it) needs no healing and is left alone. Then the
    /// data file's mtime is set to now: a quiet key (docs/store.md) must not match any
    /// more, so the next run opens the store and plans the refetch. Returns the messages
    /// newly marked.
    pub fn mark_damaged(&mut self, found: &[DamageAt], why: &str) -> Result<u64> {
        let now = to_ns(self.opts.clock.now())?;
        let db = &self.cat.db;
        let path = db.path.clone();
        db.conn.execute_batch("BEGIN IMMEDIATE").sql(&path)?;
        let r = (|| -> Result<u64> {
            let mut marked = 0u64;
            for f in found {
                let sql = match f {
                    DamageAt::Chunk { .. } => {
                        "INSERT OR IGNORE INTO damaged (guid, entry, found, why)
                         SELECT m.guid, m.entry, ?3, ?4 FROM entries e
                         JOIN messages m ON m.entry = e.id
                         WHERE e.chunk = ?1 AND ?2 IS NOT NULL"
                    }
                    DamageAt::Entry { .. } => {
                        "INSERT OR IGNORE INTO damaged (guid, entry, found, why)
                         SELECT m.guid, m.entry, ?3, ?4 FROM entries e
                         JOIN messages m ON m.entry = e.id
                         WHERE e.chunk = ?1 AND e.header_offset = ?2"
                    }
                    DamageAt::Message { .. } => {
                        "INSERT OR IGNORE INTO damaged (guid, entry, found, why)
                         SELECT m.guid, m.entry, ?3, ?4 FROM messages m
                         WHERE m.guid = ?1 AND ?2 IS NOT NULL"
                    }
                };
                let n = match f {
                    DamageAt::Chunk { offset } => {
                        db.conn.execute(sql, params![*offset as i64, 0, now, why])
                    }
                    DamageAt::Entry {
                        chunk,
                        header_offset,
                    } => db
                        .conn
                        .execute(sql, params![*chunk as i64, *header_offset as i64, now, why]),
                    DamageAt::Message { guid } => {
                        db.conn.execute(sql, params![&guid.0[..], 0, now, why])
                    }
                }
                .sql(&path)?;
                marked += n as u64;
            }
            Ok(marked)
        })();
        match r {
            Ok(marked) => {
                db.conn.execute_batch("COMMIT").sql(&path)?;
                if marked > 0 {
                    touch(self.cat.data_path())?;
                }
                Ok(marked)
            }
            Err(e) => {
                let _ = db.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Marks as damaged, with no entry, every GUID a current live record names that the index
/// holds no message for: what a repair or a compaction dropped. Run by every index
/// rebuild before its commit (reindex.rs), so a rebuilt index never lacks these marks, not
/// even for a moment a kill could catch. Returns how many.
pub(crate) fn mark_missing(db: &IndexDb, found: Timestamp, why: &str) -> Result<u64> {
    let n = db
        .conn
        .execute(
            "INSERT OR IGNORE INTO damaged (guid, entry, found, why)
             SELECT DISTINCT r.guid, NULL, ?1, ?2 FROM records r
             WHERE r.valid_to IS NULL AND r.expunged = 0 AND r.guid != zeroblob(20)
               AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.guid = r.guid)",
            params![to_ns(found)?, why],
        )
        .sql(&db.path)?;
    Ok(n as u64)
}

/// Sets a file's mtime (and so its ctime) to now.
fn touch(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .io(path, "setting the data file's mtime")
}

/// The condition "the message row `m` is a damaged copy", for SQL.
pub(crate) const DAMAGED_SQL: &str = "EXISTS (SELECT 1 FROM damaged d WHERE d.guid = m.guid \
     AND (d.entry IS NULL OR d.entry = m.entry))";

impl Catalog {
    /// Whether the store holds a good copy of the message: a `messages` row not marked
    /// damaged. The planner and the run ask this; a damaged GUID is fetched again.
    pub fn holds_message(&self, guid: &Guid) -> Result<bool> {
        let sql = format!("SELECT 1 FROM messages m WHERE m.guid = ?1 AND NOT {DAMAGED_SQL}");
        self.db
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row([&guid.0[..]], |_| Ok(())).optional())
            .map(|o| o.is_some())
            .sql(&self.db.path)
    }

    /// The current, live records of folder `unique_id` whose message the store holds a
    /// good copy of, as (UID, GUID) in UID order. A live record's message is always stored
    /// (`check`: a run never snapshots one it lacks; a rebuild marks the ones it lost
    /// damaged), so only damage is asked, and any mark of the GUID excludes the record (its
    /// GUID is then looked up one by one, as [`Catalog::holds_message`] decides).
    pub fn held_records(&self, unique_id: &str) -> Result<Vec<(u32, Guid)>> {
        self.db
            .conn
            .prepare_cached(
                "SELECT r.uid, r.guid FROM records r
                 WHERE r.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1)
                   AND r.valid_to IS NULL AND r.expunged = 0
                   AND NOT EXISTS (SELECT 1 FROM damaged d WHERE d.guid = r.guid)
                 ORDER BY r.uid",
            )
            .and_then(|mut st| {
                st.query_map([unique_id], |r| {
                    let g: Vec<u8> = r.get(1)?;
                    let mut guid = Guid::NULL;
                    if g.len() == 20 {
                        guid.0.copy_from_slice(&g);
                    }
                    Ok((r.get(0)?, guid))
                })?
                .collect()
            })
            .sql(&self.db.path)
    }

    /// Whether the message is marked damaged (its current copy, or no copy at all).
    pub fn is_damaged(&self, guid: &Guid) -> Result<Option<DamagedMessage>> {
        self.db
            .conn
            .prepare_cached(
                "SELECT d.entry, d.found, d.why FROM damaged d WHERE d.guid = ?1
                 AND (d.entry IS NULL
                      OR d.entry = (SELECT m.entry FROM messages m WHERE m.guid = d.guid))",
            )
            .and_then(|mut st| {
                st.query_row([&guid.0[..]], |r| {
                    Ok(DamagedMessage {
                        guid: *guid,
                        entry: r.get(0)?,
                        found: from_ns(r.get(1)?),
                        why: r.get(2)?,
                    })
                })
                .optional()
            })
            .sql(&self.db.path)
    }

    /// Every damaged message still waiting for a good copy, by GUID.
    pub fn damaged(&self) -> Result<Vec<DamagedMessage>> {
        self.db
            .conn
            .prepare_cached(
                "SELECT d.guid, d.entry, d.found, d.why FROM damaged d
                 WHERE d.entry IS NULL
                    OR d.entry = (SELECT m.entry FROM messages m WHERE m.guid = d.guid)
                 ORDER BY d.guid",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    let g: Vec<u8> = r.get(0)?;
                    let mut guid = Guid::NULL;
                    if g.len() == 20 {
                        guid.0.copy_from_slice(&g);
                    }
                    Ok(DamagedMessage {
                        guid,
                        entry: r.get(1)?,
                        found: from_ns(r.get(2)?),
                        why: r.get(3)?,
                    })
                })?
                .collect()
            })
            .sql(&self.db.path)
    }

    /// Unique ids of the folders with a current, live record of a damaged message: the
    /// planner copies them again even when their stat data did not change, so the run
    /// fetches the message while Cyrus still has it. Costs one lookup when nothing is
    /// damaged.
    pub fn damaged_folders(&self) -> Result<HashSet<String>> {
        self.db
            .conn
            .prepare_cached(
                "SELECT DISTINCT k.uniqueid FROM damaged d JOIN records r ON r.guid = d.guid
                 JOIN folders k ON k.id = r.folder_key
                 WHERE r.valid_to IS NULL AND r.expunged = 0
                   AND (d.entry IS NULL
                        OR d.entry = (SELECT m.entry FROM messages m WHERE m.guid = d.guid))",
            )
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .sql(&self.db.path)
    }

    /// Every current record holding a message (expunged ones too), by folder and UID.
    pub fn places(&self, guid: &Guid) -> Result<Vec<Place>> {
        self.db
            .conn
            .prepare_cached(
                "SELECT k.uniqueid, (SELECT n.folder FROM names n WHERE n.folder_key = r.folder_key
                         ORDER BY n.time DESC LIMIT 1), r.uid, r.expunged
                 FROM records r JOIN folders k ON k.id = r.folder_key
                 WHERE r.guid = ?1 AND r.valid_to IS NULL
                 ORDER BY k.uniqueid, r.uid",
            )
            .and_then(|mut st| {
                st.query_map([&guid.0[..]], |r| {
                    Ok(Place {
                        uniqueid: r.get(0)?,
                        folder: r.get(1)?,
                        uid: r.get(2)?,
                        expunged: r.get::<_, i64>(3)? != 0,
                    })
                })?
                .collect()
            })
            .sql(&self.db.path)
    }

    /// Where a message is live now: (folder name, UID) of each current, non-expunged record
    /// naming it, in that order.
    pub fn live_places(&self, guid: &Guid) -> Result<Vec<(String, u32)>> {
        let mut live: Vec<(String, u32)> = self
            .places(guid)?
            .into_iter()
            .filter(|p| !p.expunged)
            .map(|p| (p.folder.unwrap_or_default(), p.uid))
            .collect();
        live.sort();
        Ok(live)
    }
}
