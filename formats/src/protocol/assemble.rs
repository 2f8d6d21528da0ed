//! The client's side of a reply, as a pure state machine: frames in (as they arrive, data
//! frames included), a typed value out. The blocking client on the backup host only reads
//! frames off its socket and feeds them to an [`Assembler`]; every rule about which frame
//! may come when lives here, where it is tested without a socket.
//!
//! The rules (docs/protocol.md, "Replies"): every frame of a reply carries the request's id;
//! an Error frame ends the reply and fails the request (the connection stays usable); an
//! Error frame with id 0 is the server closing the connection (shutting down, timeout); a
//! file announced with a size is followed by data frames carrying exactly that many bytes,
//! or by an ItemError taking the place of the rest; the End frame counts the items.

use super::frame::Frame;
use super::kind;
use super::message::{ErrorReply, FolderStat, Reply, UserEntry, UserFileStat};
use crate::cyrus::MetaFile;
use crate::FileStat;

/// Everything a folder listing returns for one user, in one reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserListing {
    /// The user's folders (delayed-deleted and hidden ones excluded), INBOX first.
    pub folders: Vec<FolderStat>,
    /// Seen state, subscriptions, sieve scripts.
    pub user_files: Vec<UserFileStat>,
}

/// A folder's meta files, copied whole while holding the locks Cyrus takes to change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCopy {
    /// The unique id the copy was made for.
    pub uniqueid: String,
    /// cyrus.header bytes and stat data.
    pub header: (Vec<u8>, FileStat),
    /// cyrus.index bytes and stat data.
    pub index: (Vec<u8>, FileStat),
    /// cyrus.annotations bytes and stat data, where it exists.
    pub annotations: Option<(Vec<u8>, FileStat)>,
}

impl MetaCopy {
    /// The copy's files in the order they travel and are stored (header, index,
    /// annotations where it exists).
    pub fn files(&self) -> impl Iterator<Item = (MetaFile, &(Vec<u8>, FileStat))> {
        [
            (MetaFile::Header, Some(&self.header)),
            (MetaFile::Index, Some(&self.index)),
            (MetaFile::Annotations, self.annotations.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, f)| f.map(|f| (k, f)))
    }
}

/// A per-user file as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFile {
    /// Its bytes and stat data.
    Found {
        /// The contents.
        bytes: Vec<u8>,
        /// Stat data when read.
        stat: FileStat,
    },
    /// It does not exist.
    Absent,
    /// Reading it failed on the server.
    Failed(ErrorReply),
}

/// Why a reply could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The server answered this request with an error; the connection is still in step.
    #[error("{0}")]
    Remote(ErrorReply),
    /// The server is closing the connection (an error frame with request id 0: shutting
    /// down, timeout).
    #[error("{0}")]
    Closing(ErrorReply),
    /// The frames break the protocol; the connection cannot be trusted any more.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What an [`Assemble`] wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// More reply frames.
    More,
    /// The next `n` bytes of data frames belong to the item just announced (0: none follow).
    Data(u64),
    /// The reply is complete.
    Done(T),
}

/// One kind of reply, as typed steps; [`Assembler`] does the frame-level checks around it.
pub trait Assemble {
    /// What the reply assembles into.
    type Output;
    /// A reply frame of this request (never Data, never Error: the assembler handles them).
    fn reply(&mut self, id: u32, reply: Reply) -> Result<Step<Self::Output>, ReplyError>;
    /// The bytes announced by the last [`Step::Data`], or the item error that took the
    /// place of the rest of them.
    fn data(
        &mut self,
        id: u32,
        data: Result<Vec<u8>, ErrorReply>,
    ) -> Result<Step<Self::Output>, ReplyError> {
        let _ = data;
        Err(ReplyError::Protocol(format!(
            "reply {id}: data where none was announced"
        )))
    }
}

/// Feeds the frames of one reply to an [`Assemble`].
#[derive(Debug)]
pub struct Assembler<A> {
    id: u32,
    inner: A,
    /// Bytes of an announced item still to come, and those come so far.
    data: Option<(u64, Vec<u8>)>,
    done: bool,
}

