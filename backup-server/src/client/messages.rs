//! The reply to a message fetch, handed out message by message, each message a reader over
//! its data frames: a message's bytes are never held whole unless the caller asks. Which
//! frame may come when is `formats::protocol::assemble::MessageStream`; this file moves the
//! bytes.

use super::{Client, ClientError};
use formats::protocol::assemble::{self, StreamEvent};
use formats::protocol::{kind, ErrorReply, Frame};
use std::io::{self, Read};

/// One answer of a message stream.
#[derive(Debug)]
pub enum Fetched<'s> {
    /// A message; read its bytes from `body` (what is not read is skipped).
    Message {
        /// Its UID.
        uid: u32,
        /// Its size in bytes.
        size: u64,
        /// Its bytes.
        body: MessageBody<'s>,
    },
    /// Expunged and removed meanwhile.
    Gone {
        /// Its UID.
        uid: u32,
    },
    /// The server could not read this one (the text names the file); the stream goes on.
    Failed(ErrorReply),
}

/// One message as [`MessageStream::collect_all`] returns it: its bytes, `Err(None)` when it
/// is gone, `Err(Some(e))` when the server could not read it.
pub type Collected = Result<Vec<u8>, Option<ErrorReply>>;

/// The reply to a message fetch, message by message.
#[derive(Debug)]
pub struct MessageStream<'c> {
    client: &'c mut Client,
    st: StreamState,
}

/// Where a message stream is: the protocol state, and the bytes of the current data frame
/// not yet read off the socket.
#[derive(Debug)]
struct StreamState {
    id: u32,
    proto: assemble::MessageStream,
    frame_left: u32,
}

impl<'c> MessageStream<'c> {
    pub(super) fn new(client: &'c mut Client, id: u32) -> Self {
        MessageStream {
            client,
            st: StreamState {
                id,
                proto: assemble::MessageStream::new(id),
                frame_left: 0,
            },
        }
    }

    /// The next message, or `None` at the end of the reply. An error from the server for
    /// the whole request (unknown user or folder) is [`ClientError::Remote`].
    pub fn next_message(&mut self) -> Result<Option<Fetched<'_>>, ClientError> {
        let (client, st) = (&mut *self.client, &mut self.st);
        if st.proto.is_done() {
            return Ok(None);
        }
        // Skip what the caller did not read of the previous message.
        let mut buf = [0u8; 8192];
        while st.frame_left > 0 || st.proto.item_left() > 0 {
            match read_data(client, st, &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(DataError::Item(_)) => break,
                Err(DataError::Client(e)) => return Err(e),
            }
        }
        let event = next_event(client, st)?;
        match event {
            StreamEvent::Message { uid, size } => Ok(Some(Fetched::Message {
                uid,
                size,
                body: MessageBody { client, st },
            })),
            StreamEvent::Gone { uid } => Ok(Some(Fetched::Gone { uid })),
            StreamEvent::Failed(e) => Ok(Some(Fetched::Failed(e))),
            StreamEvent::End => {
                client.partial = None;
                Ok(None)
            }
            StreamEvent::Data { .. } => unreachable!("no message bytes were left"),
        }
    }

    /// Reads every remaining message into memory, in request order: `Ok(bytes)`,
    /// `Err(None)` for a message gone, `Err(Some(e))` for one the server could not read.
    pub fn collect_all(mut self) -> Result<Vec<Collected>, ClientError> {
        let mut out = Vec::new();
        while let Some(item) = self.next_message()? {
            match item {
                Fetched::Message { mut body, .. } => {
                    let mut bytes = Vec::new();
                    match body.read_to_end(&mut bytes) {
                        Ok(_) => out.push(Ok(bytes)),
                        Err(e) => out.push(Err(Some(body.item_error(e)?))),
                    }
                }
                Fetched::Gone { .. } => out.push(Err(None)),
                Fetched::Failed(e) => out.push(Err(Some(e))),
            }
        }
        Ok(out)
    }
}

impl Drop for MessageStream<'_> {
    fn drop(&mut self) {
        // Where the reply was left, so that the next call can skip the rest of it.
        self.client.partial =
            (!self.st.proto.is_done()).then_some((self.st.id, self.st.frame_left));
    }
}

