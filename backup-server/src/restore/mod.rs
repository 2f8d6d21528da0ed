//! `backup-server restore`: getting mail back out of a store, as of any point in time it
//! holds, into local files or an IMAP account. docs/restore.md is the user's reference.
//!
//! The driver here picks what to restore (one message by folder and UID or by GUID, one
//! folder with or without its subfolders, or the whole user) and hands each message to a
//! [`Sink`], one per target: [`maildir`], [`mbox`], [`eml`], [`imap`]. Folder names come from
//! the store, which got them from the mail server: they are never used as paths as they
//! are; [`safe_component`] maps each hierarchy level to a harmless file name.

pub mod eml;
pub mod imap;
pub mod maildir;
pub mod mbox;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use formats::{Guid, Timestamp};

use crate::store::{Catalog, FolderAt, MessageAt, MessageState, StoreReader};

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `maildir:DIR`: a Maildir++ tree, folders as `.Sub.Folder` subdirectories.
    Maildir(PathBuf),
    /// `mbox:FILE`: an mboxrd file (a directory of them, one per folder, when several
    /// folders are restored).
    Mbox(PathBuf),
    /// `eml:DIR`: one `.eml` file per message, a directory per folder.
    Eml(PathBuf),
    /// `imap://ADMIN@HOST:PORT/`: APPENDed into the user's account on an IMAP server.
    Imap(imap::ImapTarget),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("imap://") {
            return imap::ImapTarget::parse(s).map(Target::Imap);
        }
        let (kind, path) = s.split_once(':').ok_or_else(|| {
            format!(
                "expected maildir:DIR, mbox:FILE, eml:DIR or imap://ADMIN@HOST:PORT/, found {s:?}"
            )
        })?;
        if path.is_empty() {
            return Err(format!("expected a path after {kind}:, found none"));
        }
        let p = PathBuf::from(path);
        match kind {
            "maildir" => Ok(Target::Maildir(p)),
            "mbox" => Ok(Target::Mbox(p)),
            "eml" => Ok(Target::Eml(p)),
            _ => Err(format!(
                "expected a target kind maildir, mbox, eml or imap, found {kind:?} in {s:?}"
            )),
        }
    }
}

/// `backup-server restore` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The user.
    #[arg(long)]
    pub user: String,
    /// Only this folder, as `ls` names it (e.g. INBOX, Work/Sub).
    #[arg(long)]
    pub folder: Option<String>,
    /// With --folder: its subfolders too.
    #[arg(long, requires = "folder")]
    pub subfolders: bool,
    /// One message of --folder, by UID.
    #[arg(long, requires = "folder", conflicts_with = "guid")]
    pub uid: Option<u32>,
    /// One message by GUID (40 hex digits).
    #[arg(long, value_parser = parse_guid)]
    pub guid: Option<Guid>,
    /// As of this time: RFC 3339 (2026-11-23T04:00:00Z) or unix seconds (default: newest).
    #[arg(long, value_parser = crate::point_in_time::parse_time)]
    pub at: Option<Timestamp>,
    /// Messages expunged by then too, in their last state known.
    #[arg(long)]
    pub include_expunged: bool,
    /// maildir:DIR, mbox:FILE, eml:DIR or imap://ADMIN@HOST:PORT/.
    #[arg(long)]
    pub to: Target,
    /// imap:// target: the file holding the admin's password (not readable by others).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// imap:// target: restore under this folder (default `Restored/<date>`); `/` restores
    /// into the original names.
    #[arg(long, value_parser = imap::IntoFolder::parse)]
    pub into: Option<imap::IntoFolder>,
}

fn parse_guid(s: &str) -> Result<Guid, String> {
    let b =
        hex::decode(s.trim()).map_err(|e| format!("expected 40 hex digits, found {s:?}: {e}"))?;
    let mut g = Guid::NULL;
    if b.len() != 20 {
        return Err(format!(
            "expected 40 hex digits, found {} in {s:?}",
            2 * b.len()
        ));
    }
    g.0.copy_from_slice(&b);
    Ok(g)
}

