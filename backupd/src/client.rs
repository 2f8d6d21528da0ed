//! The backup host's side of the protocol: connect, authenticate, ask.
//!
//! Blocking `std::net`, on purpose: the backup-server's workers are plain threads doing
//! blocking file and SQLite work, one connection each; a runtime would add nothing there.
//!
//! Requests can be pipelined: `send_*` writes a request and returns a [`Pending`] ticket;
//! [`Client::recv`] (and [`Client::recv_messages`]) read the replies, which come in the
//! order the requests were sent. The one-call methods (`list_folders`, `copy_meta`, ...)
//! are send-then-receive. Message bytes are never held whole unless the caller asks:
//! [`MessageStream`] hands out each message as a [`Read`]er over its data frames.
//!
//! Errors: [`ClientError::Remote`] is the server's answer to one request (unknown user,
//! ...): the connection stays usable. Every other error leaves the connection broken; the
//! client refuses further calls and the caller connects again.

use crate::access::{MetaCopy, UserEntry, UserFileId, UserListing};
use crate::auth::{self, Secret};
use formats::protocol::{
    self as wire, kind, Auth, AuthOk, ErrorReply, FrameHeader, Greeting, Reply, Request, HEADER_LEN,
};
use formats::FileStat;
use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait for the TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for any single read or write once connected (`None`: forever). Set it
    /// above the time the server may need for one spool operation (a user listing on a
    /// busy disk).
    pub io_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// What went wrong talking to backupd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed (refused, reset, timed out); it is unusable now.
    #[error("backupd at {addr}: {source}")]
    Io {
        /// The server.
        addr: String,
        /// What the system said.
        source: io::Error,
    },
    /// The server sent something the protocol does not allow; the connection is unusable.
    #[error("backupd at {addr}: protocol error: {message}")]
    Protocol {
        /// The server.
        addr: String,
        /// Expected what, found what.
        message: String,
    },
    /// The server failed to prove it holds the secret: not our backupd.
    #[error("backupd at {addr}: the server's proof does not match the secret (wrong secret on one side, or not our server)")]
    ServerProof {
        /// The server.
        addr: String,
    },
    /// The server refused the connection (authentication failed, busy, shutting down,
    /// timeout); the connection is closed.
    #[error("backupd at {addr}: {error}")]
    Refused {
        /// The server.
        addr: String,
        /// What it said.
        error: ErrorReply,
    },
    /// The server answered this request with an error; the connection is still usable.
    #[error("backupd at {addr}: {error}")]
    Remote {
        /// The server.
        addr: String,
        /// What it said.
        error: ErrorReply,
    },
    /// An earlier error broke the connection.
    #[error("backupd at {addr}: connection unusable after an earlier error")]
    Broken {
        /// The server.
        addr: String,
    },
    /// Calls out of order: replies come in request order.
    #[error("client misuse: {0}")]
    Misuse(String),
}

impl ClientError {
    /// Whether the connection is still usable after this error.
    pub fn connection_usable(&self) -> bool {
        matches!(self, ClientError::Remote { .. } | ClientError::Misuse(_))
    }

