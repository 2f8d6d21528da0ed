//! Proxies on 127.0.0.1 between a client and backupd.
//!
//! [`FrameProxy`] forwards whole frames of the plain protocol and can close the connection,
//! drop or rewrite a frame on purpose: faults of the connection and of the server's replies,
//! at a frame the test chooses. [`ByteProxy`] relays bytes it does not understand (TLS),
//! recording them and optionally flipping one; [`TlsRelay`] terminates TLS with a
//! certificate of its own and opens its own TLS session to backupd: the machines in the
//! middle of docs/protocol.md's "What TLS and the handshake protect".
//!
//! It reads frames by their 9-byte header (`formats::protocol::FrameHeader`), both ways,
//! and logs every frame it forwards. One connection per proxy.
//!
//! Closing is made so that the client sees exactly the frames forwarded, then the end of
//! the connection: the proxy half-closes its side towards the client (FIN after the last
//! frame written) and goes on reading, and discarding, what the client sends until the
//! client closes; a socket closed with unread bytes would send a reset instead, which may
//! discard frames already sent but not yet read by the client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use formats::protocol::{FrameHeader, HEADER_LEN};

/// What to do with one frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Forward,
    /// Forward it, then close the connection.
    ForwardThenClose,
    /// Close the connection without forwarding it.
    Close,
    /// Do not forward it.
    Drop,
    /// Forward this body instead (same kind and id).
    Replace(Vec<u8>),
}

/// One frame as it crossed the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedFrame {
    /// Its header (for a replaced frame, the header forwarded).
    pub header: FrameHeader,
    /// Its body.
    pub body: Vec<u8>,
}

/// Every frame forwarded, each way, in order.
#[derive(Debug, Clone, Default)]
pub struct ProxyLog {
    /// Client to server.
    pub to_server: Vec<LoggedFrame>,
    /// Server to client.
    pub to_client: Vec<LoggedFrame>,
    /// Whether the proxy closed the connection (rather than one side).
    pub closed_by_proxy: bool,
}

/// Decides each server frame: its index (0 = the greeting), header and body.
pub type Policy = Box<dyn FnMut(usize, &FrameHeader, &[u8]) -> Verdict + Send>;

/// A proxy serving one connection.
#[derive(Debug)]
pub struct FrameProxy {
    addr: SocketAddr,
    log: Arc<Mutex<ProxyLog>>,
    thread: Option<JoinHandle<()>>,
}

/// Reads one frame; `None` at the end of the stream before a header byte (or on an error,
/// which ends the conversation the same way).
fn read_frame(s: &mut impl Read) -> Option<LoggedFrame> {
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head).ok()?;
    let header = FrameHeader::decode(&head).ok()?;
    let mut body = vec![0u8; header.len as usize];
    s.read_exact(&mut body).ok()?;
    Some(LoggedFrame { header, body })
}

fn write_frame(s: &mut impl Write, f: &LoggedFrame) -> io::Result<()> {
    let mut out = Vec::with_capacity(HEADER_LEN + f.body.len());
    out.extend_from_slice(&f.header.encode());
    out.extend_from_slice(&f.body);
    s.write_all(&out)
}

