//! Cyrus's replication protocol ("csync"), the part a restore speaks to a Cyrus 3.6
//! `sync_server`: the protocol Cyrus's own `sync_client` and `restore` use. Pure: commands
//! are built as bytes, replies are parsed from bytes; the socket lives in backup-server's
//! `restore::cyrus`. docs/cyrus-sync.md describes every command used here, precisely
//! enough to write a second client.
//!
//! A command is one line: a verb (`GET`, `APPLY`, `RESTORE`), a name, a dlist value
//! ([`super::dlist`]), CRLF. Literals in it are non-synchronising (`{n+}`). A message is
//! uploaded as a *file literal*, `%{PARTITION GUID SIZE}` CRLF then SIZE bytes, inside an
//! `APPLY MESSAGE (...)` list ([`message_upload`]). The server answers with zero or more
//! data lines `* NAME value` and one status line `OK ...`, `NO CODE text` or `BAD text`
//! ([`parse_reply`]). A reply's framing (lines and the literals they announce) is that of
//! IMAP: `formats::imap::parse_response` cuts one out of the bytes received, within bounds.

use std::fmt;

use super::dlist::{self, Dlist};
use crate::{Guid, Timestamp};

/// The verb of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Asks for state (`GET USER`, `GET FULLMAILBOX`, `GET MAILBOXES`).
    Get,
    /// Changes state (`APPLY MESSAGE`, `APPLY SUB`, `APPLY SEEN`, `APPLY SIEVE` ...).
    Apply,
    /// `RESTORE MAILBOX`: creates a mailbox keeping its identity, or appends to one.
    Restore,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Apply => "APPLY",
            Verb::Restore => "RESTORE",
        }
    }
}

/// One command line: `VERB NAME value` CRLF.
pub fn command(verb: Verb, name: &str, value: &Dlist) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(verb.word().as_bytes());
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&value.to_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// `AUTHENTICATE PLAIN` with its initial response: `authcid` logs in with `password`;
/// `authzid` (empty: none) is whom it acts as. sync_server wants an admin.
pub fn authenticate_plain(authzid: &str, authcid: &str, password: &str) -> Vec<u8> {
    use base64::Engine;
    let mut sasl = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    sasl.extend_from_slice(authzid.as_bytes());
    sasl.push(0);
    sasl.extend_from_slice(authcid.as_bytes());
    sasl.push(0);
    sasl.extend_from_slice(password.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&sasl);
    format!("AUTHENTICATE PLAIN {b64}\r\n").into_bytes()
}

/// `STARTTLS` CRLF: the server answers `OK Begin TLS negotiation now`, the TLS handshake
/// follows, and the server sends its banner again inside TLS.
pub const STARTTLS: &[u8] = b"STARTTLS\r\n";

/// `EXIT` CRLF: the server answers `OK Finished` and closes; its staged uploads are removed.
pub const EXIT: &[u8] = b"EXIT\r\n";

/// The frame of one `APPLY MESSAGE` command that uploads messages into the server's staging
/// area of `partition` (they stay there, by GUID, until the connection ends): the caller
/// writes [`upload_list::START`], then per message [`message_upload`] and its bytes,
/// separated by [`upload_list::SEPARATOR`], then [`upload_list::END`].
pub mod upload_list {
    /// Opens the list.
    pub const START: &[u8] = b"APPLY MESSAGE (";
    /// Between two messages.
    pub const SEPARATOR: &[u8] = b" ";
    /// Closes the list and the command.
    pub const END: &[u8] = b")\r\n";
}

/// The file literal's announcement for one message: `%{PARTITION GUID SIZE}` CRLF; SIZE
/// bytes follow, which must hash to GUID (the server checks when it files the message).
pub fn message_upload(partition: &str, guid: &Guid, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + partition.len());
    out.extend_from_slice(b"%{");
    out.extend_from_slice(&Dlist::Atom(partition.as_bytes().to_vec()).to_bytes());
    out.push(b' ');
    out.extend_from_slice(guid.to_hex().as_bytes());
    out.extend_from_slice(format!(" {size}}}\r\n").as_bytes());
    out
}