    /// The server's error reply, if this is one.
    pub fn remote(&self) -> Option<&ErrorReply> {
        match self {
            ClientError::Remote { error, .. } | ClientError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A request sent whose reply has not been read yet; `T` is what [`Client::recv`] returns.
#[must_use = "every reply must be received, in order"]
#[derive(Debug)]
pub struct Pending<T> {
    id: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T> Pending<T> {
    /// The request id on the wire.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Marker for a pending message fetch: receive it with [`Client::recv_messages`].
#[derive(Debug)]
pub struct Messages(());

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

/// A reply type the client can read whole.
pub trait ReplyKind: Sized {
    /// Reads the reply frames after the request was sent.
    #[doc(hidden)]
    fn read(client: &mut Client, id: u32, ctx: &str) -> Result<Self, ClientError>;
}

/// A connection to backupd, authenticated.
#[derive(Debug)]
pub struct Client {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    server: String,
    version: u16,
    next_id: u32,
    /// Requests sent whose replies are not yet read, oldest first, with what the reply
    /// reader needs to know of the request (a meta copy's unique id).
    pending: VecDeque<(u32, String)>,
    /// A reply only partly read (a message stream dropped early), with the bytes left in
    /// the data frame it stopped in: skipped before the next reply is read.
    partial: Option<(u32, u32)>,
    broken: bool,
}

impl Client {
    /// Connects to `addr`, checks the greeting, proves the secret and checks the server's
    /// proof in turn.
    pub fn connect(
        addr: impl ToSocketAddrs,
        secret: &Secret,
        opts: &ClientOptions,
    ) -> Result<Client, ClientError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Io {
                addr: "?".into(),
                source,
            })?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, opts.connect_timeout) {
                Ok(s) => {
                    stream = Some((s, *a));
                    break;
                }
                Err(e) => last = Some((e, *a)),
            }
        }
        let (stream, peer) = match (stream, last) {
            (Some(s), _) => s,
            (None, Some((source, a))) => {
                return Err(ClientError::Io {
                    addr: a.to_string(),
                    source,
                })
            }
            (None, None) => {
                return Err(ClientError::Io {
                    addr: "?".into(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no address to connect to"),
                })
            }
        };
        let addr = peer.to_string();
        let io_err = |source| ClientError::Io {
            addr: addr.clone(),
            source,
        };
        stream.set_nodelay(true).map_err(io_err)?;
        stream.set_read_timeout(opts.io_timeout).map_err(io_err)?;
        stream.set_write_timeout(opts.io_timeout).map_err(io_err)?;
        let write_half = stream.try_clone().map_err(io_err)?;
        let mut client = Client {
            addr: addr.clone(),
            reader: BufReader::with_capacity(256 * 1024, stream),
            writer: BufWriter::with_capacity(64 * 1024, write_half),
            server: String::new(),
            version: 0,
            next_id: 1,
            pending: VecDeque::new(),
            partial: None,
            broken: false,
        };
        client.handshake(secret)?;
        Ok(client)
    }

    /// A frame of the handshake; an error frame (busy, authentication failed, ...) is the
    /// server refusing the connection.
    fn handshake_frame(&mut self) -> Result<(FrameHeader, Vec<u8>), ClientError> {
        let (h, body) = self.read_frame()?;
        if h.kind == kind::ERROR {
            let frame = wire::Frame {
                kind: h.kind,
                id: h.id,
                body: &body,
            };
            let error = self.decode_error(&frame)?;
            return Err(self.fail(ClientError::Refused {
                addr: self.addr.clone(),
                error,
            }));
        }
        Ok((h, body))
    }

    fn handshake(&mut self, secret: &Secret) -> Result<(), ClientError> {
        let (h, body) = self.handshake_frame().map_err(|e| match e {
            ClientError::Protocol { addr, message } => ClientError::Protocol {
                addr,
                message: format!("not a backupd greeting: {message}"),
            },
            other => other,
        })?;
        let frame = wire::Frame {
            kind: h.kind,
            id: h.id,
            body: &body,
        };
        let g = Greeting::decode(&frame).map_err(|e| self.protocol(e.to_string()))?;
        if !(g.min_version..=g.max_version).contains(&wire::VERSION) {
            return Err(self.protocol(format!(
                "the server speaks protocol versions {} to {}, this client {}",
                g.min_version,
                g.max_version,
                wire::VERSION
            )));
        }
        let nonce = auth::nonce().map_err(|e| ClientError::Io {
            addr: self.addr.clone(),
            source: io::Error::other(format!("no random nonce: {e}")),
        })?;
        let mut out = Vec::new();
        Auth {
            version: wire::VERSION,
            nonce,
            proof: secret.client_proof(wire::VERSION, &g.nonce, &nonce),
        }
        .encode(&mut out)
        .map_err(|e| self.protocol(e.to_string()))?;
        self.write(&out)?;
        self.flush()?;
        let (h, body) = self.handshake_frame()?;
        let frame = wire::Frame {
            kind: h.kind,
            id: h.id,
            body: &body,
        };
        let ok = AuthOk::decode(&frame).map_err(|e| self.protocol(e.to_string()))?;
        if !secret.verify_server(wire::VERSION, &g.nonce, &nonce, &ok.proof) {
            return Err(self.fail(ClientError::ServerProof {
                addr: self.addr.clone(),
            }));
        }
        self.server = g.server;
        self.version = wire::VERSION;
        Ok(())
    }

    /// What the server called itself in its greeting.
    pub fn server_name(&self) -> &str {
        &self.server
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The protocol version in use.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Requests sent whose replies have not been received.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    // ---- one-call requests

    /// Checks the connection.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        let p = self.send::<u64>(&Request::Ping, String::new())?;
        self.recv(p).map(drop)
    }

    /// Every user with the partition of their INBOX.
    pub fn list_users(&mut self) -> Result<Vec<UserEntry>, ClientError> {
        let p = self.send(&Request::ListUsers, String::new())?;
        self.recv(p)
    }

    /// One user's folders and files, stat data only.
    pub fn list_folders(&mut self, user: &str) -> Result<UserListing, ClientError> {
        let p = self.send_list_folders(user)?;
        self.recv(p)
    }

    /// One folder's meta files, copied under Cyrus's locks.
    pub fn copy_meta(&mut self, user: &str, uniqueid: &str) -> Result<MetaCopy, ClientError> {
        let p = self.send_copy_meta(user, uniqueid)?;
        self.recv(p)
    }

    /// Message files of one folder by UID: a stream of messages, in the order of `uids`.
    pub fn fetch_messages(
        &mut self,
        user: &str,
        uniqueid: &str,
        uids: &[u32],
    ) -> Result<MessageStream<'_>, ClientError> {
        let p = self.send_fetch_messages(user, uniqueid, uids)?;
        self.recv_messages(p)
    }

    /// Per-user files, in the order of `ids`.
    pub fn fetch_user_files(
        &mut self,
        user: &str,
        ids: &[UserFileId],
    ) -> Result<Vec<(UserFileId, UserFile)>, ClientError> {
        let p = self.send_fetch_user_files(user, ids)?;
        let files = self.recv(p)?;
        // The reply has one answer per file asked, in order (checked by recv).
        Ok(ids.iter().cloned().zip(files).collect())
    }

    // ---- pipelining

    /// Sends a folder listing request.
    pub fn send_list_folders(&mut self, user: &str) -> Result<Pending<UserListing>, ClientError> {
        self.send(
            &Request::ListFolders {
                user: user.to_string(),
            },
            String::new(),
        )
    }

    /// Sends a meta copy request.
    pub fn send_copy_meta(
        &mut self,
        user: &str,
        uniqueid: &str,
    ) -> Result<Pending<MetaCopy>, ClientError> {
        self.send(
            &Request::CopyMeta {
                user: user.to_string(),
                uniqueid: uniqueid.to_string(),
            },
            uniqueid.to_string(),
        )
    }

    /// Sends a message fetch; receive it with [`Client::recv_messages`].
    pub fn send_fetch_messages(
        &mut self,
        user: &str,
        uniqueid: &str,
        uids: &[u32],
    ) -> Result<Pending<Messages>, ClientError> {
        self.send(
            &Request::FetchMessages {
                user: user.to_string(),
                uniqueid: uniqueid.to_string(),
                uids: uids.to_vec(),
            },
            String::new(),
        )
    }

    /// Sends a user file fetch; the reply holds one answer per id, in the same order.
    pub fn send_fetch_user_files(
        &mut self,
        user: &str,
        ids: &[UserFileId],
    ) -> Result<Pending<Vec<UserFile>>, ClientError> {
        self.send(
            &Request::FetchUserFiles {
                user: user.to_string(),
                ids: ids.iter().cloned().map(Into::into).collect(),
            },
            ids.len().to_string(),
        )
    }

    /// Sends any request; the reply is read as a `T` by [`Client::recv`]. Requests are
    /// buffered and go out when a reply is read (or the buffer fills). `ctx` is what the
    /// reader of `T` needs from the request (a meta copy's unique id; else empty).
    fn send<T>(&mut self, req: &Request, ctx: String) -> Result<Pending<T>, ClientError> {
        self.usable()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut out = Vec::new();
        req.encode(id, &mut out)
            .map_err(|e| ClientError::Misuse(format!("cannot send {req:?}: {e}")))?;
        self.write(&out)?;
        self.pending.push_back((id, ctx));
        Ok(Pending {
            id,
            _t: PhantomData,
        })
    }

    /// Reads the reply to `p`, which must be the oldest request not yet received.
    pub fn recv<T: ReplyKind>(&mut self, p: Pending<T>) -> Result<T, ClientError> {
        let ctx = self.begin_reply(p.id)?;
        T::read(self, p.id, &ctx)
    }

    /// Starts reading the reply to a message fetch, which must be the oldest request not
    /// yet received.
    pub fn recv_messages(
        &mut self,
        p: Pending<Messages>,
    ) -> Result<MessageStream<'_>, ClientError> {
        self.begin_reply(p.id)?;
        self.partial = Some((p.id, 0));
        Ok(MessageStream {
            client: self,
            st: StreamState {
                id: p.id,
                item_left: 0,
                frame_left: 0,
                items: 0,
                done: false,
            },
        })
    }

