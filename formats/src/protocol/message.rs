//! Typed messages: the handshake, the requests a client sends and the reply frames the
//! server answers with, each with `encode` (appends a whole frame to a `Vec<u8>`) and
//! `decode` (from a [`Frame`] found by [`super::frame::parse`]).

use super::frame::{body_len, EncodeError, Frame, FrameHeader, HEADER_LEN};
use super::kind;
use super::wire::{DecodeError, Reader, Writer, STAT_LEN};
use crate::cyrus::MetaFile;
use crate::FileStat;
use std::fmt;

/// Length of the nonces and HMAC-SHA256 proofs of the handshake.
pub const NONCE_LEN: usize = 32;

/// Appends one frame whose body `body` writes; the length is filled in afterwards.
fn frame(
    kind: u8,
    id: u32,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let res = body(&mut Writer { out }).and_then(|()| body_len(out.len() - start - HEADER_LEN));
    match res {
        Ok(len) => {
            let head = FrameHeader { len, kind, id }.encode();
            out[start..start + HEADER_LEN].copy_from_slice(&head);
            Ok(())
        }
        Err(e) => {
            // Leave `out` as it was: a half-written frame would desync the stream.
            out.truncate(start);
            Err(e)
        }
    }
}

/// A frame decoded as the wrong family (a reply where a request was expected, ...).
fn unexpected(frame: &Frame<'_>, expected: &'static str) -> DecodeError {
    DecodeError {
        kind: frame.kind,
        offset: 0,
        expected,
        found: format!(
            "a frame of kind 0x{:02x} ({})",
            frame.kind,
            kind::name(frame.kind)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Handshake

/// The server's first frame (kind [`kind::GREETING`], request id 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The lowest protocol version the server speaks.
    pub min_version: u16,
    /// The highest protocol version the server speaks.
    pub max_version: u16,
    /// The server's challenge: fresh random bytes for this connection.
    pub nonce: [u8; NONCE_LEN],
    /// Free text naming the server software and host, for logs.
    pub server: String,
}

/// The protocol's magic, first in the greeting body: tells a backupd from anything else.
pub const MAGIC: &[u8; 8] = b"MBACKUPD";

impl Greeting {
    /// Appends the frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        frame(kind::GREETING, 0, out, |w| {
            w.bytes(MAGIC);
            w.u16(self.min_version);
            w.u16(self.max_version);
            w.bytes(&self.nonce);
            w.string("server name", &self.server)
        })
    }

    /// Decodes a greeting frame.
    pub fn decode(frame: &Frame<'_>) -> Result<Self, DecodeError> {
        if frame.kind != kind::GREETING {
            return Err(unexpected(frame, "a greeting"));
        }
        let mut r = Reader::new(frame.kind, frame.body);
        let magic = r.take(MAGIC.len(), "the magic \"MBACKUPD\"")?;
        if magic != MAGIC {
            return Err(r.err(
                0,
                "the magic \"MBACKUPD\"",
                format_args!("{:?}", String::from_utf8_lossy(magic)),
            ));
        }
        let g = Greeting {
            min_version: r.u16("minimum version")?,
            max_version: r.u16("maximum version")?,
            nonce: r.bytes32("server nonce")?,
            server: r.string("server name")?,
        };
        r.finish()?;
        Ok(g)
    }
}

/// The client's answer to the greeting (kind [`kind::AUTH`], request id 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The protocol version the client chose, inside the greeting's range.
    pub version: u16,
    /// The client's challenge to the server: fresh random bytes.
    pub nonce: [u8; NONCE_LEN],
    /// HMAC-SHA256 proving the client holds the secret (docs/protocol.md says over what).
    pub proof: [u8; NONCE_LEN],
}