/// One reply line (with the literals it announced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `* NAME value`: data, before the status line.
    Data {
        /// `MAILBOX`, `MISSING`, `SUB`, `LSUB`, `SIEVE`, `SEEN`, `QUOTA` ...
        name: String,
        /// Its value.
        value: Dlist,
    },
    /// `* ` anything else (the banner's capability lines, `* Fatal error: ...`).
    Untagged(String),
    /// `OK text`: the command succeeded.
    Ok(String),
    /// `NO CODE text`: refused; Cyrus puts its error name first (`IMAP_MAILBOX_NONEXISTENT`).
    No {
        /// The error name, if the text starts with one (`IMAP_...`).
        code: Option<String>,
        /// The whole text after `NO `.
        text: String,
    },
    /// `BAD text`: the server did not understand.
    Bad(String),
    /// `BYE text`: the server is going away.
    Bye(String),
}

impl Reply {
    /// Whether this line ends a command's reply.
    pub fn is_status(&self) -> bool {
        !matches!(self, Reply::Data { .. } | Reply::Untagged(_))
    }
}

/// A reply line that is not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not `* `, `OK`, `NO`, `BAD` or `BYE`.
    #[error("a reply line that is not `* ...`, OK, NO, BAD or BYE: {found:?}")]
    Unknown {
        /// The line's start, printable.
        found: String,
    },
    /// A `* NAME value` line whose value does not parse.
    #[error("the value of `* {name}` is not a dlist: {source}")]
    Value {
        /// The name.
        name: String,
        /// What is wrong, where.
        source: DlistError,
    },
}

pub use super::dlist::DlistError;

/// Parses one reply line, `raw` being the bytes [`crate::imap::parse_response`] took for it
/// (its line end and literals included, so literals are read in place).
pub fn parse_reply(raw: &[u8]) -> Result<Reply, ReplyError> {
    let line = raw
        .strip_suffix(b"\r\n")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(raw);
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    if let Some(rest) = line.strip_prefix(b"* ") {
        let name_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let name = &rest[..name_len];
        let is_name = !name.is_empty()
            && name
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
        if is_name && name_len < rest.len() {
            let value_bytes = &rest[name_len + 1..];
            // Only a value that starts like one of the protocol's (a list or key-value list)
            // is data; `* OK ...`-like banner lines are text.
            if value_bytes.starts_with(b"%(") || value_bytes.starts_with(b"(") {
                let name = String::from_utf8_lossy(name).into_owned();
                let (value, _) = dlist::parse(value_bytes).map_err(|source| ReplyError::Value {
                    name: name.clone(),
                    source,
                })?;
                return Ok(Reply::Data { name, value });
            }
        }
        return Ok(Reply::Untagged(text(rest)));
    }
    let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let rest = text(line.get(word_end + 1..).unwrap_or_default());
    match &line[..word_end] {
        b"OK" => Ok(Reply::Ok(rest)),
        b"NO" => {
            let first = rest.split(' ').next().unwrap_or("");
            let code = (first.starts_with("IMAP_") || first.starts_with("SASL_"))
                .then(|| first.to_owned());
            Ok(Reply::No { code, text: rest })
        }
        b"BAD" => Ok(Reply::Bad(rest)),
        b"BYE" => Ok(Reply::Bye(rest)),
        _ => Err(ReplyError::Unknown {
            found: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
        }),
    }
}

