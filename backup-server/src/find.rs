//! `backup-server find` (and the console's search): the messages of a user's backup that
//! match what a person remembers of them (who sent it, to whom, words of its subject,
//! roughly when, which folder) with where each is now: still in its folder, expunged, or in
//! a folder since deleted. Each result names its GUID, which `restore --guid` takes.
//!
//! The header fields come from the store's header index (the `headers` table, filled as
//! messages are stored and by reindex); a message stored before the store had that table
//! has its header block read from the data file instead, and a note says how many
//! (`backup-server reindex` indexes them). docs/find.md describes the command.
//!
//! What is searched: every folder the user had up to the point in time (`at`, default now),
//! deleted ones included, and in each every UID it held, in its last state known then.

use std::path::Path;

use formats::archive::{EntryMeta, ScanEvent, Scanner};
use formats::imap::mutf7;
use formats::{Guid, Timestamp};
use rusqlite::OptionalExtension;
use std::collections::HashMap;
use std::io::Read;

use crate::point_in_time::rfc3339;
use crate::store::headers::{contains_folded, extract, MessageHeaders, HEADER_BLOCK_MAX};
use crate::store::{Catalog, MessageState, StoreError, StoreReader};

/// What to look for. Every field given must match (and); `None` matches anything. Text is
/// matched as a substring, ignoring case (Unicode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindQuery {
    /// In From (names and addresses).
    pub from: Option<String>,
    /// In To or Cc (names and addresses).
    pub to: Option<String>,
    /// In Subject (decoded).
    pub subject: Option<String>,
    /// Dated at or after this (unix seconds): the Date header, or the internal date when
    /// the message has no valid Date.
    pub since: Option<i64>,
    /// Dated before this (unix seconds), the same date as `since`.
    pub before: Option<i64>,
    /// Only this folder, by its name in UTF-8 (`Données`, `Work/Sub`); its modified UTF-7
    /// form (`Donn&AOk-es`) is taken too.
    pub folder: Option<String>,
    /// Only messages no longer in their live folder: expunged, or in a deleted folder.
    pub deleted_only: bool,
    /// As of this time (unix seconds; `None`: the newest state the store holds).
    pub at: Option<i64>,
    /// At most this many results (`None`: all); a note says when more matched.
    pub limit: Option<usize>,
}

/// Where a found message is, as of the time searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum FoundState {
    /// In its folder.
    Live,
    /// Expunged from its folder, by this time (unix seconds: when a backup first saw it
    /// expunged or gone).
    Expunged {
        /// Unix seconds.
        at: i64,
    },
    /// Its folder was deleted, at this time (unix seconds: when a backup saw it gone).
    FolderDeleted {
        /// Unix seconds.
        at: i64,
    },
}

impl std::fmt::Display for FoundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FoundState::Live => f.write_str("live"),
            FoundState::Expunged { at } => {
                write!(f, "expunged on {}", rfc3339(Timestamp::from_secs(*at)))
            }
            FoundState::FolderDeleted { at } => {
                write!(
                    f,
                    "folder deleted on {}",
                    rfc3339(Timestamp::from_secs(*at))
                )
            }
        }
    }
}

/// One message found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundMessage {
    /// Its folder's name, in UTF-8 (its name when deleted, for a deleted folder).
    pub folder: String,
    /// The folder's name as the store and IMAP have it (modified UTF-7): what `restore
    /// --folder` matches.
    pub folder_stored: String,
    /// The folder's unique id.
    pub unique_id: String,
    /// UID in the folder.
    pub uid: u32,
    /// GUID, 40 hex digits: `restore --guid` takes it.
    pub guid: String,
    /// Date header, unix seconds, when valid.
    pub date: Option<i64>,
    /// Internal date (when the server received it), unix seconds.
    pub internaldate: i64,
    /// From.
    pub from: String,
    /// To and Cc.
    pub to: String,
    /// Subject, decoded.
    pub subject: String,
    /// Size in bytes.
    pub size: u64,
    /// Live, expunged, or in a deleted folder.
    #[serde(flatten)]
    pub state: FoundState,
    /// Message-ID, without angle brackets.
    pub message_id: String,
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindReport {
    /// The messages, by folder name, then UID.
    pub messages: Vec<FoundMessage>,
    /// What the caller should know about the answer (results cut at the limit, header
    /// fields read from the data file, records whose message the store lacks).
    pub notes: Vec<String>,
}

