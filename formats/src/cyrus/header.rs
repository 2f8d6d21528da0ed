//! A mailbox's `cyrus.header`: the mailbox's name, unique id, ACL, quota root and the names
//! of its user flags (keywords), which give meaning to the keyword bits of cyrus.index.
//!
//! Every version starts with the same magic: 4 bytes `a1 02 8b 0d`, `Cyrus mailbox header`,
//! and a two-line quote of Jim Morris, each line ending in `\n` (see [`MAGIC`]). What follows
//! comes in two forms (docs/cyrus-header.md has the details):
//!
//! * dlist (Cyrus 3.6 and later): one line holding a key-value dlist,
//!   `%(T e N user.alice I <uniqueid> [J <jmapid>] [Q <quotaroot>] A %(<id> <rights> ...) [U (<flag> ...)])`.
//! * tabs (Cyrus 2.x to 3.4): `<quotaroot> TAB <uniqueid>`, then the user flag names separated
//!   by spaces, then the ACL as `<id> TAB <rights> TAB` pairs, one line each.
//!
//! Cyrus 3.6+ reads both, and so does this module.

use super::dlist::{self, Dlist};
use serde::Serialize;

/// The bytes every cyrus.header starts with.
pub const MAGIC: &[u8] = b"\xa1\x02\x8b\x0dCyrus mailbox header\n\
\"The best thing about this system was that it had lots of goals.\"\n\
\t--Jim Morris on Andrew\n";

/// The most user flags a mailbox can have (4 x 32 bits in each index record).
pub const MAX_USER_FLAGS: usize = 128;

/// Which of the two layouts a header uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderFormat {
    /// One dlist line (Cyrus 3.6+).
    #[default]
    Dlist,
    /// Three tab- and space-separated lines (Cyrus up to 3.4).
    Tabs,
}

/// One ACL entry: who, and which rights (Cyrus's letters, e.g. `lrswipkxtecdan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclEntry {
    /// The user or group (`anyone`, `group:staff`, a leading `-` for negative rights).
    pub identifier: String,
    /// The rights letters.
    pub rights: String,
}

/// A parsed cyrus.header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MailboxHeader {
    /// The layout the file used (and [`MailboxHeader::to_bytes`] writes).
    pub format: HeaderFormat,
    /// Mailbox type (`T`): `e` for email, then flag letters; see mboxlist.c. Dlist form only.
    pub mbtype: Option<String>,
    /// Internal mailbox name (`N`), e.g. `user.alice.Work`. Dlist form only.
    pub name: Option<String>,
    /// The mailbox's unique id (`I`): the directory name under `uuid/` in 3.x spools.
    pub unique_id: Option<String>,
    /// The JMAP id (`J`), written by Cyrus's development branch only.
    pub jmap_id: Option<String>,
    /// The quota root (`Q`), if the mailbox is under one.
    pub quota_root: Option<String>,
    /// The ACL, in file order.
    pub acl: Vec<AclEntry>,
    /// User flag (keyword) names: entry `i` names keyword bit `i` of every index record;
    /// `None` is a free slot. Trailing free slots are dropped.
    pub user_flags: Vec<Option<String>>,
    /// Dlist keys this reader does not know, with their values in dlist notation.
    pub other: Vec<(String, String)>,
}

/// A cyrus.header that could not be parsed: where, what was expected and what was there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: expected {expected}, found {found}")]
pub struct HeaderError {
    /// Byte offset in the file.
    pub offset: usize,
    /// What the format requires there.
    pub expected: &'static str,
    /// What the file holds there (a short, printable rendering).
    pub found: String,
}

/// The CRC-32 of a whole cyrus.header file: the value cyrus.index keeps in `header_file_crc`
/// (12+), which tells whether index and header were written together.
pub fn file_crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn err(offset: usize, expected: &'static str, found: impl Into<String>) -> HeaderError {
    HeaderError {
        offset,
        expected,
        found: found.into(),
    }
}

fn shown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "end of file".into();
    }
    let s: String = bytes
        .iter()
        .take(24)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    format!("\"{s}\"")
}

fn text(bytes: &[u8], offset: usize, what: &'static str) -> Result<String, HeaderError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| err(offset + e.utf8_error().valid_up_to(), what, "invalid UTF-8"))
}