/// A mailbox's state as `GET FULLMAILBOX` or `GET USER` describe it (`* MAILBOX %(...)`):
/// what a restore needs to decide what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxState {
    /// Its unique id (Cyrus's mailbox id).
    pub unique_id: String,
    /// Its internal name (`user.alice.Work`).
    pub name: String,
    /// Its partition (absent for an intermediate mailbox).
    pub partition: Option<String>,
    /// `MBOXTYPE` (absent: an ordinary mailbox).
    pub mbtype: Option<String>,
    /// Its UIDVALIDITY.
    pub uidvalidity: u32,
    /// The highest UID it ever gave.
    pub last_uid: u32,
    /// Its HIGHESTMODSEQ.
    pub highestmodseq: u64,
    /// Its records (`GET FULLMAILBOX` only; `GET USER` sends none).
    pub records: Vec<RecordState>,
}

/// One record of a [`MailboxState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordState {
    /// Its UID.
    pub uid: u32,
    /// Its message.
    pub guid: Guid,
    /// Expunged (the `\Expunged` pseudo-flag): still in cyrus.index, not visible.
    pub expunged: bool,
}

/// A `MAILBOX` value that lacks what a restore needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server's MAILBOX {mailbox:?}: {what}")]
pub struct MailboxStateError {
    /// The mailbox's name, if it had one.
    pub mailbox: String,
    /// What was missing or wrong.
    pub what: String,
}

impl MailboxState {
    /// Reads a `* MAILBOX %(...)` value.
    pub fn from_dlist(d: &Dlist) -> Result<Self, MailboxStateError> {
        let name = d.get("MBOXNAME").and_then(Dlist::as_str).unwrap_or("");
        let err = |what: String| MailboxStateError {
            mailbox: name.to_owned(),
            what,
        };
        let text = |key: &str| -> Result<String, MailboxStateError> {
            d.get(key)
                .and_then(Dlist::as_str)
                .map(str::to_owned)
                .ok_or_else(|| err(format!("no {key}")))
        };
        let num = |key: &str| -> Result<u64, MailboxStateError> {
            match d.get(key) {
                None => Ok(0),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| err(format!("{key} is not a number: {v}"))),
            }
        };
        let mut records = Vec::new();
        if let Some(list) = d.get("RECORD") {
            let items = list
                .list()
                .ok_or_else(|| err("RECORD is not a list".into()))?;
            records.reserve(items.len());
            for r in items {
                let uid = r
                    .get("UID")
                    .and_then(Dlist::as_u64)
                    .and_then(|u| u32::try_from(u).ok())
                    .ok_or_else(|| err(format!("a record without a UID: {r}")))?;
                let guid = r
                    .get("GUID")
                    .and_then(Dlist::as_str)
                    .and_then(|g| g.parse::<Guid>().ok())
                    .ok_or_else(|| err(format!("record UID {uid} without a GUID")))?;
                let expunged = r.get("FLAGS").and_then(Dlist::list).is_some_and(|fl| {
                    fl.iter().any(|f| {
                        f.as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case("\\Expunged"))
                    })
                });
                records.push(RecordState {
                    uid,
                    guid,
                    expunged,
                });
            }
        }
        Ok(MailboxState {
            unique_id: text("UNIQUEID")?,
            name: text("MBOXNAME")?,
            partition: d
                .get("PARTITION")
                .and_then(Dlist::as_str)
                .map(str::to_owned),
            mbtype: d.get("MBOXTYPE").and_then(Dlist::as_str).map(str::to_owned),
            uidvalidity: u32::try_from(num("UIDVALIDITY")?)
                .map_err(|_| err("UIDVALIDITY past 32 bits".into()))?,
            last_uid: u32::try_from(num("LAST_UID")?)
                .map_err(|_| err("LAST_UID past 32 bits".into()))?,
            highestmodseq: num("HIGHESTMODSEQ")?,
            records,
        })
    }
}

/// One message record of a [`RestoreMailbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRecord {
    /// The UID to keep (kept only when the mailbox is created by this command).
    pub uid: u32,
    /// Its MODSEQ (0: the server gives one).
    pub modseq: u64,
    /// When the record last changed.
    pub last_updated: Timestamp,
    /// System flags (`\Seen` ...) and keywords.
    pub flags: Vec<String>,
    /// Its internal date.
    pub internal_date: Timestamp,
    /// The message's size.
    pub size: u64,
    /// The message (uploaded beforehand, or already on the server's partition).
    pub guid: Guid,
}

