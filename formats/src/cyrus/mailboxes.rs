//! The mailbox list Cyrus 3.x keeps in mailboxes.db: keys, entries, names and directories.
//!
//! mailboxes.db is a key-value database (twoskip by default, see [`super::twoskip`]). Two key
//! layouts exist in Cyrus 3.x (imap/mboxlist.c):
//!
//! * **By name** (3.5 and later, [`KeyLayout::ByName`]). `N<dbname>` holds a mailbox's entry,
//!   `I<unique id>` the same mailbox by id (with its current `N` name and `H` name history),
//!   `A...` the reverse ACL index (`reverseacls: yes`). A *dbname* is the mailbox name with
//!   `\x1f` between levels and `\x1d` after a virtual domain:
//!   `example.com\x1duser\x1falice\x1fWork`; a `.` inside a level is a plain dot.
//! * **Legacy** (3.0 to 3.4, [`KeyLayout::Legacy`]). The key is the internal name itself,
//!   `example.com!user.alice.Work`, with `.` between levels and `^` for a dot inside a level;
//!   `$RACL...` and `$RUNQ...` keys hold other indexes. Cyrus 3.6 converts such a database on
//!   its first start and marks every mailbox as keeping its name-based directory.
//!
//! Any other key (`$...`, `A...`, `*...`, `\x1fVER\x1f`) is not a mailbox and is skipped.
//!
//! An entry is a dlist key-value list (see [`super::dlist`]), e.g.
//! `%(T e I tr3g9qzoe6kapjm5i3coxngy P default V 1795415425 C 1 F 1 M 1795415424 A %(u3x0 lrswipkxtecdan))`:
//! `T` type letters, `I` unique id, `P` partition, `S` server (murder), `V` uidvalidity,
//! `C` createdmodseq, `F` foldermodseq, `M` mtime of the entry, `A` ACL (identifier → rights),
//! and in `I` entries `N` dbname and `H` name history. 3.0 to 3.4 omit `T` for plain mail
//! folders and put type letters among the flag letters; both are read here.
//!
//! Delayed delete renames a mailbox into the `DELETED` namespace
//! (`DELETED.user.alice.Work.65A0B1C2`, hex time of deletion): such a mailbox still has its
//! files; [`MailboxName::deleted`] says so. A *tombstone* (type flag `d`) has no files.

use super::dlist::{self, Dlist, DlistError};
use super::twoskip::{self, Twoskip, TwoskipError};
use serde::Serialize;
use std::fmt;
use thiserror::Error;

/// imapd.conf's `deletedprefix` when it is not set: the delayed-delete namespace.
pub const DEFAULT_DELETED_PREFIX: &str = "DELETED";

/// How mailboxes.db keys are laid out; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// Cyrus 3.5 and later: `N<dbname>` and `I<unique id>` keys.
    ByName,
    /// Cyrus 3.0 to 3.4: the internal name is the key.
    Legacy,
}