/// The connection-level check every frame of a reply passes: its id is the reply's, or it
/// is the server's id-0 error closing the connection.
pub fn check_reply_frame(frame: &Frame<'_>, id: u32) -> Result<(), ReplyError> {
    if frame.id == id {
        return Ok(());
    }
    if frame.id == 0 && frame.kind == kind::ERROR {
        return Err(match Reply::decode(frame) {
            Ok(Reply::Error(e)) => ReplyError::Closing(e),
            Ok(_) => unreachable!("kind checked"),
            Err(e) => ReplyError::Protocol(e.to_string()),
        });
    }
    Err(ReplyError::Protocol(format!(
        "expected a frame of reply {id}, found one of reply {} (kind 0x{:02x}, {})",
        frame.id,
        frame.kind,
        kind::name(frame.kind)
    )))
}

/// Decodes an error-carrying frame (Error or ItemError).
fn decode_error(frame: &Frame<'_>) -> Result<ErrorReply, ReplyError> {
    match Reply::decode(frame) {
        Ok(Reply::Error(e) | Reply::ItemError(e)) => Ok(e),
        Ok(other) => Err(ReplyError::Protocol(format!(
            "expected an error frame, found {}",
            kind::name(other.kind())
        ))),
        Err(e) => Err(ReplyError::Protocol(e.to_string())),
    }
}

impl<A: Assemble> Assembler<A> {
    /// Assembles the reply to request `id` with `inner`.
    pub fn new(id: u32, inner: A) -> Self {
        Assembler {
            id,
            inner,
            data: None,
            done: false,
        }
    }

    /// The next frame of the reply: `Some(value)` when it completed the reply. After an
    /// error or the completing frame, no frame may be pushed.
    pub fn push(&mut self, frame: &Frame<'_>) -> Result<Option<A::Output>, ReplyError> {
        let id = self.id;
        if self.done {
            return Err(ReplyError::Protocol(format!(
                "reply {id}: a frame after the reply ended"
            )));
        }
        let r = self.push_inner(frame);
        if !matches!(r, Ok(None)) {
            self.done = true;
        }
        r
    }

    fn push_inner(&mut self, frame: &Frame<'_>) -> Result<Option<A::Output>, ReplyError> {
        let id = self.id;
        check_reply_frame(frame, id)?;
        if frame.kind == kind::ERROR {
            return Err(ReplyError::Remote(decode_error(frame)?));
        }
        let step = if let Some((left, buf)) = &mut self.data {
            match frame.kind {
                kind::DATA => {
                    let len = frame.body.len() as u64;
                    if len == 0 || len > *left {
                        return Err(ReplyError::Protocol(format!(
                            "reply {id}: a data frame of {len} bytes where {left} remain"
                        )));
                    }
                    // Grown as bytes arrive, never sized from the announced length alone.
                    buf.extend_from_slice(frame.body);
                    *left -= len;
                    if *left > 0 {
                        return Ok(None);
                    }
                    let (_, bytes) = self.data.take().expect("in data");
                    self.inner.data(id, Ok(bytes))?
                }
                kind::ITEM_ERROR => {
                    self.data = None;
                    let e = decode_error(frame)?;
                    self.inner.data(id, Err(e))?
                }
                other => {
                    return Err(ReplyError::Protocol(format!(
                        "reply {id}: expected {left} more data bytes, found a frame of kind \
                         0x{other:02x} ({})",
                        kind::name(other)
                    )))
                }
            }
        } else {
            if frame.kind == kind::DATA {
                return Err(ReplyError::Protocol(format!(
                    "reply {id}: a data frame where none was announced"
                )));
            }
            let reply = Reply::decode(frame).map_err(|e| ReplyError::Protocol(e.to_string()))?;
            self.inner.reply(id, reply)?
        };
        self.step(step)
    }

