//! The questions the index answers: restore, ls, the planner, and the data behind them.
//! docs/store.md ("How each query is answered") gives each one's SQL and cost.
//!
//! Times: `at` is a point in time; `None` means "now" (the newest state the store holds).
//! A folder's state at `at` is its newest snapshot taken at or before `at`.

use std::io::Read;
use std::path::{Path, PathBuf};

use formats::archive::{open_entry, EntryReader, UserFileKind};
use formats::{FileStat, Guid, Timestamp};
use rusqlite::{params, OptionalExtension, Row};

use super::datafile::{DataFile, PositionalReader};
use super::error::{Result, SqlContext, StoreError};
use super::index::IndexDb;
use super::ingest::{from_ns, to_ns};

/// Where one entry is in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryRef {
    /// The entry's id: its ordinal in the data file, from 1.
    pub id: i64,
    /// Offset of its chunk (gzip member) in the data file.
    pub chunk_offset: u64,
    /// Offset of its first header block in the chunk's uncompressed data.
    pub header_offset: u64,
    /// Offset of its data in the chunk's uncompressed data.
    pub data_offset: u64,
    /// Length of its data.
    pub data_len: u64,
}

const ENTRY_COLS: &str = "e.id, e.chunk, e.header_offset, e.data_offset, e.data_len";

fn entry_ref(r: &Row<'_>, at: usize) -> rusqlite::Result<EntryRef> {
    Ok(EntryRef {
        id: r.get(at)?,
        chunk_offset: r.get::<_, i64>(at + 1)? as u64,
        header_offset: r.get::<_, i64>(at + 2)? as u64,
        data_offset: r.get::<_, i64>(at + 3)? as u64,
        data_len: r.get::<_, i64>(at + 4)? as u64,
    })
}

/// A message the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its GUID (SHA-1 of its bytes).
    pub guid: Guid,
    /// Where its entry is.
    pub entry: EntryRef,
    /// Its internal date, as recorded when it was stored.
    pub internal_date: Option<Timestamp>,
    /// The run that stored it.
    pub run: u64,
    /// When it was stored.
    pub stored_at: Timestamp,
}

/// One folder's snapshot (its meta files copied at one run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The folder's unique id.
    pub unique_id: String,
    /// The run that copied it.
    pub run: u64,
    /// When its cyrus.index was copied.
    pub time: Timestamp,
    /// The folder's name then.
    pub folder: String,
    /// Its partition, when known.
    pub partition: Option<String>,
    /// cyrus.index minor version.
    pub minor_version: u32,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// The last UID assigned.
    pub last_uid: u32,
    /// HIGHESTMODSEQ, when the version has it.
    pub highestmodseq: Option<u64>,
    /// Records in the cyrus.index (expunged ones included).
    pub records: u32,
    /// Records not expunged.
    pub exists: u32,
    /// The cyrus.header entry.
    pub header: Option<EntryRef>,
    /// The cyrus.index entry.
    pub index: EntryRef,
    /// The cyrus.annotations entry, when the folder had one.
    pub annotations: Option<EntryRef>,
}

/// A folder as it was at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderAt {
    /// Its unique id.
    pub unique_id: String,
    /// Its name then.
    pub name: String,
    /// Its snapshot then (`None` if it was named but never copied, which a store written
    /// by [`RunWriter`](super::RunWriter) does not produce).
    pub snapshot: Option<SnapshotInfo>,
}

/// Whether a record was visible at the time asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// In the folder, not expunged.
    Visible,
    /// Still in cyrus.index, flagged expunged (Cyrus's delayed expunge).
    Expunged,
    /// No longer in cyrus.index (or the folder was deleted): the last state known before.
    Gone,
}

/// A message record of a folder at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAt {
    /// UID.
    pub uid: u32,
    /// GUID (all zeros when Cyrus had none).
    pub guid: Guid,
    /// Size in bytes.
    pub size: u64,
    /// Internal date.
    pub internal_date: Timestamp,
    /// IMAP flags: system flags then keywords.
    pub flags: Vec<String>,
    /// Visible, expunged or gone at that time.
    pub state: MessageState,
    /// Whether the store holds the message's bytes.
    pub stored: bool,
    /// Since when the record was in this state.
    pub valid_from: Timestamp,
    /// Until when (exclusive), if it changed since.
    pub valid_to: Option<Timestamp>,
}