impl Auth {
    /// Appends the frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        frame(kind::AUTH, 0, out, |w| {
            w.u16(self.version);
            w.bytes(&self.nonce);
            w.bytes(&self.proof);
            Ok(())
        })
    }

    /// Decodes an auth frame.
    pub fn decode(frame: &Frame<'_>) -> Result<Self, DecodeError> {
        if frame.kind != kind::AUTH {
            return Err(unexpected(frame, "an auth frame"));
        }
        let mut r = Reader::new(frame.kind, frame.body);
        let a = Auth {
            version: r.u16("version")?,
            nonce: r.bytes32("client nonce")?,
            proof: r.bytes32("client proof")?,
        };
        r.finish()?;
        Ok(a)
    }
}

/// The server's acceptance (kind [`kind::AUTH_OK`], request id 0), proving in turn that it
/// holds the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOk {
    /// HMAC-SHA256 proving the server holds the secret.
    pub proof: [u8; NONCE_LEN],
}

impl AuthOk {
    /// Appends the frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        frame(kind::AUTH_OK, 0, out, |w| {
            w.bytes(&self.proof);
            Ok(())
        })
    }

    /// Decodes an auth-ok frame.
    pub fn decode(frame: &Frame<'_>) -> Result<Self, DecodeError> {
        if frame.kind != kind::AUTH_OK {
            return Err(unexpected(frame, "an auth-ok frame"));
        }
        let mut r = Reader::new(frame.kind, frame.body);
        let a = AuthOk {
            proof: r.bytes32("server proof")?,
        };
        r.finish()?;
        Ok(a)
    }
}

// ---------------------------------------------------------------------------------------
// Data types carried by requests and replies

/// A per-user file, by what it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserFileId {
    /// The user's seen state for other users' mailboxes (seen.db).
    Seen,
    /// Subscriptions (sub.db).
    Subscriptions,
    /// One sieve script, by name, its source.
    SieveScript(String),
    /// Which sieve script is active (its name; [`Reply::Absent`] when none is).
    SieveActive,
}

impl UserFileId {
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            UserFileId::Seen => w.u8(1),
            UserFileId::Subscriptions => w.u8(2),
            UserFileId::SieveScript(name) => {
                w.u8(3);
                w.string("sieve script name", name)?;
            }
            UserFileId::SieveActive => w.u8(4),
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.position();
        Ok(match r.u8("user file kind")? {
            1 => UserFileId::Seen,
            2 => UserFileId::Subscriptions,
            3 => UserFileId::SieveScript(r.string("sieve script name")?),
            4 => UserFileId::SieveActive,
            other => {
                return Err(r.err(
                    at,
                    "a user file kind (1 seen, 2 subscriptions, 3 sieve script, 4 active sieve)",
                    other,
                ))
            }
        })
    }
}

impl fmt::Display for UserFileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserFileId::Seen => f.write_str("seen state"),
            UserFileId::Subscriptions => f.write_str("subscriptions"),
            UserFileId::SieveScript(name) => write!(f, "sieve script {name:?}"),
            UserFileId::SieveActive => f.write_str("active sieve script"),
        }
    }
}

/// One user, for the backup host's feeders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The Cyrus user id.
    pub user: String,
    /// The partition of the user's INBOX.
    pub partition: String,
}

/// One folder of a user with the stat data of its meta files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStat {
    /// The folder as its owner sees it (`INBOX`, `Work/Sub`).
    pub name: String,
    /// The mailbox unique id.
    pub uniqueid: String,
    /// The Cyrus partition.
    pub partition: String,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// cyrus.header.
    pub header: FileStat,
    /// cyrus.index.
    pub index: FileStat,
    /// cyrus.annotations, where it exists.
    pub annotations: Option<FileStat>,
}

/// A per-user file's stat data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFileStat {
    /// Which file.
    pub id: UserFileId,
    /// Its stat data.
    pub stat: FileStat,
}

/// A meta file's code on the wire (docs/protocol.md, META_FILE).
fn meta_code(file: MetaFile) -> u8 {
    match file {
        MetaFile::Header => 1,
        MetaFile::Index => 2,
        MetaFile::Annotations => 3,
    }
}

