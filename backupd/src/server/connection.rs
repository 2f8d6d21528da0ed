//! One connection: the transport (TLS or plain TCP), frames read and written, the
//! handshake, the request loop, and why the connection ended.
//!
//! The handshake (TLS, greeting, proofs) runs under one deadline (`auth_timeout`) and while
//! the connection holds its place in the pre-authentication pool; a newer connection may
//! evict it from there (`pre_auth.rs`). Only a connection whose proof is right takes one of
//! the `max_connections` slots, before the server's proof is sent.
//!
//! A connection reads one request at a time and has it answered whole (`handlers.rs`) before
//! reading the next; a client may still pipeline, since what it sent waits in the socket and
//! in the read buffer. Replies are flushed when no further request is already waiting, so a
//! pipelined batch travels in as few packets as it can. Message and meta bytes go out in data
//! frames of at most `data_chunk` bytes: per connection, memory is one chunk, one read buffer
//! (a request is at most 16 MiB; before authentication at most [`PRE_AUTH_MAX_BODY`] bytes)
//! and the socket's write buffer.

use super::pre_auth::Ticket;
use super::{handlers, Shared, SpoolAccess};
use crate::auth;
use formats::protocol::{
    self as wire, encode_data_header, kind, message::REQUEST, AuthOk, Binding, ErrorCode,
    ErrorReply, FrameHeader, Greeting, Reply, Request, HEADER_LEN, MAX_BODY,
};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, info, warn};

/// The reading half of a connection's transport (TLS or plain TCP).
type Rd = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// The writing half.
type Wr = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The first byte of every TLS connection from a client: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The largest frame body accepted before authentication: the auth frame is 66 bytes, so
/// an unauthenticated peer can never make the server buffer much.
pub const PRE_AUTH_MAX_BODY: u32 = 1024;

/// Buffer capacity a connection keeps between requests.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum End {
    /// The peer closed between frames.
    Closed,
    /// The peer closed in the middle of a frame.
    Truncated,
    /// The socket failed (reset, broken pipe).
    Io(io::Error),
    /// The peer was silent (or did not read) for too long.
    Timeout(&'static str),
    /// A frame header announced a body over the bound.
    TooLarge(FrameHeader, u32),
    /// We ended it after sending an error (auth failure, request before auth, ...).
    Refused(ErrorReply),
    /// Shutting down.
    Shutdown,
    /// Evicted from the pre-authentication pool by a newer connection.
    Evicted,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed by the peer"),
            End::Truncated => f.write_str("closed by the peer in the middle of a frame"),
            End::Io(e) => write!(f, "socket error: {e}"),
            End::Timeout(what) => write!(f, "timed out waiting for {what}"),
            End::TooLarge(h, max) => write!(
                f,
                "frame too large ({} bytes announced, at most {max})",
                h.len
            ),
            End::Refused(e) => write!(f, "refused: {e}"),
            End::Shutdown => f.write_str("server shutting down"),
            End::Evicted => f.write_str(
                "evicted before authenticating: too many connections not yet authenticated",
            ),
        }
    }
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        End::Io(e)
    }
}

/// Bytes read from a peer and not yet taken as frames. A frame is taken by moving a cursor
/// past it; what is left moves to the front only before the next read, so that a buffer
/// full of small pipelined requests costs time linear in their number, not quadratic.
#[derive(Debug, Default)]
struct InBuf {
    buf: Vec<u8>,
    /// Where the bytes not yet taken start.
    start: usize,
}

impl InBuf {
    /// The bytes not yet taken.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The next whole frame whose body is at most `max_body` bytes; `Ok(None)` when more
    /// bytes are needed. The length is checked as soon as the header is there.
    fn take(&mut self, max_body: u32) -> Result<Option<(FrameHeader, Vec<u8>)>, End> {
        let pending = self.pending();
        let Some(head) = pending.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let h = match FrameHeader::decode(head) {
            Ok(h) => h,
            Err(wire::FrameError::TooLarge { len, kind, id }) => {
                return Err(End::TooLarge(FrameHeader { len, kind, id }, max_body))
            }
        };
        if h.len > max_body {
            return Err(End::TooLarge(h, max_body));
        }
        let need = h.frame_len();
        if pending.len() < need {
            return Ok(None);
        }
        let body = pending[HEADER_LEN..need].to_vec();
        self.start += need;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some((h, body)))
    }

    /// The buffer to read into after [`InBuf::take`] asked for more: the bytes not yet taken
    /// moved to the front, and room for the rest of the frame under way (its length was
    /// checked by `take`, so this is bounded) or for a header.
    fn room(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = match self
            .buf
            .first_chunk::<HEADER_LEN>()
            .map(FrameHeader::decode)
        {
            Some(Ok(h)) => h.frame_len().saturating_sub(self.buf.len()).max(1),
            _ => 4096,
        };
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Lets go of the memory of one huge request, keeping [`KEEP_BUFFER`].
    fn shrink(&mut self) {
        if self.buf.capacity() > KEEP_BUFFER && self.pending().len() <= KEEP_BUFFER {
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.shrink_to(KEEP_BUFFER);
        }
    }
}