/// What the store holds for a folder (unique id): what the planner compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFolder {
    /// The unique id.
    pub unique_id: String,
    /// Its current name (its name when deleted, for a tombstoned folder).
    pub name: String,
    /// Whether its newest name event is a tombstone.
    pub deleted: bool,
    /// When that name event was recorded.
    pub since: Timestamp,
    /// Its newest snapshot.
    pub snapshot: Option<HeldSnapshot>,
}

/// The stat data of a folder's newest meta copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSnapshot {
    /// The run that copied it.
    pub run: u64,
    /// When.
    pub time: Timestamp,
    /// Its partition, when known.
    pub partition: Option<String>,
    /// cyrus.header's stat data, when recorded.
    pub header: Option<FileStat>,
    /// cyrus.index's stat data, when recorded.
    pub index: Option<FileStat>,
    /// cyrus.annotations' stat data (`None` also when the folder had none).
    pub annotations: Option<FileStat>,
}

/// A stored per-user file (seen state, subscriptions, a sieve script).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUserFile {
    /// Which file.
    pub kind: UserFileKind,
    /// Its stat data on the mail server, when recorded.
    pub stat: Option<FileStat>,
    /// The run that copied it.
    pub run: u64,
    /// When.
    pub time: Timestamp,
    /// Where its entry is.
    pub entry: EntryRef,
}

/// One backup run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The run id (increasing per user).
    pub run: u64,
    /// When it started.
    pub started: Option<Timestamp>,
    /// When it ended, if it looked at every folder (its end marker).
    pub ended: Option<Timestamp>,
}

/// The queries over one store's index and data file.
#[derive(Debug)]
pub struct Catalog {
    pub(crate) db: IndexDb,
    pub(crate) data: DataFile,
    user: String,
    data_file: String,
}

fn at_ns(at: Option<Timestamp>) -> Result<i64> {
    at.map_or(Ok(i64::MAX), to_ns)
}

fn guid_of(v: Vec<u8>) -> Guid {
    let mut g = Guid::NULL;
    if v.len() == 20 {
        g.0.copy_from_slice(&v);
    }
    g
}

fn stat_of(size: Option<i64>, mtime: Option<String>, ino: Option<i64>) -> Option<FileStat> {
    Some(FileStat {
        size: size? as u64,
        mtime: mtime?.parse().ok()?,
        inode: ino? as u64,
    })
}

impl Catalog {
    pub(crate) fn new(db: IndexDb, data: DataFile, user: String, data_file: String) -> Self {
        Catalog {
            db,
            data,
            user,
            data_file,
        }
    }

    /// The user the store belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The data file's name.
    pub fn data_file_name(&self) -> &str {
        &self.data_file
    }

    /// The data file's path.
    pub fn data_path(&self) -> &Path {
        &self.data.path
    }

    /// The index file's path.
    pub fn index_path(&self) -> &Path {
        &self.db.path
    }

    fn path(&self) -> PathBuf {
        self.db.path.clone()
    }

    /// End of the last committed chunk (as the index says now).
    pub fn committed_len(&self) -> Result<u64> {
        self.db.committed_len()
    }

    /// Whether the store holds the message.
    pub fn has_message(&self, guid: &Guid) -> Result<bool> {
        super::ingest::has_message(&self.db, guid)
    }