/// `RESTORE MAILBOX %(...)`: Cyrus's restore command (imap/sync_support.c
/// `sync_restore_mailbox`). When no mailbox of that name exists, the server creates it;
/// given a unique id, UIDVALIDITY and HIGHESTMODSEQ (all three), it keeps them and the
/// records' UIDs and MODSEQs. When the mailbox exists, the records are appended with new
/// UIDs, whatever they say. All records are committed in one transaction, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreMailbox {
    /// The internal name (`user.alice.Work`).
    pub name: String,
    /// The partition to create it on (absent: the server's choice).
    pub partition: Option<String>,
    /// Identity to keep: unique id, UIDVALIDITY, HIGHESTMODSEQ (absent: a new identity).
    pub identity: Option<MailboxIdentity>,
    /// Its ACL in Cyrus's form (`alice\tlrswipkxtecdan\t`), if known.
    pub acl: Option<String>,
    /// The records, in ascending UID order (the server relies on it).
    pub records: Vec<RestoreRecord>,
}

/// What makes a mailbox the same mailbox to a client that cached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxIdentity {
    /// The unique id (IMAP's MAILBOXID).
    pub unique_id: String,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ.
    pub highestmodseq: u64,
    /// The mailbox's creation MODSEQ, if known.
    pub createdmodseq: Option<u64>,
}

fn atom(s: &str) -> Dlist {
    Dlist::Atom(s.as_bytes().to_vec())
}

fn num(n: u64) -> Dlist {
    Dlist::Atom(n.to_string().into_bytes())
}

fn date(t: Timestamp) -> Dlist {
    Dlist::Atom(t.secs.max(0).to_string().into_bytes())
}

impl RestoreMailbox {
    /// The command's value.
    pub fn to_dlist(&self) -> Dlist {
        let mut kv: Vec<(String, Dlist)> = Vec::with_capacity(10);
        kv.push(("MBOXNAME".into(), atom(&self.name)));
        if let Some(p) = &self.partition {
            kv.push(("PARTITION".into(), atom(p)));
        }
        if let Some(acl) = &self.acl {
            kv.push(("ACL".into(), atom(acl)));
        }
        if let Some(id) = &self.identity {
            kv.push(("UNIQUEID".into(), atom(&id.unique_id)));
            kv.push(("UIDVALIDITY".into(), num(id.uidvalidity.into())));
            kv.push(("HIGHESTMODSEQ".into(), num(id.highestmodseq)));
            if let Some(c) = id.createdmodseq {
                kv.push(("CREATEDMODSEQ".into(), num(c)));
            }
        }
        let records = self
            .records
            .iter()
            .map(|r| {
                Dlist::Kv(vec![
                    ("UID".into(), num(r.uid.into())),
                    ("MODSEQ".into(), num(r.modseq)),
                    ("LAST_UPDATED".into(), date(r.last_updated)),
                    (
                        "FLAGS".into(),
                        Dlist::List(r.flags.iter().map(|f| atom(f)).collect()),
                    ),
                    ("INTERNALDATE".into(), date(r.internal_date)),
                    ("SIZE".into(), num(r.size)),
                    ("GUID".into(), atom(&r.guid.to_hex())),
                ])
            })
            .collect();
        kv.push(("RECORD".into(), Dlist::List(records)));
        Dlist::Kv(kv)
    }
}

/// `APPLY RESERVE %(PARTITION p MBOXNAME (names) GUID (guids))`: asks the server to find
/// these messages in those mailboxes of that partition and stage them (hard links), so they
/// need no upload. It answers `* MISSING (guids)` for those it did not find.
pub fn reserve(partition: &str, mailboxes: &[String], guids: &[Guid]) -> Dlist {
    Dlist::Kv(vec![
        ("PARTITION".into(), atom(partition)),
        (
            "MBOXNAME".into(),
            Dlist::List(mailboxes.iter().map(|m| atom(m)).collect()),
        ),
        (
            "GUID".into(),
            Dlist::List(guids.iter().map(|g| atom(&g.to_hex())).collect()),
        ),
    ])
}

