//! The daemon's network side: accept connections, authenticate, answer requests from the
//! spool (docs/protocol.md is the contract).
//!
//! Shape (after mini-redis): [`run`] takes a bound listener, the spool and a shutdown
//! future. A semaphore bounds connections (one over the limit is told "busy" and closed);
//! each connection is its own task, so one client's error, stall or disconnect touches
//! nobody else. Everything that touches the spool runs on tokio's blocking threads behind
//! a second semaphore (`blocking_threads`), so a burst of requests queues instead of
//! spawning threads without end, and the async threads never wait on a disk.
//!
//! A connection reads one request at a time and answers it whole before reading the next;
//! a client may still pipeline, since what it sent waits in the socket and in the read
//! buffer. Replies are flushed when no further request is already waiting, so a pipelined
//! batch travels in as few packets as it can. Message and meta bytes go out in data frames
//! of at most `data_chunk` bytes: per connection, memory is one chunk, one read buffer
//! (a request is at most 16 MiB; before authentication at most [`PRE_AUTH_MAX_BODY`]
//! bytes) and the socket's write buffer.
//!
//! Shutdown: the listener closes at once; every connection finishes the reply under way,
//! sends an error frame saying the server is shutting down, and closes. Connections still
//! busy after `shutdown_grace` are cut.

use crate::access::{MetaCopy, UserEntry, UserListing};
use crate::auth::{self, Secret};
use crate::spool::SpoolError;
use formats::protocol::{
    self as wire, encode_data_header, kind, message::REQUEST, AuthOk, ErrorCode, ErrorReply,
    FrameHeader, Greeting, Reply, Request, HEADER_LEN, MAX_BODY,
};
use formats::FileStat;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

/// The largest frame body accepted before authentication: the auth frame is 66 bytes, so
/// an unauthenticated peer can never make the server buffer much.
pub const PRE_AUTH_MAX_BODY: u32 = 1024;

/// Buffer capacity a connection keeps between requests.
const KEEP_BUFFER: usize = 1024 * 1024;

/// What the server reads from the spool: [`crate::spool::Spool`] in the daemon, a fake in
/// tests. Every method blocks (file I/O, fcntl locks); the server calls them on its
/// bounded blocking pool only.
pub trait SpoolAccess: Send + Sync + 'static {
    /// Every user with the partition of their INBOX.
    fn users(&self) -> Result<Vec<UserEntry>, SpoolError>;
    /// One user's folders and files, stat data only.
    fn folders(&self, user: &str) -> Result<UserListing, SpoolError>;
    /// One folder's meta files, copied under Cyrus's locks.
    fn copy_meta(&self, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError>;
    /// A message file opened for reading, with its size; `None` when it is gone.
    fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(File, u64)>, SpoolError>;
    /// A per-user file's bytes and stat data; `None` when it does not exist.
    fn read_user_file(
        &self,
        user: &str,
        id: &crate::access::UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError>;
}

/// How the server behaves; [`crate::config::Config::settings`] fills it from the file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connections served at once.
    pub max_connections: usize,
    /// Spool operations running at once.
    pub blocking_threads: usize,
    /// Silence allowed between requests, and the longest a write may wait on the client.
    pub idle_timeout: Duration,
    /// Time a new connection has to authenticate.
    pub auth_timeout: Duration,
    /// Time a shutdown waits for connections to finish their replies.
    pub shutdown_grace: Duration,
    /// Bytes per data frame (1 to [`MAX_BODY`]).
    pub data_chunk: usize,
    /// The server name in the greeting.
    pub server_name: String,
    /// Peers that may connect ([`crate::allow`]); anyone else is closed as soon as it is
    /// accepted. Default: loopback only.
    pub allow_from: Vec<crate::allow::IpNet>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_connections: 64,
            blocking_threads: 16,
            idle_timeout: Duration::from_secs(600),
            auth_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            data_chunk: 256 * 1024,
            server_name: format!("backupd {}", env!("CARGO_PKG_VERSION")),
            allow_from: crate::allow::loopback(),
        }
    }
}