/// What a mailboxes.db key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxKey<'a> {
    /// A mailbox's entry, by name: the dbname (by-name layout) or internal name (legacy).
    Name(&'a [u8]),
    /// A mailbox's entry, by unique id (by-name layout only).
    Id(&'a [u8]),
    /// Anything else (indexes, version keys): not a mailbox.
    Other,
}

impl<'a> MailboxKey<'a> {
    /// Classifies a key of a database of the given layout.
    pub fn classify(key: &'a [u8], layout: KeyLayout) -> Self {
        match (layout, key.split_first()) {
            (KeyLayout::ByName, Some((b'N', name))) if !name.is_empty() => MailboxKey::Name(name),
            (KeyLayout::ByName, Some((b'I', id))) if !id.is_empty() => MailboxKey::Id(id),
            (KeyLayout::Legacy, Some((first, _))) if !b"$*\x1f".contains(first) => {
                MailboxKey::Name(key)
            }
            _ => MailboxKey::Other,
        }
    }
}

/// Decides the layout from the entries in key order, the way Cyrus 3.6 decides whether a
/// database needs upgrading: the first entry for which [`layout_hint`] has an answer settles
/// it. No such entry: legacy (an empty database reads the same either way).
pub fn detect_layout<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> KeyLayout {
    entries
        .into_iter()
        .find_map(|(key, value)| layout_hint(key, value))
        .unwrap_or(KeyLayout::Legacy)
}

/// What one entry says about the layout, if anything: a `$RACL`/`$RUNQ` key means legacy; the
/// reverse-ACL prefix `AS\x1f`/`AU\x1f` means by name; an `I` key means by name if its entry
/// names the mailbox (`N`), legacy if not; an `N` key whose value is a dlist means by name.
pub fn layout_hint(key: &[u8], value: &[u8]) -> Option<KeyLayout> {
    match key.first() {
        Some(b'$') if key.starts_with(b"$RACL") || key.starts_with(b"$RUNQ") => {
            Some(KeyLayout::Legacy)
        }
        Some(b'A') if key.starts_with(b"AS\x1f") || key.starts_with(b"AU\x1f") => {
            Some(KeyLayout::ByName)
        }
        Some(b'I') => Some(match dlist::parse(value) {
            Ok((d, _)) if d.get("N").is_some() => KeyLayout::ByName,
            _ => KeyLayout::Legacy,
        }),
        Some(b'N') if dlist::parse(value).is_ok() => Some(KeyLayout::ByName),
        _ => None,
    }
}

/// A mailbox name taken apart (Cyrus's "mbname").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MailboxName {
    /// The virtual domain (`example.com` of `example.com!user.alice`), if any.
    pub domain: Option<String>,
    /// The local part of the owning user (`alice` of `user.alice.Work`); `None` for shared
    /// mailboxes.
    pub owner: Option<String>,
    /// The levels below the user's INBOX (for shared mailboxes: from the top), as the user
    /// sees them (a `.` is a plain dot), in Cyrus's modified UTF-7.
    pub boxes: Vec<String>,
    /// Set for a mailbox in the delayed-delete namespace (`DELETED.user.alice.Work.65A0B1C2`).
    pub deleted: Option<Deleted>,
}

/// Where and when a delayed-deleted mailbox went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deleted {
    /// The namespace prefix (imapd.conf `deletedprefix`, `DELETED` by default).
    pub prefix: String,
    /// Unix time of the deletion (the hex suffix of the name).
    pub at: u32,
}

impl MailboxName {
    /// Parses a dbname (by-name layout): `\x1d` after the domain, `\x1f` between levels.
    pub fn from_dbname(dbname: &str, deleted_prefix: &str) -> Self {
        let (domain, rest) = match dbname.split_once('\x1d') {
            Some((d, rest)) => (Some(d), rest),
            None => (None, dbname),
        };
        let levels = rest.split('\x1f').map(str::to_owned).collect();
        Self::from_levels(domain, levels, deleted_prefix)
    }

    /// Parses an internal name (legacy layout, ctl_mboxlist's `name`): `!` after the domain,
    /// `.` between levels, `^` for a dot inside a level.
    pub fn from_intname(intname: &str, deleted_prefix: &str) -> Self {
        let (domain, rest) = match intname.split_once('!') {
            Some((d, rest)) => (Some(d), rest),
            None => (None, intname),
        };
        let levels = rest.split('.').map(|l| l.replace('^', ".")).collect();
        Self::from_levels(domain, levels, deleted_prefix)
    }

    /// Cyrus's rules (mbname_from_dbname): a deleted prefix needs at least three levels, the
    /// last being the hex time; `user` needs a following level to name an owner.
    fn from_levels(domain: Option<&str>, mut levels: Vec<String>, deleted_prefix: &str) -> Self {
        let mut deleted = None;
        if levels.len() > 2 && levels[0] == deleted_prefix {
            let prefix = levels.remove(0);
            let hex = levels.pop().unwrap_or_default();
            deleted = Some(Deleted {
                prefix,
                at: u32::from_str_radix(&hex, 16).unwrap_or(0),
            });
        }
        let mut owner = None;
        if levels.len() > 1 && levels[0] == "user" {
            owner = Some(levels.remove(1));
            levels.remove(0);
        }
        MailboxName {
            domain: domain.map(str::to_owned),
            owner,
            boxes: levels,
            deleted,
        }
    }

