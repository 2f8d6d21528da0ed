//! The typed metadata of each kind of entry, and its mapping to and from PAX records.
//!
//! Callers build one of [`Message`], [`FolderMeta`], [`NameLink`], [`UserFile`] or
//! [`RunMarker`], wrap it in [`EntryMeta`] and hand it to the writer; readers get the same
//! value back. Key strings (`MAILBACKUP.*`) appear only in this file.

use super::pax::{PaxFields, PaxRecords};
use super::{ArchiveError, FieldError};
use crate::{FileStat, Guid, Timestamp};

/// Prefix of every PAX key this format defines.
pub const VENDOR_PREFIX: &str = "MAILBACKUP.";

/// The format version written in every entry (`MAILBACKUP.v`). Readers refuse other versions:
/// compatible additions use new keys or new kinds instead of a new version.
pub const FORMAT_VERSION: u32 = 1;

/// Longest folder or user name accepted, in bytes. Cyrus caps names well below this; the
/// bound keeps every PAX header small.
pub const MAX_NAME_LEN: usize = 4096;

/// Longest unique id accepted, in bytes (Cyrus 3.x uses 24 or 36 characters).
pub const MAX_UNIQUE_ID_LEN: usize = 64;

/// Longest sieve script name accepted, in bytes.
pub const MAX_SCRIPT_NAME_LEN: usize = 255;

pub(crate) mod key {
    pub const VERSION: &str = "MAILBACKUP.v";
    pub const KIND: &str = "MAILBACKUP.kind";
    pub const RUN: &str = "MAILBACKUP.run";
    pub const TIME: &str = "MAILBACKUP.time";
    pub const GUID: &str = "MAILBACKUP.guid";
    pub const INTERNALDATE: &str = "MAILBACKUP.internaldate";
    pub const UNIQUEID: &str = "MAILBACKUP.uniqueid";
    pub const UID: &str = "MAILBACKUP.uid";
    pub const FOLDER: &str = "MAILBACKUP.folder";
    pub const PARTITION: &str = "MAILBACKUP.partition";
    pub const FILE: &str = "MAILBACKUP.file";
    pub const STATE: &str = "MAILBACKUP.state";
    pub const SCRIPT: &str = "MAILBACKUP.script";
    pub const ACTIVE: &str = "MAILBACKUP.active";
    pub const USER: &str = "MAILBACKUP.user";
    pub const EVENT: &str = "MAILBACKUP.event";
    pub const STAT_SIZE: &str = "MAILBACKUP.stat.size";
    pub const STAT_MTIME: &str = "MAILBACKUP.stat.mtime";
    pub const STAT_INO: &str = "MAILBACKUP.stat.ino";
}

/// A message file, stored once per user under its GUID (`files/<guid>`).
///
/// Flags, UIDs and folders are not here: they belong to the folder's cyrus.index snapshot
/// ([`FolderMeta`]), which lists every record that points at this GUID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// SHA-1 of the data.
    pub guid: Guid,
    /// The run that stored it.
    pub run: u64,
    /// When it was stored.
    pub time: Timestamp,
    /// The folder (unique id) and UID it was fetched for, for the operator's benefit.
    pub origin: Option<(String, u32)>,
    /// The message's internal date, when known.
    pub internal_date: Option<Timestamp>,
}

pub use crate::cyrus::MetaFile;

/// One meta file of one folder, copied whole at one run
/// (`folders/<unique id>/<run>/<file name>`).
///
/// A folder's snapshot at a run is the set of these entries with the same unique id and
/// run; the writer puts them in one chunk, so a snapshot is committed whole or not at all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FolderMeta {
    /// The folder's unique id (stable across renames).
    pub unique_id: String,
    /// The folder's name (Cyrus internal name) at that run.
    pub folder: String,
    /// The Cyrus partition it lived on, when known.
    pub partition: Option<String>,
    /// Which file this is.
    pub file: MetaFile,
    /// The run that copied it.
    pub run: u64,
    /// When it was copied.
    pub time: Timestamp,
    /// The file's stat data on the mail server, when known.
    pub stat: Option<FileStat>,
}