/// What went wrong, as a number a program can act on. Codes this version does not know
/// decode as [`ErrorCode::Other`] and keep their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: a frame body did not decode (the text says where).
    BadFrame,
    /// 2: a frame header announced more than the size bound; the connection closes.
    FrameTooLarge,
    /// 3: a frame kind that is not a request this server knows.
    UnknownCommand,
    /// 4: a request before authentication.
    NotAuthenticated,
    /// 5: the client's proof was wrong; the connection closes.
    AuthFailed,
    /// 6: the client asked for a protocol version the server does not speak.
    UnsupportedVersion,
    /// 7: no such user on this server.
    UnknownUser,
    /// 8: no such folder (unique id) for that user.
    UnknownFolder,
    /// 9: a name that is not acceptable (empty, `/`, NUL, ...: docs/protocol.md, "Names").
    BadName,
    /// 10: reading a file failed (the text names the file).
    Io,
    /// 11: Cyrus's files are damaged or the configuration is unusable.
    Spool,
    /// 12: the server is at its connection limit or shutting down; try again later.
    Busy,
    /// 13: the client was silent for too long; the connection closes.
    Timeout,
    /// 14: a fault inside the server.
    Internal,
    /// Any other code.
    Other(u16),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::BadFrame => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::UnknownCommand => 3,
            ErrorCode::NotAuthenticated => 4,
            ErrorCode::AuthFailed => 5,
            ErrorCode::UnsupportedVersion => 6,
            ErrorCode::UnknownUser => 7,
            ErrorCode::UnknownFolder => 8,
            ErrorCode::BadName => 9,
            ErrorCode::Io => 10,
            ErrorCode::Spool => 11,
            ErrorCode::Busy => 12,
            ErrorCode::Timeout => 13,
            ErrorCode::Internal => 14,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number.
    pub fn from_code(n: u16) -> Self {
        match n {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::UnknownCommand,
            4 => ErrorCode::NotAuthenticated,
            5 => ErrorCode::AuthFailed,
            6 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::UnknownUser,
            8 => ErrorCode::UnknownFolder,
            9 => ErrorCode::BadName,
            10 => ErrorCode::Io,
            11 => ErrorCode::Spool,
            12 => ErrorCode::Busy,
            13 => ErrorCode::Timeout,
            14 => ErrorCode::Internal,
            n => ErrorCode::Other(n),
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad frame",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::UnknownCommand => "unknown command",
            ErrorCode::NotAuthenticated => "not authenticated",
            ErrorCode::AuthFailed => "authentication failed",
            ErrorCode::UnsupportedVersion => "unsupported version",
            ErrorCode::UnknownUser => "unknown user",
            ErrorCode::UnknownFolder => "unknown folder",
            ErrorCode::BadName => "bad name",
            ErrorCode::Io => "I/O error",
            ErrorCode::Spool => "spool error",
            ErrorCode::Busy => "busy",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal error",
            ErrorCode::Other(_) => "error",
        }
    }
}

/// An error as the server reports it: a code and a text naming what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} (code {}): {text}", code.name(), code.code())]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What failed, for a human: `unknown user "alice"`, `reading /var/spool/...: ...`.
    pub text: String,
}

impl ErrorReply {
    /// An error with this code and text.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ErrorReply {
            code,
            text: text.into(),
        }
    }

    /// Appends an error frame (kind [`kind::ERROR`]) for request `id`. A text too long
    /// for its 16-bit length is cut (at a character boundary), never refused.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) {
        encode_error(kind::ERROR, id, self, out);
    }
}

