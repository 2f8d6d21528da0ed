//! The daemon's network side: accept connections, authenticate, answer requests from the
//! spool (docs/protocol.md is the contract).
//!
//! Laid out as tokio's mini-redis is: this file is the listener ([`run`], [`spawn`]), the
//! connection limit and shutdown; `connection.rs` is one connection (frames in and out, the
//! handshake, the request loop, why it ended); `handlers.rs` answers each request from the
//! spool.
//!
//! A connection first goes through its handshake (TLS, then the secret's proofs) within
//! `auth_timeout`, in the small pre-authentication pool (`pre_auth.rs`: when it is full,
//! its oldest member is evicted once it has had a short grace). Only then does it take one of the `max_connections` slots (a
//! semaphore; an authenticated peer over the limit is told "busy" and closed), so idle
//! unauthenticated sockets never keep a backup host out. Each connection is its own task, so one client's error, stall or disconnect touches nobody
//! else. Everything that touches the spool runs on tokio's blocking threads behind a second
//! semaphore (`blocking_threads`), so a burst of requests queues instead of spawning threads
//! without end, and the async threads never wait on a disk.
//!
//! Shutdown: the listener closes at once; every connection finishes the reply under way,
//! sends an error frame saying the server is shutting down, and closes. Connections still
//! busy after `shutdown_grace` are cut.

mod connection;
mod handlers;
mod pre_auth;

pub use connection::PRE_AUTH_MAX_BODY;

use crate::spool::{SpoolError, UserList};
use formats::protocol::Secret;
use formats::protocol::MAX_BODY;
use formats::protocol::{MetaCopy, UserListing};
use formats::FileStat;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{info, warn};

/// What the server reads from the spool: [`crate::spool::Spool`] in the daemon, a fake in
/// tests. Every method blocks (file I/O, fcntl locks); the server calls them on its
/// bounded blocking pool only.
pub trait SpoolAccess: Send + Sync + 'static {
    /// Every user with the partition of their INBOX, in user id order (shared: the daemon
    /// keeps it between requests).
    fn users(&self) -> Result<Arc<UserList>, SpoolError>;
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
        id: &formats::protocol::UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError>;
}

/// How the server behaves; [`crate::config::Config::settings`] fills it from the file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Authenticated connections served at once.
    pub max_connections: usize,
    /// Connections in their handshake at once; one more evicts the oldest.
    pub max_unauthenticated: usize,
    /// Spool operations running at once.
    pub blocking_threads: usize,
    /// Silence allowed between requests, and the longest a write may wait on the client.
    pub idle_timeout: Duration,
    /// Time a new connection has for its whole handshake (TLS and the proofs).
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
    /// TLS ([`crate::tls::server_config`]); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_connections: 64,
            max_unauthenticated: 16,
            blocking_threads: 16,
            idle_timeout: Duration::from_secs(600),
            auth_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            data_chunk: 256 * 1024,
            server_name: format!("backupd {}", env!("CARGO_PKG_VERSION")),
            allow_from: crate::allow::loopback(),
            tls: None,
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
    /// The `max_connections` slots, taken by authenticated connections only.
    slots: Arc<Semaphore>,
    /// Connections in their handshake.
    pre_auth: Arc<pre_auth::PreAuthPool>,
    /// Accepts TLS, when configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        slots: Arc::new(Semaphore::new(settings.max_connections.max(1))),
        pre_auth: pre_auth::PreAuthPool::new(
            settings.max_unauthenticated,
            pre_auth::EVICTION_GRACE,
        ),
        tls: settings.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        settings,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    info!(
        addr = %listener.local_addr()?,
        max_connections = shared.settings.max_connections,
        max_unauthenticated = shared.settings.max_unauthenticated,
        tls = shared.tls.is_some(),
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
            // Room in the pre-authentication pool first: while it is full of connections
            // still within their grace, new ones wait in the listen queue.
            (evicted, accepted) = async {
                let evicted = shared.pre_auth.make_room().await;
                (evicted, listener.accept().await)
            } => {
                if evicted {
                    warn!(
                        limit = shared.settings.max_unauthenticated,
                        "too many connections not yet authenticated: the oldest closed"
                    );
                }
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
                let ticket = shared.pre_auth.admit();
                let shared = shared.clone();
                let stop = stop_rx.clone();
                conns.spawn(connection::serve_connection(socket, peer, shared, ticket, stop));
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

impl SpoolAccess for crate::spool::Spool {
    fn users(&self) -> Result<Arc<UserList>, SpoolError> {
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
        id: &formats::protocol::UserFileId,
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