/// The line starting at `start`, without its `\n`, and the offset after the `\n`.
fn line(data: &[u8], start: usize) -> Result<(&[u8], usize), HeaderError> {
    let rest = data.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(n) => Ok((&rest[..n], start + n + 1)),
        None => Err(err(data.len(), "a line ending in \\n", "end of file")),
    }
}

/// Parses a whole cyrus.header file.
pub fn parse(data: &[u8]) -> Result<MailboxHeader, HeaderError> {
    if let Some(i) = MAGIC
        .iter()
        .zip(data)
        .position(|(want, have)| want != have)
        .or((data.len() < MAGIC.len()).then_some(data.len()))
    {
        return Err(err(i, "the cyrus.header magic", shown(&data[i..])));
    }
    let start = MAGIC.len();
    if data.get(start) == Some(&b'%') {
        let (l, _) = line(data, start)?;
        parse_dlist(l, start)
    } else {
        parse_tabs(data, start)
    }
}

fn parse_dlist(l: &[u8], at: usize) -> Result<MailboxHeader, HeaderError> {
    let (value, used) = dlist::parse(l).map_err(|e| HeaderError {
        offset: at + e.offset,
        expected: e.expected,
        found: e.found,
    })?;
    if used != l.len() {
        return Err(err(
            at + used,
            "the end of the line after the dlist",
            shown(&l[used..]),
        ));
    }
    let pairs = value
        .kv()
        .ok_or_else(|| err(at, "a key-value dlist %(...)", shown(l)))?;
    let mut h = MailboxHeader::default();
    // Sub-values carry no offsets of their own: errors inside the line point at its start.
    let atom = |v: &Dlist, what: &'static str| -> Result<Option<String>, HeaderError> {
        match v {
            Dlist::Nil => Ok(None),
            Dlist::Atom(a) => text(a, at, what).map(Some),
            other => Err(err(at, what, other.to_string())),
        }
    };
    for (key, v) in pairs {
        match key.as_str() {
            "T" => h.mbtype = atom(v, "an atom for the mailbox type T")?,
            "N" => h.name = atom(v, "an atom for the mailbox name N")?,
            "I" => h.unique_id = atom(v, "an atom for the unique id I")?,
            "J" => h.jmap_id = atom(v, "an atom for the JMAP id J")?,
            "Q" => h.quota_root = atom(v, "an atom for the quota root Q")?,
            "A" => {
                let entries = v
                    .kv()
                    .ok_or_else(|| err(at, "a key-value list for the ACL A", v.to_string()))?;
                h.acl.clear(); // a repeated key replaces, as in Cyrus
                for (identifier, rights) in entries {
                    let rights = atom(rights, "an atom of rights in the ACL A")?;
                    h.acl.push(AclEntry {
                        identifier: identifier.clone(),
                        rights: rights.unwrap_or_default(),
                    });
                }
            }
            "U" => {
                let names = v
                    .list()
                    .ok_or_else(|| err(at, "a list for the user flags U", v.to_string()))?;
                h.user_flags.clear();
                for name in names.iter().take(MAX_USER_FLAGS) {
                    h.user_flags
                        .push(atom(name, "an atom or NIL in the user flags U")?);
                }
            }
            _ => h.other.push((key.clone(), v.to_string())),
        }
    }
    trim_flags(&mut h.user_flags);
    Ok(h)
}