    fn step(&mut self, mut step: Step<A::Output>) -> Result<Option<A::Output>, ReplyError> {
        loop {
            match step {
                Step::More => return Ok(None),
                Step::Done(out) => return Ok(Some(out)),
                Step::Data(0) => step = self.inner.data(self.id, Ok(Vec::new()))?,
                Step::Data(n) => {
                    self.data = Some((n, Vec::new()));
                    return Ok(None);
                }
            }
        }
    }
}

fn unexpected(id: u32, expected: &str, found: &Reply) -> ReplyError {
    ReplyError::Protocol(format!(
        "reply {id}: expected {expected}, found a frame of kind 0x{:02x} ({})",
        found.kind(),
        kind::name(found.kind())
    ))
}

fn end_count(id: u32, what: &str, announced: u64, received: usize) -> ReplyError {
    ReplyError::Protocol(format!(
        "reply {id}: {announced} {what} announced by the end frame, {received} received"
    ))
}

/// A reply that is only its End frame (ping): the item count.
#[derive(Debug, Default)]
pub struct EndOnly;

impl Assemble for EndOnly {
    type Output = u64;
    fn reply(&mut self, id: u32, reply: Reply) -> Result<Step<u64>, ReplyError> {
        match reply {
            Reply::End { items } => Ok(Step::Done(items)),
            other => Err(unexpected(id, "the end frame", &other)),
        }
    }
}

/// The reply to LIST_USERS.
#[derive(Debug, Default)]
pub struct Users(Vec<UserEntry>);

impl Assemble for Users {
    type Output = Vec<UserEntry>;
    fn reply(&mut self, id: u32, reply: Reply) -> Result<Step<Self::Output>, ReplyError> {
        match reply {
            Reply::Users(batch) => {
                self.0.extend(batch);
                Ok(Step::More)
            }
            Reply::End { items } if items == self.0.len() as u64 => {
                Ok(Step::Done(std::mem::take(&mut self.0)))
            }
            Reply::End { items } => Err(end_count(id, "users", items, self.0.len())),
            other => Err(unexpected(id, "users", &other)),
        }
    }
}

/// The reply to LIST_FOLDERS: folder frames, exactly one user-files frame, the end frame
/// counting the folders.
#[derive(Debug, Default)]
pub struct Listing {
    listing: UserListing,
    files_seen: bool,
}

impl Assemble for Listing {
    type Output = UserListing;
    fn reply(&mut self, id: u32, reply: Reply) -> Result<Step<Self::Output>, ReplyError> {
        match reply {
            Reply::Folders(batch) if !self.files_seen => {
                self.listing.folders.extend(batch);
                Ok(Step::More)
            }
            Reply::UserFiles(files) if !self.files_seen => {
                self.listing.user_files = files;
                self.files_seen = true;
                Ok(Step::More)
            }
            Reply::End { items } if self.files_seen => {
                let n = self.listing.folders.len();
                if items != n as u64 {
                    return Err(end_count(id, "folders", items, n));
                }
                Ok(Step::Done(std::mem::take(&mut self.listing)))
            }
            other if self.files_seen => Err(unexpected(id, "the end frame", &other)),
            other => Err(unexpected(id, "folders or user files", &other)),
        }
    }
}

/// The reply to COPY_META: each meta file announced then sent in data frames, at most once
/// each; cyrus.header and cyrus.index required.
#[derive(Debug)]
pub struct Meta {
    uniqueid: String,
    current: Option<(MetaFile, FileStat)>,
    files: Vec<(MetaFile, Vec<u8>, FileStat)>,
}

impl Meta {
    /// For the copy of folder `uniqueid` (what the request asked for).
    pub fn new(uniqueid: &str) -> Self {
        Meta {
            uniqueid: uniqueid.to_string(),
            current: None,
            files: Vec::new(),
        }
    }