/// The GUIDs of a `* MISSING (...)` reply.
pub fn missing(value: &Dlist) -> Vec<Guid> {
    value
        .list()
        .unwrap_or_default()
        .iter()
        .filter_map(|g| g.as_str()?.parse().ok())
        .collect()
}

/// `APPLY SUB %(USERID u MBOXNAME m)`: subscribes a user to a mailbox (by internal name).
pub fn subscribe(userid: &str, mailbox: &str) -> Dlist {
    Dlist::Kv(vec![
        ("USERID".into(), atom(userid)),
        ("MBOXNAME".into(), atom(mailbox)),
    ])
}

/// `APPLY SEEN %(...)`: one user's seen state in one mailbox (by unique id), as its seen
/// database holds it (imap/seen.h `struct seendata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenState {
    /// The user whose state it is.
    pub userid: String,
    /// The mailbox's unique id.
    pub unique_id: String,
    /// When the user last read the mailbox (Unix seconds).
    pub last_read: i64,
    /// The highest UID the user had seen.
    pub last_uid: u32,
    /// When the state last changed (Unix seconds).
    pub last_change: i64,
    /// The seen UIDs as an IMAP sequence set (`1:5,7`).
    pub seen_uids: String,
}

impl SeenState {
    /// The command's value.
    pub fn to_dlist(&self) -> Dlist {
        Dlist::Kv(vec![
            ("USERID".into(), atom(&self.userid)),
            ("UNIQUEID".into(), atom(&self.unique_id)),
            ("LASTREAD".into(), num(self.last_read.max(0) as u64)),
            ("LASTUID".into(), num(self.last_uid.into())),
            ("LASTCHANGE".into(), num(self.last_change.max(0) as u64)),
            ("SEENUIDS".into(), atom(&self.seen_uids)),
        ])
    }

    /// Reads one record of a Cyrus seen database (imap/seen_db.c): the key is the
    /// mailbox's unique id, the value `1 LASTREAD LASTUID LASTCHANGE SEENUIDS` (version 1,
    /// the only one Cyrus 3 writes; SEENUIDS may be empty). `None` when it is not such a
    /// record.
    pub fn from_db_record(userid: &str, key: &[u8], value: &[u8]) -> Option<SeenState> {
        let unique_id = std::str::from_utf8(key).ok()?;
        let value = std::str::from_utf8(value).ok()?;
        let mut it = value.split_ascii_whitespace();
        if it.next()? != "1" {
            return None;
        }
        let last_read = it.next()?.parse().ok()?;
        let last_uid = it.next()?.parse().ok()?;
        let last_change = it.next()?.parse().ok()?;
        let seen_uids = it.next().unwrap_or("").to_owned();
        if unique_id.is_empty() || it.next().is_some() {
            return None;
        }
        Some(SeenState {
            userid: userid.to_owned(),
            unique_id: unique_id.to_owned(),
            last_read,
            last_uid,
            last_change,
            seen_uids,
        })
    }
}

/// `APPLY SIEVE %(USERID u FILENAME name.script LAST_UPDATE t CONTENT source)`: stores a
/// sieve script (Cyrus 3.6 files it in the user's `#sieve` mailbox and compiles it).
pub fn sieve_script(userid: &str, name: &str, last_update: Timestamp, source: &[u8]) -> Dlist {
    Dlist::Kv(vec![
        ("USERID".into(), atom(userid)),
        ("FILENAME".into(), atom(&format!("{name}.script"))),
        ("LAST_UPDATE".into(), date(last_update)),
        ("CONTENT".into(), Dlist::Atom(source.to_vec())),
    ])
}

