//! The `imap://ADMIN@HOST:PORT/` target: messages APPENDed into the user's own account,
//! flags, keywords and internal date kept.
//!
//! The admin authenticates as the user (`AUTHENTICATE PLAIN` with the user as authorization
//! id and the admin as authentication id), so folder names are the user's own view of them,
//! the same names the store holds, whatever the server's namespace settings. A message
//! already in the target folder (same SHA-1, asked with `FETCH (DIGEST.SHA1)` where the
//! server offers it, else hashed from the bytes of the messages of the same size) is not
//! appended again, so a restore can be re-run; a folder that held a message twice gets it
//! twice (present copies are counted, not just noted).
//!
//! A small client of our own: the `imap` crate (2.x) cannot APPEND with an internal date,
//! and this needs only LOGIN-less AUTHENTICATE, NAMESPACE, LIST, CREATE, SELECT, UID FETCH
//! and APPEND. Plain TCP only: TLS is not done.
//!
//! The server's responses are read through [`formats::imap`]: every line and literal
//! length bounded before it sizes anything, so a server announcing `{18446744073709551615}`
//! or sending a line without end gets a clear error, not an abort or a panic.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use formats::imap::{tokenize, Limits, Response as Resp, ResponseError, Tok, TokenError};
use formats::{Guid, Timestamp};

use super::replies::{ReadError, Replies};
use super::server_addr::{all_loopback, resolve};
use super::{Item, Note, RestoreError, SafeFolder, Sink};

/// An `imap://` URL that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImapUrlError {
    /// Not `imap://...`.
    #[error("expected imap://ADMIN@HOST:PORT/, found {0:?}")]
    NotImap(String),
    /// Not `cyrus://...`.
    #[error("expected cyrus://ADMIN@HOST[:PORT], found {0:?}")]
    NotCyrus(String),
    /// A path after the server (a folder is `--into`).
    #[error("expected nothing after HOST:PORT/ (use --into for a folder), found {0:?}")]
    Path(String),
    /// No `ADMIN@`.
    #[error("expected ADMIN@ in {0:?}, found none")]
    NoAdmin(String),
    /// `@` with nothing before it.
    #[error("expected an admin name before @ in {0:?}")]
    EmptyAdmin(String),
    /// A port that is not a number.
    #[error("expected a port number, found {port:?} in {url:?}")]
    Port {
        /// The port given.
        port: String,
        /// The URL.
        url: String,
    },
    /// No host after `@`.
    #[error("expected a host after @ in {0:?}")]
    NoHost(String),
}

/// A `--into` that names no folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a folder name for --into, found {0:?}")]
pub struct IntoFolderError(pub String);