fn encode_error(k: u8, id: u32, e: &ErrorReply, out: &mut Vec<u8>) {
    let mut text = e.text.as_str();
    if text.len() > u16::MAX as usize {
        let mut end = u16::MAX as usize;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    // Cannot fail: the text fits its length and the body is far below the bound.
    let _ = frame(k, id, out, |w| {
        w.u16(e.code.code());
        w.string("error text", text)
    });
}

fn decode_error(r: &mut Reader<'_>) -> Result<ErrorReply, DecodeError> {
    Ok(ErrorReply {
        code: ErrorCode::from_code(r.u16("error code")?),
        text: r.string("error text")?,
    })
}

// ---------------------------------------------------------------------------------------
// Requests

/// What a client asks, after authentication. Each travels as one frame whose request id
/// the client chooses; every frame of the reply carries the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Does nothing; answered with `End { items: 0 }`. Keeps a connection alive.
    Ping,
    /// Every user with the partition of their INBOX.
    ListUsers,
    /// One user's folders with the stat data of their meta files, and the user's files.
    ListFolders {
        /// The user.
        user: String,
    },
    /// One folder's meta files, copied under Cyrus's locks.
    CopyMeta {
        /// The user.
        user: String,
        /// The folder's unique id.
        uniqueid: String,
    },
    /// Message files of one folder, by UID, in the order given.
    FetchMessages {
        /// The user.
        user: String,
        /// The folder's unique id.
        uniqueid: String,
        /// The UIDs.
        uids: Vec<u32>,
    },
    /// Per-user files, in the order given.
    FetchUserFiles {
        /// The user.
        user: String,
        /// Which files.
        ids: Vec<UserFileId>,
    },
}

impl Request {
    /// The frame kind of this request.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Ping => kind::PING,
            Request::ListUsers => kind::LIST_USERS,
            Request::ListFolders { .. } => kind::LIST_FOLDERS,
            Request::CopyMeta { .. } => kind::COPY_META,
            Request::FetchMessages { .. } => kind::FETCH_MESSAGES,
            Request::FetchUserFiles { .. } => kind::FETCH_USER_FILES,
        }
    }

    /// Appends the request as a frame with request id `id`.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        frame(self.kind(), id, out, |w| {
            match self {
                Request::Ping | Request::ListUsers => {}
                Request::ListFolders { user } => w.string("user", user)?,
                Request::CopyMeta { user, uniqueid } => {
                    w.string("user", user)?;
                    w.string("unique id", uniqueid)?;
                }
                Request::FetchMessages {
                    user,
                    uniqueid,
                    uids,
                } => {
                    w.string("user", user)?;
                    w.string("unique id", uniqueid)?;
                    w.count("UID list", uids.len())?;
                    for &uid in uids {
                        w.u32(uid);
                    }
                }
                Request::FetchUserFiles { user, ids } => {
                    w.string("user", user)?;
                    if ids.len() > MAX_USER_FILE_IDS {
                        return Err(EncodeError::ListTooLong {
                            what: "user file list",
                            len: ids.len(),
                            max: MAX_USER_FILE_IDS,
                        });
                    }
                    w.count("user file list", ids.len())?;
                    for id in ids {
                        id.encode(w)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Decodes a request frame. A frame kind that is no request gives an error whose
    /// `expected` is "a request"; the server answers it with [`ErrorCode::UnknownCommand`].
    pub fn decode(frame: &Frame<'_>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame.kind, frame.body);
        let req = match frame.kind {
            kind::PING => Request::Ping,
            kind::LIST_USERS => Request::ListUsers,
            kind::LIST_FOLDERS => Request::ListFolders {
                user: r.string("user")?,
            },
            kind::COPY_META => Request::CopyMeta {
                user: r.string("user")?,
                uniqueid: r.string("unique id")?,
            },
            kind::FETCH_MESSAGES => {
                let user = r.string("user")?;
                let uniqueid = r.string("unique id")?;
                let n = r.count("UID list", 4)?;
                let mut uids = Vec::with_capacity(n);
                for _ in 0..n {
                    uids.push(r.u32("UID")?);
                }
                Request::FetchMessages {
                    user,
                    uniqueid,
                    uids,
                }
            }
            kind::FETCH_USER_FILES => {
                let user = r.string("user")?;
                let at = r.position();
                let n = r.count("user file list", 1)?;
                if n > MAX_USER_FILE_IDS {
                    return Err(r.err(
                        at,
                        "a user file list of at most 1024 ids",
                        format_args!("a count of {n}"),
                    ));
                }
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(UserFileId::decode(&mut r)?);
                }
                Request::FetchUserFiles { user, ids }
            }
            _ => return Err(unexpected(frame, REQUEST)),
        };
        r.finish()?;
        Ok(req)
    }
}

/// The most file ids one [`Request::FetchUserFiles`] may name. A user has a handful of
/// files (Cyrus allows 5 sieve scripts by default); without a bound, a 16 MiB body of
/// one-byte ids would decode into some 400 MB of `UserFileId`s.
pub const MAX_USER_FILE_IDS: usize = 1024;

/// `expected` of the [`DecodeError`] for a frame kind that is not a request.
pub const REQUEST: &str = "a request";

// ---------------------------------------------------------------------------------------
// Replies

/// One frame of a reply. Every reply is a run of frames carrying the request's id and ends
/// with exactly one [`Reply::End`] or [`Reply::Error`]; docs/protocol.md lists which frames
/// each request's reply holds, in which order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The reply is complete; `items` counts what it held (users, folders, messages,
    /// files), so the client can check it missed nothing.
    End {
        /// Items in the reply.
        items: u64,
    },
    /// The request failed; the reply ends here.
    Error(ErrorReply),
    /// Bytes of the file announced by the last [`Reply::MetaFile`], [`Reply::Message`] or
    /// [`Reply::UserFile`]. Never empty.
    Data(Vec<u8>),
    /// Some of the users (a list reply spans as many frames as it needs).
    Users(Vec<UserEntry>),
    /// Some of the user's folders.
    Folders(Vec<FolderStat>),
    /// The user's files (exactly one such frame per folder listing, after the folders).
    UserFiles(Vec<UserFileStat>),
    /// A meta file follows in data frames: `size` bytes, copied with this stat data.
    MetaFile {
        /// Which file.
        kind: MetaFile,
        /// Its stat data when copied.
        stat: FileStat,
        /// Bytes that follow in data frames.
        size: u64,
    },
    /// A message file follows in data frames: `size` bytes.
    Message {
        /// Its UID.
        uid: u32,
        /// Bytes that follow in data frames.
        size: u64,
    },
    /// The message was expunged and its file removed since the client read cyrus.index.
    Gone {
        /// Its UID.
        uid: u32,
    },
    /// A per-user file follows in data frames: `size` bytes.
    UserFile {
        /// Which file.
        id: UserFileId,
        /// Its stat data when read.
        stat: FileStat,
        /// Bytes that follow in data frames.
        size: u64,
    },
    /// The per-user file does not exist.
    Absent {
        /// Which file.
        id: UserFileId,
    },
    /// This item (the current one, in request order) failed; the reply goes on with the
    /// next. May also take the place of the rest of an item's data frames.
    ItemError(ErrorReply),
}