    fn finish(&mut self, id: u32) -> Result<MetaCopy, ReplyError> {
        let mut header = None;
        let mut index = None;
        let mut annotations = None;
        for (k, bytes, stat) in std::mem::take(&mut self.files) {
            let slot = match k {
                MetaFile::Header => &mut header,
                MetaFile::Index => &mut index,
                MetaFile::Annotations => &mut annotations,
            };
            if slot.replace((bytes, stat)).is_some() {
                return Err(ReplyError::Protocol(format!(
                    "reply {id}: {} sent twice",
                    k.file_name()
                )));
            }
        }
        match (header, index) {
            (Some(header), Some(index)) => Ok(MetaCopy {
                uniqueid: std::mem::take(&mut self.uniqueid),
                header,
                index,
                annotations,
            }),
            _ => Err(ReplyError::Protocol(format!(
                "reply {id}: a meta copy without cyrus.header or cyrus.index"
            ))),
        }
    }
}

impl Assemble for Meta {
    type Output = MetaCopy;
    fn reply(&mut self, id: u32, reply: Reply) -> Result<Step<MetaCopy>, ReplyError> {
        match reply {
            Reply::MetaFile { kind, stat, size } => {
                self.current = Some((kind, stat));
                Ok(Step::Data(size))
            }
            Reply::End { items } if items == self.files.len() as u64 => {
                self.finish(id).map(Step::Done)
            }
            Reply::End { items } => Err(end_count(id, "meta files", items, self.files.len())),
            other => Err(unexpected(id, "a meta file or the end", &other)),
        }
    }

    fn data(
        &mut self,
        id: u32,
        data: Result<Vec<u8>, ErrorReply>,
    ) -> Result<Step<MetaCopy>, ReplyError> {
        let Some((kind, stat)) = self.current.take() else {
            return Err(ReplyError::Protocol(format!(
                "reply {id}: data where none was announced"
            )));
        };
        match data {
            Ok(bytes) => {
                self.files.push((kind, bytes, stat));
                Ok(Step::More)
            }
            Err(e) => Err(ReplyError::Protocol(format!(
                "reply {id}: an item error inside {}: {e}",
                kind.file_name()
            ))),
        }
    }
}

/// The reply to FETCH_USER_FILES: one answer per file asked, in order.
#[derive(Debug)]
pub struct UserFiles {
    asked: usize,
    current: Option<FileStat>,
    out: Vec<UserFile>,
}

impl UserFiles {
    /// For a request that asked for `asked` files.
    pub fn new(asked: usize) -> Self {
        UserFiles {
            asked,
            current: None,
            out: Vec::new(),
        }
    }

    fn item(&mut self, id: u32, file: UserFile) -> Result<Step<Vec<UserFile>>, ReplyError> {
        if self.out.len() == self.asked {
            return Err(ReplyError::Protocol(format!(
                "reply {id}: more answers than the {} user files asked",
                self.asked
            )));
        }
        self.out.push(file);
        Ok(Step::More)
    }
}

impl Assemble for UserFiles {
    type Output = Vec<UserFile>;
    fn reply(&mut self, id: u32, reply: Reply) -> Result<Step<Self::Output>, ReplyError> {
        match reply {
            Reply::UserFile { stat, size, .. } => {
                self.current = Some(stat);
                Ok(Step::Data(size))
            }
            Reply::Absent { .. } => self.item(id, UserFile::Absent),
            Reply::ItemError(e) => self.item(id, UserFile::Failed(e)),
            Reply::End { items } if items == self.out.len() as u64 => {
                if self.out.len() != self.asked {
                    return Err(ReplyError::Protocol(format!(
                        "reply {id}: {} user files asked, {} answered",
                        self.asked,
                        self.out.len()
                    )));
                }
                Ok(Step::Done(std::mem::take(&mut self.out)))
            }
            Reply::End { items } => Err(end_count(id, "user files", items, self.out.len())),
            other => Err(unexpected(id, "a user file or the end", &other)),
        }
    }

    fn data(
        &mut self,
        id: u32,
        data: Result<Vec<u8>, ErrorReply>,
    ) -> Result<Step<Self::Output>, ReplyError> {
        let Some(stat) = self.current.take() else {
            return Err(ReplyError::Protocol(format!(
                "reply {id}: data where none was announced"
            )));
        };
        let file = match data {
            Ok(bytes) => UserFile::Found { bytes, stat },
            Err(e) => UserFile::Failed(e),
        };
        self.item(id, file)
    }
}