/// Why a search could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The user has no store.
    #[error("user {user}: no backup ({source})")]
    NoBackup {
        /// The user.
        user: String,
        /// The store's answer (naming where the store would be).
        source: Box<StoreError>,
    },
    /// The store does not open.
    #[error("user {user}: opening the store: {source}")]
    Open {
        /// The user.
        user: String,
        /// Why.
        source: Box<StoreError>,
    },
    /// Reading the store failed.
    #[error("user {user}: {source}")]
    Read {
        /// The user.
        user: String,
        /// What failed (naming the file).
        source: Box<StoreError>,
    },
    /// No folder of that name up to the time searched.
    #[error("user {user}: no folder {folder:?} up to {}; `backup-server ls --user {user}` lists them", when_secs(*.at))]
    NoFolder {
        /// The user.
        user: String,
        /// The folder asked for.
        folder: String,
        /// The time searched (unix seconds), `None` for now.
        at: Option<i64>,
    },
}

fn when_secs(at: Option<i64>) -> String {
    at.map_or_else(|| "now".to_owned(), |s| rfc3339(Timestamp::from_secs(s)))
}

/// Searches `user`'s store under `store_root` (opened read-only, as `ls` does).
pub fn find(store_root: &Path, user: &str, q: &FindQuery) -> Result<FindReport, FindError> {
    let reader = match StoreReader::open(store_root, user) {
        Ok(r) => r,
        Err(source @ StoreError::NoStore { .. }) => {
            return Err(FindError::NoBackup {
                user: user.to_owned(),
                source: Box::new(source),
            })
        }
        Err(source) => {
            return Err(FindError::Open {
                user: user.to_owned(),
                source: Box::new(source),
            })
        }
    };
    find_in(&reader, q)
}

/// Searches an open store (the console keeps one open across requests).
pub fn find_in(reader: &StoreReader, q: &FindQuery) -> Result<FindReport, FindError> {
    let cat = reader.catalog();
    let user = cat.user().to_owned();
    let read = |source| FindError::Read {
        user: user.clone(),
        source: Box::new(source),
    };
    let at = q.at.map(Timestamp::from_secs);
    let mut folders = folders_up_to(cat, at).map_err(read)?;
    if let Some(want) = &q.folder {
        folders.retain(|f| &f.name == want || &f.stored == want);
        if folders.is_empty() {
            return Err(FindError::NoFolder {
                user: user.clone(),
                folder: want.clone(),
                at: q.at,
            });
        }
    }
    let mut report = FindReport::default();
    let mut from_data_file = 0u64;
    let mut not_held = 0u64;
    let mut unreadable = 0u64;
    let scanned = unindexed_headers(cat).map_err(read)?;
    let mut more = false;
    'folders: for f in &folders {
        let mut records = Vec::new();
        cat.messages_at(&f.unique_id, at, true, |m| {
            records.push(m);
            Ok(())
        })
        .map_err(read)?;
        for m in records {
            let state = match (m.state, f.deleted_at) {
                // Still held when the folder went: it went with the folder.
                (_, Some(t)) if m.valid_to.is_none_or(|v| v.secs >= t) => {
                    FoundState::FolderDeleted { at: t }
                }
                (MessageState::Visible, _) => FoundState::Live,
                (MessageState::Expunged, _) => FoundState::Expunged {
                    at: m.valid_from.secs,
                },
                (MessageState::Gone, _) => FoundState::Expunged {
                    at: m.valid_to.map_or(m.valid_from.secs, |t| t.secs),
                },
            };
            if q.deleted_only && state == FoundState::Live {
                continue;
            }
            if !m.stored {
                not_held += 1;
                continue;
            }
            let Some((h, source)) = headers_of(cat, &m.guid, &scanned).map_err(read)? else {
                not_held += 1;
                continue;
            };
            match source {
                Source::Index => {}
                Source::DataFile => from_data_file += 1,
                Source::Unreadable => unreadable += 1,
            }
            if !matches(q, &h, m.internal_date.secs) {
                continue;
            }
            if q.limit.is_some_and(|l| report.messages.len() >= l) {
                more = true;
                break 'folders;
            }
            report.messages.push(FoundMessage {
                folder: f.name.clone(),
                folder_stored: f.stored.clone(),
                unique_id: f.unique_id.clone(),
                uid: m.uid,
                guid: m.guid.to_string(),
                date: h.date,
                internaldate: m.internal_date.secs,
                from: h.from,
                to: h.to,
                subject: h.subject,
                size: m.size,
                state,
                message_id: h.message_id,
            });
        }
    }
    if more {
        report.notes.push(format!(
            "more than {} messages match; showing the first {0}: narrow the search",
            q.limit.unwrap_or_default()
        ));
    }
    if from_data_file > 0 {
        report.notes.push(format!(
            "{from_data_file} messages' headers were read from the data file (stored before \
             the store had a header index): `backup-server reindex --user {user}` indexes them"
        ));
    }
    if unreadable > 0 {
        report.notes.push(format!(
            "{unreadable} messages' copies could not be read (damage): searched by folder, \
             date and state only; `backup-server verify --user {user}` names them"
        ));
    }
    if not_held > 0 {
        report.notes.push(format!(
            "{not_held} messages recorded in folders are not held by the store (never \
             fetched, or lost to damage) and were not searched"
        ));
    }
    Ok(report)
}

