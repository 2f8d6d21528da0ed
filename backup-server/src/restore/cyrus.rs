//! `cyrus://ADMIN@HOST[:PORT]`: restores through Cyrus itself, never behind its back, by
//! speaking Cyrus 3.6's replication protocol to a `sync_server` (the protocol Cyrus's own
//! `restore` tool speaks; formats::cyrus::sync). docs/restore.md is the user's reference.
//!
//! Per folder:
//! * **It no longer exists** on the server: `RESTORE MAILBOX` creates it with the unique id,
//!   UIDVALIDITY and HIGHESTMODSEQ the backup held, and every record with its UID, MODSEQ,
//!   flags and internal date: a client that cached the folder sees it as it was. When the
//!   unique id is still held by a mailbox Cyrus keeps (a folder deleted with `delete_mode:
//!   delayed` lives on as `DELETED.user...` with the same id, and the same spool
//!   directory), reusing it would put two mailboxes in one directory, and Cyrus's later
//!   expiry of the deleted one would remove the restored one's files: the folder gets a new
//!   unique id instead, keeping UIDVALIDITY, UIDs and MODSEQs, and a note says so. The same
//!   under `--into NAME` (a second copy must not share the original's id).
//! * **It exists**: only the messages it lacks (by GUID, among its records not expunged) are
//!   sent, appended with new UIDs (IMAP gives each new message a UID above every earlier
//!   one: the old UIDs are not free), and a note says so; nothing that is there is touched.
//!
//! Messages are checked against their GUID before they are sent (a damaged copy is named by
//! the restore and never reaches the server), uploaded once per connection into the
//! server's staging area (`APPLY MESSAGE`), and filed by the `RESTORE MAILBOX` that follows,
//! which the server commits whole or not at all: a restore killed half way and run again
//! finds the folders it finished and sends only what they lack.
//!
//! A whole-user restore also puts back, as of the same time, the user's subscriptions
//! (`APPLY SUB`), seen state in other users' folders (`APPLY SEEN`), sieve scripts (`APPLY
//! SIEVE`) and which one is active (`APPLY ACTIVATE_SIEVE`), each only where the server has
//! none of its own (a script or a seen state the server holds is left as it is).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use formats::cyrus::dlist::Dlist;
use formats::cyrus::mailboxes::MailboxName;
use formats::cyrus::sync::{
    self, upload_list, MailboxIdentity, MailboxState, Reply, RestoreMailbox, RestoreRecord,
    SeenState, Verb,
};
use formats::cyrus::twoskip::Twoskip;
use formats::imap::{Limits, ResponseError};
use formats::{Guid, Timestamp};

use super::imap::{read_password, split_server, ImapError, ImapUrlError, IntoFolder};
use super::replies::{ReadError, Replies};
use super::server_addr::{all_loopback, resolve};
use super::{FolderIdentity, Item, Note, RestoreError, SafeFolder, Sink, UserFiles};
use crate::client::tls::{client_config, TlsSettings, TlsTrust, Transport};

/// The csync port (`/etc/services`: `csync 2005/tcp`).
pub const DEFAULT_PORT: u16 = 2005;

/// Messages uploaded in one `APPLY MESSAGE` at most (Cyrus's own restore sends 1024).
const UPLOAD_BATCH_MESSAGES: usize = 1024;
/// Bytes uploaded in one `APPLY MESSAGE` at most (the batch is held in memory).
const UPLOAD_BATCH_BYTES: usize = 32 << 20;
/// The largest message read into memory to check and send (Cyrus's own limit is lower).
const MAX_MESSAGE: u64 = 1 << 30;

/// A `cyrus://ADMIN@HOST:PORT` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyrusTarget {
    /// The admin who authenticates (sync_server wants an admin).
    pub admin: String,
    /// Host name or address.
    pub host: String,
    /// The sync_server port ([`DEFAULT_PORT`] when the URL names none).
    pub port: u16,
    /// The file holding the admin's password (`--password-file`).
    pub password_file: Option<PathBuf>,
    /// Where the folders go (`--into`; default: their original names).
    pub into: IntoFolder,
    /// Create new folders on this partition (`--partition`; default: the one the backup
    /// recorded, else the user's INBOX's on the server, else `default`).
    pub partition: Option<String>,
    /// Read the server's state and say what would be written, writing nothing
    /// (`--dry-run`).
    pub dry_run: bool,
    /// STARTTLS, the server's certificate checked against the CA certificates in this PEM
    /// file and the URL's host name (`--tls-ca-file`).
    pub tls_ca_file: Option<PathBuf>,
    /// Send the admin's password and the mail in clear to a host that is not loopback
    /// (`--plaintext`); refused otherwise.
    pub plaintext: bool,
}

impl CyrusTarget {
    /// Parses `cyrus://ADMIN@HOST[:PORT][/]`.
    pub fn parse(s: &str) -> Result<Self, ImapUrlError> {
        let rest = s
            .strip_prefix("cyrus://")
            .ok_or_else(|| ImapUrlError::NotCyrus(s.to_owned()))?;
        let (admin, host, port) = split_server(rest, s, DEFAULT_PORT)?;
        Ok(CyrusTarget {
            admin,
            host,
            port,
            password_file: None,
            into: IntoFolder::Original,
            partition: None,
            dry_run: false,
            tls_ca_file: None,
            plaintext: false,
        })
    }
}