/// The `restore` subcommand: restores, prints the notes and a summary; exit status 0, or 1
/// on failure.
pub fn run(root: &Path, a: &RestoreArgs) -> u8 {
    let sel = Selection {
        folder: a.folder.clone(),
        subfolders: a.subfolders,
        uid: a.uid,
        guid: a.guid,
        at: a.at,
        include_expunged: a.include_expunged,
    };
    let mut to = a.to.clone();
    if let Target::Imap(t) = &mut to {
        t.password_file = a.password_file.clone();
        t.into = a.into.clone().unwrap_or_default();
    } else if a.password_file.is_some() || a.into.is_some() {
        eprintln!("backup-server: --password-file and --into are for an imap:// target");
        return crate::summary::EXIT_FAILED;
    }
    match restore(root, &a.user, &sel, &to) {
        Ok(rep) => {
            for n in &rep.notes {
                crate::out::out(format_args!("note: {n}"));
            }
            crate::out::out(format_args!(
                "restored {} messages ({} bytes) in {} folders; {} not stored",
                rep.messages, rep.bytes, rep.folders, rep.not_stored
            ));
            crate::summary::EXIT_OK
        }
        Err(e) => {
            eprintln!("backup-server: restore {}: {e:#}", a.user);
            crate::summary::EXIT_FAILED
        }
    }
}

/// What to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this folder (as the store names it, e.g. `Sent` or `Work/Sub`).
    pub folder: Option<String>,
    /// With `folder`: its subfolders too.
    pub subfolders: bool,
    /// One message of `folder`, by UID.
    pub uid: Option<u32>,
    /// One message by GUID (its folder and flags are those of `folder` when given).
    pub guid: Option<Guid>,
    /// As of this time (`None`: the newest state).
    pub at: Option<Timestamp>,
    /// Messages expunged (or gone) by then too, in their last state known.
    pub include_expunged: bool,
}

/// One message handed to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its UID in the folder (0 when restored by GUID alone).
    pub uid: u32,
    /// Its GUID.
    pub guid: Guid,
    /// Its internal date.
    pub internal_date: Timestamp,
    /// IMAP flags: system flags (`\Seen` ...) then keywords.
    pub flags: Vec<String>,
    /// Its length in bytes.
    pub size: u64,
}

/// A folder as a target sees it: its levels below the user's INBOX, each already safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeFolder {
    /// The name in the store.
    pub name: String,
    /// Hierarchy levels below INBOX, made safe ([`safe_component`]); empty for INBOX.
    pub levels: Vec<String>,
}

impl SafeFolder {
    /// The levels joined with `.`, `INBOX` for INBOX: one safe file name.
    pub fn flat(&self) -> String {
        if self.levels.is_empty() {
            "INBOX".to_owned()
        } else {
            self.levels.join(".")
        }
    }
}

/// A target format.
pub trait Sink {
    /// Starts a folder; the following messages go into it.
    fn folder(&mut self, f: &SafeFolder) -> anyhow::Result<()>;
    /// Writes one message, its bytes read from `data`.
    fn message(&mut self, m: &Item, data: &mut dyn Read) -> anyhow::Result<()>;
    /// Finishes (closes files); notes for the report.
    fn finish(&mut self) -> anyhow::Result<Vec<String>>;
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Folders written.
    pub folders: u64,
    /// Messages written.
    pub messages: u64,
    /// Message bytes written.
    pub bytes: u64,
    /// Records whose message the store does not hold (skipped).
    pub not_stored: u64,
    /// Chunks inflated (one per message read).
    pub chunks_inflated: u64,
    /// Uncompressed bytes inflated in all.
    pub inflated: u64,
    /// Notes from the target (keywords it could not keep, and the like).
    pub notes: Vec<String>,
}