/// Reads the next frame header (and the body of anything but a data frame) and steps the
/// protocol state with it. A Remote error ends the reply: the connection is in step again.
fn next_event(client: &mut Client, st: &mut StreamState) -> Result<StreamEvent, ClientError> {
    let h = client.read_header()?;
    let body = if h.kind == kind::DATA && h.id == st.id {
        Vec::new()
    } else {
        client.read_body(&h)?
    };
    let frame = Frame {
        kind: h.kind,
        id: h.id,
        body: &body,
    };
    match st.proto.push(&frame, h.len) {
        Ok(StreamEvent::Data { len }) => {
            st.frame_left = len;
            Ok(StreamEvent::Data { len })
        }
        Ok(ev) => Ok(ev),
        Err(e) => {
            if matches!(e, assemble::ReplyError::Remote(_)) {
                client.partial = None;
            }
            Err(client.reply_error(e))
        }
    }
}

enum DataError {
    /// The server gave up on this message; the stream goes on.
    Item(ErrorReply),
    Client(ClientError),
}

/// Reads bytes of the current message from its data frames.
fn read_data(
    client: &mut Client,
    st: &mut StreamState,
    buf: &mut [u8],
) -> Result<usize, DataError> {
    if buf.is_empty() || (st.frame_left == 0 && st.proto.item_left() == 0) {
        return Ok(0);
    }
    if st.frame_left == 0 {
        match next_event(client, st).map_err(DataError::Client)? {
            StreamEvent::Data { .. } => {}
            StreamEvent::Failed(e) => return Err(DataError::Item(e)),
            other => unreachable!("message bytes were due, the protocol state gave {other:?}"),
        }
    }
    let n = buf.len().min(st.frame_left as usize);
    let got = match client.reader.read(&mut buf[..n]) {
        Ok(0) => {
            return Err(DataError::Client(client.io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ))))
        }
        Ok(got) => got,
        Err(e) => return Err(DataError::Client(client.io(e))),
    };
    st.frame_left -= got as u32;
    Ok(got)
}

/// One message's bytes, read from the stream's data frames.
#[derive(Debug)]
pub struct MessageBody<'s> {
    client: &'s mut Client,
    st: &'s mut StreamState,
}

/// The payload of the `io::Error` a [`MessageBody`] returns when the server could not
/// finish sending the message ([`MessageBody::item_error`] recovers it).
#[derive(Debug)]
struct ItemFailed(ErrorReply);

impl std::fmt::Display for ItemFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backupd could not send this message: {}", self.0)
    }
}

impl std::error::Error for ItemFailed {}

/// The payload of the `io::Error` a [`MessageBody`] returns when the connection or the
/// request failed.
#[derive(Debug)]
struct ConnFailed(ClientError);

impl std::fmt::Display for ConnFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnFailed {}

impl MessageBody<'_> {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.st.proto.item_left() + u64::from(self.st.frame_left)
    }

    /// Turns an error from [`Read::read`] back into what happened: `Ok(e)` when the
    /// server gave up on this message only (the stream goes on), `Err` when the request
    /// or the connection failed.
    pub fn item_error(&self, e: io::Error) -> Result<ErrorReply, ClientError> {
        let addr = self.client.addr.clone();
        match e.into_inner() {
            Some(inner) => match inner.downcast::<ItemFailed>() {
                Ok(item) => Ok(item.0),
                Err(inner) => match inner.downcast::<ConnFailed>() {
                    Ok(c) => Err(c.0),
                    Err(other) => Err(ClientError::Io {
                        addr,
                        source: io::Error::other(other),
                    }),
                },
            },
            None => Err(ClientError::Broken { addr }),
        }
    }
}

impl Read for MessageBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match read_data(self.client, self.st, buf) {
            Ok(n) => Ok(n),
            Err(DataError::Item(e)) => Err(io::Error::other(ItemFailed(e))),
            Err(DataError::Client(e)) => Err(io::Error::other(ConnFailed(e))),
        }
    }
}