/// What went wrong talking to the sync_server.
#[derive(Debug, thiserror::Error)]
pub enum CyrusError {
    /// No `--password-file`.
    #[error("a cyrus:// target needs --password-file (the admin's password)")]
    NoPassword,
    /// The password file could not be used.
    #[error(transparent)]
    Password(ImapError),
    /// No connection.
    #[error("connecting to Cyrus sync_server {host}:{port}: {source} (is a `sync_server` service listening there? see docs/restore.md)")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed.
    #[error("Cyrus sync_server {server}: {source}")]
    Io {
        /// `HOST:PORT`.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("Cyrus sync_server {server} closed the connection{during}")]
    Closed {
        /// `HOST:PORT`.
        server: String,
        /// `" during COMMAND"` when a command was waiting.
        during: String,
    },
    /// The banner was not a sync_server's.
    #[error("{server}: expected a Cyrus sync_server banner ending in `* OK`, found {found:?}")]
    Banner {
        /// `HOST:PORT`.
        server: String,
        /// What came.
        found: String,
    },
    /// A reply breaks a bound.
    #[error("Cyrus sync_server {server}: {source}")]
    Framing {
        /// `HOST:PORT`.
        server: String,
        /// Which bound.
        source: ResponseError,
    },
    /// A reply line is not what the protocol allows.
    #[error("Cyrus sync_server {server}: {source}")]
    Reply {
        /// `HOST:PORT`.
        server: String,
        /// What, where.
        source: sync::ReplyError,
    },
    /// A `MAILBOX` reply lacks what a restore needs.
    #[error("Cyrus sync_server {server}: {source}")]
    Mailbox {
        /// `HOST:PORT`.
        server: String,
        /// What.
        source: sync::MailboxStateError,
    },
    /// The admin could not log in.
    #[error("{server}: {admin} could not authenticate to sync_server: {response} (is {admin} in imapd.conf's admins?)")]
    AuthRefused {
        /// `HOST:PORT`.
        server: String,
        /// The admin.
        admin: String,
        /// The answer.
        response: String,
    },
    /// The server answered NO or BAD.
    #[error("{server}: {command}: {response}")]
    Refused {
        /// `HOST:PORT`.
        server: String,
        /// The command's first words (never message bytes, never a password).
        command: String,
        /// The answer.
        response: String,
    },
    /// A folder the store names cannot be a Cyrus mailbox name.
    #[error("folder {folder:?} of {user}: {why}")]
    BadName {
        /// The user.
        user: String,
        /// The folder.
        folder: String,
        /// Why.
        why: &'static str,
    },
    /// No random unique id.
    #[error("no random source for a new mailbox unique id: {0}")]
    Random(String),
    /// Plain TCP to a host that is not loopback, not asked for.
    #[error("{host} is not loopback: the admin's password and the mail would cross the network in clear; give --tls-ca-file (STARTTLS) or, on a network you trust, --plaintext")]
    Plaintext {
        /// The host.
        host: String,
    },
    /// TLS asked for; the server does not offer it.
    #[error("{server} does not offer STARTTLS (give sync_server a certificate: tls_server_cert and tls_server_key in imapd.conf)")]
    NoStartTls {
        /// `HOST:PORT`.
        server: String,
    },
    /// TLS failed.
    #[error("{server}: {why}")]
    Tls {
        /// `HOST:PORT`.
        server: String,
        /// Why, in words.
        why: String,
    },
}

/// A connection to a sync_server, authenticated as an admin.
struct Conn {
    server: String,
    s: Transport,
    replies: Replies,
}

impl Conn {
    fn connect(t: &CyrusTarget, password: &str) -> Result<Conn, CyrusError> {
        let connect_err = |source| CyrusError::Connect {
            host: t.host.clone(),
            port: t.port,
            source,
        };
        let addrs = resolve(&t.host, t.port).map_err(connect_err)?;
        if t.tls_ca_file.is_none() && !t.plaintext && !all_loopback(&addrs) {
            return Err(CyrusError::Plaintext {
                host: t.host.clone(),
            });
        }
        let s = TcpStream::connect(&addrs[..]).map_err(connect_err)?;
        let server = format!("{}:{}", t.host, t.port);
        // A RESTORE MAILBOX of a large folder is filed before the answer comes.
        s.set_read_timeout(Some(Duration::from_secs(1800)))
            .and_then(|()| s.set_nodelay(true))
            .map_err(|source| CyrusError::Io {
                server: server.clone(),
                source,
            })?;
        let mut c = Conn {
            server,
            s: Transport::Plain(s),
            // A GET FULLMAILBOX of a 100,000-message folder is one long line.
            replies: Replies::new(Limits {
                max_line: 256 << 20,
                max_literal: 256 << 20,
            }),
        };
        let caps = c.banner()?;
        if let Some(ca) = &t.tls_ca_file {
            if !caps.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
                return Err(CyrusError::NoStartTls { server: c.server });
            }
            c.starttls(&t.host, ca)?;
            // The server greets again, inside TLS.
            c.banner()?;
        }
        c.send(&sync::authenticate_plain("", &t.admin, password))?;
        match c.read_reply("AUTHENTICATE")? {
            Reply::Ok(_) => Ok(c),
            other => Err(CyrusError::AuthRefused {
                server: c.server.clone(),
                admin: t.admin.clone(),
                response: status_text(&other),
            }),
        }
    }