/// Why restoring into an IMAP account failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// No `--password-file`.
    #[error("an imap:// target needs --password-file")]
    NoPasswordFile,
    /// The password file is not there (or cannot be looked at).
    #[error("password file {}: {source}", .path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Anyone can read the password file.
    #[error("password file {} is readable by everyone (mode {mode:o}): chmod o-r it", .path.display())]
    PasswordReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The password file cannot be read.
    #[error("reading {}: {source}", .path.display())]
    PasswordRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The password file's first line is empty.
    #[error("password file {} is empty", .path.display())]
    PasswordEmpty {
        /// The file.
        path: PathBuf,
    },
    /// No connection.
    #[error("connecting to IMAP {host}:{port}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed.
    #[error("IMAP {server}: {source}")]
    Io {
        /// `HOST:PORT`.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("the IMAP server closed the connection")]
    Closed,
    /// No `* OK` greeting.
    #[error("expected an IMAP greeting * OK, found {found:?}")]
    Greeting {
        /// The first line.
        found: String,
    },
    /// A response breaks a bound (too long a line, too large a literal): the server is
    /// not one to restore into, or not an IMAP server.
    #[error("IMAP {server}: {source}")]
    Response {
        /// `HOST:PORT`.
        server: String,
        /// Which bound, where.
        source: ResponseError,
    },
    /// A response does not split into tokens.
    #[error("IMAP {server}: {source}")]
    Tokens {
        /// `HOST:PORT`.
        server: String,
        /// What, where.
        source: TokenError,
    },
    /// The server refused a literal of a command.
    #[error("the server refused a literal: {response}")]
    LiteralRefused {
        /// Its answer.
        response: String,
    },
    /// The server answered NO or BAD.
    #[error("{command}: {response}")]
    Refused {
        /// The command (its first words: never a literal, never a password).
        command: String,
        /// The answer after the tag.
        response: String,
    },
    /// Plain TCP to a host that is not loopback, not asked for.
    #[error("{host} is not loopback: the admin's password and the mail would cross the network in clear (imap:// has no TLS yet); run the restore on the mail server against 127.0.0.1, or, on a network you trust, give --plaintext")]
    Plaintext {
        /// The host.
        host: String,
    },
    /// The server does not offer `AUTH=PLAIN`.
    #[error("{host}:{port} does not offer AUTHENTICATE PLAIN")]
    NoAuthPlain {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// `AUTHENTICATE PLAIN` got no `+` challenge.
    #[error("AUTHENTICATE PLAIN: expected +, found {found:?}")]
    AuthChallenge {
        /// The answer.
        found: String,
    },
    /// The admin could not authenticate as the user.
    #[error("{host}:{port}: {admin} could not authenticate as {user}: {response}")]
    AuthRefused {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The admin.
        admin: String,
        /// The user.
        user: String,
        /// The server's answer.
        response: String,
    },
}

/// Where restored folders go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IntoFolder {
    /// `Restored/<date>/<original name>` (date of the restore, UTC, `YYYY-MM-DD`).
    #[default]
    Dated,
    /// `<NAME>/<original name>`.
    Named(String),
    /// The original names (`--into /`): the round trip after a loss.
    Original,
}

impl IntoFolder {
    /// Reads `--into`: `/` for the original names, otherwise a folder name (levels
    /// separated by `/`).
    pub fn parse(s: &str) -> Result<Self, IntoFolderError> {
        let t = s.trim_matches('/');
        if t.is_empty() {
            return Ok(IntoFolder::Original);
        }
        if t.split('/').any(str::is_empty) {
            return Err(IntoFolderError(s.to_owned()));
        }
        Ok(IntoFolder::Named(t.to_owned()))
    }
}

/// An `imap://ADMIN@HOST:PORT/` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapTarget {
    /// The admin who authenticates (as the user).
    pub admin: String,
    /// Host name or address.
    pub host: String,
    /// Port (143 when the URL names none).
    pub port: u16,
    /// The file holding the admin's password (`--password-file`).
    pub password_file: Option<PathBuf>,
    /// Where the folders go (`--into`).
    pub into: IntoFolder,
    /// Ask `FETCH (DIGEST.SHA1)` where the server offers it (true unless a test wants the
    /// size-and-hash fallback).
    pub use_digest: bool,
    /// Send the password and the mail in clear to a host that is not loopback
    /// (`--plaintext`); refused otherwise (this target has no TLS yet).
    pub plaintext: bool,
    /// The account to restore into (`--as-user`): another user than the one whose backup
    /// is read, e.g. the new name of a user deleted in Cyrus. `None`: the same user.
    pub account: Option<String>,
}

impl ImapTarget {
    /// Parses `imap://ADMIN@HOST[:PORT][/]`.
    pub fn parse(s: &str) -> Result<Self, ImapUrlError> {
        let rest = s
            .strip_prefix("imap://")
            .ok_or_else(|| ImapUrlError::NotImap(s.to_owned()))?;
        let (admin, host, port) = split_server(rest, s, 143)?;
        Ok(ImapTarget {
            admin,
            host,
            port,
            password_file: None,
            into: IntoFolder::Dated,
            use_digest: true,
            plaintext: false,
            account: None,
        })
    }
}