    /// Skips what is left of a partly read reply, then checks `id` is next.
    fn begin_reply(&mut self, id: u32) -> Result<String, ClientError> {
        self.usable()?;
        if let Some((partial, frame_left)) = self.partial.take() {
            self.skip_reply(partial, frame_left)?;
        }
        match self.pending.front() {
            Some((front, _)) if *front == id => {
                let (_, ctx) = self.pending.pop_front().expect("front exists");
                self.flush()?;
                Ok(ctx)
            }
            Some(&(front, _)) => Err(ClientError::Misuse(format!(
                "replies come in request order: receive request {front} before request {id}"
            ))),
            None => Err(ClientError::Misuse(format!("request {id} is not pending"))),
        }
    }

    /// Reads and drops the rest of reply `id`, up to its End or Error, starting
    /// `frame_left` bytes before the end of a data frame.
    fn skip_reply(&mut self, id: u32, frame_left: u32) -> Result<(), ClientError> {
        self.discard(u64::from(frame_left))?;
        loop {
            let h = self.read_header()?;
            self.check_id(&h, id)?;
            if h.kind == kind::DATA {
                self.discard(h.len as u64)?;
                continue;
            }
            let body = self.read_body(&h)?;
            if matches!(h.kind, kind::END | kind::ERROR) {
                let _ = body;
                return Ok(());
            }
        }
    }