/// A folder name pointing at a unique id from a run on, or the tombstone of a folder that
/// vanished (`names/<unique id>/<run>` or `names/<unique id>/<run>.deleted`, no data).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NameLink {
    /// The folder's name (Cyrus internal name).
    pub folder: String,
    /// The folder's unique id.
    pub unique_id: String,
    /// `true`: the folder was gone at this run (the tombstone's time is the deletion time).
    pub deleted: bool,
    /// The run that saw it.
    pub run: u64,
    /// When.
    pub time: Timestamp,
}

/// Which per-user file a [`UserFile`] entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFileKind {
    /// The seen state database (`user/seen/<run>`).
    Seen,
    /// The subscriptions database (`user/subscriptions/<run>`).
    Subscriptions,
    /// A sieve script (`user/sieve/<run>/<name>`).
    Sieve {
        /// The script's file name.
        name: String,
        /// Whether it was the active script.
        active: bool,
    },
}

/// A per-user file copied whole at one run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserFile {
    /// Which file.
    pub kind: UserFileKind,
    /// The run that copied it.
    pub run: u64,
    /// When it was copied.
    pub time: Timestamp,
    /// The file's stat data on the mail server, when known.
    pub stat: Option<FileStat>,
}

/// Whether a [`RunMarker`] opens or closes a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEvent {
    /// The run started (`runs/<run>.start`).
    Start,
    /// The run finished every folder of the user (`runs/<run>.end`); tombstones of that run
    /// are only trustworthy when it is present.
    End,
}

/// Start or end of a backup run of this user (no data).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunMarker {
    /// The run.
    pub run: u64,
    /// The user this data file belongs to.
    pub user: String,
    /// Start or end.
    pub event: RunEvent,
    /// When.
    pub time: Timestamp,
}

/// The typed metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryMeta {
    /// A message file.
    Message(Message),
    /// A folder's meta file.
    FolderMeta(FolderMeta),
    /// A name link or tombstone.
    NameLink(NameLink),
    /// A per-user file.
    UserFile(UserFile),
    /// A run marker.
    Run(RunMarker),
    /// An entry this version does not know (a later kind, or a foreign tar entry without
    /// `MAILBACKUP.kind`): readers skip it.
    Unknown {
        /// The `MAILBACKUP.kind` value, if any.
        #[serde(rename = "unknown_kind")]
        kind: Option<String>,
    },
}

impl EntryMeta {
    /// The `MAILBACKUP.kind` value.
    pub fn kind(&self) -> &str {
        match self {
            EntryMeta::Message(_) => "message",
            EntryMeta::FolderMeta(_) => "folder-meta",
            EntryMeta::NameLink(_) => "name",
            EntryMeta::UserFile(_) => "user-file",
            EntryMeta::Run(_) => "run",
            EntryMeta::Unknown { kind } => kind.as_deref().unwrap_or(""),
        }
    }

    /// The run that wrote the entry (`None` for unknown entries).
    pub fn run(&self) -> Option<u64> {
        match self {
            EntryMeta::Message(m) => Some(m.run),
            EntryMeta::FolderMeta(m) => Some(m.run),
            EntryMeta::NameLink(m) => Some(m.run),
            EntryMeta::UserFile(m) => Some(m.run),
            EntryMeta::Run(m) => Some(m.run),
            EntryMeta::Unknown { .. } => None,
        }
    }

    /// When the entry was written (`None` for unknown entries).
    pub fn time(&self) -> Option<Timestamp> {
        match self {
            EntryMeta::Message(m) => Some(m.time),
            EntryMeta::FolderMeta(m) => Some(m.time),
            EntryMeta::NameLink(m) => Some(m.time),
            EntryMeta::UserFile(m) => Some(m.time),
            EntryMeta::Run(m) => Some(m.time),
            EntryMeta::Unknown { .. } => None,
        }
    }