    /// The internal name, as ctl_mboxlist prints it: `example.com!user.alice.Work`.
    pub fn intname(&self) -> String {
        let mut levels: Vec<String> = Vec::with_capacity(self.boxes.len() + 4);
        if let Some(d) = &self.deleted {
            levels.push(d.prefix.clone());
        }
        if let Some(owner) = &self.owner {
            levels.push("user".into());
            levels.push(owner.replace('.', "^"));
        }
        levels.extend(self.boxes.iter().map(|b| b.replace('.', "^")));
        if let Some(d) = &self.deleted {
            levels.push(format!("{:X}", d.at));
        }
        let name = levels.join(".");
        match &self.domain {
            Some(domain) => format!("{domain}!{name}"),
            None => name,
        }
    }

    /// The owning user's id: `alice`, or `alice@example.com` in a virtual domain.
    pub fn userid(&self) -> Option<String> {
        let owner = self.owner.as_ref()?;
        Some(match &self.domain {
            Some(domain) => format!("{owner}@{domain}"),
            None => owner.clone(),
        })
    }

    /// The folder as the owner sees it, `/` between levels: `INBOX` for the user's top,
    /// `Work/Sub` below it; for a shared mailbox, its whole name (`shared/news`).
    pub fn folder(&self) -> String {
        if self.owner.is_some() && self.boxes.is_empty() {
            "INBOX".into()
        } else {
            self.boxes.join("/")
        }
    }

    /// The directory of a mailbox stored by name (Cyrus before 3.5, and mailboxes flagged
    /// `l` since), relative to its partition root: `user/alice/Work`, with a hash directory
    /// first when `hashimapspool` is on, and `domain/...` for virtual domains (mboxname_hash).
    pub fn legacy_dir(&self, hashing: SpoolHashing) -> String {
        let mut levels: Vec<String> = Vec::with_capacity(self.boxes.len() + 4);
        if let Some(d) = &self.deleted {
            levels.push(d.prefix.clone());
        }
        if let Some(owner) = &self.owner {
            levels.push("user".into());
            levels.push(owner.clone());
        }
        levels.extend(self.boxes.iter().cloned());
        if let Some(d) = &self.deleted {
            levels.push(format!("{:X}", d.at));
        }
        let mut path = String::new();
        if let Some(domain) = &self.domain {
            path.push_str("domain/");
            if hashing.hashimapspool {
                path.push(dir_hash(domain, hashing.fulldirhash));
                path.push('/');
            }
            path.push_str(domain);
            path.push('/');
        }
        // Cyrus hashes on the second level (the user of user.alice), else the first.
        if let Some(idx) = levels.get(1).or(levels.first()) {
            if hashing.hashimapspool {
                path.push(dir_hash(idx, hashing.fulldirhash));
                path.push('/');
            }
        }
        let levels: Vec<String> = levels.iter().map(|l| l.replace('.', "^")).collect();
        path.push_str(&levels.join("/"));
        path
    }
}

/// The imapd.conf switches that shape name-based mailbox directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolHashing {
    /// `hashimapspool`: a one-letter directory before the user's.
    pub hashimapspool: bool,
    /// `fulldirhash`: that letter is a hash of the whole name instead of its first letter.
    pub fulldirhash: bool,
}

/// Cyrus's `dir_hash_c` (lib/util.c): the first letter (lower case, `q` if not a letter), or
/// with `fulldirhash` a hash of the name up to its first dot mapped to `A`..`W`. Names the
/// hashed directories of name-based spools, user files and lock files.
pub fn dir_hash(name: &str, full: bool) -> char {
    if full {
        let mut n: u32 = 0;
        for &b in name.as_bytes().iter().take_while(|&&b| b != b'.') {
            n = ((n << 3) ^ (n >> 5)) ^ u32::from(b);
        }
        char::from(b'A' + (n % 23) as u8)
    } else {
        match name.bytes().next().map(|b| b.to_ascii_lowercase()) {
            Some(c @ b'a'..=b'z') => char::from(c),
            _ => 'q',
        }
    }
}