    // ---- frames

    fn usable(&self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken {
                addr: self.addr.clone(),
            });
        }
        Ok(())
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        if !e.connection_usable() {
            self.broken = true;
        }
        e
    }

    fn protocol(&mut self, message: impl Into<String>) -> ClientError {
        let e = ClientError::Protocol {
            addr: self.addr.clone(),
            message: message.into(),
        };
        self.fail(e)
    }

    fn io(&mut self, source: io::Error) -> ClientError {
        let e = ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.fail(e)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes).map_err(|e| self.io(e))
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.flush().map_err(|e| self.io(e))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ClientError> {
        self.reader.read_exact(buf).map_err(|e| {
            let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "connection closed by the server")
            } else {
                e
            };
            self.io(e)
        })
    }

    fn read_header(&mut self) -> Result<FrameHeader, ClientError> {
        let mut head = [0u8; HEADER_LEN];
        self.read_exact(&mut head)?;
        FrameHeader::decode(&head).map_err(|e| self.protocol(e.to_string()))
    }

    fn read_body(&mut self, h: &FrameHeader) -> Result<Vec<u8>, ClientError> {
        // The header was checked: len is at most MAX_BODY.
        let mut body = vec![0u8; h.len as usize];
        self.read_exact(&mut body)?;
        Ok(body)
    }

    fn read_frame(&mut self) -> Result<(FrameHeader, Vec<u8>), ClientError> {
        let h = self.read_header()?;
        let body = self.read_body(&h)?;
        Ok((h, body))
    }

    fn discard(&mut self, mut n: u64) -> Result<(), ClientError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn decode_error(&mut self, frame: &wire::Frame<'_>) -> Result<ErrorReply, ClientError> {
        match Reply::decode(frame) {
            Ok(Reply::Error(e)) => Ok(e),
            Ok(other) => Err(self.protocol(format!("expected an error frame, found {other:?}"))),
            Err(e) => Err(self.protocol(e.to_string())),
        }
    }

    /// A frame of reply `id`: its id must match, except the server's connection-level
    /// error (id 0: shutting down, timeout), which ends the connection.
    fn check_id(&mut self, h: &FrameHeader, id: u32) -> Result<(), ClientError> {
        if h.id == id {
            return Ok(());
        }
        if h.id == 0 && h.kind == kind::ERROR {
            let body = self.read_body(h)?;
            let frame = wire::Frame {
                kind: h.kind,
                id: h.id,
                body: &body,
            };
            let error = self.decode_error(&frame)?;
            return Err(self.fail(ClientError::Refused {
                addr: self.addr.clone(),
                error,
            }));
        }
        Err(self.protocol(format!(
            "expected a frame of reply {id}, found one of reply {} (kind 0x{:02x})",
            h.id, h.kind
        )))
    }

    /// The next non-data frame of reply `id`, decoded. An Error frame becomes
    /// [`ClientError::Remote`].
    fn next_reply(&mut self, id: u32) -> Result<Reply, ClientError> {
        let h = self.read_header()?;
        self.check_id(&h, id)?;
        if h.kind == kind::DATA {
            return Err(self.protocol(format!("reply {id}: a data frame where none was announced")));
        }
        let body = self.read_body(&h)?;
        let frame = wire::Frame {
            kind: h.kind,
            id: h.id,
            body: &body,
        };
        match Reply::decode(&frame) {
            Ok(Reply::Error(error)) => Err(ClientError::Remote {
                addr: self.addr.clone(),
                error,
            }),
            Ok(r) => Ok(r),
            Err(e) => Err(self.protocol(e.to_string())),
        }
    }

    /// Reads `size` bytes of data frames of reply `id` into memory. `Ok(Err(_))`: an
    /// item error took the place of the rest.
    fn read_data(
        &mut self,
        id: u32,
        size: u64,
    ) -> Result<Result<Vec<u8>, ErrorReply>, ClientError> {
        // Grown as bytes arrive, never sized from the announced length alone.
        let mut out = Vec::with_capacity(size.min(1 << 20) as usize);
        let mut left = size;
        while left > 0 {
            let h = self.read_header()?;
            self.check_id(&h, id)?;
            match h.kind {
                kind::DATA => {
                    if h.len == 0 || u64::from(h.len) > left {
                        return Err(self.protocol(format!(
                            "reply {id}: a data frame of {} bytes where {left} remain",
                            h.len
                        )));
                    }
                    let start = out.len();
                    out.resize(start + h.len as usize, 0);
                    self.read_exact(&mut out[start..])?;
                    left -= u64::from(h.len);
                }
                kind::ITEM_ERROR | kind::ERROR => {
                    let body = self.read_body(&h)?;
                    let frame = wire::Frame {
                        kind: h.kind,
                        id: h.id,
                        body: &body,
                    };
                    return match Reply::decode(&frame) {
                        Ok(Reply::ItemError(e)) => Ok(Err(e)),
                        Ok(Reply::Error(error)) => Err(ClientError::Remote {
                            addr: self.addr.clone(),
                            error,
                        }),
                        Ok(_) => unreachable!("kind checked"),
                        Err(e) => Err(self.protocol(e.to_string())),
                    };
                }
                other => {
                    return Err(self.protocol(format!(
                        "reply {id}: expected {left} more data bytes, found a frame of kind 0x{other:02x} ({})",
                        kind::name(other)
                    )))
                }
            }
        }
        Ok(Ok(out))
    }

    fn expect_end(&mut self, id: u32, items: u64) -> Result<(), ClientError> {
        match self.next_reply(id)? {
            Reply::End { items: n } if n == items => Ok(()),
            Reply::End { items: n } => Err(self.protocol(format!(
                "reply {id}: the end frame counts {n} items, {items} were received"
            ))),
            other => Err(self.protocol(format!(
                "reply {id}: expected the end frame, found {}",
                kind::name(other.kind())
            ))),
        }
    }

    fn unexpected(&mut self, id: u32, expected: &str, found: &Reply) -> ClientError {
        self.protocol(format!(
            "reply {id}: expected {expected}, found a frame of kind 0x{:02x} ({})",
            found.kind(),
            kind::name(found.kind())
        ))
    }
}