    /// The banner: capability lines, then `* OK ...`; the capability lines.
    fn banner(&mut self) -> Result<Vec<String>, CyrusError> {
        let mut caps = Vec::new();
        loop {
            match self.read_reply("the banner")? {
                Reply::Untagged(t) if t.starts_with("OK") => return Ok(caps),
                Reply::Untagged(t) => caps.push(t),
                other => {
                    return Err(CyrusError::Banner {
                        server: self.server.clone(),
                        found: format!("{other:?}"),
                    })
                }
            }
        }
    }

    /// `STARTTLS`, then the TLS handshake: the certificate must chain to `ca` and name
    /// `host`.
    fn starttls(&mut self, host: &str, ca: &std::path::Path) -> Result<(), CyrusError> {
        let server = self.server.clone();
        let tls_err = move |why: String| CyrusError::Tls {
            server: server.clone(),
            why,
        };
        self.send(sync::STARTTLS)?;
        match self.read_reply("STARTTLS")? {
            Reply::Ok(_) => {}
            other => {
                return Err(tls_err(format!(
                    "STARTTLS refused: {}",
                    status_text(&other)
                )))
            }
        }
        if self.replies.has_more() {
            return Err(tls_err(
                "the server sent more after its STARTTLS answer".into(),
            ));
        }
        let settings = TlsSettings {
            trust: TlsTrust::CaFile(ca.to_path_buf()),
            client_cert: None,
            server_name: host.to_owned(),
        };
        let config = client_config(&settings).map_err(&tls_err)?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| tls_err(format!("{host} as a TLS server name: {e}")))?;
        let mut conn = rustls::ClientConnection::new(Arc::clone(&config), name)
            .map_err(|e| tls_err(format!("TLS: {e}")))?;
        let spare = self
            .plain_clone()
            .map_err(|e| tls_err(format!("TLS: {e}")))?;
        let Transport::Plain(mut sock) = std::mem::replace(&mut self.s, Transport::Plain(spare))
        else {
            return Err(tls_err("TLS is on already".into()));
        };
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| tls_err(format!("TLS handshake: {e}")))?;
        }
        self.s = Transport::Tls(Box::new(rustls::StreamOwned::new(conn, sock)));
        Ok(())
    }

    /// A second handle on the plain socket, held while the first is moved into TLS.
    fn plain_clone(&self) -> std::io::Result<TcpStream> {
        match &self.s {
            Transport::Plain(s) => s.try_clone(),
            Transport::Tls(t) => t.sock.try_clone(),
        }
    }

    fn io(&self, source: std::io::Error) -> CyrusError {
        CyrusError::Io {
            server: self.server.clone(),
            source,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), CyrusError> {
        self.s.write_all(bytes).map_err(|e| self.io(e))
    }

    /// One reply line, its literals read within bounds.
    fn read_reply(&mut self, during: &str) -> Result<Reply, CyrusError> {
        let server = &self.server;
        let parsed = self
            .replies
            .read(&mut self.s, |_, raw| sync::parse_reply(raw))
            .map_err(|e| match e {
                ReadError::Io(source) => CyrusError::Io {
                    server: server.clone(),
                    source,
                },
                ReadError::Closed => CyrusError::Closed {
                    server: server.clone(),
                    during: format!(" during {during}"),
                },
                ReadError::Framing(source) => CyrusError::Framing {
                    server: server.clone(),
                    source,
                },
            })?;
        parsed.map_err(|source| CyrusError::Reply {
            server: self.server.clone(),
            source,
        })
    }

    /// Sends a command; returns its data replies, or the refusal. `may_fail`: a NO is
    /// returned as `Err(Some(text))` rather than an error.
    fn cmd(
        &mut self,
        verb: Verb,
        name: &str,
        value: &Dlist,
    ) -> Result<Result<Vec<(String, Dlist)>, String>, CyrusError> {
        self.send(&sync::command(verb, name, value))?;
        self.replies(&format!("{verb} {name}"))
    }

    /// Reads data replies up to the status line.
    fn replies(&mut self, what: &str) -> Result<Result<Vec<(String, Dlist)>, String>, CyrusError> {
        let mut data = Vec::new();
        loop {
            match self.read_reply(what)? {
                Reply::Data { name, value } => data.push((name, value)),
                Reply::Untagged(_) => {}
                Reply::Ok(_) => return Ok(Ok(data)),
                r @ (Reply::No { .. } | Reply::Bad(_) | Reply::Bye(_)) => {
                    return Ok(Err(status_text(&r)))
                }
            }
        }
    }

    /// [`Conn::cmd`] that must succeed.
    fn must(
        &mut self,
        verb: Verb,
        name: &str,
        value: &Dlist,
        about: &str,
    ) -> Result<Vec<(String, Dlist)>, CyrusError> {
        self.cmd(verb, name, value)?
            .map_err(|response| CyrusError::Refused {
                server: self.server.clone(),
                command: format!("{verb} {name} {about}"),
                response,
            })
    }

    fn mailbox_state(&self, v: &Dlist) -> Result<MailboxState, CyrusError> {
        MailboxState::from_dlist(v).map_err(|source| CyrusError::Mailbox {
            server: self.server.clone(),
            source,
        })
    }
}

