//! The backup host's side of the protocol (docs/protocol.md): connect, set up TLS
//! (`tls.rs`: backupd's key pinned, or a CA file), authenticate with proofs bound to the
//! TLS session, ask.
//!
//! Blocking `std::net`, on purpose: the backup-server's workers are plain threads doing
//! blocking file and SQLite work, one connection each; a runtime would add nothing there.
//! This module only moves frames: which frame may come when, the handshake's proofs and
//! every reply's assembly are `formats::protocol` (`handshake`, `assemble`), shared with
//! backupd and tested without a socket.
//!
//! Requests can be pipelined: `send_*` writes a request and returns a [`Pending`] ticket;
//! [`Client::recv`] (and [`Client::recv_messages`]) read the replies, which come in the
//! order the requests were sent. The one-call methods (`list_folders`, `copy_meta`, ...)
//! are send-then-receive. Message bytes are never held whole unless the caller asks:
//! [`MessageStream`] hands out each message as a [`Read`](std::io::Read)er over its data
//! frames.
//!
//! Errors: [`ClientError::Remote`] is the server's answer to one request (unknown user,
//! ...): the connection stays usable. Every other error leaves the connection broken; the
//! client refuses further calls and the caller connects again.

mod messages;
mod secret;
pub mod tls;

pub use messages::{Collected, Fetched, MessageBody, MessageStream};
pub use secret::load_secret;
pub use tls::{ClientCert, TlsSettings, TlsTrust};