impl ReplyKind for u64 {
    fn read(client: &mut Client, id: u32, _: &str) -> Result<Self, ClientError> {
        match client.next_reply(id)? {
            Reply::End { items } => Ok(items),
            other => Err(client.unexpected(id, "the end frame", &other)),
        }
    }
}

impl ReplyKind for Vec<UserEntry> {
    fn read(client: &mut Client, id: u32, _: &str) -> Result<Self, ClientError> {
        let mut users = Vec::new();
        loop {
            match client.next_reply(id)? {
                Reply::Users(batch) => users.extend(batch.into_iter().map(UserEntry::from)),
                Reply::End { items } if items == users.len() as u64 => return Ok(users),
                Reply::End { items } => {
                    return Err(client.protocol(format!(
                        "reply {id}: {items} users announced, {} received",
                        users.len()
                    )))
                }
                other => return Err(client.unexpected(id, "users", &other)),
            }
        }
    }
}

impl ReplyKind for UserListing {
    fn read(client: &mut Client, id: u32, _: &str) -> Result<Self, ClientError> {
        let mut listing = UserListing::default();
        loop {
            match client.next_reply(id)? {
                Reply::Folders(batch) => listing.folders.extend(batch.into_iter().map(Into::into)),
                Reply::UserFiles(files) => {
                    listing.user_files = files.into_iter().map(Into::into).collect();
                    client.expect_end(id, listing.folders.len() as u64)?;
                    return Ok(listing);
                }
                other => return Err(client.unexpected(id, "folders or user files", &other)),
            }
        }
    }
}