fn status_text(r: &Reply) -> String {
    match r {
        Reply::Ok(t) => format!("OK {t}"),
        Reply::No { text, .. } => format!("NO {text}"),
        Reply::Bad(t) => format!("BAD {t}"),
        Reply::Bye(t) => format!("BYE {t}"),
        Reply::Untagged(t) => format!("* {t}"),
        Reply::Data { name, value } => format!("* {name} {value}"),
    }
}

fn atom(s: &str) -> Dlist {
    Dlist::Atom(s.as_bytes().to_vec())
}

/// The folder being restored.
struct Current {
    /// The store's name.
    store_name: String,
    /// The mailbox name on the server (internal form).
    name: String,
    partition: String,
    /// `None`: the mailbox exists; these GUIDs are in it (not expunged).
    present: Option<HashSet<Guid>>,
    /// The identity it is created with (new mailboxes).
    identity: Option<MailboxIdentity>,
    /// Per UID, MODSEQ and last change from the backup's cyrus.index.
    meta: HashMap<u32, (u64, Timestamp)>,
    acl: Option<String>,
    records: Vec<RestoreRecord>,
    already_there: u64,
}

/// The Cyrus target's sink.
pub struct CyrusSink {
    conn: Conn,
    user: String,
    into: IntoFolder,
    partition: Option<String>,
    dry_run: bool,
    /// The user's mailboxes on the server when the restore began, by internal name.
    existing: HashMap<String, MailboxState>,
    /// Unique ids held by a mailbox on the server (live or delay-deleted).
    ids_in_use: HashSet<String>,
    /// Unique ids held by intermediate names (no mailbox, no files): id -> name.
    intermediates: HashMap<String, String>,
    /// Sieve scripts and seen states the server already had (names; unique ids).
    sieve_there: HashSet<String>,
    active_sieve_there: bool,
    seen_there: HashSet<String>,
    /// Messages staged (or queued in `batch`) on the server in this connection, per
    /// partition.
    uploaded: HashSet<(String, Guid)>,
    /// The upload being gathered: (partition, guid, bytes).
    batch: Vec<(String, Guid, Vec<u8>)>,
    batch_bytes: usize,
    pending_identity: Option<FolderIdentity>,
    current: Option<Current>,
    subscribed: Option<HashSet<String>>,
    user_files: Option<UserFiles>,
    notes: Vec<Note>,
    appended: u64,
    already_there: u64,
}