const USER_ENTRY_MIN: usize = 4;
const FOLDER_MIN: usize = 2 + 2 + 2 + 4 + 2 * STAT_LEN + 1;
const USER_FILE_MIN: usize = 1 + STAT_LEN;

impl Reply {
    /// The frame kind of this reply.
    pub fn kind(&self) -> u8 {
        match self {
            Reply::End { .. } => kind::END,
            Reply::Error(_) => kind::ERROR,
            Reply::Data(_) => kind::DATA,
            Reply::Users(_) => kind::USERS,
            Reply::Folders(_) => kind::FOLDERS,
            Reply::UserFiles(_) => kind::USER_FILES,
            Reply::MetaFile { .. } => kind::META_FILE,
            Reply::Message { .. } => kind::MESSAGE,
            Reply::Gone { .. } => kind::GONE,
            Reply::UserFile { .. } => kind::USER_FILE,
            Reply::Absent { .. } => kind::ABSENT,
            Reply::ItemError(_) => kind::ITEM_ERROR,
        }
    }

    /// Whether this frame ends its reply.
    pub fn is_final(&self) -> bool {
        matches!(self, Reply::End { .. } | Reply::Error(_))
    }

    /// Appends the frame for request `id`. Lists must fit one frame: see
    /// [`encode_users`] and [`encode_folders`] for lists of any length.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Reply::Error(e) | Reply::ItemError(e) => {
                encode_error(self.kind(), id, e, out);
                return Ok(());
            }
            Reply::Data(bytes) if bytes.is_empty() => return Err(EncodeError::EmptyData),
            _ => {}
        }
        frame(self.kind(), id, out, |w| {
            match self {
                Reply::End { items } => w.u64(*items),
                Reply::Error(_) | Reply::ItemError(_) => unreachable!("handled above"),
                Reply::Data(bytes) => w.bytes(bytes),
                Reply::Users(users) => {
                    w.count("user list", users.len())?;
                    for u in users {
                        encode_user(w, u)?;
                    }
                }
                Reply::Folders(folders) => {
                    w.count("folder list", folders.len())?;
                    for f in folders {
                        encode_folder(w, f)?;
                    }
                }
                Reply::UserFiles(files) => {
                    w.count("user file list", files.len())?;
                    for f in files {
                        f.id.encode(w)?;
                        w.stat("user file stat", &f.stat)?;
                    }
                }
                Reply::MetaFile { kind, stat, size } => {
                    w.u8(meta_code(*kind));
                    w.stat("meta file stat", stat)?;
                    w.u64(*size);
                }
                Reply::Message { uid, size } => {
                    w.u32(*uid);
                    w.u64(*size);
                }
                Reply::Gone { uid } => w.u32(*uid),
                Reply::UserFile { id, stat, size } => {
                    id.encode(w)?;
                    w.stat("user file stat", stat)?;
                    w.u64(*size);
                }
                Reply::Absent { id } => id.encode(w)?,
            }
            Ok(())
        })
    }

    /// Decodes a reply frame.
    pub fn decode(frame: &Frame<'_>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame.kind, frame.body);
        let reply = match frame.kind {
            kind::END => Reply::End {
                items: r.u64("item count")?,
            },
            kind::ERROR => Reply::Error(decode_error(&mut r)?),
            kind::ITEM_ERROR => Reply::ItemError(decode_error(&mut r)?),
            kind::DATA => {
                if frame.body.is_empty() {
                    return Err(r.err(0, "at least one data byte", "an empty data frame"));
                }
                Reply::Data(r.take(frame.body.len(), "data")?.to_vec())
            }
            kind::USERS => {
                let n = r.count("user list", USER_ENTRY_MIN)?;
                let mut users = Vec::with_capacity(n);
                for _ in 0..n {
                    users.push(UserEntry {
                        user: r.string("user")?,
                        partition: r.string("partition")?,
                    });
                }
                Reply::Users(users)
            }
            kind::FOLDERS => {
                let n = r.count("folder list", FOLDER_MIN)?;
                let mut folders = Vec::with_capacity(n);
                for _ in 0..n {
                    folders.push(decode_folder(&mut r)?);
                }
                Reply::Folders(folders)
            }
            kind::USER_FILES => {
                let n = r.count("user file list", USER_FILE_MIN)?;
                let mut files = Vec::with_capacity(n);
                for _ in 0..n {
                    files.push(UserFileStat {
                        id: UserFileId::decode(&mut r)?,
                        stat: r.stat("user file stat")?,
                    });
                }
                Reply::UserFiles(files)
            }
            kind::META_FILE => {
                let at = r.position();
                let code = r.u8("meta file kind")?;
                let kind = match MetaFile::ALL.into_iter().find(|&m| meta_code(m) == code) {
                    Some(m) => m,
                    None => {
                        return Err(r.err(
                            at,
                            "a meta file kind (1 header, 2 index, 3 annotations)",
                            code,
                        ))
                    }
                };
                Reply::MetaFile {
                    kind,
                    stat: r.stat("meta file stat")?,
                    size: r.u64("size")?,
                }
            }
            kind::MESSAGE => Reply::Message {
                uid: r.u32("UID")?,
                size: r.u64("size")?,
            },
            kind::GONE => Reply::Gone { uid: r.u32("UID")? },
            kind::USER_FILE => Reply::UserFile {
                id: UserFileId::decode(&mut r)?,
                stat: r.stat("user file stat")?,
                size: r.u64("size")?,
            },
            kind::ABSENT => Reply::Absent {
                id: UserFileId::decode(&mut r)?,
            },
            _ => return Err(unexpected(frame, "a reply")),
        };
        r.finish()?;
        Ok(reply)
    }
}