/// What a mailbox holds (the letter that leads the `T` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailboxKind {
    /// `e` (or no letter): mail.
    #[default]
    Email,
    /// `n`: netnews.
    Netnews,
    /// `b`: a DAV collection.
    Collection,
    /// `c`: a calendar.
    Calendar,
    /// `a`: an address book.
    Addressbook,
    /// `s`: JMAP submissions.
    JmapSubmission,
    /// `p`: JMAP push subscriptions.
    JmapPushSubscription,
    /// `f`: sieve scripts.
    Sieve,
}

/// The `T` field: kind and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxType {
    /// What the mailbox holds.
    pub kind: MailboxKind,
    /// `d`: a tombstone left by a delete or rename; no files.
    pub tombstone: bool,
    /// `m`: being moved between servers.
    pub moving: bool,
    /// `r`: lives on another server (murder); no files here.
    pub remote: bool,
    /// `z`: a name reserved during a create or rename; no files yet.
    pub reserved: bool,
    /// `i`: only a parent of other mailboxes, never created; no files.
    pub intermediate: bool,
    /// `l`: stored under its name (`user/alice/Work`), not its unique id.
    pub legacy_dirs: bool,
}

impl MailboxType {
    /// Parses the type letters; an unknown letter is returned as the error.
    pub fn parse(letters: &str) -> Result<Self, char> {
        let mut t = MailboxType::default();
        let mut kind = None;
        for c in letters.chars() {
            let k = match c {
                'e' => MailboxKind::Email,
                'n' => MailboxKind::Netnews,
                'b' => MailboxKind::Collection,
                'c' => MailboxKind::Calendar,
                'a' => MailboxKind::Addressbook,
                's' => MailboxKind::JmapSubmission,
                'p' => MailboxKind::JmapPushSubscription,
                'f' => MailboxKind::Sieve,
                'd' => {
                    t.tombstone = true;
                    continue;
                }
                'm' => {
                    t.moving = true;
                    continue;
                }
                'r' => {
                    t.remote = true;
                    continue;
                }
                'z' => {
                    t.reserved = true;
                    continue;
                }
                'i' => {
                    t.intermediate = true;
                    continue;
                }
                'l' => {
                    t.legacy_dirs = true;
                    continue;
                }
                other => return Err(other),
            };
            if kind.is_some_and(|old| old != k) {
                return Err(c);
            }
            kind = Some(k);
        }
        t.kind = kind.unwrap_or_default();
        Ok(t)
    }

    /// The kind's letter (`e` for mail, as Cyrus 3.6 writes it), if any.
    fn kind_letter(&self) -> char {
        match self.kind {
            MailboxKind::Email => 'e',
            MailboxKind::Netnews => 'n',
            MailboxKind::Collection => 'b',
            MailboxKind::Calendar => 'c',
            MailboxKind::Addressbook => 'a',
            MailboxKind::JmapSubmission => 's',
            MailboxKind::JmapPushSubscription => 'p',
            MailboxKind::Sieve => 'f',
        }
    }

    /// Whether a mailbox of this type has a directory with files on this server.
    pub fn has_spool_dir(&self) -> bool {
        !(self.tombstone || self.remote || self.reserved || self.intermediate)
    }
}

/// The letters as Cyrus 3.6 writes them: the kind, then the flags (`e`, `ei`, `cd`).
impl fmt::Display for MailboxType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = [
            (self.tombstone, 'd'),
            (self.moving, 'm'),
            (self.remote, 'r'),
            (self.reserved, 'z'),
            (self.intermediate, 'i'),
            (self.legacy_dirs, 'l'),
        ];
        let mut out = String::with_capacity(7);
        out.push(self.kind_letter());
        out.extend(flags.iter().filter(|(set, _)| *set).map(|(_, c)| c));
        f.write_str(&out)
    }
}