/// Whether a message's fields match every criterion given.
fn matches(q: &FindQuery, h: &MessageHeaders, internaldate: i64) -> bool {
    let text = |want: &Option<String>, have: &str| {
        want.as_deref().is_none_or(|w| contains_folded(have, w))
    };
    let date = h.date.unwrap_or(internaldate);
    text(&q.from, &h.from)
        && text(&q.to, &h.to)
        && text(&q.subject, &h.subject)
        && q.since.is_none_or(|s| date >= s)
        && q.before.is_none_or(|b| date < b)
}

/// A folder as the search walks it.
struct Folder {
    unique_id: String,
    /// Its name in UTF-8.
    name: String,
    /// Its name as stored (modified UTF-7).
    stored: String,
    /// When it was deleted (unix seconds), if its newest name event then is a tombstone.
    deleted_at: Option<i64>,
}

/// Every folder named up to `at`, in its newest name then (deleted ones too), by name.
fn folders_up_to(cat: &Catalog, at: Option<Timestamp>) -> Result<Vec<Folder>, StoreError> {
    let t = match at {
        Some(t) => crate::store::to_ns(t)?,
        None => i64::MAX,
    };
    let db = &cat.db;
    let rows: Vec<(String, String, bool, i64)> = db
        .conn
        .prepare_cached(
            "SELECT k.uniqueid, n.folder, n.deleted, n.time
             FROM names n JOIN folders k ON k.id = n.folder_key
             WHERE n.time <= ?1
               AND n.time = (SELECT max(n2.time) FROM names n2
                             WHERE n2.folder_key = n.folder_key AND n2.time <= ?1)
             ORDER BY n.folder, k.uniqueid",
        )
        .and_then(|mut st| {
            st.query_map([t], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(|source| StoreError::Sqlite {
            path: db.path.clone(),
            source,
        })?;
    let mut out: Vec<Folder> = rows
        .into_iter()
        .map(|(unique_id, stored, deleted, time)| Folder {
            unique_id,
            name: mutf7::decode_or_keep(&stored),
            stored,
            deleted_at: deleted.then(|| crate::store::from_ns(time).secs),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.unique_id.cmp(&b.unique_id)));
    Ok(out)
}

/// Where a message's header fields came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The header index.
    Index,
    /// Its header block, read from the data file.
    DataFile,
    /// Nowhere: its copy could not be read (damage); searched with empty fields.
    Unreadable,
}

/// Messages without header rows past which the data file is read in one pass rather than
/// one message at a time (each of which inflates its chunk up to the message).
const SCAN_FROM: usize = 32;

/// The header fields of the messages the header index lacks (a store made before it), by
/// entry id, read in one pass over the data file: empty when there are few (they are read
/// one at a time). What the pass cannot read (damage, a torn tail) is left out, and read
/// one at a time too.
fn unindexed_headers(cat: &Catalog) -> Result<HashMap<i64, MessageHeaders>, StoreError> {
    let db = &cat.db;
    let wanted: HashMap<(u64, u64), i64> = db
        .conn
        .prepare_cached(
            "SELECT e.id, e.chunk, e.header_offset FROM messages m
             JOIN entries e ON e.id = m.entry
             LEFT JOIN headers h ON h.entry = m.entry WHERE h.entry IS NULL",
        )
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok((
                    (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
                    r.get(0)?,
                ))
            })?
            .collect()
        })
        .map_err(|source| StoreError::Sqlite {
            path: db.path.clone(),
            source,
        })?;
    let mut out = HashMap::new();
    if wanted.len() < SCAN_FROM {
        return Ok(out);
    }
    let mut scanner = Scanner::new(cat.data.reader(0));
    let mut head = Vec::new();
    while out.len() < wanted.len() {
        match scanner.next_event() {
            Ok(ScanEvent::Entry(mut e)) => {
                if !matches!(e.header.meta, EntryMeta::Message(_)) {
                    continue;
                }
                let key = (e.location.chunk_offset, e.location.header_offset);
                let Some(&id) = wanted.get(&key) else {
                    continue;
                };
                head.clear();
                if (&mut e)
                    .take(HEADER_BLOCK_MAX as u64)
                    .read_to_end(&mut head)
                    .is_ok()
                {
                    out.insert(id, extract(&head));
                }
            }
            Ok(ScanEvent::End(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(out)
}

/// A message's header fields: from the header index, from `scanned` (see
/// [`unindexed_headers`]), or read from the data file. `None` when the store does not hold
/// the message.
fn headers_of(
    cat: &Catalog,
    guid: &Guid,
    scanned: &HashMap<i64, MessageHeaders>,
) -> Result<Option<(MessageHeaders, Source)>, StoreError> {
    let db = &cat.db;
    let sql_err = |source| StoreError::Sqlite {
        path: db.path.clone(),
        source,
    };
    let row: Option<(i64, Option<MessageHeaders>)> = db
        .conn
        .prepare_cached(
            "SELECT m.entry, h.entry IS NOT NULL, h.from_addr, h.to_addr, h.subject, h.date,
                    h.message_id
             FROM messages m LEFT JOIN headers h ON h.entry = m.entry WHERE m.guid = ?1",
        )
        .and_then(|mut st| {
            st.query_row([&guid.0[..]], |r| {
                let entry: i64 = r.get(0)?;
                if !r.get::<_, bool>(1)? {
                    return Ok((entry, None));
                }
                Ok((
                    entry,
                    Some(MessageHeaders {
                        from: r.get(2)?,
                        to: r.get(3)?,
                        subject: r.get(4)?,
                        date: r.get(5)?,
                        message_id: r.get(6)?,
                    }),
                ))
            })
            .optional()
        })
        .map_err(sql_err)?;
    let entry = match row {
        None => return Ok(None),
        Some((_, Some(h))) => return Ok(Some((h, Source::Index))),
        Some((entry, None)) => entry,
    };
    if let Some(h) = scanned.get(&entry) {
        return Ok(Some((h.clone(), Source::DataFile)));
    }
    // One message: its chunk inflated up to it. A copy that cannot be read is still a
    // message the user had: found by folder, date and state, with empty header fields.
    let Ok(Some(mut r)) = cat.open_message(guid) else {
        return Ok(Some((MessageHeaders::default(), Source::Unreadable)));
    };
    let mut head = Vec::new();
    match (&mut r)
        .take(HEADER_BLOCK_MAX as u64)
        .read_to_end(&mut head)
    {
        Ok(_) => Ok(Some((extract(&head), Source::DataFile))),
        Err(_) => Ok(Some((MessageHeaders::default(), Source::Unreadable))),
    }
}