fn encode_user(w: &mut Writer<'_>, u: &UserEntry) -> Result<(), EncodeError> {
    w.string("user", &u.user)?;
    w.string("partition", &u.partition)
}

fn encode_folder(w: &mut Writer<'_>, f: &FolderStat) -> Result<(), EncodeError> {
    w.string("folder name", &f.name)?;
    w.string("unique id", &f.uniqueid)?;
    w.string("partition", &f.partition)?;
    w.u32(f.uidvalidity);
    w.stat("cyrus.header stat", &f.header)?;
    w.stat("cyrus.index stat", &f.index)?;
    w.flag(f.annotations.is_some());
    if let Some(a) = &f.annotations {
        w.stat("cyrus.annotations stat", a)?;
    }
    Ok(())
}

fn decode_folder(r: &mut Reader<'_>) -> Result<FolderStat, DecodeError> {
    Ok(FolderStat {
        name: r.string("folder name")?,
        uniqueid: r.string("unique id")?,
        partition: r.string("partition")?,
        uidvalidity: r.u32("UIDVALIDITY")?,
        header: r.stat("cyrus.header stat")?,
        index: r.stat("cyrus.index stat")?,
        annotations: if r.flag("cyrus.annotations present")? {
            Some(r.stat("cyrus.annotations stat")?)
        } else {
            None
        },
    })
}