    /// The tar path of the entry, derived from its metadata.
    pub fn path(&self) -> String {
        match self {
            EntryMeta::Message(m) => format!("files/{}", m.guid),
            EntryMeta::FolderMeta(m) => {
                format!("folders/{}/{}/{}", m.unique_id, m.run, m.file.file_name())
            }
            EntryMeta::NameLink(m) => {
                let tail = if m.deleted { ".deleted" } else { "" };
                format!("names/{}/{}{}", m.unique_id, m.run, tail)
            }
            EntryMeta::UserFile(m) => match &m.kind {
                UserFileKind::Seen => format!("user/seen/{}", m.run),
                UserFileKind::Subscriptions => format!("user/subscriptions/{}", m.run),
                UserFileKind::Sieve { name, .. } => format!("user/sieve/{}/{}", m.run, name),
            },
            EntryMeta::Run(m) => match m.event {
                RunEvent::Start => format!("runs/{}.start", m.run),
                RunEvent::End => format!("runs/{}.end", m.run),
            },
            EntryMeta::Unknown { kind } => format!("unknown/{}", kind.as_deref().unwrap_or("")),
        }
    }

    /// Checks what the writer must not put into a file: names that would make unsafe or
    /// ambiguous paths, oversized values. Unknown entries cannot be written.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        // The fields are public, so a timestamp may carry a second or more of nanoseconds;
        // written as is, it would not read back.
        let stat_time = match self {
            EntryMeta::FolderMeta(m) => m.stat.map(|s| s.mtime),
            EntryMeta::UserFile(m) => m.stat.map(|s| s.mtime),
            _ => None,
        };
        let internal_date = match self {
            EntryMeta::Message(m) => m.internal_date,
            _ => None,
        };
        for t in [self.time(), stat_time, internal_date]
            .into_iter()
            .flatten()
        {
            if !t.is_valid() {
                return Err(ArchiveError::InvalidMeta {
                    what: "timestamp",
                    expected: "nanoseconds below 1000000000",
                    found: format!("{}s {}ns", t.secs, t.nanos),
                });
            }
        }
        match self {
            EntryMeta::Message(m) => {
                if let Some((uid, _)) = &m.origin {
                    check_unique_id(uid)?;
                }
            }
            EntryMeta::FolderMeta(m) => {
                check_unique_id(&m.unique_id)?;
                check_name("folder name", &m.folder)?;
                if let Some(p) = &m.partition {
                    check_name("partition", p)?;
                }
            }
            EntryMeta::NameLink(m) => {
                check_unique_id(&m.unique_id)?;
                check_name("folder name", &m.folder)?;
            }
            EntryMeta::UserFile(m) => {
                if let UserFileKind::Sieve { name, .. } = &m.kind {
                    let ok = !name.is_empty()
                        && name.len() <= MAX_SCRIPT_NAME_LEN
                        && name != "."
                        && name != ".."
                        && !name.bytes().any(|b| b == b'/' || b == 0);
                    if !ok {
                        return Err(ArchiveError::InvalidMeta {
                            what: "sieve script name",
                            expected: "1 to 255 bytes, no '/' or NUL, not '.' or '..'",
                            found: name.clone(),
                        });
                    }
                }
            }
            EntryMeta::Run(m) => check_name("user name", &m.user)?,
            EntryMeta::Unknown { .. } => {
                return Err(ArchiveError::InvalidMeta {
                    what: "entry kind",
                    expected: "a known kind",
                    found: self.kind().to_owned(),
                })
            }
        }
        Ok(())
    }

    /// Appends this entry's `MAILBACKUP.*` records.
    pub(crate) fn to_pax(&self, out: &mut PaxRecords) {
        out.push(key::VERSION, FORMAT_VERSION.to_string().as_bytes());
        out.push(key::KIND, self.kind().as_bytes());
        if let Some(run) = self.run() {
            out.push(key::RUN, run.to_string().as_bytes());
        }
        if let Some(time) = self.time() {
            out.push(key::TIME, time.to_string().as_bytes());
        }
        match self {
            EntryMeta::Message(m) => {
                out.push(key::GUID, m.guid.to_string().as_bytes());
                if let Some(d) = m.internal_date {
                    out.push(key::INTERNALDATE, d.to_string().as_bytes());
                }
                if let Some((unique_id, uid)) = &m.origin {
                    out.push(key::UNIQUEID, unique_id.as_bytes());
                    out.push(key::UID, uid.to_string().as_bytes());
                }
            }
            EntryMeta::FolderMeta(m) => {
                out.push(key::UNIQUEID, m.unique_id.as_bytes());
                out.push(key::FOLDER, m.folder.as_bytes());
                if let Some(p) = &m.partition {
                    out.push(key::PARTITION, p.as_bytes());
                }
                out.push(key::FILE, m.file.file_name().as_bytes());
                push_stat(out, m.stat.as_ref());
            }
            EntryMeta::NameLink(m) => {
                out.push(key::UNIQUEID, m.unique_id.as_bytes());
                out.push(key::FOLDER, m.folder.as_bytes());
                let state: &[u8] = if m.deleted { b"deleted" } else { b"live" };
                out.push(key::STATE, state);
            }
            EntryMeta::UserFile(m) => {
                match &m.kind {
                    UserFileKind::Seen => out.push(key::FILE, b"seen"),
                    UserFileKind::Subscriptions => out.push(key::FILE, b"subscriptions"),
                    UserFileKind::Sieve { name, active } => {
                        out.push(key::FILE, b"sieve");
                        out.push(key::SCRIPT, name.as_bytes());
                        out.push(key::ACTIVE, if *active { b"1" } else { b"0" });
                    }
                }
                push_stat(out, m.stat.as_ref());
            }
            EntryMeta::Run(m) => {
                out.push(key::USER, m.user.as_bytes());
                let event: &[u8] = match m.event {
                    RunEvent::Start => b"start",
                    RunEvent::End => b"end",
                };
                out.push(key::EVENT, event);
            }
            EntryMeta::Unknown { .. } => {}
        }
    }

    /// Builds the typed metadata from an entry's PAX fields.
    pub(crate) fn from_pax(f: &PaxFields) -> Result<Self, FieldError> {
        let Some(kind) = f.get(key::KIND) else {
            return Ok(EntryMeta::Unknown { kind: None });
        };
        let kind = std::str::from_utf8(kind)
            .map_err(|_| FieldError::new(key::KIND, "UTF-8 text", kind))?
            .to_owned();
        let known = ["message", "folder-meta", "name", "user-file", "run"];
        if !known.contains(&kind.as_str()) {
            return Ok(EntryMeta::Unknown { kind: Some(kind) });
        }
        let version: u32 = f.parse(key::VERSION, "a format version number")?;
        if version != FORMAT_VERSION {
            return Err(FieldError::new(
                key::VERSION,
                "format version 1",
                version.to_string().as_bytes(),
            ));
        }
        let run: u64 = f.parse(key::RUN, "a run id (decimal u64)")?;
        let time: Timestamp = f.parse(key::TIME, "a timestamp")?;
        Ok(match kind.as_str() {
            "message" => EntryMeta::Message(Message {
                guid: f.parse(key::GUID, "40 hex digits")?,
                run,
                time,
                origin: match f.get(key::UNIQUEID) {
                    None => None,
                    Some(_) => Some((
                        f.text(key::UNIQUEID)?.to_owned(),
                        f.parse(key::UID, "a UID (decimal u32)")?,
                    )),
                },
                internal_date: f.parse_opt(key::INTERNALDATE, "a timestamp")?,
            }),
            "folder-meta" => {
                let name = f.text(key::FILE)?;
                let file = MetaFile::from_file_name(name).ok_or_else(|| {
                    FieldError::new(
                        key::FILE,
                        "cyrus.header, cyrus.index or cyrus.annotations",
                        name.as_bytes(),
                    )
                })?;
                EntryMeta::FolderMeta(FolderMeta {
                    unique_id: f.text(key::UNIQUEID)?.to_owned(),
                    folder: f.text(key::FOLDER)?.to_owned(),
                    partition: f.text_opt(key::PARTITION)?.map(str::to_owned),
                    file,
                    run,
                    time,
                    stat: read_stat(f)?,
                })
            }
            "name" => {
                let state = f.text(key::STATE)?;
                let deleted = match state {
                    "live" => false,
                    "deleted" => true,
                    _ => {
                        return Err(FieldError::new(
                            key::STATE,
                            "live or deleted",
                            state.as_bytes(),
                        ))
                    }
                };
                EntryMeta::NameLink(NameLink {
                    folder: f.text(key::FOLDER)?.to_owned(),
                    unique_id: f.text(key::UNIQUEID)?.to_owned(),
                    deleted,
                    run,
                    time,
                })
            }
            "user-file" => {
                let file = f.text(key::FILE)?;
                let kind = match file {
                    "seen" => UserFileKind::Seen,
                    "subscriptions" => UserFileKind::Subscriptions,
                    "sieve" => {
                        let active = f.text(key::ACTIVE)?;
                        UserFileKind::Sieve {
                            name: f.text(key::SCRIPT)?.to_owned(),
                            active: match active {
                                "1" => true,
                                "0" => false,
                                _ => {
                                    return Err(FieldError::new(
                                        key::ACTIVE,
                                        "0 or 1",
                                        active.as_bytes(),
                                    ))
                                }
                            },
                        }
                    }
                    _ => {
                        return Err(FieldError::new(
                            key::FILE,
                            "seen, subscriptions or sieve",
                            file.as_bytes(),
                        ))
                    }
                };
                EntryMeta::UserFile(UserFile {
                    kind,
                    run,
                    time,
                    stat: read_stat(f)?,
                })
            }
            _ => {
                let event = f.text(key::EVENT)?;
                EntryMeta::Run(RunMarker {
                    run,
                    user: f.text(key::USER)?.to_owned(),
                    event: match event {
                        "start" => RunEvent::Start,
                        "end" => RunEvent::End,
                        _ => {
                            return Err(FieldError::new(
                                key::EVENT,
                                "start or end",
                                event.as_bytes(),
                            ))
                        }
                    },
                    time,
                })
            }
        })
    }
}