/// Where a streamed message fetch is (the client hands message bytes to its caller as they
/// arrive, so this reply is not assembled into one value): which frame may come next, how
/// many bytes of the current message and data frame are left, and the item count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStream {
    id: u32,
    /// Bytes of the current message not yet received.
    item_left: u64,
    items: u64,
    done: bool,
}

/// What the next frame of a message stream was.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A message of `size` bytes follows in data frames.
    Message {
        /// Its UID.
        uid: u32,
        /// Its size.
        size: u64,
    },
    /// Expunged and removed meanwhile.
    Gone {
        /// Its UID.
        uid: u32,
    },
    /// The server could not read this message (or the rest of it, when it came among its
    /// data frames); the stream goes on.
    Failed(ErrorReply),
    /// `len` bytes of the current message follow (a data frame's body).
    Data {
        /// Bytes in this frame.
        len: u32,
    },
    /// The reply ended, every message accounted for.
    End,
}

impl MessageStream {
    /// The stream answering request `id`.
    pub fn new(id: u32) -> Self {
        MessageStream {
            id,
            item_left: 0,
            items: 0,
            done: false,
        }
    }

    /// Whether the End frame was seen (or the reply failed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes of the current message not yet announced by a data frame.
    pub fn item_left(&self) -> u64 {
        self.item_left
    }

    /// The next frame. `frame.body` may be empty for a data frame whose body the caller
    /// reads itself (only `data_len` is looked at then).
    pub fn push(&mut self, frame: &Frame<'_>, data_len: u32) -> Result<StreamEvent, ReplyError> {
        let r = self.push_inner(frame, data_len);
        match &r {
            Err(_) | Ok(StreamEvent::End) => self.done = true,
            Ok(StreamEvent::Failed(_)) => self.item_left = 0,
            _ => {}
        }
        r
    }

    fn push_inner(&mut self, frame: &Frame<'_>, data_len: u32) -> Result<StreamEvent, ReplyError> {
        let id = self.id;
        if self.done {
            return Err(ReplyError::Protocol(format!(
                "reply {id}: a frame after the reply ended"
            )));
        }
        check_reply_frame(frame, id)?;
        if frame.kind == kind::ERROR {
            return Err(ReplyError::Remote(decode_error(frame)?));
        }
        if self.item_left > 0 {
            return match frame.kind {
                kind::DATA if data_len > 0 && u64::from(data_len) <= self.item_left => {
                    self.item_left -= u64::from(data_len);
                    Ok(StreamEvent::Data { len: data_len })
                }
                kind::ITEM_ERROR => Ok(StreamEvent::Failed(decode_error(frame)?)),
                other => Err(ReplyError::Protocol(format!(
                    "reply {id}: expected {} more message bytes, found a frame of kind \
                     0x{other:02x} ({}, {data_len} bytes)",
                    self.item_left,
                    kind::name(other),
                ))),
            };
        }
        if frame.kind == kind::DATA {
            return Err(ReplyError::Protocol(format!(
                "reply {id}: a data frame where none was announced"
            )));
        }
        match Reply::decode(frame).map_err(|e| ReplyError::Protocol(e.to_string()))? {
            Reply::Message { uid, size } => {
                self.items += 1;
                self.item_left = size;
                Ok(StreamEvent::Message { uid, size })
            }
            Reply::Gone { uid } => {
                self.items += 1;
                Ok(StreamEvent::Gone { uid })
            }
            Reply::ItemError(e) => {
                self.items += 1;
                Ok(StreamEvent::Failed(e))
            }
            Reply::End { items } if items == self.items => Ok(StreamEvent::End),
            Reply::End { items } => Err(end_count(id, "messages", items, self.items as usize)),
            other => Err(unexpected(id, "a message", &other)),
        }
    }
}

#[cfg(test)]
mod tests;