/// What every connection shares.
struct Shared<S> {
    spool: Arc<S>,
    secret: Secret,
    settings: Settings,
    /// Permits to run a spool operation.
    pool: Arc<Semaphore>,
}

/// Serves `listener` until `shutdown` completes, then lets connections finish (up to
/// `shutdown_grace`) and returns.
pub async fn run<S: SpoolAccess>(
    listener: TcpListener,
    spool: Arc<S>,
    secret: Secret,
    mut settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    settings.data_chunk = settings.data_chunk.clamp(1, MAX_BODY as usize);
    let shared = Arc::new(Shared {
        spool,
        secret,
        pool: Arc::new(Semaphore::new(settings.blocking_threads.max(1))),
        settings,
    });
    let limit = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    info!(
        addr = %listener.local_addr()?,
        max_connections = shared.settings.max_connections,
        blocking_threads = shared.settings.blocking_threads,
        allow_from = %shared
            .settings
            .allow_from
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        "listening"
    );
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Before anything is sent or a slot is taken: a peer not allowed costs one
                // log line and a close.
                if !crate::allow::allowed(&shared.settings.allow_from, peer.ip()) {
                    warn!(%peer, "refused: address not in allow_from; closing");
                    drop(socket);
                    continue;
                }
                let _ = socket.set_nodelay(true);
                match limit.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = shared.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move {
                            serve_connection(socket, peer, shared, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        warn!(%peer, "connection limit reached, refusing");
                        let limit = shared.settings.max_connections;
                        conns.spawn(refuse(socket, ErrorReply::new(
                            ErrorCode::Busy,
                            format!("too many connections (limit {limit}); try again later"),
                        )));
                    }
                }
            }
        }
    }
    drop(listener);
    let open = conns.len();
    info!(open, "shutting down: no new connections");
    let _ = stop_tx.send(true);
    let grace = shared.settings.shutdown_grace;
    if timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            left = conns.len(),
            "connections still busy after {grace:?}; closing them"
        );
        conns.shutdown().await;
    }
    info!("shut down");
    Ok(())
}

/// Tells a peer why it is turned away, then closes.
async fn refuse(mut socket: TcpStream, e: ErrorReply) {
    let mut out = Vec::new();
    e.encode(0, &mut out);
    let _ = timeout(Duration::from_secs(5), socket.write_all(&out)).await;
    let _ = socket.shutdown().await;
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
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
        }
    }
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        End::Io(e)
    }
}

/// Bytes read from a peer and not yet taken as frames. A frame is taken by moving a cursor
/// past it; what is left moves to the front only before the next read. (Moving the rest
/// of the buffer after every frame made a buffer full of small pipelined requests cost
/// time quadratic in their number.)
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
struct Conn<S> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    rd: OwnedReadHalf,
    wr: BufWriter<OwnedWriteHalf>,
    /// Bytes read and not yet consumed as frames.
    inbuf: InBuf,
    /// Scratch for encoding frames.
    out: Vec<u8>,
    requests: u64,
    bytes_out: u64,
}