impl ReplyKind for MetaCopy {
    fn read(client: &mut Client, id: u32, uniqueid: &str) -> Result<Self, ClientError> {
        let mut files = Vec::new();
        loop {
            match client.next_reply(id)? {
                Reply::MetaFile { kind, stat, size } => {
                    let bytes = match client.read_data(id, size)? {
                        Ok(b) => b,
                        Err(e) => {
                            return Err(client.protocol(format!(
                                "reply {id}: an item error inside a meta file: {e}"
                            )))
                        }
                    };
                    files.push((kind, bytes, stat));
                }
                Reply::End { items } if items == files.len() as u64 => break,
                other => return Err(client.unexpected(id, "a meta file or the end", &other)),
            }
        }
        let mut header = None;
        let mut index = None;
        let mut annotations = None;
        for (k, bytes, stat) in files {
            let slot = match k {
                wire::MetaKind::Header => &mut header,
                wire::MetaKind::Index => &mut index,
                wire::MetaKind::Annotations => &mut annotations,
            };
            if slot.replace((bytes, stat)).is_some() {
                return Err(client.protocol(format!("reply {id}: {} sent twice", k.file_name())));
            }
        }
        match (header, index) {
            (Some(header), Some(index)) => Ok(MetaCopy {
                uniqueid: uniqueid.to_string(),
                header,
                index,
                annotations,
            }),
            _ => Err(client.protocol(format!(
                "reply {id}: a meta copy without cyrus.header or cyrus.index"
            ))),
        }
    }
}

impl ReplyKind for Vec<UserFile> {
    fn read(client: &mut Client, id: u32, asked: &str) -> Result<Self, ClientError> {
        let mut out = Vec::new();
        loop {
            match client.next_reply(id)? {
                Reply::UserFile { stat, size, .. } => {
                    let file = match client.read_data(id, size)? {
                        Ok(bytes) => UserFile::Found { bytes, stat },
                        Err(e) => UserFile::Failed(e),
                    };
                    out.push(file);
                }
                Reply::Absent { .. } => out.push(UserFile::Absent),
                Reply::ItemError(e) => out.push(UserFile::Failed(e)),
                Reply::End { items } if items == out.len() as u64 => {
                    if asked.parse::<usize>().ok() != Some(out.len()) {
                        return Err(client.protocol(format!(
                            "reply {id}: {} user files asked, {} answered",
                            asked,
                            out.len()
                        )));
                    }
                    return Ok(out);
                }
                other => return Err(client.unexpected(id, "a user file or the end", &other)),
            }
        }
    }
}

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