/// Target body size when a list is split over several frames: big enough that headers cost
/// nothing, small enough that neither side buffers much.
pub const LIST_FRAME_TARGET: usize = 256 * 1024;

/// Appends a list as as many frames of kind `k` as it needs (at least one), each body near
/// [`LIST_FRAME_TARGET`]; returns the number of frames.
fn encode_list<T>(
    k: u8,
    id: u32,
    items: &[T],
    out: &mut Vec<u8>,
    item: impl Fn(&mut Writer<'_>, &T) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let first_start = out.len();
    let mut frames = 0;
    let mut rest = items;
    loop {
        let start = out.len();
        // Header and item count, filled in once the frame's items are written.
        out.extend_from_slice(&[0; HEADER_LEN + 4]);
        let mut n: u32 = 0;
        while let Some(first) = rest.first() {
            if n > 0 && out.len() - start >= LIST_FRAME_TARGET {
                break;
            }
            if let Err(e) = item(&mut Writer { out }, first) {
                out.truncate(first_start);
                return Err(e);
            }
            rest = &rest[1..];
            n += 1;
        }
        let len = match body_len(out.len() - start - HEADER_LEN) {
            Ok(len) => len,
            Err(e) => {
                out.truncate(first_start);
                return Err(e);
            }
        };
        out[start..start + HEADER_LEN].copy_from_slice(&FrameHeader { len, kind: k, id }.encode());
        out[start + HEADER_LEN..start + HEADER_LEN + 4].copy_from_slice(&n.to_be_bytes());
        frames += 1;
        if rest.is_empty() {
            return Ok(frames);
        }
    }
}

/// Appends a user list as one or more [`kind::USERS`] frames for request `id`.
pub fn encode_users(id: u32, users: &[UserEntry], out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    encode_list(kind::USERS, id, users, out, encode_user)
}

/// Appends a folder list as one or more [`kind::FOLDERS`] frames for request `id`.
pub fn encode_folders(
    id: u32,
    folders: &[FolderStat],
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    encode_list(kind::FOLDERS, id, folders, out, encode_folder)
}

/// Appends the header of a data frame carrying `len` bytes (1 to [`super::MAX_BODY`]) for
/// request `id`; the caller writes the bytes themselves, so they need not be copied into
/// a [`Reply::Data`].
pub fn encode_data_header(id: u32, len: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if len == 0 {
        return Err(EncodeError::EmptyData);
    }
    let len = body_len(len)?;
    out.extend_from_slice(
        &FrameHeader {
            len,
            kind: kind::DATA,
            id,
        }
        .encode(),
    );
    Ok(())
}