impl Serialize for MailboxType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One mailbox of mailboxes.db, decoded. Serializes with the type as its letters (`"e"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxEntry {
    /// The name, taken apart; [`MailboxName::intname`], [`MailboxName::userid`] and
    /// [`MailboxName::folder`] give the forms people use.
    pub name: MailboxName,
    /// The unique id (`I`); empty for the rare entry without one.
    pub uniqueid: String,
    /// The partition (`P`); empty for remote or intermediate entries without one.
    pub partition: String,
    /// The server (`S`), in a murder.
    pub server: Option<String>,
    /// Kind and flags (`T`).
    pub mbtype: MailboxType,
    /// `V`.
    pub uidvalidity: u32,
    /// `C`.
    pub createdmodseq: u64,
    /// `F`.
    pub foldermodseq: u64,
    /// `M`: when the entry was last written (Unix time).
    pub mtime: u64,
    /// `A`: (identifier, rights) pairs, in file order.
    pub acl: Vec<(String, String)>,
}

/// A mailboxes.db entry that cannot be decoded. Offsets are within the value; the caller adds
/// the record's place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MailboxesError {
    /// The value is not a dlist.
    #[error("mailboxes.db entry {key}: {source}")]
    Dlist {
        /// The key, printable.
        key: String,
        /// What the dlist parser said.
        source: DlistError,
    },
    /// A field is missing or malformed.
    #[error(
        "mailboxes.db entry {key}: at byte 0 of the value: expected {expected}, found {found}"
    )]
    Field {
        /// The key, printable.
        key: String,
        /// What the format requires.
        expected: &'static str,
        /// What was there.
        found: String,
    },
}

impl MailboxEntry {
    /// Decodes the value of a [`MailboxKey::Name`] key; `name` is the key's name part.
    pub fn decode(
        name: &[u8],
        value: &[u8],
        layout: KeyLayout,
        deleted_prefix: &str,
    ) -> Result<Self, MailboxesError> {
        let printable = || String::from_utf8_lossy(name).replace(['\x1f', '\x1d'], "/");
        let field = |expected, found: String| MailboxesError::Field {
            key: printable(),
            expected,
            found,
        };
        let name_str = std::str::from_utf8(name)
            .map_err(|_| field("a UTF-8 mailbox name", format!("{name:?}")))?;
        let (d, _) = dlist::parse(value).map_err(|source| MailboxesError::Dlist {
            key: printable(),
            source,
        })?;
        if d.kv().is_none() {
            return Err(field(
                "a key-value dlist (\"%(\")",
                String::from_utf8_lossy(&value[..value.len().min(20)]).into_owned(),
            ));
        }
        let text = |k: &'static str| -> Result<Option<String>, MailboxesError> {
            match d.get(k) {
                None | Some(Dlist::Nil) => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_owned()))
                    .ok_or_else(|| field("a UTF-8 atom", format!("{k} = {v:?}"))),
            }
        };
        let number = |k: &'static str| -> Result<u64, MailboxesError> {
            match d.get(k) {
                None | Some(Dlist::Nil) => Ok(0),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| field("a decimal number", format!("{k} = {v:?}"))),
            }
        };
        let mut mbtype = match text("T")? {
            None => MailboxType::default(),
            Some(t) => MailboxType::parse(&t).map_err(|c| {
                field(
                    "type letters from \"abcdefilmnprsz\"",
                    format!("{c:?} in {t:?}"),
                )
            })?,
        };
        // Before 3.5 every mailbox was stored under its name.
        mbtype.legacy_dirs |= layout == KeyLayout::Legacy;
        let uidvalidity = number("V")?;
        let acl = match d.get("A") {
            None | Some(Dlist::Nil) => Vec::new(),
            Some(a) => a
                .kv()
                .ok_or_else(|| field("an ACL key-value list", format!("{a:?}")))?
                .iter()
                .map(|(who, rights)| {
                    rights
                        .as_str()
                        .map(|r| (who.clone(), r.to_owned()))
                        .ok_or_else(|| field("ACL rights as an atom", format!("{rights:?}")))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(MailboxEntry {
            name: match layout {
                KeyLayout::ByName => MailboxName::from_dbname(name_str, deleted_prefix),
                KeyLayout::Legacy => MailboxName::from_intname(name_str, deleted_prefix),
            },
            uniqueid: text("I")?.unwrap_or_default(),
            partition: text("P")?.unwrap_or_default(),
            server: text("S")?,
            mbtype,
            uidvalidity: u32::try_from(uidvalidity)
                .map_err(|_| field("a 32-bit uidvalidity", uidvalidity.to_string()))?,
            createdmodseq: number("C")?,
            foldermodseq: number("F")?,
            mtime: number("M")?,
            acl,
        })
    }

    /// The mailbox's directory relative to its partition root, or `None` for entries with no
    /// files here ([`MailboxType::has_spool_dir`]). Since 3.5: `uuid/<c1>/<c2>/<unique id>`;
    /// mailboxes flagged `l` (and all of a legacy-layout database) are stored by name, see
    /// [`MailboxName::legacy_dir`].
    pub fn spool_dir(&self, hashing: SpoolHashing) -> Option<String> {
        if !self.mbtype.has_spool_dir() || self.partition.is_empty() {
            return None;
        }
        if self.mbtype.legacy_dirs {
            return Some(self.name.legacy_dir(hashing));
        }
        let mut c = self.uniqueid.chars();
        let (c1, c2) = (c.next()?, c.next()?);
        Some(format!("uuid/{c1}/{c2}/{}", self.uniqueid))
    }
}

/// A mailbox list that cannot be read: the database, or one entry of it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MailboxListError {
    /// The twoskip file is damaged.
    #[error(transparent)]
    Db(#[from] TwoskipError),
    /// One entry cannot be decoded.
    #[error("record at byte {offset}: {source}")]
    Entry {
        /// File offset of the twoskip record holding the entry.
        offset: u64,
        /// What is wrong with it.
        source: MailboxesError,
    },
}

/// Iterator over the mailboxes of a twoskip mailboxes.db, in key order; see [`mailboxes`].
#[derive(Debug, Clone)]
pub struct Mailboxes<'a> {
    entries: twoskip::Iter<'a>,
    layout: KeyLayout,
    deleted_prefix: &'a str,
}

/// Every mailbox entry (`N` keys, or the names of a legacy database) of a mailboxes.db held
/// whole in `data`, in key order; `I` keys and indexes are skipped. `deleted_prefix` is
/// imapd.conf's `deletedprefix` ([`DEFAULT_DELETED_PREFIX`] unless set).
///
/// The layout is decided first ([`detect_layout`]); in a by-name database the first keys
/// settle it and the walk then seeks to the `N` keys; in a legacy one without `$RACL`/`$RUNQ`
/// keys deciding takes a pass over the keys.
pub fn mailboxes<'a>(
    data: &'a [u8],
    deleted_prefix: &'a str,
) -> Result<Mailboxes<'a>, MailboxListError> {
    let db = Twoskip::open(data)?;
    let mut first_error = None;
    let layout = detect_layout(db.iter().map_while(|e| match e {
        Ok(e) => Some((e.key, e.value)),
        Err(err) => {
            first_error = Some(err);
            None
        }
    }));
    if let Some(err) = first_error {
        return Err(err.into());
    }
    // By name, the mailboxes are the `N` keys: go straight to them.
    let entries = match layout {
        KeyLayout::ByName => db.iter_from(b"N"),
        KeyLayout::Legacy => db.iter(),
    };
    Ok(Mailboxes {
        entries,
        layout,
        deleted_prefix,
    })
}

impl Mailboxes<'_> {
    /// The layout found in the database.
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }
}

impl Iterator for Mailboxes<'_> {
    type Item = Result<MailboxEntry, MailboxListError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let e = match self.entries.next()? {
                Ok(e) => e,
                Err(err) => return Some(Err(err.into())),
            };
            if self.layout == KeyLayout::ByName && !e.key.starts_with(b"N") {
                return None; // past the `N` keys
            }
            if let MailboxKey::Name(name) = MailboxKey::classify(e.key, self.layout) {
                return Some(
                    MailboxEntry::decode(name, e.value, self.layout, self.deleted_prefix).map_err(
                        |source| MailboxListError::Entry {
                            offset: e.offset,
                            source,
                        },
                    ),
                );
            }
        }
    }
}