fn push_stat(out: &mut PaxRecords, stat: Option<&FileStat>) {
    if let Some(s) = stat {
        out.push(key::STAT_SIZE, s.size.to_string().as_bytes());
        out.push(key::STAT_MTIME, s.mtime.to_string().as_bytes());
        out.push(key::STAT_INO, s.inode.to_string().as_bytes());
    }
}

fn read_stat(f: &PaxFields) -> Result<Option<FileStat>, FieldError> {
    if f.get(key::STAT_SIZE).is_none()
        && f.get(key::STAT_MTIME).is_none()
        && f.get(key::STAT_INO).is_none()
    {
        return Ok(None);
    }
    // All three or none: a partial stat would make the planner compare against garbage.
    Ok(Some(FileStat {
        size: f.parse(key::STAT_SIZE, "a size (decimal u64)")?,
        mtime: f.parse(key::STAT_MTIME, "a timestamp")?,
        inode: f.parse(key::STAT_INO, "an inode number (decimal u64)")?,
    }))
}

fn check_unique_id(s: &str) -> Result<(), ArchiveError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_UNIQUE_ID_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::InvalidMeta {
            what: "unique id",
            expected: "1 to 64 of [A-Za-z0-9._-], not '.' or '..'",
            found: s.to_owned(),
        })
    }
}

fn check_name(what: &'static str, s: &str) -> Result<(), ArchiveError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s.contains('\0') {
        return Err(ArchiveError::InvalidMeta {
            what,
            expected: "1 to 4096 bytes without NUL",
            found: s.chars().take(200).collect(),
        });
    }
    Ok(())
}