/// Splits the part of a server URL after its scheme, `ADMIN@HOST[:PORT][/]` (`[v6]` hosts
/// too): admin, host, port (`default_port` when none is given). `url` is the whole URL, for
/// errors.
pub(crate) fn split_server(
    rest: &str,
    s: &str,
    default_port: u16,
) -> Result<(String, String, u16), ImapUrlError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(ImapUrlError::Path(s.to_owned()));
    }
    let (admin, hostport) = rest
        .rsplit_once('@')
        .ok_or_else(|| ImapUrlError::NoAdmin(s.to_owned()))?;
    if admin.is_empty() {
        return Err(ImapUrlError::EmptyAdmin(s.to_owned()));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse::<u16>().map_err(|_| ImapUrlError::Port {
                port: p.to_owned(),
                url: s.to_owned(),
            })?,
        ),
        _ => (hostport, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ImapUrlError::NoHost(s.to_owned()));
    }
    Ok((admin.to_owned(), host.to_owned(), port))
}

/// Reads the password: the first line of a file nobody but its owner (and group) can read.
pub fn read_password(p: &Path) -> Result<String, ImapError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|source| ImapError::PasswordFile {
        path: p.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(ImapError::PasswordReadable {
            path: p.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let text = std::fs::read_to_string(p).map_err(|source| ImapError::PasswordRead {
        path: p.to_path_buf(),
        source,
    })?;
    let pw = text.lines().next().unwrap_or("").to_owned();
    if pw.is_empty() {
        return Err(ImapError::PasswordEmpty {
            path: p.to_path_buf(),
        });
    }
    Ok(pw)
}

/// A connection, authenticated as the user.
struct Conn {
    /// `HOST:PORT`, for errors.
    server: String,
    s: TcpStream,
    /// Bytes received and not yet taken as a response.
    replies: Replies,
    tag: u32,
    caps: BTreeSet<String>,
}

impl Conn {
    fn connect(host: &str, port: u16, addrs: &[SocketAddr]) -> Result<Self, ImapError> {
        let s = TcpStream::connect(addrs).map_err(|source| ImapError::Connect {
            host: host.to_owned(),
            port,
            source,
        })?;
        let server = format!("{host}:{port}");
        let io = |source| ImapError::Io {
            server: server.clone(),
            source,
        };
        s.set_read_timeout(Some(Duration::from_secs(300)))
            .map_err(io)?;
        let mut c = Conn {
            server,
            s,
            replies: Replies::new(Limits::default()),
            tag: 0,
            caps: BTreeSet::new(),
        };
        let greeting = c.read_resp()?;
        if !greeting.text.starts_with(b"* OK") {
            return Err(ImapError::Greeting {
                found: String::from_utf8_lossy(&greeting.text).into_owned(),
            });
        }
        c.take_caps(&greeting.text);
        Ok(c)
    }

    fn take_caps(&mut self, text: &[u8]) {
        let t = String::from_utf8_lossy(text);
        let list = if let Some(p) = t.find("[CAPABILITY ") {
            t[p + 12..].split(']').next().unwrap_or("").to_owned()
        } else if let Some(rest) = t.strip_prefix("* CAPABILITY ") {
            rest.trim_end().to_owned()
        } else {
            return;
        };
        self.caps = list.split(' ').map(str::to_ascii_uppercase).collect();
    }

    fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    /// An I/O error of this connection.
    fn io(&self, source: std::io::Error) -> ImapError {
        ImapError::Io {
            server: self.server.clone(),
            source,
        }
    }

    /// Writes to the server.
    fn send(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        self.s.write_all(bytes).map_err(|e| self.io(e))
    }

    /// Reads one response: its line(s) and the literals they announce, each bounded by
    /// `limits` (formats::imap::response): the buffer grows only with what the server
    /// really sent, never by a length it announced.
    fn read_resp(&mut self) -> Result<Resp, ImapError> {
        self.replies
            .read(&mut self.s, |resp, _| resp)
            .map_err(|e| match e {
                ReadError::Io(source) => ImapError::Io {
                    server: self.server.clone(),
                    source,
                },
                ReadError::Closed => ImapError::Closed,
                ReadError::Framing(source) => ImapError::Response {
                    server: self.server.clone(),
                    source,
                },
            })
    }

    /// A response's tokens.
    fn tokens(&self, r: &Resp) -> Result<Vec<Tok>, ImapError> {
        tokenize(r).map_err(|source| ImapError::Tokens {
            server: self.server.clone(),
            source,
        })
    }

    /// Sends a command made of text pieces and literals; returns the untagged responses and
    /// the tagged one's text after the tag, failing on NO/BAD unless `may_fail`.
    fn cmd(
        &mut self,
        parts: &[Part<'_>],
        may_fail: bool,
    ) -> Result<(Vec<Resp>, String), ImapError> {
        self.tag += 1;
        let tag = format!("A{}", self.tag);
        let plus = self.has("LITERAL+");
        let mut untagged = Vec::new();
        let mut buf = format!("{tag} ").into_bytes();
        for p in parts {
            match p {
                Part::Text(t) => buf.extend_from_slice(t.as_bytes()),
                Part::Lit(data) => {
                    buf.extend_from_slice(
                        format!("{{{}{}}}\r\n", data.len(), if plus { "+" } else { "" }).as_bytes(),
                    );
                    if !plus {
                        self.send(&buf)?;
                        buf.clear();
                        loop {
                            let r = self.read_resp()?;
                            if r.text.starts_with(b"+") {
                                break;
                            }
                            if r.text.starts_with(tag.as_bytes()) {
                                return Err(ImapError::LiteralRefused {
                                    response: String::from_utf8_lossy(&r.text).into_owned(),
                                });
                            }
                            untagged.push(r);
                        }
                    }
                    buf.extend_from_slice(data);
                }
            }
        }
        buf.extend_from_slice(b"\r\n");
        self.send(&buf)?;
        loop {
            let r = self.read_resp()?;
            if let Some(rest) = r.text.strip_prefix(tag.as_bytes()) {
                let rest = String::from_utf8_lossy(rest).trim().to_owned();
                if !rest.starts_with("OK") && !may_fail {
                    return Err(ImapError::Refused {
                        command: describe(parts),
                        response: rest,
                    });
                }
                if rest.contains("[CAPABILITY ") {
                    self.take_caps(&r.text);
                }
                return Ok((untagged, rest));
            }
            if r.text.starts_with(b"* CAPABILITY ") {
                self.take_caps(&r.text);
            }
            untagged.push(r);
        }
    }
}

/// The command's first words, for error messages (never a literal's bytes, never a password).
fn describe(parts: &[Part<'_>]) -> String {
    match parts.first() {
        Some(Part::Text(t)) if t.starts_with("AUTHENTICATE") => "AUTHENTICATE".to_owned(),
        Some(Part::Text(t)) => t.chars().take(80).collect(),
        _ => "command".to_owned(),
    }
}

enum Part<'a> {
    Text(String),
    Lit(&'a [u8]),
}

/// A mailbox name as a command argument: quoted when it can be, else a literal.
fn astring(name: &str) -> Part<'_> {
    if name.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        Part::Text(format!(
            "\"{}\"",
            name.replace('\\', "\\\\").replace('"', "\\\"")
        ))
    } else {
        Part::Lit(name.as_bytes())
    }
}

/// The IMAP sink.
pub struct ImapSink {
    conn: Conn,
    /// Personal namespace prefix (`""`, `INBOX.`).
    prefix: String,
    /// Hierarchy delimiter.
    delim: char,
    into: IntoFolder,
    use_digest: bool,
    date: String,
    /// Folders that exist.
    existing: BTreeSet<String>,
    /// The current folder's name on the server.
    current: Option<String>,
    /// Copies present in the current folder, by GUID (what a re-run must not add again).
    present: HashMap<Guid, u32>,
    /// Without DIGEST.SHA1: UIDs by size, hashed when a message of that size comes.
    unhashed: HashMap<u64, Vec<u32>>,
    appended: u64,
    skipped: u64,
    notes: Vec<Note>,
}

impl ImapSink {
    /// Connects, authenticates as `user` with the admin's credentials and learns the
    /// namespace.
    pub fn connect(t: &ImapTarget, user: &str) -> Result<Self, ImapError> {
        let addrs = resolve(&t.host, t.port).map_err(|source| ImapError::Connect {
            host: t.host.clone(),
            port: t.port,
            source,
        })?;
        if !t.plaintext && !all_loopback(&addrs) {
            return Err(ImapError::Plaintext {
                host: t.host.clone(),
            });
        }
        let pwfile = t
            .password_file
            .as_deref()
            .ok_or(ImapError::NoPasswordFile)?;
        let password = read_password(pwfile)?;
        let mut conn = Conn::connect(&t.host, t.port, &addrs)?;
        if conn.caps.is_empty() {
            conn.cmd(&[Part::Text("CAPABILITY".into())], false)?;
        }
        if !conn.has("AUTH=PLAIN") {
            return Err(ImapError::NoAuthPlain {
                host: t.host.clone(),
                port: t.port,
            });
        }
        let authz = if user == t.admin { "" } else { user };
        let mut sasl = Vec::new();
        sasl.extend_from_slice(authz.as_bytes());
        sasl.push(0);
        sasl.extend_from_slice(t.admin.as_bytes());
        sasl.push(0);
        sasl.extend_from_slice(password.as_bytes());
        let b64 = base64_encode(&sasl);
        let (_, res) = if conn.has("SASL-IR") {
            conn.cmd(&[Part::Text(format!("AUTHENTICATE PLAIN {b64}"))], true)?
        } else {
            // The response goes after the server's empty challenge.
            conn.tag += 1;
            let tag = format!("A{}", conn.tag);
            conn.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())?;
            let r = conn.read_resp()?;
            if !r.text.starts_with(b"+") {
                return Err(ImapError::AuthChallenge {
                    found: String::from_utf8_lossy(&r.text).into_owned(),
                });
            }
            conn.send(format!("{b64}\r\n").as_bytes())?;
            loop {
                let r = conn.read_resp()?;
                if let Some(rest) = r.text.strip_prefix(tag.as_bytes()) {
                    let rest = String::from_utf8_lossy(rest).trim().to_owned();
                    conn.take_caps(&r.text);
                    break (Vec::new(), rest);
                }
            }
        };
        if !res.starts_with("OK") {
            return Err(ImapError::AuthRefused {
                host: t.host.clone(),
                port: t.port,
                admin: t.admin.clone(),
                user: user.to_owned(),
                response: res,
            });
        }
        if !res.contains("[CAPABILITY ") {
            conn.cmd(&[Part::Text("CAPABILITY".into())], false)?;
        }
        let (mut prefix, mut delim) = (String::new(), '/');
        if conn.has("NAMESPACE") {
            let (un, _) = conn.cmd(&[Part::Text("NAMESPACE".into())], false)?;
            if let Some(r) = un.iter().find(|r| r.text.starts_with(b"* NAMESPACE")) {
                let toks = conn.tokens(r)?;
                // * NAMESPACE (("prefix" "delim") ...) ...
                if let [_, _, Tok::Open, Tok::Open, Tok::Str(p), d, ..] = toks.as_slice() {
                    prefix = String::from_utf8_lossy(p).into_owned();
                    if let Tok::Str(d) = d {
                        delim = d.first().map_or('/', |&c| c as char);
                    }
                }
            }
        } else {
            let (un, _) = conn.cmd(&[Part::Text("LIST \"\" \"\"".into())], false)?;
            if let Some(r) = un.first() {
                if let Some(Tok::Str(d)) = conn.tokens(r)?.get(3) {
                    delim = d.first().map_or('/', |&c| c as char);
                }
            }
        }
        let mut existing = BTreeSet::new();
        let (un, _) = conn.cmd(&[Part::Text("LIST \"\" \"*\"".into())], false)?;
        for r in &un {
            let toks = conn.tokens(r)?;
            if let Some(Tok::Str(n) | Tok::Atom(n)) = toks.last() {
                existing.insert(String::from_utf8_lossy(n).into_owned());
            }
        }
        let date = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        Ok(ImapSink {
            conn,
            prefix,
            delim,
            into: t.into.clone(),
            use_digest: t.use_digest,
            date,
            existing,
            current: None,
            present: HashMap::new(),
            unhashed: HashMap::new(),
            appended: 0,
            skipped: 0,
            notes: Vec::new(),
        })
    }

    /// One hierarchy level made harmless for the server: no delimiter, wildcard or control
    /// character in it.
    fn level(&self, l: &str) -> String {
        let s: String = l
            .chars()
            .map(|c| {
                if c == self.delim || c == '%' || c == '*' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if s.is_empty() {
            "_".to_owned()
        } else {
            s
        }
    }

    /// The server name a store folder goes to.
    fn target_name(&self, store_name: &str) -> String {
        let is_inbox = store_name.eq_ignore_ascii_case("INBOX");
        let rest = super::below_inbox(store_name);
        let mut levels: Vec<String> = match &self.into {
            IntoFolder::Original if is_inbox => return "INBOX".to_owned(),
            IntoFolder::Original => Vec::new(),
            IntoFolder::Dated => vec!["Restored".to_owned(), self.date.clone()],
            IntoFolder::Named(n) => n.split('/').map(|l| self.level(l)).collect(),
        };
        if is_inbox {
            levels.push("INBOX".to_owned());
        } else {
            levels.extend(rest.split('/').map(|l| self.level(l)));
        }
        format!("{}{}", self.prefix, levels.join(&self.delim.to_string()))
    }

    fn fetch_present(&mut self) -> Result<(), ImapError> {
        self.present.clear();
        self.unhashed.clear();
        let digest = self.use_digest && self.conn.has("DIGEST=SHA1");
        let what = if digest {
            "UID FETCH 1:* (DIGEST.SHA1)"
        } else {
            "UID FETCH 1:* (RFC822.SIZE)"
        };
        let (un, res) = self.conn.cmd(&[Part::Text(what.into())], true)?;
        // An empty folder: Cyrus says OK with nothing, others may say NO/BAD to `1:*`.
        if !res.starts_with("OK") && !un.is_empty() {
            return Err(ImapError::Refused {
                command: what.to_owned(),
                response: res,
            });
        }
        for r in &un {
            let toks = self.conn.tokens(r)?;
            let Some(open) = toks.iter().position(|t| *t == Tok::Open) else {
                continue;
            };
            if !matches!(toks.get(2), Some(Tok::Atom(a)) if a.eq_ignore_ascii_case(b"FETCH")) {
                continue;
            }
            let (mut uid, mut sha, mut size) = (None, None, None);
            for kv in toks[open + 1..].chunks(2) {
                if let [Tok::Atom(k), v] = kv {
                    let val = match v {
                        Tok::Atom(v) | Tok::Str(v) => String::from_utf8_lossy(v).into_owned(),
                        _ => continue,
                    };
                    match k.to_ascii_uppercase().as_slice() {
                        b"UID" => uid = val.parse::<u32>().ok(),
                        b"DIGEST.SHA1" => sha = val.parse::<Guid>().ok(),
                        b"RFC822.SIZE" => size = val.parse::<u64>().ok(),
                        _ => {}
                    }
                }
            }
            match (uid, sha, size) {
                (_, Some(g), _) => *self.present.entry(g).or_default() += 1,
                (Some(u), None, Some(s)) => self.unhashed.entry(s).or_default().push(u),
                _ => {}
            }
        }
        Ok(())
    }

    /// Without DIGEST.SHA1: hashes the messages of this size not hashed yet.
    fn hash_size(&mut self, size: u64) -> Result<(), ImapError> {
        let Some(uids) = self.unhashed.remove(&size) else {
            return Ok(());
        };
        for uid in uids {
            let (un, _) = self.conn.cmd(
                &[Part::Text(format!("UID FETCH {uid} (BODY.PEEK[])"))],
                false,
            )?;
            for r in &un {
                if let Some(body) = r.literals.first() {
                    *self.present.entry(Guid::of(body)).or_default() += 1;
                }
            }
        }
        Ok(())
    }
}

impl Sink for ImapSink {
    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError> {
        let name = self.target_name(&f.name);
        if !self.existing.contains(&name) {
            let mut parts = vec![Part::Text("CREATE ".into())];
            parts.push(astring(&name));
            let (_, res) = self.conn.cmd(&parts, true)?;
            // Another client (or a half-done earlier run) may have made it meanwhile.
            if !res.starts_with("OK") && !res.contains("ALREADYEXISTS") && !res.contains("exists") {
                return Err(ImapError::Refused {
                    command: format!("CREATE {name:?}"),
                    response: res,
                }
                .into());
            }
            // Parents come into being with it.
            let d = self.delim.to_string();
            let mut acc = String::new();
            for l in name.split(&d) {
                if !acc.is_empty() {
                    acc.push_str(&d);
                }
                acc.push_str(l);
                self.existing.insert(acc.clone());
            }
        }
        let mut parts = vec![Part::Text("SELECT ".into())];
        parts.push(astring(&name));
        self.conn.cmd(&parts, false)?;
        self.current = Some(name);
        Ok(self.fetch_present()?)
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError> {
        let name = self.current.clone().ok_or(RestoreError::NoFolderYet)?;
        // The index's size is a hint only: a damaged index must not size an allocation.
        let mut bytes = Vec::with_capacity(m.size.min(1 << 20) as usize);
        data.read_to_end(&mut bytes)
            .map_err(|source| RestoreError::ReadMessage {
                guid: m.guid,
                source,
            })?;
        // Checked before it reaches the server: a bad copy must not be appended.
        if Guid::of(&bytes) != m.guid {
            return Err(RestoreError::WrongHash { guid: m.guid });
        }
        self.hash_size(bytes.len() as u64)?;
        if let Some(n) = self.present.get_mut(&m.guid).filter(|n| **n > 0) {
            *n -= 1;
            self.skipped += 1;
            return Ok(());
        }
        let mut flags = Vec::new();
        for f in &m.flags {
            let ok_atom = !f.is_empty()
                && f.bytes().enumerate().all(|(i, c)| {
                    c > 0x20 && c < 0x7f && !b"(){%*\"]".contains(&c) && (c != b'\\' || i == 0)
                });
            if f.eq_ignore_ascii_case("\\Recent") {
                continue;
            }
            if ok_atom {
                flags.push(f.as_str());
            } else {
                self.notes.push(Note::KeywordNotSent {
                    folder: name.clone(),
                    guid: m.guid,
                    keyword: f.clone(),
                });
            }
        }
        let date = imap_date(m.internal_date);
        let tail = format!(" ({}) \"{date}\" ", flags.join(" "));
        let mut parts = vec![Part::Text("APPEND ".into())];
        parts.push(astring(&name));
        parts.push(Part::Text(tail));
        parts.push(Part::Lit(&bytes));
        self.conn.cmd(&parts, false)?;
        self.appended += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Note>, RestoreError> {
        let _ = self.conn.cmd(&[Part::Text("LOGOUT".into())], true);
        let mut notes = std::mem::take(&mut self.notes);
        notes.push(Note::Appended {
            appended: self.appended,
            already_there: self.skipped,
        });
        Ok(notes)
    }
}

/// An IMAP date-time in UTC: `23-Nov-2026 06:30:24 +0000`.
pub fn imap_date(t: Timestamp) -> String {
    jiff::Timestamp::from_second(t.secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%d-%b-%Y %H:%M:%S +0000")
        .to_string()
}

fn base64_encode(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_into() {
        let t = ImapTarget::parse("imap://admin@127.0.0.1:1143/").unwrap();
        assert_eq!(
            (t.admin.as_str(), t.host.as_str(), t.port),
            ("admin", "127.0.0.1", 1143)
        );
        let t = ImapTarget::parse("imap://a@b@mail.example").unwrap();
        assert_eq!(
            (t.admin.as_str(), t.host.as_str(), t.port),
            ("a@b", "mail.example", 143)
        );
        assert!(ImapTarget::parse("imap://host:143/").is_err());
        assert!(ImapTarget::parse("imap://a@host:x/").is_err());
        assert!(ImapTarget::parse("imap://a@host/INBOX").is_err());
        assert_eq!(IntoFolder::parse("/").unwrap(), IntoFolder::Original);
        assert_eq!(
            IntoFolder::parse("Old/Mail").unwrap(),
            IntoFolder::Named("Old/Mail".into())
        );
        assert!(IntoFolder::parse("a//b").is_err());
    }

    #[test]
    fn encodes_base64_and_dates() {
        assert_eq!(base64_encode(b"u\0admin\0x"), "dQBhZG1pbgB4");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(
            imap_date(Timestamp {
                secs: 1_795_447_824,
                nanos: 0
            }),
            "23-Nov-2026 15:30:24 +0000"
        );
    }
}