async fn serve_connection<S: SpoolAccess>(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<S>>,
    mut stop: watch::Receiver<bool>,
) {
    let (rd, wr) = socket.into_split();
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
    debug!(%peer, "connected");
    let end = match conn.handshake().await {
        Ok(()) => conn.serve(&mut stop).await,
        Err(end) => end,
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
        End::Closed | End::Truncated | End::Io(_) => None,
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
    match &end {
        End::Closed | End::Shutdown => {
            debug!(%peer, requests = conn.requests, bytes = conn.bytes_out, "connection closed")
        }
        End::Refused(e) if e.code == ErrorCode::AuthFailed => {}
        other => {
            info!(%peer, requests = conn.requests, bytes = conn.bytes_out, reason = %other, "connection ended")
        }
    }
}

impl<S: SpoolAccess> Conn<S> {
    /// Greeting, auth frame, proof check, auth-ok.
    async fn handshake(&mut self) -> Result<(), End> {
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

        let auth_timeout = self.shared.settings.auth_timeout;
        let (h, body) = match timeout(auth_timeout, self.read_frame(PRE_AUTH_MAX_BODY)).await {
            Err(_) => return Err(End::Timeout("authentication")),
            Ok(r) => r?,
        };
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
            .verify_client(a.version, &nonce, &a.nonce, &a.proof)
        {
            warn!(peer = %self.peer, "authentication failed: wrong secret");
            return Err(End::Refused(ErrorReply::new(
                ErrorCode::AuthFailed,
                "authentication failed: the proof does not match this server's secret; closing",
            )));
        }
        self.out.clear();
        AuthOk {
            proof: self.shared.secret.server_proof(a.version, &nonce, &a.nonce),
        }
        .encode(&mut self.out)
        .map_err(|e| End::Refused(ErrorReply::new(ErrorCode::Internal, e.to_string())))?;
        self.write_out().await?;
        self.flush().await?;
        info!(peer = %self.peer, "authenticated");
        Ok(())
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
                    self.answer(h.id, req).await
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

    async fn write_out(&mut self) -> Result<(), End> {
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

    async fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), End> {
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
    async fn reply(&mut self, id: u32, reply: Reply) -> Result<(), End> {
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

    async fn reply_error(&mut self, id: u32, e: ErrorReply) -> Result<(), End> {
        debug!(peer = %self.peer, id, error = %e, "error reply");
        self.reply(id, Reply::Error(e)).await
    }

    /// Data frames for `bytes`, in chunks.
    async fn send_data(&mut self, id: u32, bytes: &[u8]) -> Result<(), End> {
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
    async fn blocking<T, F>(&self, f: F) -> Result<T, ErrorReply>
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

    /// Answers one request: its whole reply, ending with End or Error. An `Err` means the
    /// connection is over; a failed request is an `Ok` whose reply says why.
    async fn answer(&mut self, id: u32, req: Request) -> Result<(), End> {
        match req {
            Request::Ping => self.reply(id, Reply::End { items: 0 }).await,
            Request::ListUsers => self.list_users(id).await,
            Request::ListFolders { user } => {
                if let Err(e) = check_names(&user, None) {
                    return self.reply_error(id, e).await;
                }
                self.list_folders(id, user).await
            }
            Request::CopyMeta { user, uniqueid } => {
                if let Err(e) = check_names(&user, Some(&uniqueid)) {
                    return self.reply_error(id, e).await;
                }
                self.copy_meta(id, user, uniqueid).await
            }
            Request::FetchMessages {
                user,
                uniqueid,
                uids,
            } => {
                if let Err(e) = check_names(&user, Some(&uniqueid)) {
                    return self.reply_error(id, e).await;
                }
                self.fetch_messages(id, Arc::from(user), Arc::from(uniqueid), uids)
                    .await
            }
            Request::FetchUserFiles { user, ids } => {
                let checked = check_names(&user, None).and_then(|()| {
                    ids.iter().try_for_each(|i| match i {
                        wire::UserFileId::SieveScript(name) => {
                            crate::spool::check_script_name(name)
                                .map_err(|e| spool_error(&e, "checking names"))
                        }
                        _ => Ok(()),
                    })
                });
                if let Err(e) = checked {
                    return self.reply_error(id, e).await;
                }
                self.fetch_user_files(id, Arc::from(user), ids).await
            }
        }
    }

    async fn list_users(&mut self, id: u32) -> Result<(), End> {
        let users = match self.blocking(|s| s.users()).await {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => return self.reply_error(id, spool_error(&e, "listing users")).await,
            Err(e) => return self.reply_error(id, e).await,
        };
        let total = users.len() as u64;
        // Converted and written a slice at a time: the encoded list is never whole in memory.
        let mut users = users.into_iter();
        loop {
            let batch: Vec<wire::UserEntry> = users.by_ref().take(8192).map(Into::into).collect();
            if batch.is_empty() && total > 0 {
                break;
            }
            self.out.clear();
            if let Err(e) = wire::encode_users(id, &batch, &mut self.out) {
                self.out.clear();
                return self
                    .reply_error(id, ErrorReply::new(ErrorCode::Internal, e.to_string()))
                    .await;
            }
            self.write_out().await?;
            if batch.is_empty() {
                break;
            }
        }
        self.reply(id, Reply::End { items: total }).await
    }

    async fn list_folders(&mut self, id: u32, user: String) -> Result<(), End> {
        let what = format!("listing the folders of user {user:?}");
        let listing = match self.blocking(move |s| s.folders(&user)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return self.reply_error(id, spool_error(&e, &what)).await,
            Err(e) => return self.reply_error(id, e).await,
        };
        let count = listing.folders.len() as u64;
        let folders: Vec<wire::FolderStat> = listing.folders.into_iter().map(Into::into).collect();
        let files: Vec<wire::UserFileStat> =
            listing.user_files.into_iter().map(Into::into).collect();
        self.out.clear();
        if let Err(e) = wire::encode_folders(id, &folders, &mut self.out) {
            self.out.clear();
            return self
                .reply_error(id, ErrorReply::new(ErrorCode::Internal, e.to_string()))
                .await;
        }
        self.write_out().await?;
        self.reply(id, Reply::UserFiles(files)).await?;
        self.reply(id, Reply::End { items: count }).await
    }

    async fn copy_meta(&mut self, id: u32, user: String, uniqueid: String) -> Result<(), End> {
        let what = format!("copying the meta files of folder {uniqueid} of user {user:?}");
        let copy = match self.blocking(move |s| s.copy_meta(&user, &uniqueid)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return self.reply_error(id, spool_error(&e, &what)).await,
            Err(e) => return self.reply_error(id, e).await,
        };
        let mut files = vec![
            (wire::MetaKind::Header, copy.header),
            (wire::MetaKind::Index, copy.index),
        ];
        if let Some(a) = copy.annotations {
            files.push((wire::MetaKind::Annotations, a));
        }
        let n = files.len() as u64;
        for (kind, (bytes, stat)) in files {
            self.reply(
                id,
                Reply::MetaFile {
                    kind,
                    stat,
                    size: bytes.len() as u64,
                },
            )
            .await?;
            self.send_data(id, &bytes).await?;
        }
        self.reply(id, Reply::End { items: n }).await
    }

    async fn fetch_messages(
        &mut self,
        id: u32,
        user: Arc<str>,
        uniqueid: Arc<str>,
        uids: Vec<u32>,
    ) -> Result<(), End> {
        let chunk = self.shared.settings.data_chunk;
        let mut buf: Vec<u8> = Vec::new();
        let mut done = 0u64;
        for uid in uids {
            // Open and read the first chunk in one trip to the pool: most messages are
            // smaller than a chunk, and then this is the only one.
            let (u, f) = (user.clone(), uniqueid.clone());
            let mut b = std::mem::take(&mut buf);
            let opened = self
                .blocking(move |s| -> Result<Option<(File, u64, Vec<u8>)>, Step> {
                    let Some((mut file, size)) =
                        s.open_message(&u, &f, uid).map_err(Step::Spool)?
                    else {
                        return Ok(None);
                    };
                    fill(&mut file, &mut b, chunk, size).map_err(Step::Read)?;
                    Ok(Some((file, size, b)))
                })
                .await;
            let what = || format!("message UID {uid} of folder {uniqueid} of user {user:?}");
            let (mut file, size, b) = match opened {
                Err(e) => return self.reply_error(id, e).await,
                Ok(Ok(None)) => {
                    self.reply(id, Reply::Gone { uid }).await?;
                    done += 1;
                    continue;
                }
                Ok(Ok(Some(x))) => x,
                Ok(Err(Step::Spool(e))) => {
                    let reply = spool_error(&e, &what());
                    if is_request_error(&e) {
                        // The user or folder is not there (any more): no UID can succeed.
                        return self.reply_error(id, reply).await;
                    }
                    self.reply(id, Reply::ItemError(reply)).await?;
                    done += 1;
                    continue;
                }
                Ok(Err(Step::Read(e))) => {
                    let reply = ErrorReply::new(ErrorCode::Io, format!("reading {}: {e}", what()));
                    self.reply(id, Reply::ItemError(reply)).await?;
                    done += 1;
                    continue;
                }
            };
            buf = b;
            self.reply(id, Reply::Message { uid, size }).await?;
            let mut sent = 0u64;
            loop {
                // `buf` holds what the last read gave for offset `sent`.
                let expected = (size - sent).min(chunk as u64) as usize;
                let got = buf.len();
                if got > 0 {
                    self.out.clear();
                    let _ = encode_data_header(id, got, &mut self.out);
                    self.write_out().await?;
                    let data = std::mem::take(&mut buf);
                    let res = self.write_bytes(&data).await;
                    buf = data;
                    res?;
                    sent += got as u64;
                }
                if sent >= size {
                    break;
                }
                if got < expected {
                    // The file ended before `size`: it shrank under us.
                    let reply = ErrorReply::new(
                        ErrorCode::Io,
                        format!("{}: file ended after {sent} of {size} bytes", what()),
                    );
                    self.reply(id, Reply::ItemError(reply)).await?;
                    break;
                }
                let mut b = std::mem::take(&mut buf);
                let next = self
                    .blocking(move |_| {
                        let r = fill(&mut file, &mut b, chunk, size - sent);
                        (file, b, r)
                    })
                    .await;
                match next {
                    Err(e) => return self.reply_error(id, e).await,
                    Ok((f, b, Ok(()))) => {
                        file = f;
                        buf = b;
                    }
                    Ok((_, b, Err(e))) => {
                        buf = b;
                        let reply =
                            ErrorReply::new(ErrorCode::Io, format!("reading {}: {e}", what()));
                        self.reply(id, Reply::ItemError(reply)).await?;
                        break;
                    }
                }
            }
            done += 1;
            // A huge message must not keep its buffer; a chunk-sized one is reused.
            buf.clear();
            buf.shrink_to(chunk);
        }
        self.reply(id, Reply::End { items: done }).await
    }

    async fn fetch_user_files(
        &mut self,
        id: u32,
        user: Arc<str>,
        ids: Vec<wire::UserFileId>,
    ) -> Result<(), End> {
        let n = ids.len() as u64;
        for file_id in ids {
            let u = user.clone();
            let fid: crate::access::UserFileId = file_id.clone().into();
            let read = self.blocking(move |s| s.read_user_file(&u, &fid)).await;
            let what = || format!("{file_id} of user {user:?}");
            match read {
                Err(e) => return self.reply_error(id, e).await,
                Ok(Ok(None)) => self.reply(id, Reply::Absent { id: file_id }).await?,
                Ok(Ok(Some((bytes, stat)))) => {
                    self.reply(
                        id,
                        Reply::UserFile {
                            id: file_id,
                            stat,
                            size: bytes.len() as u64,
                        },
                    )
                    .await?;
                    self.send_data(id, &bytes).await?;
                }
                Ok(Err(e)) => {
                    let reply = spool_error(&e, &what());
                    if is_request_error(&e) {
                        return self.reply_error(id, reply).await;
                    }
                    self.reply(id, Reply::ItemError(reply)).await?;
                }
            }
        }
        self.reply(id, Reply::End { items: n }).await
    }
}

/// A step of a message read that failed.
enum Step {
    Spool(SpoolError),
    Read(io::Error),
}

/// Reads into `buf` (cleared first) until it holds `min(chunk, left)` bytes or the file
/// ends.
fn fill(file: &mut File, buf: &mut Vec<u8>, chunk: usize, left: u64) -> io::Result<()> {
    let want = usize::try_from(left).unwrap_or(usize::MAX).min(chunk);
    buf.clear();
    buf.resize(want, 0);
    let mut got = 0;
    while got < want {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(())
}

/// The spool's own name checks ([`crate::spool::check_name`]), made before a request
/// costs a trip to the blocking pool; the spool checks again and looks the names up in
/// the mailbox list.
fn check_names(user: &str, uniqueid: Option<&str>) -> Result<(), ErrorReply> {
    crate::spool::check_name("user", user)
        .and_then(|()| uniqueid.map_or(Ok(()), crate::spool::check_uniqueid))
        .map_err(|e| spool_error(&e, "checking names"))
}

/// Whether a spool error concerns the request as a whole (who, which folder, the server's
/// configuration), not one item of it.
fn is_request_error(e: &SpoolError) -> bool {
    matches!(
        e,
        SpoolError::UnknownUser { .. }
            | SpoolError::UnknownFolder { .. }
            | SpoolError::BadName { .. }
            | SpoolError::Conf { .. }
            | SpoolError::Config(_)
            | SpoolError::MailboxList { .. }
    )
}

fn spool_code(e: &SpoolError) -> ErrorCode {
    match e {
        SpoolError::UnknownUser { .. } => ErrorCode::UnknownUser,
        SpoolError::UnknownFolder { .. } => ErrorCode::UnknownFolder,
        SpoolError::BadName { .. } => ErrorCode::BadName,
        SpoolError::Io { .. } | SpoolError::Lock { .. } | SpoolError::LockTimeout { .. } => {
            ErrorCode::Io
        }
        SpoolError::Conf { .. }
        | SpoolError::Config(_)
        | SpoolError::MailboxList { .. }
        | SpoolError::BadHeader { .. }
        | SpoolError::BadIndex { .. }
        | SpoolError::SieveSource { .. } => ErrorCode::Spool,
    }
}

/// The error reply for a spool error met while doing `what`.
fn spool_error(e: &SpoolError, what: &str) -> ErrorReply {
    let code = spool_code(e);
    let text = match code {
        // The spool's own text already says it all ("unknown user \"alice\": ...").
        ErrorCode::UnknownUser | ErrorCode::UnknownFolder | ErrorCode::BadName => e.to_string(),
        _ => format!("{what}: {e}"),
    };
    ErrorReply::new(code, text)
}

impl SpoolAccess for crate::spool::Spool {
    fn users(&self) -> Result<Vec<UserEntry>, SpoolError> {
        crate::spool::Spool::users(self)
    }
    fn folders(&self, user: &str) -> Result<UserListing, SpoolError> {
        crate::spool::Spool::folders(self, user)
    }
    fn copy_meta(&self, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError> {
        crate::spool::Spool::copy_meta(self, user, uniqueid)
    }
    fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(File, u64)>, SpoolError> {
        crate::spool::Spool::open_message(self, user, uniqueid, uid)
    }
    fn read_user_file(
        &self,
        user: &str,
        id: &crate::access::UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
        crate::spool::Spool::read_user_file(self, user, id)
    }
}

/// A server running on its own thread and runtime, for tests and for embedding: bound
/// before [`spawn`] returns, stopped by [`ServerHandle::shutdown`] or on drop.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it as SIGTERM would, and waits until it has stopped.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Binds `addr` (port 0 for any) and serves on a new thread with its own runtime.
pub fn spawn<S: SpoolAccess>(
    addr: SocketAddr,
    spool: Arc<S>,
    secret: Secret,
    settings: Settings,
) -> io::Result<ServerHandle> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(settings.blocking_threads.max(1) + 2)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("backupd-server".into())
        .spawn(move || {
            let res = runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                run(listener, spool, secret, settings, async {
                    let _ = stop_rx.await;
                })
                .await
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
            res
        })?;
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_of_small_pipelined_frames_is_taken_in_one_pass() {
        // What one read can leave in the buffer: a few MB of 9-byte requests. Moving the
        // rest of the buffer after each frame made this some 300 GB of memmove.
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
    fn a_lock_timeout_is_an_io_error_naming_the_file() {
        let e = SpoolError::LockTimeout {
            path: "/var/lib/cyrus/lock/*U*alice.lock".into(),
            waited: Duration::from_secs(60),
        };
        assert!(
            !is_request_error(&e),
            "one item of a request, not the request"
        );
        let reply = spool_error(&e, "copying the meta files of folder x of user \"alice\"");
        assert_eq!(reply.code, ErrorCode::Io);
        assert!(
            reply.text.contains(
                "/var/lib/cyrus/lock/*U*alice.lock: gave up waiting for the lock after 60.0 s"
            ),
            "{}",
            reply.text
        );
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