/// `APPLY ACTIVATE_SIEVE %(USERID u FILENAME name.bc)`: makes a script the active one.
pub fn activate_sieve(userid: &str, name: &str) -> Dlist {
    Dlist::Kv(vec![
        ("USERID".into(), atom(userid)),
        ("FILENAME".into(), atom(&format!("{name}.bc"))),
    ])
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_one_line_with_dlist_values() {
        assert_eq!(
            command(Verb::Get, "FULLMAILBOX", &atom("user.alice.Work")),
            b"GET FULLMAILBOX user.alice.Work\r\n"
        );
        let sub = command(
            Verb::Apply,
            "SUB",
            &subscribe("alice", "user.alice.Dear Bob"),
        );
        assert_eq!(
            sub,
            b"APPLY SUB %(USERID alice MBOXNAME \"user.alice.Dear Bob\")\r\n"
        );
        assert_eq!(
            authenticate_plain("", "admin", "pw"),
            b"AUTHENTICATE PLAIN AGFkbWluAHB3\r\n"
        );
        let g = Guid::of(b"m");
        assert_eq!(
            message_upload("default", &g, 1),
            format!("%{{default {} 1}}\r\n", g.to_hex()).into_bytes()
        );
    }

    #[test]
    fn restore_mailbox_keeps_identity_only_when_given() {
        let g = Guid::of(b"x");
        let mut m = RestoreMailbox {
            name: "user.alice.Trash".into(),
            partition: Some("default".into()),
            identity: None,
            acl: None,
            records: vec![RestoreRecord {
                uid: 7,
                modseq: 12,
                last_updated: Timestamp::from_secs(100),
                flags: vec!["\\Seen".into(), "$Work".into()],
                internal_date: Timestamp::from_secs(90),
                size: 1,
                guid: g,
            }],
        };
        let plain = String::from_utf8(m.to_dlist().to_bytes()).unwrap();
        assert_eq!(
            plain,
            format!(
                "%(MBOXNAME user.alice.Trash PARTITION default RECORD (%(UID 7 MODSEQ 12 LAST_UPDATED 100 FLAGS (\\Seen $Work) INTERNALDATE 90 SIZE 1 GUID {})))",
                g.to_hex()
            )
        );
        m.identity = Some(MailboxIdentity {
            unique_id: "abc".into(),
            uidvalidity: 5,
            highestmodseq: 20,
            createdmodseq: None,
        });
        let kept = String::from_utf8(m.to_dlist().to_bytes()).unwrap();
        assert!(kept.contains("UNIQUEID abc UIDVALIDITY 5 HIGHESTMODSEQ 20 RECORD"));
    }

    #[test]
    fn replies_parse_into_status_and_data() {
        assert_eq!(
            parse_reply(b"OK success\r\n").unwrap(),
            Reply::Ok("success".into())
        );
        assert_eq!(
            parse_reply(b"NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox\r\n").unwrap(),
            Reply::No {
                code: Some("IMAP_MAILBOX_NONEXISTENT".into()),
                text: "IMAP_MAILBOX_NONEXISTENT No Such Mailbox".into()
            }
        );
        assert_eq!(
            parse_reply(b"NO Unknown error\r\n").unwrap(),
            Reply::No {
                code: None,
                text: "Unknown error".into()
            }
        );
        assert_eq!(
            parse_reply(b"* SASL PLAIN LOGIN\r\n").unwrap(),
            Reply::Untagged("SASL PLAIN LOGIN".into())
        );
        let g = Guid::of(b"q");
        let line = format!(
            "* MAILBOX %(UNIQUEID u1 MBOXNAME user.alice SYNC_CRC 0 LAST_UID 3 HIGHESTMODSEQ 9 UIDVALIDITY 77 PARTITION default RECORD (%(UID 3 MODSEQ 9 FLAGS (\\Seen \\Expunged) GUID {g})))\r\n"
        );
        let Reply::Data { name, value } = parse_reply(line.as_bytes()).unwrap() else {
            panic!("not data")
        };
        assert_eq!(name, "MAILBOX");
        let st = MailboxState::from_dlist(&value).unwrap();
        assert_eq!(
            (
                st.uidvalidity,
                st.last_uid,
                st.highestmodseq,
                st.partition.as_deref()
            ),
            (77, 3, 9, Some("default"))
        );
        assert_eq!(
            st.records,
            vec![RecordState {
                uid: 3,
                guid: g,
                expunged: true
            }]
        );
        let missing_line = format!("* MISSING ({g})\r\n");
        let Reply::Data { value, .. } = parse_reply(missing_line.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(missing(&value), vec![g]);
        assert!(matches!(
            parse_reply(b"HELLO\r\n"),
            Err(ReplyError::Unknown { .. })
        ));
        assert!(matches!(
            parse_reply(b"* MAILBOX %(UNIQUEID\r\n"),
            Err(ReplyError::Value { .. })
        ));
        let e = MailboxState::from_dlist(&dlist::parse(b"%(MBOXNAME x)").unwrap().0).unwrap_err();
        assert_eq!(e.to_string(), "the server's MAILBOX \"x\": no UNIQUEID");
    }

    #[test]
    fn seen_records_read_as_cyrus_writes_them() {
        let s = SeenState::from_db_record("bob", b"u1", b"1 100 5 120 1:3,5").unwrap();
        assert_eq!(
            (s.last_read, s.last_uid, s.last_change, s.seen_uids.as_str()),
            (100, 5, 120, "1:3,5")
        );
        let none_seen = SeenState::from_db_record("bob", b"u1", b"1 100 5 120 ").unwrap();
        assert_eq!(none_seen.seen_uids, "");
        assert!(SeenState::from_db_record("bob", b"u1", b"2 100 5 120 1").is_none());
        assert!(SeenState::from_db_record("bob", b"u1", b"garbage").is_none());
        assert_eq!(
            String::from_utf8(command(Verb::Apply, "SEEN", &s.to_dlist())).unwrap(),
            "APPLY SEEN %(USERID bob UNIQUEID u1 LASTREAD 100 LASTUID 5 LASTCHANGE 120 SEENUIDS 1:3,5)\r\n"
        );
    }

    proptest::proptest! {
        /// What the client writes, the server's grammar reads back as the same value: any
        /// names, flags and sizes, including spaces, quotes, 8-bit bytes and empty ones.
        #[test]
        fn restore_mailbox_reads_back(
            name in ".{1,40}",
            flags in proptest::collection::vec("[\\\\$]?[ -~]{1,12}", 0..5),
            uids in proptest::collection::btree_set(1u32..100_000, 0..20),
            modseq in 0u64..u64::MAX,
            secs in 0i64..4_000_000_000,
        ) {
            let m = RestoreMailbox {
                name,
                partition: Some("p 2".into()),
                identity: Some(MailboxIdentity {
                    unique_id: "id".into(),
                    uidvalidity: 7,
                    highestmodseq: modseq,
                    createdmodseq: Some(1),
                }),
                acl: Some("alice\tlrs\t".into()),
                records: uids
                    .iter()
                    .map(|&uid| RestoreRecord {
                        uid,
                        modseq,
                        last_updated: Timestamp::from_secs(secs),
                        flags: flags.clone(),
                        internal_date: Timestamp::from_secs(secs),
                        size: u64::from(uid),
                        guid: Guid::of(&uid.to_be_bytes()),
                    })
                    .collect(),
            };
            let line = command(Verb::Restore, "MAILBOX", &m.to_dlist());
            let body = line
                .strip_prefix(b"RESTORE MAILBOX ".as_slice())
                .and_then(|b| b.strip_suffix(b"\r\n".as_slice()))
                .unwrap();
            let (back, used) = dlist::parse(body).unwrap();
            proptest::prop_assert_eq!(used, body.len());
            proptest::prop_assert_eq!(back, m.to_dlist());
        }
    }
}