    /// Where a message is, and what was recorded with it.
    pub fn message(&self, guid: &Guid) -> Result<Option<StoredMessage>> {
        let sql = format!(
            "SELECT {ENTRY_COLS}, m.internaldate, e.run, e.time
             FROM messages m JOIN entries e ON e.id = m.entry WHERE m.guid = ?1"
        );
        self.db
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_row([&guid.0[..]], |r| {
                    Ok(StoredMessage {
                        guid: *guid,
                        entry: entry_ref(r, 0)?,
                        internal_date: r.get::<_, Option<String>>(5)?.and_then(|s| s.parse().ok()),
                        run: r.get::<_, i64>(6)? as u64,
                        stored_at: from_ns(r.get(7)?),
                    })
                })
                .optional()
            })
            .sql(&self.db.path)
    }

    /// Opens an entry for reading: inflates its one chunk up to it.
    pub fn open_entry(&self, e: &EntryRef) -> Result<EntryReader<PositionalReader<'_>>> {
        open_entry(self.data.reader(0), e.chunk_offset, e.header_offset).map_err(|source| {
            StoreError::Archive {
                path: self.data.path.clone(),
                source,
            }
        })
    }

    /// Opens a message's bytes (`None` if the store does not hold it).
    pub fn open_message(&self, guid: &Guid) -> Result<Option<EntryReader<PositionalReader<'_>>>> {
        match self.message(guid)? {
            Some(m) => self.open_entry(&m.entry).map(Some),
            None => Ok(None),
        }
    }

    /// An entry's whole data, in memory (for meta files; stream messages instead).
    pub fn read_entry(&self, e: &EntryRef) -> Result<Vec<u8>> {
        let mut r = self.open_entry(e)?;
        let mut out = Vec::with_capacity(e.data_len.min(64 << 20) as usize);
        r.read_to_end(&mut out).map_err(|source| StoreError::Io {
            path: self.data.path.clone(),
            op: "reading an entry",
            source,
        })?;
        Ok(out)
    }

    /// Every folder that existed at `at`, by name.
    pub fn folders_at(&self, at: Option<Timestamp>) -> Result<Vec<FolderAt>> {
        let t = at_ns(at)?;
        let rows: Vec<(String, String)> = self
            .db
            .conn
            .prepare_cached(
                "SELECT k.uniqueid, n.folder FROM names n JOIN folders k ON k.id = n.folder_key
                 WHERE n.deleted = 0 AND n.time <= ?1
                   AND n.time = (SELECT max(n2.time) FROM names n2
                                 WHERE n2.folder_key = n.folder_key AND n2.time <= ?1)
                 ORDER BY n.folder, k.uniqueid",
            )
            .and_then(|mut st| st.query_map([t], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .sql(&self.db.path)?;
        rows.into_iter()
            .map(|(unique_id, name)| {
                Ok(FolderAt {
                    snapshot: self.snapshot_at(&unique_id, at)?,
                    unique_id,
                    name,
                })
            })
            .collect()
    }

    /// The folder named `name` at `at`, if one was: of the folders [`Catalog::folders_at`]
    /// shows with that name, the one linked to it last.
    pub fn folder_at(&self, name: &str, at: Option<Timestamp>) -> Result<Option<FolderAt>> {
        let t = at_ns(at)?;
        // A link of this name that is still its folder's newest name event up to `at` (not
        // renamed away, nor deleted since). Not simply the newest event of this name: a
        // tombstone of another folder that had the name (one whose deletion a partial run
        // could not make take effect) may come after the link of the folder that has it.
        let hit: Option<String> = self
            .db
            .conn
            .prepare_cached(
                "SELECT k.uniqueid FROM names n JOIN folders k ON k.id = n.folder_key
                 WHERE n.folder = ?1 AND n.time <= ?2 AND n.deleted = 0
                   AND n.time = (SELECT max(n2.time) FROM names n2
                                 WHERE n2.folder_key = n.folder_key AND n2.time <= ?2)
                 ORDER BY n.time DESC LIMIT 1",
            )
            .and_then(|mut st| st.query_row(params![name, t], |r| r.get(0)).optional())
            .sql(&self.db.path)?;
        let Some(unique_id) = hit else {
            return Ok(None);
        };
        Ok(Some(FolderAt {
            snapshot: self.snapshot_at(&unique_id, at)?,
            unique_id,
            name: name.to_owned(),
        }))
    }

    /// A folder's newest snapshot taken at or before `at`.
    pub fn snapshot_at(
        &self,
        unique_id: &str,
        at: Option<Timestamp>,
    ) -> Result<Option<SnapshotInfo>> {
        let t = at_ns(at)?;
        let row = self
            .db
            .conn
            .prepare_cached(
                "SELECT run, time, folder, partition, minor_version, uidvalidity, last_uid,
                        highestmodseq, records, exists_count
                 FROM snapshots
                 WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND time <= ?2
                 ORDER BY run DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![unique_id, t], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, u32>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, u32>(8)?,
                        r.get::<_, u32>(9)?,
                    ))
                })
                .optional()
            })
            .sql(&self.db.path)?;
        let Some((
            run,
            time,
            folder,
            partition,
            minor,
            uidvalidity,
            last_uid,
            hms,
            records,
            exists,
        )) = row
        else {
            return Ok(None);
        };
        let files = self.meta_entries(unique_id, run)?;
        let pick = |name: &str| files.iter().find(|(f, _)| f == name).map(|(_, e)| *e);
        let index = pick("cyrus.index").ok_or_else(|| StoreError::IndexInvalid {
            path: self.path(),
            expected: "a cyrus.index entry for every snapshot",
            found: format!("none for folder {unique_id} run {run}"),
        })?;
        Ok(Some(SnapshotInfo {
            unique_id: unique_id.to_owned(),
            run: run as u64,
            time: from_ns(time),
            folder,
            partition,
            minor_version: minor,
            uidvalidity,
            last_uid,
            highestmodseq: hms.map(|m| m as u64),
            records,
            exists,
            header: pick("cyrus.header"),
            index,
            annotations: pick("cyrus.annotations"),
        }))
    }

    fn meta_entries(&self, unique_id: &str, run: i64) -> Result<Vec<(String, EntryRef)>> {
        let sql = format!(
            "SELECT f.file, {ENTRY_COLS} FROM meta_files f JOIN entries e ON e.id = f.entry
             WHERE f.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND f.run = ?2 ORDER BY e.id"
        );
        self.db
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_map(params![unique_id, run], |r| {
                    Ok((r.get(0)?, entry_ref(r, 1)?))
                })?
                .collect()
            })
            .sql(&self.db.path)
    }

    /// The messages of folder `unique_id` at `at`, in UID order, handed to `f` one at a
    /// time (a folder may hold millions). Without `include_expunged`: the records visible
    /// then. With it: every UID the folder had up to `at`, in its last state known then
    /// (visible, expunged, or gone).
    pub fn messages_at(
        &self,
        unique_id: &str,
        at: Option<Timestamp>,
        include_expunged: bool,
        mut f: impl FnMut(MessageAt) -> Result<()>,
    ) -> Result<()> {
        let t = at_ns(at)?;
        let cols = "r.uid, r.guid, r.size, r.internaldate, r.flags, r.expunged, r.valid_from,
                    r.valid_to, m.guid IS NOT NULL";
        let sql = if include_expunged {
            format!(
                "SELECT {cols} FROM records r LEFT JOIN messages m ON m.guid = r.guid
                 WHERE r.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND r.valid_from <= ?2
                   AND r.valid_from = (SELECT max(r2.valid_from) FROM records r2
                        WHERE r2.folder_key = r.folder_key AND r2.uid = r.uid
                          AND r2.valid_from <= ?2)
                 ORDER BY r.uid"
            )
        } else {
            format!(
                "SELECT {cols} FROM records r LEFT JOIN messages m ON m.guid = r.guid
                 WHERE r.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND r.valid_from <= ?2
                   AND (r.valid_to IS NULL OR r.valid_to > ?2) AND r.expunged = 0
                 ORDER BY r.uid"
            )
        };
        let mut st = self.db.conn.prepare_cached(&sql).sql(&self.db.path)?;
        let mut rows = st.query(params![unique_id, t]).sql(&self.db.path)?;
        while let Some(r) = rows.next().sql(&self.db.path)? {
            let m = message_at(r, t).sql(&self.db.path)?;
            f(m)?;
        }
        Ok(())
    }

    /// One record of folder `unique_id` by UID, in its last state known at `at` (check
    /// [`MessageAt::state`]: it may be expunged or gone by then).
    pub fn message_at(
        &self,
        unique_id: &str,
        uid: u32,
        at: Option<Timestamp>,
    ) -> Result<Option<MessageAt>> {
        let t = at_ns(at)?;
        self.db
            .conn
            .prepare_cached(
                "SELECT r.uid, r.guid, r.size, r.internaldate, r.flags, r.expunged, r.valid_from,
                        r.valid_to, m.guid IS NOT NULL
                 FROM records r LEFT JOIN messages m ON m.guid = r.guid
                 WHERE r.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND r.uid = ?2 AND r.valid_from <= ?3
                 ORDER BY r.valid_from DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![unique_id, uid, t], |r| message_at(r, t))
                    .optional()
            })
            .sql(&self.db.path)
    }

    /// Whether UID `uid` of folder `unique_id` was ever expunged, as far as the newest state
    /// the store holds tells: a record of it flagged expunged (Cyrus's delayed expunge), or
    /// its last record ended by leaving cyrus.index (expunged and cleaned up, or expunged
    /// at once). A record ended by its folder's deletion (closed at the tombstone's time)
    /// was not expunged: the folder went, not the message. An expunge is final for a UID,
    /// so no time is asked: a message visible at some `--at` and expunged later counts.
    pub fn was_expunged(&self, unique_id: &str, uid: u32) -> Result<bool> {
        self.db
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM records
                                WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND uid = ?2 AND expunged = 1)
                     OR EXISTS (SELECT 1 FROM records r
                                WHERE r.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND r.uid = ?2 AND r.valid_to IS NOT NULL
                                  AND NOT EXISTS (SELECT 1 FROM records r2
                                       WHERE r2.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND r2.uid = ?2
                                         AND r2.valid_from >= r.valid_to)
                                  AND NOT EXISTS (SELECT 1 FROM names n
                                       WHERE n.folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND n.deleted = 1
                                         AND n.time = r.valid_to))",
            )
            .and_then(|mut st| st.query_row(params![unique_id, uid], |r| r.get(0)))
            .sql(&self.db.path)
    }

    /// What the store holds for one unique id: its name, whether deleted, and the stat
    /// data of its newest meta copy.
    pub fn held_folder(&self, unique_id: &str) -> Result<Option<HeldFolder>> {
        let row: Option<(String, bool, i64)> = self
            .db
            .conn
            .prepare_cached(
                "SELECT folder, deleted, time FROM names WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1)
                 ORDER BY time DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([unique_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .sql(&self.db.path)?;
        match row {
            None => Ok(None),
            Some((name, deleted, since)) => Ok(Some(HeldFolder {
                unique_id: unique_id.to_owned(),
                name,
                deleted,
                since: from_ns(since),
                snapshot: self.held_snapshot(unique_id)?,
            })),
        }
    }

    /// Every folder the store has ever named, each in its newest state (the planner drops
    /// the `deleted` ones, or revives them when they reappear).
    pub fn held_folders(&self) -> Result<Vec<HeldFolder>> {
        let rows: Vec<(String, String, bool, i64)> = self
            .db
            .conn
            .prepare_cached(
                "SELECT k.uniqueid, n.folder, n.deleted, n.time
                 FROM names n JOIN folders k ON k.id = n.folder_key
                 WHERE n.time = (SELECT max(n2.time) FROM names n2
                                 WHERE n2.folder_key = n.folder_key)
                 ORDER BY n.folder, k.uniqueid",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .sql(&self.db.path)?;
        rows.into_iter()
            .map(|(unique_id, name, deleted, since)| {
                Ok(HeldFolder {
                    snapshot: self.held_snapshot(&unique_id)?,
                    unique_id,
                    name,
                    deleted,
                    since: from_ns(since),
                })
            })
            .collect()
    }

    fn held_snapshot(&self, unique_id: &str) -> Result<Option<HeldSnapshot>> {
        let run: Option<(i64, i64, Option<String>)> = self
            .db
            .conn
            .prepare_cached(
                "SELECT run, time, partition FROM snapshots
                 WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1)
                 ORDER BY run DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([unique_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .sql(&self.db.path)?;
        let Some((run, time, partition)) = run else {
            return Ok(None);
        };
        let stats: Vec<(String, Option<FileStat>)> = self
            .db
            .conn
            .prepare_cached(
                "SELECT file, stat_size, stat_mtime, stat_ino FROM meta_files
                 WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1) AND run = ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![unique_id, run], |r| {
                    Ok((r.get(0)?, stat_of(r.get(1)?, r.get(2)?, r.get(3)?)))
                })?
                .collect()
            })
            .sql(&self.db.path)?;
        let get = |n: &str| stats.iter().find(|(f, _)| f == n).and_then(|(_, s)| *s);
        Ok(Some(HeldSnapshot {
            run: run as u64,
            time: from_ns(time),
            partition,
            header: get("cyrus.header"),
            index: get("cyrus.index"),
            annotations: get("cyrus.annotations"),
        }))
    }

    /// The user files as of `at`: for each kind (and sieve script name), the newest copy.
    pub fn user_files_at(&self, at: Option<Timestamp>) -> Result<Vec<HeldUserFile>> {
        let t = at_ns(at)?;
        let sql = format!(
            "SELECT u.kind, u.script, u.active, u.run, u.time, u.stat_size, u.stat_mtime,
                    u.stat_ino, {ENTRY_COLS}
             FROM user_files u JOIN entries e ON e.id = u.entry
             WHERE u.time = (SELECT max(u2.time) FROM user_files u2
                             WHERE u2.kind = u.kind AND u2.script = u.script AND u2.time <= ?1)
             ORDER BY u.kind, u.script"
        );
        self.db
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_map([t], |r| {
                    let kind: String = r.get(0)?;
                    let kind = match kind.as_str() {
                        "seen" => UserFileKind::Seen,
                        "subscriptions" => UserFileKind::Subscriptions,
                        _ => UserFileKind::Sieve {
                            name: r.get(1)?,
                            active: r.get::<_, Option<bool>>(2)?.unwrap_or(false),
                        },
                    };
                    Ok(HeldUserFile {
                        kind,
                        run: r.get::<_, i64>(3)? as u64,
                        time: from_ns(r.get(4)?),
                        stat: stat_of(r.get(5)?, r.get(6)?, r.get(7)?),
                        entry: entry_ref(r, 8)?,
                    })
                })?
                .collect()
            })
            .sql(&self.db.path)
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunInfo>> {
        self.db
            .conn
            .prepare_cached("SELECT run, started, ended FROM runs ORDER BY run")
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(RunInfo {
                        run: r.get::<_, i64>(0)? as u64,
                        started: r.get::<_, Option<i64>>(1)?.map(from_ns),
                        ended: r.get::<_, Option<i64>>(2)?.map(from_ns),
                    })
                })?
                .collect()
            })
            .sql(&self.db.path)
    }

    /// The newest run that ended (looked at every folder): the store's last complete backup.
    pub fn last_complete_run(&self) -> Result<Option<RunInfo>> {
        Ok(self.runs()?.into_iter().rev().find(|r| r.ended.is_some()))
    }
}

fn message_at(r: &Row<'_>, t: i64) -> rusqlite::Result<MessageAt> {
    let flags: String = r.get(4)?;
    let expunged: bool = r.get(5)?;
    let valid_to: Option<i64> = r.get(7)?;
    let state = if valid_to.is_some_and(|v| v <= t) {
        MessageState::Gone
    } else if expunged {
        MessageState::Expunged
    } else {
        MessageState::Visible
    };
    let internal: String = r.get(3)?;
    Ok(MessageAt {
        uid: r.get(0)?,
        guid: guid_of(r.get(1)?),
        size: r.get::<_, i64>(2)? as u64,
        internal_date: internal.parse().unwrap_or_default(),
        flags: flags.split_whitespace().map(str::to_owned).collect(),
        state,
        stored: r.get(8)?,
        valid_from: from_ns(r.get(6)?),
        valid_to: valid_to.map(from_ns),
    })
}