/// One connection's state.
pub(super) struct Conn<S> {
    pub(super) shared: Arc<Shared<S>>,
    peer: SocketAddr,
    rd: Rd,
    wr: BufWriter<Wr>,
    /// Bytes read and not yet consumed as frames.
    inbuf: InBuf,
    /// Scratch for encoding frames.
    pub(super) out: Vec<u8>,
    requests: u64,
    bytes_out: u64,
}

/// Serves one accepted connection until it ends, and says why to the peer where that still
/// makes sense. `ticket` is its place in the pre-authentication pool, left once the
/// handshake is over.
pub(super) async fn serve_connection<S: SpoolAccess>(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<S>>,
    mut ticket: Ticket,
    mut stop: watch::Receiver<bool>,
) {
    debug!(%peer, "connected");
    let deadline = Instant::now() + shared.settings.auth_timeout;
    let opened = tokio::select! {
        biased;
        () = ticket.evicted() => Err(End::Evicted),
        r = open(socket, peer, &shared, deadline) => r,
    };
    let (rd, wr, binding) = match opened {
        Ok(t) => t,
        Err(end) => {
            debug!(%peer, reason = %end, "connection ended before the handshake");
            return;
        }
    };
    let mut conn = Conn {
        shared,
        peer,
        rd,
        wr: BufWriter::with_capacity(64 * 1024, wr),
        inbuf: InBuf::default(),
        out: Vec::new(),
        requests: 0,
        bytes_out: 0,
    };
    let handshake = tokio::select! {
        biased;
        () = ticket.evicted() => Err(End::Evicted),
        r = timeout_at(deadline, conn.handshake(binding)) => {
            r.unwrap_or(Err(End::Timeout("authentication")))
        }
    };
    drop(ticket);
    // The slot is held until the connection ends.
    let (end, _slot) = match handshake {
        Ok(slot) => (conn.serve(&mut stop).await, Some(slot)),
        Err(end) => (end, None),
    };
    // Whatever ended it, say so to the peer where that still makes sense.
    let last_word = match &end {
        End::Timeout(what) => Some(ErrorReply::new(
            ErrorCode::Timeout,
            format!("timed out waiting for {what}; closing"),
        )),
        End::TooLarge(h, max) => Some(ErrorReply::new(
            ErrorCode::FrameTooLarge,
            format!(
                "frame too large: a body of {} bytes announced (kind 0x{:02x}), at most {max} accepted here; closing",
                h.len, h.kind
            ),
        )),
        End::Refused(e) => Some(e.clone()),
        End::Shutdown => Some(ErrorReply::new(
            ErrorCode::Busy,
            "server shutting down; try again later",
        )),
        End::Closed | End::Truncated | End::Io(_) | End::Evicted => None,
    };
    if let Some(e) = last_word {
        let id = match &end {
            End::TooLarge(h, _) => h.id,
            _ => 0,
        };
        conn.out.clear();
        e.encode(id, &mut conn.out);
        let write = async {
            conn.wr.write_all(&conn.out).await?;
            conn.wr.flush().await?;
            conn.wr.shutdown().await
        };
        let _ = timeout(Duration::from_secs(5), write).await;
    }
    let peer = conn.peer;
    match &end {
        End::Closed | End::Shutdown => {
            debug!(%peer, requests = conn.requests, bytes = conn.bytes_out, "connection closed")
        }
        End::Refused(e) if e.code == ErrorCode::AuthFailed => {}
        End::Evicted => debug!(%peer, "{end}"),
        other => {
            info!(%peer, requests = conn.requests, bytes = conn.bytes_out, reason = %other, "connection ended")
        }
    }
}