impl CyrusSink {
    /// Connects and authenticates, and reads what the server holds of `user`.
    pub fn connect(t: &CyrusTarget, user: &str) -> Result<Self, RestoreError> {
        let pwfile = t.password_file.as_ref().ok_or(CyrusError::NoPassword)?;
        let password = read_password(pwfile).map_err(CyrusError::Password)?;
        let mut conn = Conn::connect(t, &password)?;
        let data = conn.must(Verb::Get, "USER", &atom(user), user)?;
        let mut sink = CyrusSink {
            conn,
            user: user.to_owned(),
            into: t.into.clone(),
            partition: t.partition.clone(),
            dry_run: t.dry_run,
            existing: HashMap::new(),
            ids_in_use: HashSet::new(),
            intermediates: HashMap::new(),
            sieve_there: HashSet::new(),
            active_sieve_there: false,
            seen_there: HashSet::new(),
            uploaded: HashSet::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            pending_identity: None,
            current: None,
            subscribed: None,
            user_files: None,
            notes: Vec::new(),
            appended: 0,
            already_there: 0,
        };
        for (name, v) in &data {
            match name.as_str() {
                "MAILBOX" => {
                    let st = sink.conn.mailbox_state(v)?;
                    if is_intermediate(&st) {
                        // A name kept for the hierarchy (what a deleted user's folders
                        // leave behind): no mailbox, no files; creating it replaces it.
                        sink.intermediates
                            .insert(st.unique_id.clone(), st.name.clone());
                    } else {
                        sink.ids_in_use.insert(st.unique_id.clone());
                        sink.existing.insert(st.name.clone(), st);
                    }
                }
                "SIEVE" => {
                    if let Some(f) = v.get("FILENAME").and_then(Dlist::as_str) {
                        if let Some(n) = f.strip_suffix(".script") {
                            sink.sieve_there.insert(n.to_owned());
                        }
                        if f.ends_with(".bc")
                            && v.get("ISACTIVE").and_then(Dlist::as_u64) == Some(1)
                        {
                            sink.active_sieve_there = true;
                        }
                    }
                }
                "SEEN" => {
                    if let Some(id) = v.get("UNIQUEID").and_then(Dlist::as_str) {
                        sink.seen_there.insert(id.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(sink)
    }

    /// The user's name split as Cyrus does: local part and virtual domain.
    fn mailbox_name(&self, boxes: Vec<String>) -> MailboxName {
        let (owner, domain) = match self.user.split_once('@') {
            Some((l, d)) => (l.to_owned(), Some(d.to_owned())),
            None => (self.user.clone(), None),
        };
        MailboxName {
            domain,
            owner: Some(owner),
            boxes,
            deleted: None,
        }
    }

    /// The mailbox a store folder goes to (internal name).
    fn target_name(&self, store_name: &str) -> Result<String, CyrusError> {
        let is_inbox = store_name.eq_ignore_ascii_case("INBOX");
        let rest = super::below_inbox(store_name);
        let mut boxes: Vec<String> = match &self.into {
            IntoFolder::Original => Vec::new(),
            IntoFolder::Dated => vec![
                "Restored".to_owned(),
                jiff::Timestamp::now().strftime("%Y-%m-%d").to_string(),
            ],
            IntoFolder::Named(n) => n.split('/').map(str::to_owned).collect(),
        };
        if is_inbox {
            if !boxes.is_empty() {
                boxes.push("INBOX".to_owned());
            }
        } else {
            boxes.extend(rest.split('/').map(str::to_owned));
        }
        if boxes.iter().any(|b| b.is_empty()) {
            return Err(CyrusError::BadName {
                user: self.user.clone(),
                folder: store_name.to_owned(),
                why: "an empty hierarchy level",
            });
        }
        Ok(self.mailbox_name(boxes).intname())
    }

    /// Whether a mailbox by this unique id exists on the server (any name, deleted too),
    /// other than an intermediate name `name` (which creating `name` replaces).
    fn id_in_use(&mut self, id: &str, name: &str) -> Result<bool, CyrusError> {
        if self.ids_in_use.contains(id) {
            return Ok(true);
        }
        if self.intermediates.get(id).is_some_and(|n| n != name) {
            return Ok(true);
        }
        let list = Dlist::List(vec![atom(id)]);
        let data = self.conn.must(Verb::Get, "UNIQUEIDS", &list, id)?;
        for (n, v) in &data {
            if n == "MAILBOX" {
                let st = self.conn.mailbox_state(v)?;
                if !(is_intermediate(&st) && st.name == name) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn new_unique_id() -> Result<String, CyrusError> {
        // Cyrus's own form: 24 characters of [0-9a-z].
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| CyrusError::Random(e.to_string()))?;
        Ok(raw
            .iter()
            .map(|b| {
                let v = b % 36;
                char::from(if v < 10 { b'0' + v } else { b'a' + v - 10 })
            })
            .collect())
    }

    /// Sends the gathered uploads.
    fn send_batch(&mut self) -> Result<(), CyrusError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let n = self.batch.len();
        if self.dry_run {
            self.batch.clear();
            self.batch_bytes = 0;
            return Ok(());
        }
        // Straight onto the connection: small pieces gathered, message bytes written as
        // they are (no second copy of a 32 MiB batch).
        let written = {
            let mut w = std::io::BufWriter::with_capacity(256 << 10, &mut self.conn.s);
            let mut put = || -> std::io::Result<()> {
                w.write_all(upload_list::START)?;
                for (i, (part, guid, bytes)) in self.batch.iter().enumerate() {
                    if i > 0 {
                        w.write_all(upload_list::SEPARATOR)?;
                    }
                    w.write_all(&sync::message_upload(part, guid, bytes.len() as u64))?;
                    w.write_all(bytes)?;
                }
                w.write_all(upload_list::END)?;
                w.flush()
            };
            put()
        };
        written.map_err(|e| self.conn.io(e))?;
        let server = self.conn.server.clone();
        self.conn
            .replies("APPLY MESSAGE")?
            .map_err(|response| CyrusError::Refused {
                server,
                command: format!("APPLY MESSAGE ({n} messages)"),
                response,
            })?;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }

    /// Files the current folder's records: `RESTORE MAILBOX`, then checks what the server
    /// made of it.
    fn finish_folder(&mut self) -> Result<(), CyrusError> {
        let Some(mut cur) = self.current.take() else {
            return Ok(());
        };
        self.send_batch()?;
        let creating = cur.present.is_none();
        // Subscribed as the backup was, whether filed now or found there: a run killed
        // between filing and subscribing is finished by the next. (Cyrus subscribes only
        // to a mailbox that exists: a new folder is subscribed after its RESTORE below.)
        let subscribe = self
            .subscribed
            .as_ref()
            .is_some_and(|s| s.contains(&cur.name));
        if !creating && subscribe {
            self.subscribe(&cur.name)?;
        }
        if !creating && cur.records.is_empty() {
            self.already_there += cur.already_there;
            return Ok(());
        }
        cur.records.sort_by_key(|r| r.uid);
        let n = cur.records.len() as u64;
        let cmd = RestoreMailbox {
            name: cur.name.clone(),
            partition: Some(cur.partition.clone()),
            identity: cur.identity.clone(),
            acl: cur.acl.clone(),
            records: std::mem::take(&mut cur.records),
        };
        let sent_uids: Vec<u32> = cmd.records.iter().map(|r| r.uid).collect();
        let what = match (&cmd.identity, creating) {
            (Some(id), true) => format!(
                "create {} on partition {} (mailbox id {}, UIDVALIDITY {}, HIGHESTMODSEQ {}) with {n} messages, UIDs {}",
                cur.name,
                cur.partition,
                id.unique_id,
                id.uidvalidity,
                id.highestmodseq,
                uid_ranges(&sent_uids)
            ),
            (None, true) => format!(
                "create {} on partition {} with {n} messages (new UIDs)",
                cur.name, cur.partition
            ),
            (_, false) => format!(
                "append {n} messages to {} (new UIDs; {} already there)",
                cur.name, cur.already_there
            ),
        };
        self.change(Verb::Restore, "MAILBOX", &cmd.to_dlist(), &cur.name, what)?;
        self.appended += n;
        self.already_there += cur.already_there;
        if self.dry_run {
            return Ok(());
        }
        if creating {
            // What the server made of it: same UIDVALIDITY and UIDs, or say what differs.
            let data = self
                .conn
                .must(Verb::Get, "FULLMAILBOX", &atom(&cur.name), &cur.name)?;
            let st = match data.iter().find(|(n, _)| n == "MAILBOX") {
                Some((_, v)) => Some(self.conn.mailbox_state(v)?),
                None => None,
            };
            if let (Some(st), Some(id)) = (st, &cur.identity) {
                let got: Vec<u32> = st.records.iter().map(|r| r.uid).collect();
                if st.uidvalidity != id.uidvalidity || got != sent_uids {
                    self.notes.push(Note::UidsNotKept {
                        folder: cur.store_name.clone(),
                        why: format!(
                            "the server created it with UIDVALIDITY {} (the backup's: {}) and UIDs {} (the backup's: {})",
                            st.uidvalidity,
                            id.uidvalidity,
                            uid_ranges(&got),
                            uid_ranges(&sent_uids)
                        ),
                    });
                }
            }
        } else {
            self.notes.push(Note::UidsNotKept {
                folder: cur.store_name.clone(),
                why: format!(
                    "the folder exists on the server: {n} messages it lacked appended with new UIDs (IMAP gives a new message a UID above every earlier one), {} already there left as they are",
                    cur.already_there
                ),
            });
        }
        if creating && subscribe {
            self.subscribe(&cur.name)?;
        }
        Ok(())
    }

    fn subscribe(&mut self, name: &str) -> Result<(), CyrusError> {
        let value = sync::subscribe(&self.user, name);
        self.change(
            Verb::Apply,
            "SUB",
            &value,
            name,
            format!("subscribe {name}"),
        )
    }

    /// A command that changes the server, or with `--dry-run` a note saying what it would
    /// change.
    fn change(
        &mut self,
        verb: Verb,
        name: &str,
        value: &Dlist,
        about: &str,
        what: String,
    ) -> Result<(), CyrusError> {
        if self.dry_run {
            self.notes.push(Note::WouldWrite { what });
            return Ok(());
        }
        self.conn.must(verb, name, value, about).map(|_| ())
    }

    /// The user's seen state and sieve scripts (a whole-user restore).
    fn apply_user_files(&mut self, files: &UserFiles) -> Result<(), RestoreError> {
        if let Some(seen) = &files.seen {
            match Twoskip::open(seen) {
                Ok(db) => {
                    for e in db.iter() {
                        let Ok(e) = e else { break };
                        let Some(st) = SeenState::from_db_record(&self.user, e.key, e.value) else {
                            continue;
                        };
                        if self.seen_there.contains(&st.unique_id) {
                            continue;
                        }
                        let what = format!(
                            "seen state of {} in mailbox {}: {}",
                            self.user, st.unique_id, st.seen_uids
                        );
                        self.change(Verb::Apply, "SEEN", &st.to_dlist(), &st.unique_id, what)?;
                    }
                }
                Err(e) => self.notes.push(Note::UserFileNotRestored {
                    what: "seen state".into(),
                    why: e.to_string(),
                }),
            }
        }
        for s in &files.sieve {
            if self.sieve_there.contains(&s.name) {
                self.notes.push(Note::UserFileNotRestored {
                    what: format!("sieve script {:?}", s.name),
                    why: "the server has a script of that name: left as it is".into(),
                });
                continue;
            }
            let value = sync::sieve_script(&self.user, &s.name, s.time, &s.source);
            let what = format!("sieve script {:?} ({} bytes)", s.name, s.source.len());
            self.change(Verb::Apply, "SIEVE", &value, &s.name, what)?;
        }
        if let Some(active) = files.sieve.iter().find(|s| s.active) {
            if self.active_sieve_there {
                self.notes.push(Note::UserFileNotRestored {
                    what: format!("active sieve script {:?}", active.name),
                    why: "the server has an active script: left as it is".into(),
                });
            } else {
                let value = sync::activate_sieve(&self.user, &active.name);
                let what = format!("activate sieve script {:?}", active.name);
                self.change(Verb::Apply, "ACTIVATE_SIEVE", &value, &active.name, what)?;
            }
        }
        Ok(())
    }
}

/// An intermediate name (`MBOXTYPE` with `i`): kept for the hierarchy, no mailbox.
fn is_intermediate(st: &MailboxState) -> bool {
    st.mbtype.as_deref().is_some_and(|t| t.contains('i'))
}

/// `1:5,7,9:10`.
fn uid_ranges(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            out.push_str(&uids[i].to_string());
        } else {
            out.push_str(&format!("{}:{}", uids[i], uids[j]));
        }
        i = j + 1;
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// The subscriptions database of `user` (flat: `\x1fVER\x1f\t2`, then one `key\tvalue` line
/// per subscribed mailbox): internal mailbox names. Cyrus 3.6 writes the key as `N` and the
/// name with `\x1f` between levels, the user's own folders under `INBOX`
/// (`NINBOX\x1fArchive`), other mailboxes by their whole name (`Nuser\x1fbob\x1fLists`).
pub fn subscriptions(user: &str, db: &[u8]) -> HashSet<String> {
    let (owner, domain) = match user.split_once('@') {
        Some((l, d)) => (l.to_owned(), Some(d.to_owned())),
        None => (user.to_owned(), None),
    };
    db.split(|&b| b == b'\n')
        .filter_map(|line| {
            let key = line.split(|&b| b == b'\t').next()?;
            let key = std::str::from_utf8(key).ok()?;
            if key.is_empty() || key.starts_with('\x1f') {
                return None;
            }
            let key = key.strip_prefix('N').unwrap_or(key);
            let levels: Vec<&str> = key.split('\x1f').collect();
            if levels[0] == "INBOX" {
                let name = MailboxName {
                    domain: domain.clone(),
                    owner: Some(owner.clone()),
                    boxes: levels[1..].iter().map(|l| (*l).to_owned()).collect(),
                    deleted: None,
                };
                return Some(name.intname());
            }
            Some(MailboxName::from_dbname(key, "DELETED").intname())
        })
        .collect()
}

impl Sink for CyrusSink {
    fn any_order(&self) -> bool {
        true
    }

    fn wants_identity(&self) -> bool {
        true
    }

    fn identity(&mut self, id: Option<FolderIdentity>) {
        self.pending_identity = id;
    }

    fn user_files(&mut self, files: UserFiles) -> Result<(), RestoreError> {
        self.subscribed = files
            .subscriptions
            .as_deref()
            .map(|db| subscriptions(&self.user, db));
        self.user_files = Some(files);
        Ok(())
    }

    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError> {
        self.finish_folder()?;
        let id = self.pending_identity.take();
        let name = self.target_name(&f.name)?;
        let existing = self.existing.get(&name).cloned();
        let cur = match existing {
            Some(st) => {
                let data = self
                    .conn
                    .must(Verb::Get, "FULLMAILBOX", &atom(&name), &name)?;
                let mut present = HashSet::new();
                let mut partition = st.partition.clone();
                for (n, v) in &data {
                    if n == "MAILBOX" {
                        let full = self.conn.mailbox_state(v)?;
                        partition = full.partition.clone().or(partition);
                        present.extend(full.records.iter().filter(|r| !r.expunged).map(|r| r.guid));
                    }
                }
                Current {
                    store_name: f.name.clone(),
                    name,
                    partition: partition.unwrap_or_else(|| "default".to_owned()),
                    present: Some(present),
                    identity: None,
                    meta: HashMap::new(),
                    acl: None,
                    records: Vec::new(),
                    already_there: 0,
                }
            }
            None => {
                let inbox = self.mailbox_name(Vec::new()).intname();
                let partition = self
                    .partition
                    .clone()
                    .or_else(|| id.as_ref().and_then(|i| i.partition.clone()))
                    .or_else(|| self.existing.get(&inbox).and_then(|s| s.partition.clone()))
                    .unwrap_or_else(|| "default".to_owned());
                let (identity, meta, acl) = match id {
                    Some(i) => {
                        let keep_id = matches!(self.into, IntoFolder::Original)
                            && !self.id_in_use(&i.unique_id, &name)?;
                        let unique_id = if keep_id {
                            i.unique_id.clone()
                        } else {
                            let why = if matches!(self.into, IntoFolder::Original) {
                                "its unique id is still held by a mailbox on the server (a folder deleted with delete_mode: delayed lives on as DELETED.*)"
                            } else {
                                "restored under another name (--into), beside the original"
                            };
                            self.notes.push(Note::NewMailboxId {
                                folder: f.name.clone(),
                                why: why.to_owned(),
                            });
                            CyrusSink::new_unique_id()?
                        };
                        (
                            Some(MailboxIdentity {
                                unique_id,
                                uidvalidity: i.uidvalidity,
                                // Cyrus keeps nothing without all three; a store that
                                // never saw a HIGHESTMODSEQ gives the records' highest.
                                highestmodseq: i
                                    .highestmodseq
                                    .filter(|&m| m > 0)
                                    .or_else(|| i.records.values().map(|r| r.0).max())
                                    .unwrap_or(1)
                                    .max(1),
                                createdmodseq: i.createdmodseq,
                            }),
                            i.records,
                            i.acl,
                        )
                    }
                    None => (None, HashMap::new(), None),
                };
                Current {
                    store_name: f.name.clone(),
                    name,
                    partition,
                    present: None,
                    identity,
                    meta,
                    acl,
                    records: Vec::new(),
                    already_there: 0,
                }
            }
        };
        self.current = Some(cur);
        Ok(())
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError> {
        let cur = self
            .current
            .as_mut()
            .expect("restore calls folder() before message()");
        if cur.present.as_ref().is_some_and(|p| p.contains(&m.guid)) {
            cur.already_there += 1;
            return Ok(());
        }
        if m.size > MAX_MESSAGE {
            return Err(RestoreError::TooLarge {
                guid: m.guid,
                size: m.size,
                limit: MAX_MESSAGE,
            });
        }
        // Read whole and checked before anything is sent: a damaged copy never reaches
        // the server (the server would refuse the whole folder for it).
        let mut bytes = Vec::with_capacity(m.size as usize);
        data.take(m.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RestoreError::ReadMessage {
                guid: m.guid,
                source,
            })?;
        if bytes.len() as u64 != m.size || Guid::of(&bytes) != m.guid {
            return Err(RestoreError::WrongHash { guid: m.guid });
        }
        let (modseq, last_updated) = match (&cur.identity, cur.meta.get(&m.uid)) {
            (Some(_), Some(&(modseq, t))) => (modseq, t),
            _ => (0, m.internal_date),
        };
        cur.records.push(RestoreRecord {
            uid: m.uid,
            modseq,
            last_updated,
            flags: m
                .flags
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .cloned()
                .collect(),
            internal_date: m.internal_date,
            size: m.size,
            guid: m.guid,
        });
        // Each message is sent once per partition and session (a batch that fails ends
        // the restore, so "queued" is as good as "staged").
        if self.uploaded.insert((cur.partition.clone(), m.guid)) {
            self.batch_bytes += bytes.len();
            self.batch.push((cur.partition.clone(), m.guid, bytes));
            if self.batch.len() >= UPLOAD_BATCH_MESSAGES || self.batch_bytes >= UPLOAD_BATCH_BYTES {
                self.send_batch()?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Note>, RestoreError> {
        self.finish_folder()?;
        if let Some(files) = self.user_files.take() {
            if files.whole_user {
                self.apply_user_files(&files)?;
            }
        }
        // Ends the session: the server removes what it staged.
        let _ = self.conn.send(sync::EXIT);
        let mut notes = std::mem::take(&mut self.notes);
        if self.dry_run {
            notes.push(Note::WouldWrite {
                what: format!(
                    "file {} messages; {} already there (not sent); nothing was written",
                    self.appended, self.already_there
                ),
            });
        } else {
            notes.push(Note::Filed {
                appended: self.appended,
                already_there: self.already_there,
            });
        }
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_the_csync_port_by_default() {
        let t = CyrusTarget::parse("cyrus://admin@mail1").unwrap();
        assert_eq!(
            (t.admin.as_str(), t.host.as_str(), t.port),
            ("admin", "mail1", 2005)
        );
        assert_eq!(t.into, IntoFolder::Original);
        let t = CyrusTarget::parse("cyrus://admin@127.0.0.1:3005/").unwrap();
        assert_eq!(t.port, 3005);
        assert!(CyrusTarget::parse("cyrus://mail1").is_err());
        assert!(CyrusTarget::parse("imap://a@b").is_err());
    }

    #[test]
    fn subscriptions_read_as_internal_names() {
        // As Cyrus 3.6 writes it (seen in a test instance's sub.db).
        let db = b"\x1fVER\x1f\t2\nNINBOX\t\nNINBOX\x1fWork.2025\t\nNuser\x1fbob\x1fLists\t\n";
        let s = subscriptions("alice", db);
        let mut v: Vec<&str> = s.iter().map(String::as_str).collect();
        v.sort();
        assert_eq!(v, ["user.alice", "user.alice.Work^2025", "user.bob.Lists"]);
        let d = subscriptions("alice@example.com", b"NINBOX\x1fSent\t\n");
        assert!(d.contains("example.com!user.alice.Sent"), "{d:?}");
    }

    #[test]
    fn clear_text_off_loopback_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut t = CyrusTarget::parse("cyrus://admin@192.0.2.1").unwrap();
        t.password_file = Some(pw);
        let e = CyrusSink::connect(&t, "alice").err().unwrap();
        assert!(
            e.to_string().starts_with("192.0.2.1 is not loopback"),
            "{e}"
        );
    }

    #[test]
    fn uid_ranges_are_compact() {
        assert_eq!(uid_ranges(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_ranges(&[]), "none");
    }
}