/// Maps one level of a folder name to a file name that is safe on its own: no `/`, `\`,
/// `.` (Maildir++'s separator, and so no `..` or hidden names), `%`, NUL or control
/// character survives: each such byte becomes `%` and two upper-case hex digits. An empty
/// level becomes `%`. Longer than 200 bytes: cut there (at a character boundary) and `~`
/// and 16 hex digits of the name's SHA-1 added, so distinct names stay distinct.
pub fn safe_component(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    for c in level.chars() {
        match c {
            '/' | '\\' | '.' | '%' | '~' | '\u{7f}' => out.push_str(&format!("%{:02X}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("%{:02X}", c as u32)),
            // C1 controls and the like: not in file names either.
            c if c.is_control() => {
                let mut b = [0u8; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return "%".to_owned();
    }
    if out.len() > 200 {
        let mut cut = 200;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // Never inside an escape.
        if let Some(p) = out[..cut].rfind('%').filter(|p| cut - p < 3) {
            cut = p;
        }
        let h = Guid::of(level.as_bytes()).to_hex();
        out.truncate(cut);
        out.push('~');
        out.push_str(&h[..16]);
    }
    out
}

/// Splits a store folder name (the folder as its owner sees it, as backupd lists it:
/// `INBOX`, `Work/Sub`, levels separated by `/`) into levels below INBOX, each made safe.
/// `INBOX` (any case) is the root; a leading `INBOX/` is dropped. `user` is not used for
/// splitting; it is there so a later namespace can depend on it.
pub fn folder_levels(_user: &str, name: &str) -> SafeFolder {
    let rest = if name.eq_ignore_ascii_case("INBOX") {
        ""
    } else if name.len() > 6 && name[..6].eq_ignore_ascii_case("INBOX/") {
        &name[6..]
    } else {
        name
    };
    let levels = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').map(safe_component).collect()
    };
    SafeFolder {
        name: name.to_owned(),
        levels,
    }
}

/// Restores `user`'s mail from the store under `root` into `target`.
pub fn restore(
    root: &Path,
    user: &str,
    sel: &Selection,
    target: &Target,
) -> anyhow::Result<RestoreReport> {
    if sel.uid.is_some() && sel.folder.is_none() {
        bail!("--uid needs --folder");
    }
    if sel.uid.is_some() && sel.guid.is_some() {
        bail!("--uid and --guid exclude each other");
    }
    let reader =
        StoreReader::open(root, user).with_context(|| format!("user {user}: opening the store"))?;
    let cat = reader.catalog();
    let by_guid_alone = sel.folder.is_none() && sel.guid.is_some();
    let folders = if by_guid_alone {
        Vec::new()
    } else {
        pick_folders(cat, sel)?
    };
    let single_folder = folders.len() <= 1;
    let mut sink: Box<dyn Sink> = match target {
        Target::Maildir(d) => Box::new(maildir::Maildir::new(d)?),
        Target::Mbox(f) => Box::new(mbox::Mbox::new(f, single_folder)?),
        Target::Eml(d) => Box::new(eml::Eml::new(d)?),
        Target::Imap(t) => Box::new(imap::ImapSink::connect(t, user)?),
    };
    let mut rep = RestoreReport::default();
    let when = crate::point_in_time::when(sel.at);

    if sel.folder.is_none() {
        if let Some(g) = sel.guid {
            // A message by GUID alone: no folder, no flags.
            let m = cat
                .message(&g)?
                .with_context(|| format!("user {user}: message {} is not stored", g.to_hex()))?;
            let item = Item {
                uid: 0,
                guid: g,
                internal_date: m.internal_date.unwrap_or(m.stored_at),
                flags: Vec::new(),
                size: m.entry.data_len,
            };
            sink.folder(&folder_levels(user, "INBOX"))?;
            rep.folders += 1;
            write_one(cat, sink.as_mut(), &item, &mut rep)?;
            rep.notes.extend(sink.finish()?);
            return Ok(rep);
        }
    }

    for f in &folders {
        let safe = folder_levels(user, &f.name);
        let mut items = Vec::new();
        if let Some(uid) = sel.uid {
            let m = cat
                .message_at(&f.unique_id, uid, sel.at)?
                .with_context(|| format!("folder {:?}: no UID {uid} as of {when}", f.name))?;
            if m.state != MessageState::Visible && !sel.include_expunged {
                bail!(
                    "folder {:?}: UID {uid} was {} as of {when} (--include-expunged restores it)",
                    f.name,
                    if m.state == MessageState::Expunged {
                        "expunged"
                    } else {
                        "gone"
                    }
                );
            }
            items.push(m);
        } else {
            cat.messages_at(&f.unique_id, sel.at, sel.include_expunged, |m| {
                if sel.guid.is_none_or(|g| g == m.guid) {
                    items.push(m);
                }
                Ok(())
            })?;
            if let (Some(g), true) = (sel.guid, items.is_empty()) {
                bail!(
                    "folder {:?}: no message {} as of {when}",
                    f.name,
                    g.to_hex()
                );
            }
        }
        sink.folder(&safe)?;
        rep.folders += 1;
        for m in items {
            if !m.stored {
                rep.not_stored += 1;
                rep.notes.push(format!(
                    "folder {:?} UID {}: message {} is not stored, skipped",
                    f.name,
                    m.uid,
                    m.guid.to_hex()
                ));
                continue;
            }
            write_one(cat, sink.as_mut(), &item_of(&m), &mut rep)?;
        }
    }
    rep.notes.extend(sink.finish()?);
    Ok(rep)
}

fn item_of(m: &MessageAt) -> Item {
    Item {
        uid: m.uid,
        guid: m.guid,
        internal_date: m.internal_date,
        flags: m.flags.clone(),
        size: m.size,
    }
}

/// Reads one message (inflating its one chunk up to it) into the sink, checking its SHA-1.
fn write_one(
    cat: &Catalog,
    sink: &mut dyn Sink,
    item: &Item,
    rep: &mut RestoreReport,
) -> anyhow::Result<()> {
    let mut r = cat
        .open_message(&item.guid)?
        .with_context(|| format!("message {} is not stored", item.guid.to_hex()))?;
    rep.chunks_inflated += 1;
    let mut hashing = Hashing {
        inner: &mut r,
        hasher: <sha1::Sha1 as sha1::Digest>::new(),
        len: 0,
    };
    sink.message(item, &mut hashing)?;
    // Whatever the sink left unread is read, so the hash covers every byte.
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    let (len, digest) = (hashing.len, sha1::Digest::finalize(hashing.hasher));
    if digest[..] != item.guid.0[..] {
        bail!(
            "message {}: the stored bytes do not hash to their GUID (run verify)",
            item.guid.to_hex()
        );
    }
    rep.inflated += r.inflated();
    rep.messages += 1;
    rep.bytes += len;
    Ok(())
}

struct Hashing<'a, R: Read> {
    inner: &'a mut R,
    hasher: sha1::Sha1,
    len: u64,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha1::Digest::update(&mut self.hasher, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The folders a selection covers, as of its time.
fn pick_folders(cat: &Catalog, sel: &Selection) -> anyhow::Result<Vec<FolderAt>> {
    let when = crate::point_in_time::when(sel.at);
    let Some(name) = &sel.folder else {
        return Ok(cat.folders_at(sel.at)?);
    };
    let mut out = Vec::new();
    match cat.folder_at(name, sel.at)? {
        Some(f) => out.push(f),
        None if !sel.subfolders => bail!("no folder {name:?} as of {when}"),
        None => {}
    }
    if sel.subfolders {
        let prefix = format!("{name}/");
        out.extend(
            cat.folders_at(sel.at)?
                .into_iter()
                .filter(|f| f.name.starts_with(&prefix)),
        );
        if out.is_empty() {
            bail!("no folder {name:?} nor subfolders of it as of {when}");
        }
    }
    Ok(out)
}

/// Creates a directory and its parents; refuses a path that exists as something else.
pub(crate) fn mkdirs(p: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating directory {}", p.display()))
}

/// Sets a file's modification time to a message's internal date (mail readers sort by it).
pub(crate) fn set_mtime(file: &std::fs::File, t: Timestamp) {
    if t.secs >= 0 {
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(t.secs as u64, t.nanos);
        // Cosmetic: a file system that refuses it still holds the message.
        let _ = file.set_modified(when);
    }
}