/// The connection's transport: TLS when configured, plain TCP otherwise, with what binds
/// the handshake to it.
async fn open<S>(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared<S>,
    deadline: Instant,
) -> Result<(Rd, Wr, Binding), End> {
    let Some(acceptor) = &shared.tls else {
        let (rd, wr) = socket.into_split();
        return Ok((Box::new(rd), Box::new(wr), Binding::Plain));
    };
    // A TLS client speaks first; a plain-TCP client waits for the greeting. Tell the
    // latter in its own protocol why nothing comes, instead of leaving it to time out.
    let mut first = [0u8; 1];
    let plain_client = match timeout_at(deadline, socket.peek(&mut first)).await {
        Ok(Ok(0)) => return Err(End::Closed),
        Ok(Ok(_)) => first[0] != TLS_HANDSHAKE_RECORD,
        Ok(Err(e)) => return Err(End::Io(e)),
        Err(_) => true,
    };
    if plain_client {
        warn!(%peer, "a client without TLS: refused (this server speaks TLS only)");
        let mut out = Vec::new();
        ErrorReply::new(
            ErrorCode::UnsupportedVersion,
            "this backupd speaks the protocol inside TLS only: give this server's tls_pin (the \
             line `backupd keygen` printed) or tls_ca_file in the backup host's configuration; \
             closing",
        )
        .encode(0, &mut out);
        let mut socket = socket;
        let _ = timeout(Duration::from_secs(5), socket.write_all(&out)).await;
        let _ = socket.shutdown().await;
        return Err(End::Refused(ErrorReply::new(
            ErrorCode::UnsupportedVersion,
            "no TLS",
        )));
    }
    let stream = match timeout_at(deadline, acceptor.accept(socket)).await {
        Err(_) => return Err(End::Timeout("the TLS handshake")),
        Ok(r) => r.map_err(|e| {
            // A client that refuses our certificate (a wrong pin) shows here as its alert.
            info!(%peer, error = %e, "TLS handshake failed");
            End::Io(e)
        })?,
    };
    let binding = crate::tls::binding(stream.get_ref().1).map_err(|e| {
        End::Io(io::Error::other(format!(
            "no keying material from the TLS session: {e}"
        )))
    })?;
    let (rd, wr) = tokio::io::split(stream);
    Ok((Box::new(rd), Box::new(wr), binding))
}