impl FrameProxy {
    /// Starts a proxy to `upstream` that asks `policy` about every server frame.
    pub fn start(
        upstream: SocketAddr,
        policy: impl FnMut(usize, &FrameHeader, &[u8]) -> Verdict + Send + 'static,
    ) -> FrameProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(ProxyLog::default()));
        let thread_log = log.clone();
        let mut policy: Policy = Box::new(policy);
        let thread = std::thread::Builder::new()
            .name("frame-proxy".into())
            .spawn(move || {
                let Ok((client, _)) = listener.accept() else {
                    return;
                };
                drop(listener);
                let server = TcpStream::connect(upstream).expect("the proxy connecting upstream");
                serve(client, server, &mut policy, &thread_log);
            })
            .unwrap();
        FrameProxy {
            addr,
            log,
            thread: Some(thread),
        }
    }

    /// Forwards everything.
    pub fn forward_all(upstream: SocketAddr) -> FrameProxy {
        FrameProxy::start(upstream, |_, _, _| Verdict::Forward)
    }

    /// Forwards the first `n` server frames (`n` ≥ 1), then closes the connection.
    pub fn close_after(upstream: SocketAddr, n: usize) -> FrameProxy {
        assert!(n >= 1, "the greeting is frame 1");
        FrameProxy::start(upstream, move |i, _, _| {
            if i + 1 == n {
                Verdict::ForwardThenClose
            } else {
                Verdict::Forward
            }
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the conversation is over and returns its log. Call it after the client
    /// is dropped (the proxy serves until the client closes).
    pub fn finish(mut self) -> ProxyLog {
        if let Some(t) = self.thread.take() {
            t.join().expect("the proxy thread panicked");
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FrameProxy {
    fn drop(&mut self) {
        // Not joined: a test failing before its client closes must not hang here.
        self.thread.take();
    }
}

fn serve(client: TcpStream, server: TcpStream, policy: &mut Policy, log: &Arc<Mutex<ProxyLog>>) {
    let closed = Arc::new(AtomicBool::new(false));
    // Client to server: frame by frame, logged; discarded once the proxy has closed.
    let up = {
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (log, closed) = (log.clone(), closed.clone());
        std::thread::spawn(move || {
            while let Some(f) = read_frame(&mut from) {
                if closed.load(Ordering::SeqCst) {
                    continue;
                }
                log.lock().unwrap().to_server.push(f.clone());
                if write_frame(&mut to, &f).is_err() {
                    break;
                }
            }
            // The client closed (or the proxy did): let the server see the end too. Keep
            // draining the client so that its socket is never closed with unread bytes.
            let _ = to.shutdown(Shutdown::Write);
            let mut sink = [0u8; 8192];
            while matches!(from.read(&mut sink), Ok(n) if n > 0) {}
        })
    };
    // Server to client: each frame by the policy.
    let (mut from, mut to) = (server, client);
    let mut i = 0;
    while let Some(f) = read_frame(&mut from) {
        let verdict = policy(i, &f.header, &f.body);
        i += 1;
        let forward = |f: LoggedFrame, to: &mut TcpStream| {
            log.lock().unwrap().to_client.push(f.clone());
            write_frame(to, &f).is_ok()
        };
        let close = match verdict {
            Verdict::Forward => !forward(f, &mut to),
            Verdict::ForwardThenClose => {
                forward(f, &mut to);
                true
            }
            Verdict::Close => true,
            Verdict::Drop => false,
            Verdict::Replace(body) => {
                let header = FrameHeader {
                    len: body.len() as u32,
                    ..f.header
                };
                !forward(LoggedFrame { header, body }, &mut to)
            }
        };
        if close {
            closed.store(true, Ordering::SeqCst);
            log.lock().unwrap().closed_by_proxy = true;
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
    }
    // FIN to the client after the last frame forwarded; the other thread drains it.
    let _ = to.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// What a [`ByteProxy`] saw, both ways, over all its connections.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Every byte from clients to the server, connections one after the other.
    pub to_server: Vec<u8>,
    /// Every byte from the server to clients.
    pub to_client: Vec<u8>,
    /// Connections served.
    pub connections: usize,
}

/// A TCP relay on 127.0.0.1 that understands nothing: it records every byte both ways (a
/// capture of the loopback traffic) and can flip one byte of what the server sends on each
/// connection (a machine in the middle rewriting the stream). Serves any number of
/// connections until dropped.
#[derive(Debug)]
pub struct ByteProxy {
    addr: SocketAddr,
    capture: Arc<Mutex<Capture>>,
    stop: Arc<AtomicBool>,
}

impl ByteProxy {
    /// Relays to `upstream`; with `flip_at`, the byte at that offset of what the server
    /// sends on each connection is inverted.
    pub fn start(upstream: SocketAddr, flip_at: Option<usize>) -> ByteProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let capture = Arc::new(Mutex::new(Capture::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (cap, st) = (capture.clone(), stop.clone());
        std::thread::Builder::new()
            .name("byte-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    cap.lock().unwrap().connections += 1;
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let cap_up = cap.clone();
                    std::thread::spawn(move || pump(client, server, None, &cap_up, true));
                    let cap_down = cap.clone();
                    std::thread::spawn(move || pump(s2, c2, flip_at, &cap_down, false));
                }
            })
            .unwrap();
        ByteProxy {
            addr,
            capture,
            stop,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has seen so far.
    pub fn capture(&self) -> Capture {
        self.capture.lock().unwrap().clone()
    }
}

impl Drop for ByteProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either ends, recording what passes (and flipping the byte
/// at `flip_at`); then closes both ways.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flip_at: Option<usize>,
    capture: &Mutex<Capture>,
    upward: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        if let Some(at) = flip_at {
            if (offset..offset + n).contains(&at) {
                chunk[at - offset] ^= 0xff;
            }
        }
        offset += n;
        {
            let mut c = capture.lock().unwrap();
            if upward {
                c.to_server.extend_from_slice(chunk);
            } else {
                c.to_client.extend_from_slice(chunk);
            }
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A machine in the middle that terminates TLS: it shows clients its own certificate
/// (`identity`) and opens a TLS session of its own to backupd (trusting backupd's key by
/// `upstream_tls`), relaying the plaintext both ways. A client that pins backupd's key
/// refuses it; one that was told to trust the relay's key completes TLS with it, and then
/// the handshake's binding to the TLS session must fail the authentication. Serves any
/// number of connections until dropped.
#[derive(Debug)]
pub struct TlsRelay {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsRelay {
    /// Starts a relay to `upstream` showing `identity`'s certificate to clients.
    pub fn start(
        upstream: SocketAddr,
        identity: Arc<rustls::ServerConfig>,
        upstream_tls: &backup_server::client::TlsSettings,
    ) -> TlsRelay {
        let client_config =
            backup_server::client::tls::client_config(upstream_tls).expect("the relay's client");
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the relay");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tls-relay".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let acceptor = tokio_rustls::TlsAcceptor::from(identity);
                    let connector = tokio_rustls::TlsConnector::from(client_config);
                    let mut stop_rx = stop_rx;
                    loop {
                        let (sock, _) = tokio::select! {
                            _ = &mut stop_rx => return,
                            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        };
                        let (acceptor, connector) = (acceptor.clone(), connector.clone());
                        tokio::spawn(async move {
                            let Ok(mut down) = acceptor.accept(sock).await else {
                                return;
                            };
                            let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
                                return;
                            };
                            let name = rustls::pki_types::ServerName::try_from("localhost")
                                .unwrap()
                                .to_owned();
                            let Ok(mut up) = connector.connect(name, tcp).await else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        });
                    }
                });
            })
            .unwrap();
        TlsRelay {
            addr,
            stop: Some(stop_tx),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