/// Where a message stream is.
#[derive(Debug)]
struct StreamState {
    id: u32,
    /// Bytes of the current message not yet handed out.
    item_left: u64,
    /// Bytes of the current data frame not yet read.
    frame_left: u32,
    items: u64,
    done: bool,
}

impl MessageStream<'_> {
    /// The next message, or `None` at the end of the reply. An error from the server for
    /// the whole request (unknown user or folder) is [`ClientError::Remote`].
    pub fn next_message(&mut self) -> Result<Option<Fetched<'_>>, ClientError> {
        let (client, st) = (&mut *self.client, &mut self.st);
        if st.done {
            return Ok(None);
        }
        // Skip what the caller did not read of the previous message.
        let mut buf = [0u8; 8192];
        while st.item_left > 0 {
            match read_data(client, st, &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(DataError::Item(_)) => break,
                Err(DataError::Client(e)) => return Err(finish_err(client, st, e)),
            }
        }
        let reply = match client.next_reply(st.id) {
            Ok(r) => r,
            Err(e) => return Err(finish_err(client, st, e)),
        };
        match reply {
            Reply::Message { uid, size } => {
                st.items += 1;
                st.item_left = size;
                st.frame_left = 0;
                Ok(Some(Fetched::Message {
                    uid,
                    size,
                    body: MessageBody { client, st },
                }))
            }
            Reply::Gone { uid } => {
                st.items += 1;
                Ok(Some(Fetched::Gone { uid }))
            }
            Reply::ItemError(e) => {
                st.items += 1;
                Ok(Some(Fetched::Failed(e)))
            }
            Reply::End { items } => {
                st.done = true;
                client.partial = None;
                if items != st.items {
                    return Err(client.protocol(format!(
                        "reply {}: {items} messages announced, {} received",
                        st.id, st.items
                    )));
                }
                Ok(None)
            }
            other => {
                let e = client.unexpected(st.id, "a message", &other);
                Err(finish_err(client, st, e))
            }
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
        self.client.partial = (!self.st.done).then_some((self.st.id, self.st.frame_left));
    }
}

fn finish_err(client: &mut Client, st: &mut StreamState, e: ClientError) -> ClientError {
    // A Remote error ends the reply: the connection is in step again.
    if matches!(e, ClientError::Remote { .. }) {
        st.done = true;
        client.partial = None;
    }
    e
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
    if st.item_left == 0 || buf.is_empty() {
        return Ok(0);
    }
    if st.frame_left == 0 {
        let h = client.read_header().map_err(DataError::Client)?;
        client.check_id(&h, st.id).map_err(DataError::Client)?;
        match h.kind {
            kind::DATA if h.len > 0 && u64::from(h.len) <= st.item_left => {
                st.frame_left = h.len;
            }
            kind::ITEM_ERROR | kind::ERROR => {
                let body = client.read_body(&h).map_err(DataError::Client)?;
                let frame = wire::Frame {
                    kind: h.kind,
                    id: h.id,
                    body: &body,
                };
                st.item_left = 0;
                return Err(match Reply::decode(&frame) {
                    Ok(Reply::ItemError(e)) => DataError::Item(e),
                    Ok(Reply::Error(error)) => {
                        st.done = true;
                        client.partial = None;
                        DataError::Client(ClientError::Remote {
                            addr: client.addr.clone(),
                            error,
                        })
                    }
                    Ok(_) => unreachable!("kind checked"),
                    Err(e) => DataError::Client(client.protocol(e.to_string())),
                });
            }
            other => {
                let e = client.protocol(format!(
                    "reply {}: expected {} more message bytes, found a frame of kind 0x{other:02x} ({}, {} bytes)",
                    st.id,
                    st.item_left,
                    kind::name(other),
                    h.len
                ));
                return Err(DataError::Client(e));
            }
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
    st.item_left -= got as u64;
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
        self.st.item_left
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