impl<S: SpoolAccess> Conn<S> {
    /// Greeting, auth frame, proof check, a connection slot, auth-ok (on `binding`'s
    /// transport). Returns the slot.
    async fn handshake(&mut self, binding: Binding) -> Result<OwnedSemaphorePermit, End> {
        let nonce = auth::nonce().map_err(|e| {
            End::Refused(ErrorReply::new(
                ErrorCode::Internal,
                format!("no random nonce from the operating system: {e}"),
            ))
        })?;
        self.out.clear();
        Greeting {
            min_version: wire::VERSION,
            max_version: wire::VERSION,
            nonce,
            server: self.shared.settings.server_name.clone(),
        }
        .encode(&mut self.out)
        .map_err(|e| End::Refused(ErrorReply::new(ErrorCode::Internal, e.to_string())))?;
        self.write_out().await?;
        self.flush().await?;

        let (h, body) = self.read_frame(PRE_AUTH_MAX_BODY).await?;
        let frame = wire::Frame {
            kind: h.kind,
            id: h.id,
            body: &body,
        };
        if h.kind != kind::AUTH {
            warn!(peer = %self.peer, kind = h.kind, "request before authentication");
            return Err(End::Refused(ErrorReply::new(
                ErrorCode::NotAuthenticated,
                format!(
                    "not authenticated: a frame of kind 0x{:02x} ({}) before the auth frame; closing",
                    h.kind,
                    kind::name(h.kind)
                ),
            )));
        }
        let a = wire::Auth::decode(&frame)
            .map_err(|e| End::Refused(ErrorReply::new(ErrorCode::BadFrame, e.to_string())))?;
        if a.version != wire::VERSION {
            return Err(End::Refused(ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "unsupported protocol version {}: this server speaks {}",
                    a.version,
                    wire::VERSION
                ),
            )));
        }
        if !self
            .shared
            .secret
            .verify_client(a.version, &nonce, &a.nonce, &binding, &a.proof)
        {
            let why = match binding {
                Binding::Plain => "the proof does not match this server's secret",
                Binding::Tls(_) => {
                    "the proof does not match this server's secret and TLS session (a wrong \
                     secret, or a relay in the middle that terminates TLS)"
                }
            };
            warn!(peer = %self.peer, "authentication failed: {why}");
            return Err(End::Refused(ErrorReply::new(
                ErrorCode::AuthFailed,
                format!("authentication failed: {why}; closing"),
            )));
        }
        let slot = self.shared.slots.clone().try_acquire_owned().map_err(|_| {
            let limit = self.shared.settings.max_connections;
            warn!(peer = %self.peer, limit, "connection limit reached, refusing");
            End::Refused(ErrorReply::new(
                ErrorCode::Busy,
                format!("too many connections (limit {limit}); try again later"),
            ))
        })?;
        self.out.clear();
        AuthOk {
            proof: self
                .shared
                .secret
                .server_proof(a.version, &nonce, &a.nonce, &binding),
        }
        .encode(&mut self.out)
        .map_err(|e| End::Refused(ErrorReply::new(ErrorCode::Internal, e.to_string())))?;
        self.write_out().await?;
        self.flush().await?;
        info!(peer = %self.peer, tls = matches!(binding, Binding::Tls(_)), "authenticated");
        Ok(slot)
    }

    /// Requests until the peer leaves, a fatal error, or shutdown.
    async fn serve(&mut self, stop: &mut watch::Receiver<bool>) -> End {
        loop {
            if *stop.borrow() {
                return End::Shutdown;
            }
            if !self.frame_waiting() {
                if let Err(e) = self.flush().await {
                    return e;
                }
            }
            let idle = self.shared.settings.idle_timeout;
            let read = tokio::select! {
                biased;
                _ = stop.changed() => return End::Shutdown,
                r = timeout(idle, self.read_frame(MAX_BODY)) => r,
            };
            let (h, body) = match read {
                Err(_) => return End::Timeout("a request"),
                Ok(Err(end)) => return end,
                Ok(Ok(frame)) => frame,
            };
            self.requests += 1;
            let frame = wire::Frame {
                kind: h.kind,
                id: h.id,
                body: &body,
            };
            let result = match Request::decode(&frame) {
                Ok(req) => {
                    debug!(peer = %self.peer, id = h.id, ?req, "request");
                    handlers::answer(self, h.id, req).await
                }
                Err(e) if e.expected == REQUEST => {
                    self.reply_error(
                        h.id,
                        ErrorReply::new(
                            ErrorCode::UnknownCommand,
                            format!(
                                "unknown command: frame kind 0x{:02x} ({}) is not a request",
                                h.kind,
                                kind::name(h.kind)
                            ),
                        ),
                    )
                    .await
                }
                Err(e) => {
                    self.reply_error(h.id, ErrorReply::new(ErrorCode::BadFrame, e.to_string()))
                        .await
                }
            };
            if let Err(end) = result {
                return end;
            }
            // One huge request or reply must not pin its buffers for the connection's life.
            self.inbuf.shrink();
            if self.out.capacity() > KEEP_BUFFER {
                self.out = Vec::new();
            }
        }
    }

    /// Whether a whole frame is already buffered.
    fn frame_waiting(&self) -> bool {
        matches!(wire::check(self.inbuf.pending()), Ok(Some(_)))
    }

    /// The next frame, with a body of at most `max_body` bytes.
    async fn read_frame(&mut self, max_body: u32) -> Result<(FrameHeader, Vec<u8>), End> {
        loop {
            if let Some(frame) = self.inbuf.take(max_body)? {
                return Ok(frame);
            }
            if self.rd.read_buf(self.inbuf.room()).await? == 0 {
                return Err(if self.inbuf.pending().is_empty() {
                    End::Closed
                } else {
                    End::Truncated
                });
            }
        }
    }

    pub(super) async fn write_out(&mut self) -> Result<(), End> {
        let idle = self.shared.settings.idle_timeout;
        match timeout(idle, self.wr.write_all(&self.out)).await {
            Err(_) => Err(End::Timeout("the client to read")),
            Ok(r) => {
                self.bytes_out += self.out.len() as u64;
                self.out.clear();
                Ok(r?)
            }
        }
    }

    pub(super) async fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), End> {
        let idle = self.shared.settings.idle_timeout;
        match timeout(idle, self.wr.write_all(bytes)).await {
            Err(_) => Err(End::Timeout("the client to read")),
            Ok(r) => {
                self.bytes_out += bytes.len() as u64;
                Ok(r?)
            }
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        let idle = self.shared.settings.idle_timeout;
        match timeout(idle, self.wr.flush()).await {
            Err(_) => Err(End::Timeout("the client to read")),
            Ok(r) => Ok(r?),
        }
    }

    /// Appends one reply frame to the scratch buffer and writes it out.
    pub(super) async fn reply(&mut self, id: u32, reply: Reply) -> Result<(), End> {
        self.out.clear();
        if let Err(e) = reply.encode(id, &mut self.out) {
            // Something the spool returned does not fit the wire (a 70 kB name): the
            // request fails, the connection stays in step.
            self.out.clear();
            ErrorReply::new(ErrorCode::Internal, format!("cannot encode the reply: {e}"))
                .encode(id, &mut self.out);
        }
        self.write_out().await
    }

    pub(super) async fn reply_error(&mut self, id: u32, e: ErrorReply) -> Result<(), End> {
        debug!(peer = %self.peer, id, error = %e, "error reply");
        self.reply(id, Reply::Error(e)).await
    }

    /// Data frames for `bytes`, in chunks.
    pub(super) async fn send_data(&mut self, id: u32, bytes: &[u8]) -> Result<(), End> {
        for chunk in bytes.chunks(self.shared.settings.data_chunk) {
            self.out.clear();
            // Cannot fail: chunks are 1 to MAX_BODY bytes.
            let _ = encode_data_header(id, chunk.len(), &mut self.out);
            self.write_out().await?;
            self.write_bytes(chunk).await?;
        }
        Ok(())
    }

    /// Runs `f` on the blocking pool, waiting for a permit first.
    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, ErrorReply>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> T + Send + 'static,
    {
        let permit = self
            .shared
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ErrorReply::new(ErrorCode::Internal, "the blocking pool is closed"))?;
        let spool = self.shared.spool.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&spool)
        })
        .await
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("spool task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_of_small_pipelined_frames_is_taken_in_one_pass() {
        // What one read can leave in the buffer: a few MB of 9-byte requests. Moving the
        // rest of the buffer after each frame would make this some 300 GB of memmove.
        let n: u32 = 250_000;
        let mut inbuf = InBuf::default();
        for id in 1..=n {
            Request::Ping.encode(id, &mut inbuf.buf).unwrap();
        }
        // Half a frame at the end: it stays, and moves to the front before the next read.
        inbuf
            .buf
            .extend_from_slice(&[0, 0, 0, 3, kind::LIST_FOLDERS, 0]);
        let total = inbuf.buf.len();
        for id in 1..=n {
            let (h, body) = inbuf.take(MAX_BODY).ok().unwrap().unwrap();
            assert_eq!((h.kind, h.id, body.len()), (kind::PING, id, 0));
            // Taken where it lies: nothing moved, whatever the machine's speed.
            assert_eq!(
                (inbuf.start, inbuf.buf.len()),
                (id as usize * HEADER_LEN, total)
            );
        }
        assert!(inbuf.take(MAX_BODY).ok().unwrap().is_none());
        assert_eq!(inbuf.pending(), [0, 0, 0, 3, kind::LIST_FOLDERS, 0]);
        let room = inbuf.room();
        assert_eq!(room.len(), 6);
        assert!(room.capacity() >= 4096 + 6);
    }

    #[test]
    fn lengths_are_checked_from_the_header_alone() {
        let mut inbuf = InBuf::default();
        inbuf.buf.extend_from_slice(
            &FrameHeader {
                len: 5000,
                kind: kind::AUTH,
                id: 0,
            }
            .encode(),
        );
        assert!(matches!(
            inbuf.take(PRE_AUTH_MAX_BODY),
            Err(End::TooLarge(h, PRE_AUTH_MAX_BODY)) if h.len == 5000
        ));
        // Under the bound: room for exactly the rest of the frame is made.
        assert!(inbuf.take(MAX_BODY).ok().unwrap().is_none());
        assert!(inbuf.room().capacity() >= 5009);
    }
}