use formats::protocol::assemble::{self, Assemble, Assembler};
use formats::protocol::handshake::{ClientHandshake, HandshakeError};
use formats::protocol::{
    self as wire, kind, AuthOk, Binding, ErrorReply, Frame, FrameHeader, Greeting, MetaCopy,
    ReplyError, Request, Secret, UserEntry, UserFile, UserFileId, UserListing, HEADER_LEN,
    NONCE_LEN,
};
use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
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
    /// TLS, and how the server is trusted; the default is plain TCP.
    pub tls: TlsSettings,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Some(Duration::from_secs(300)),
            tls: TlsSettings::default(),
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
    /// TLS could not be set up: a file of the configuration, the server's certificate (a
    /// pin that does not match), or a server without TLS; the connection is closed.
    #[error("backupd at {addr}: {message}")]
    Tls {
        /// The server.
        addr: String,
        /// What went wrong, naming the file or the key and the way out.
        message: String,
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

/// What the reply to a request needs to know of the request to be assembled.
#[derive(Debug)]
enum Asked {
    Nothing,
    MetaOf(String),
    UserFiles(usize),
}

/// A reply type the client can read whole: which [`Assemble`] of `formats` builds it.
pub trait ReplyKind: Sized {
    /// Reads the reply frames after the request was sent.
    #[doc(hidden)]
    fn read(client: &mut Client, id: u32, asked: &AskedFor) -> Result<Self, ClientError>;
}

/// What a request asked, as its reply's reader needs it (opaque outside this module).
#[derive(Debug)]
pub struct AskedFor(Asked);

impl ReplyKind for u64 {
    fn read(client: &mut Client, id: u32, _: &AskedFor) -> Result<Self, ClientError> {
        client.assemble(id, assemble::EndOnly)
    }
}

impl ReplyKind for Vec<UserEntry> {
    fn read(client: &mut Client, id: u32, _: &AskedFor) -> Result<Self, ClientError> {
        client.assemble(id, assemble::Users::default())
    }
}

impl ReplyKind for UserListing {
    fn read(client: &mut Client, id: u32, _: &AskedFor) -> Result<Self, ClientError> {
        client.assemble(id, assemble::Listing::default())
    }
}

impl ReplyKind for MetaCopy {
    fn read(client: &mut Client, id: u32, asked: &AskedFor) -> Result<Self, ClientError> {
        let uniqueid = match &asked.0 {
            Asked::MetaOf(u) => u.as_str(),
            _ => "",
        };
        client.assemble(id, assemble::Meta::new(uniqueid))
    }
}

impl ReplyKind for Vec<UserFile> {
    fn read(client: &mut Client, id: u32, asked: &AskedFor) -> Result<Self, ClientError> {
        let n = match asked.0 {
            Asked::UserFiles(n) => n,
            _ => 0,
        };
        client.assemble(id, assemble::UserFiles::new(n))
    }
}

/// A connection to backupd, authenticated.
#[derive(Debug)]
pub struct Client {
    addr: String,
    /// The transport, read through a buffer; writes go to `reader.get_mut()`.
    reader: BufReader<tls::Transport>,
    /// Requests written and not yet sent: sent when a reply is read or it fills.
    wbuf: Vec<u8>,
    /// TLS or plain TCP, and the session the handshake is bound to.
    binding: Binding,
    server: String,
    version: u16,
    next_id: u32,
    /// Requests sent whose replies are not yet read, oldest first, with what the reply
    /// reader needs to know of the request.
    pending: VecDeque<(u32, AskedFor)>,
    /// A reply only partly read (a message stream dropped early), with the bytes left in
    /// the data frame it stopped in: skipped before the next reply is read.
    partial: Option<(u32, u32)>,
    broken: bool,
}

/// Bytes of requests buffered before they are sent without waiting for a reply.
const WRITE_BUFFER: usize = 64 * 1024;

/// A fresh nonce from the operating system's random source.
fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(format!("no random nonce: {e}")))?;
    Ok(n)
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
        let tls_err = |message| ClientError::Tls {
            addr: addr.clone(),
            message,
        };
        let (transport, binding) = match opts.tls.trust {
            TlsTrust::Off => (tls::Transport::Plain(stream), Binding::Plain),
            _ => {
                let config = tls::client_config(&opts.tls).map_err(tls_err)?;
                let name = tls::server_name(&opts.tls, peer.ip());
                tls::Transport::tls(stream, config, name).map_err(tls_err)?
            }
        };
        let mut client = Client {
            addr: addr.clone(),
            reader: BufReader::with_capacity(256 * 1024, transport),
            wbuf: Vec::with_capacity(WRITE_BUFFER),
            binding,
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
            let frame = Frame {
                kind: h.kind,
                id: h.id,
                body: &body,
            };
            let error = match wire::Reply::decode(&frame) {
                Ok(wire::Reply::Error(e)) => e,
                Ok(_) => unreachable!("kind checked"),
                Err(e) => return Err(self.protocol(e.to_string())),
            };
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
        let frame = Frame {
            kind: h.kind,
            id: h.id,
            body: &body,
        };
        let greeting = Greeting::decode(&frame).map_err(|e| self.protocol(e.to_string()))?;
        let client_nonce = nonce().map_err(|e| self.io(e))?;
        let (state, auth) = ClientHandshake::answer(greeting, secret, client_nonce, self.binding)
            .map_err(|e| self.handshake_error(e))?;
        let mut out = Vec::new();
        auth.encode(&mut out)
            .map_err(|e| self.protocol(e.to_string()))?;
        self.write(&out)?;
        self.flush()?;
        let (h, body) = self.handshake_frame()?;
        let frame = Frame {
            kind: h.kind,
            id: h.id,
            body: &body,
        };
        let ok = AuthOk::decode(&frame).map_err(|e| self.protocol(e.to_string()))?;
        self.server = state
            .finish(&ok, secret)
            .map_err(|e| self.handshake_error(e))?;
        self.version = wire::VERSION;
        Ok(())
    }

    fn handshake_error(&mut self, e: HandshakeError) -> ClientError {
        match e {
            HandshakeError::ServerProof if matches!(self.binding, Binding::Tls(_)) => {
                self.fail(ClientError::Tls {
                    addr: self.addr.clone(),
                    message: "the server's proof does not match the secret and this TLS \
                              session: a relay in the middle that terminates TLS (was it \
                              given the pin or CA?), or a wrong secret on one side"
                        .into(),
                })
            }
            HandshakeError::ServerProof => self.fail(ClientError::ServerProof {
                addr: self.addr.clone(),
            }),
            other => self.protocol(other.to_string()),
        }
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
        let p = self.send::<u64>(&Request::Ping, Asked::Nothing)?;
        self.recv(p).map(drop)
    }

    /// Every user with the partition of their INBOX.
    pub fn list_users(&mut self) -> Result<Vec<UserEntry>, ClientError> {
        let p = self.send(&Request::ListUsers, Asked::Nothing)?;
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
        // The reply has one answer per file asked, in order (checked by the assembly).
        Ok(ids.iter().cloned().zip(files).collect())
    }

    // ---- pipelining

    /// Sends a folder listing request.
    pub fn send_list_folders(&mut self, user: &str) -> Result<Pending<UserListing>, ClientError> {
        self.send(
            &Request::ListFolders {
                user: user.to_string(),
            },
            Asked::Nothing,
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
            Asked::MetaOf(uniqueid.to_string()),
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
            Asked::Nothing,
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
                ids: ids.to_vec(),
            },
            Asked::UserFiles(ids.len()),
        )
    }

    /// Sends any request; the reply is read as a `T` by [`Client::recv`]. Requests are
    /// buffered and go out when a reply is read (or the buffer fills).
    fn send<T>(&mut self, req: &Request, asked: Asked) -> Result<Pending<T>, ClientError> {
        self.usable()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut out = Vec::new();
        req.encode(id, &mut out)
            .map_err(|e| ClientError::Misuse(format!("cannot send {req:?}: {e}")))?;
        self.write(&out)?;
        self.pending.push_back((id, AskedFor(asked)));
        Ok(Pending {
            id,
            _t: PhantomData,
        })
    }

    /// Reads the reply to `p`, which must be the oldest request not yet received.
    pub fn recv<T: ReplyKind>(&mut self, p: Pending<T>) -> Result<T, ClientError> {
        let asked = self.begin_reply(p.id)?;
        T::read(self, p.id, &asked)
    }

    /// Starts reading the reply to a message fetch, which must be the oldest request not
    /// yet received.
    pub fn recv_messages(
        &mut self,
        p: Pending<Messages>,
    ) -> Result<MessageStream<'_>, ClientError> {
        self.begin_reply(p.id)?;
        self.partial = Some((p.id, 0));
        Ok(MessageStream::new(self, p.id))
    }

    /// Skips what is left of a partly read reply, then checks `id` is next.
    fn begin_reply(&mut self, id: u32) -> Result<AskedFor, ClientError> {
        self.usable()?;
        if let Some((partial, frame_left)) = self.partial.take() {
            self.skip_reply(partial, frame_left)?;
        }
        match self.pending.front() {
            Some((front, _)) if *front == id => {
                let (_, asked) = self.pending.pop_front().expect("front exists");
                self.flush()?;
                Ok(asked)
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
            if h.kind == kind::DATA && h.id == id {
                self.discard(u64::from(h.len))?;
                continue;
            }
            let body = self.read_body(&h)?;
            let frame = Frame {
                kind: h.kind,
                id: h.id,
                body: &body,
            };
            assemble::check_reply_frame(&frame, id).map_err(|e| self.reply_error(e))?;
            if matches!(h.kind, kind::END | kind::ERROR) {
                return Ok(());
            }
        }
    }

    /// Reads the frames of reply `id` into `asm` until it completes.
    fn assemble<A: Assemble>(&mut self, id: u32, asm: A) -> Result<A::Output, ClientError> {
        let mut asm = Assembler::new(id, asm);
        loop {
            let (h, body) = self.read_frame()?;
            let frame = Frame {
                kind: h.kind,
                id: h.id,
                body: &body,
            };
            match asm.push(&frame) {
                Ok(Some(out)) => return Ok(out),
                Ok(None) => {}
                Err(e) => return Err(self.reply_error(e)),
            }
        }
    }

    /// The client's error for a reply that could not be assembled.
    fn reply_error(&mut self, e: ReplyError) -> ClientError {
        let addr = self.addr.clone();
        match e {
            ReplyError::Remote(error) => ClientError::Remote { addr, error },
            ReplyError::Closing(error) => self.fail(ClientError::Refused { addr, error }),
            ReplyError::Protocol(message) => self.protocol(message),
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
        let tls = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let e = match tls {
            // A record that does not authenticate: bytes changed on the way.
            Some(t @ (rustls::Error::DecryptError | rustls::Error::InvalidMessage(_))) => {
                ClientError::Tls {
                    addr: self.addr.clone(),
                    message: format!(
                        "TLS: {t}: the bytes from the server were altered on the way (a \
                         machine in the middle?); nothing of that record was used"
                    ),
                }
            }
            Some(t) => ClientError::Tls {
                addr: self.addr.clone(),
                message: format!("TLS: {t}"),
            },
            None => ClientError::Io {
                addr: self.addr.clone(),
                source,
            },
        };
        self.fail(e)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.wbuf.extend_from_slice(bytes);
        if self.wbuf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let sock = self.reader.get_mut();
        let r = sock.write_all(&self.wbuf).and_then(|()| sock.flush());
        self.wbuf.clear();
        r.map_err(|e| self.io(e))
    }

    /// Whether the connection runs in TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.binding, Binding::Tls(_))
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
}