fn parse_tabs(data: &[u8], start: usize) -> Result<MailboxHeader, HeaderError> {
    let mut h = MailboxHeader {
        format: HeaderFormat::Tabs,
        ..Default::default()
    };

    // quotaroot TAB uniqueid (the unique id is missing in files from before Cyrus 2.2)
    let (l, next) = line(data, start)?;
    let mut fields = l.splitn(2, |&b| b == b'\t');
    let quota_root = fields.next().unwrap_or_default();
    if !quota_root.is_empty() {
        h.quota_root = Some(text(quota_root, start, "a UTF-8 quota root")?);
    }
    if let Some(rest) = fields.next() {
        let at = start + quota_root.len() + 1;
        let id = rest.split(|&b| b == b'\t').next().unwrap_or_default();
        if id.is_empty() {
            return Err(err(at, "a unique id after the tab", shown(rest)));
        }
        h.unique_id = Some(text(id, at, "a UTF-8 unique id")?);
    }

    // flag1 SP flag2 SP ... (Cyrus writes a space after each); empty names are free slots
    let (l, after_flags) = line(data, next)?;
    let mut at = next;
    for name in l.split(|&b| b == b' ').take(MAX_USER_FLAGS) {
        h.user_flags.push(if name.is_empty() {
            None
        } else {
            Some(text(name, at, "a UTF-8 user flag name")?)
        });
        at += name.len() + 1;
    }
    trim_flags(&mut h.user_flags);

    // id TAB rights TAB id TAB rights TAB
    let (l, _) = line(data, after_flags)?;
    let mut parts = l.split(|&b| b == b'\t');
    let mut at = after_flags;
    while let Some(id) = parts.next() {
        if id.is_empty() {
            break; // the trailing tab
        }
        let identifier = text(id, at, "a UTF-8 ACL identifier")?;
        at += id.len() + 1;
        let rights = parts.next().ok_or_else(|| {
            err(
                at - 1,
                "a tab and rights after the ACL identifier",
                "end of line",
            )
        })?;
        h.acl.push(AclEntry {
            identifier,
            rights: text(rights, at, "UTF-8 ACL rights")?,
        });
        at += rights.len() + 1;
    }
    Ok(h)
}

fn trim_flags(flags: &mut Vec<Option<String>>) {
    while flags.last().is_some_and(Option::is_none) {
        flags.pop();
    }
}

impl MailboxHeader {
    /// The file as Cyrus writes it in [`MailboxHeader::format`]: magic, then the dlist line
    /// (keys in Cyrus 3.6's order: T N I J Q A U, then unknown keys) or the three tab lines.
    /// Values with bytes outside printable ASCII become dlist literals, which span lines and
    /// which no reader of the format (Cyrus's included) reads back; Cyrus never writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        match self.format {
            HeaderFormat::Dlist => {
                let atom = |s: &str| Dlist::Atom(s.as_bytes().to_vec());
                let mut kv = Vec::new();
                for (key, value) in [
                    ("T", &self.mbtype),
                    ("N", &self.name),
                    ("I", &self.unique_id),
                    ("J", &self.jmap_id),
                    ("Q", &self.quota_root),
                ] {
                    if let Some(v) = value {
                        kv.push((key.to_string(), atom(v)));
                    }
                }
                if !self.acl.is_empty() {
                    let acl = self
                        .acl
                        .iter()
                        .map(|e| (e.identifier.clone(), atom(&e.rights)))
                        .collect();
                    kv.push(("A".to_string(), Dlist::Kv(acl)));
                }
                if !self.user_flags.is_empty() {
                    let flags = self
                        .user_flags
                        .iter()
                        .map(|f| f.as_deref().map_or(Dlist::Nil, atom))
                        .collect();
                    kv.push(("U".to_string(), Dlist::List(flags)));
                }
                for (key, value) in &self.other {
                    // Kept as dlist text when read; anything else is written as an atom.
                    let v = match dlist::parse(value.as_bytes()) {
                        Ok((v, n)) if n == value.len() => v,
                        _ => atom(value),
                    };
                    kv.push((key.clone(), v));
                }
                out.extend_from_slice(&Dlist::Kv(kv).to_bytes());
                out.push(b'\n');
            }
            HeaderFormat::Tabs => {
                out.extend_from_slice(self.quota_root.as_deref().unwrap_or("").as_bytes());
                if let Some(id) = &self.unique_id {
                    out.push(b'\t');
                    out.extend_from_slice(id.as_bytes());
                }
                out.push(b'\n');
                for f in &self.user_flags {
                    out.extend_from_slice(f.as_deref().unwrap_or("").as_bytes());
                    out.push(b' ');
                }
                out.push(b'\n');
                for e in &self.acl {
                    out.extend_from_slice(e.identifier.as_bytes());
                    out.push(b'\t');
                    out.extend_from_slice(e.rights.as_bytes());
                    out.push(b'\t');
                }
                out.push(b'\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
