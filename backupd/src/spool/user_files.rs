//! A user's own files: seen state, subscriptions and sieve scripts (docs/user-files.md).
//!
//! * Seen state and subscriptions: `<configdirectory>/user/uuid/<c1>/<c2>/<INBOX unique
//!   id>/seen.db` and `sub.db` (imap/mboxname.c `mboxid_conf_getpath`); for a user whose INBOX
//!   is stored by name, `<configdirectory>/user/<h>/<user>.seen` / `.sub`
//!   (`mboxname_conf_getpath_legacy`). Read whole under the shared lock Cyrus's database
//!   readers take (twoskip for seen.db, flat for sub.db: both renamed over on repack or
//!   rewrite, which [`open_locked`](super::locks::open_locked) follows).
//! * Sieve scripts. Cyrus 3.6 keeps each script's source as a message of the hidden mailbox
//!   `user.<name>.#sieve` (type `f`): Subject = script name, body = source, `\Flagged` =
//!   active; replacing a script appends a new message and expunges the old one
//!   (imap/sieve_db.c `store_script`). Whenever a record of that mailbox changes, Cyrus
//!   (imap/mailbox.c `mailbox_update_sieve`, under the mailbox's exclusive index lock)
//!   compiles `<name>.bc` in the user's sieve directory
//!   (`<sievedir>/uuid/<c1>/<c2>/<INBOX unique id>/`) and points the `defaultbc` symlink at
//!   the active one. So the listing names scripts after the `*.bc` files and reports their
//!   stat data (no mailbox file is touched); [`UserFileId::SieveScript`] reads the source
//!   from the newest live `#sieve` message with that Subject, under that mailbox's locks;
//!   [`UserFileId::SieveActive`] is the name `defaultbc` points to. Scripts of servers that
//!   kept sources as files (`<name>.script` in the sieve directory, before 3.6 or before
//!   Cyrus migrated them) are listed and read as such.

use super::cyrus::Cyrus;
use super::error::{io_err, SpoolError};
use super::files::{file_stat, open_read, stat_opt};
use super::layout::{by_id, dir_hash, SpoolPaths};
use super::locks::open_locked_within;
use super::mailbox::Mailbox;
use super::meta::{lock_mailbox, Target};
use super::names::check_script_name;
use formats::cyrus::index;
use formats::protocol::{UserFileId, UserFileStat};
use formats::FileStat;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A sieve script message larger than this is not a script (Cyrus's `sieve_maxscriptsize`
/// defaults to 32 KiB).
const MAX_SCRIPT_MESSAGE: u64 = 16 << 20;

/// Where one user's files are.
#[derive(Debug, Clone)]
pub(crate) struct UserPaths {
    pub seen: PathBuf,
    pub subs: PathBuf,
    pub sieve_dir: PathBuf,
}

/// The paths of a user's files, from the user's INBOX entry.
pub(crate) fn user_paths(layout: &SpoolPaths, user: &str, inbox: &Mailbox) -> UserPaths {
    if inbox.legacy_dir.is_none() {
        let dir = by_id(&layout.config_dir.join("user"), &inbox.uniqueid);
        return UserPaths {
            seen: dir.join("seen.db"),
            subs: dir.join("sub.db"),
            sieve_dir: by_id(&layout.sieve_dir, &inbox.uniqueid),
        };
    }
    let full = layout.hashing.fulldirhash;
    let (local, domain) = match user.rsplit_once('@') {
        Some((l, d)) if layout.virtdomains => (l, Some(d)),
        _ => (user, None),
    };
    let mut conf = layout.config_dir.clone();
    let mut sieve = layout.sieve_dir.clone();
    if let Some(d) = domain {
        for base in [&mut conf, &mut sieve] {
            base.push("domain");
            base.push(dir_hash(d, full).to_string());
            base.push(d);
        }
    }
    conf.push("user");
    conf.push(dir_hash(local, full).to_string());
    // user_sieve_path_byname: the local part with virtual domains, else the whole user id.
    sieve.push(dir_hash(local, full).to_string());
    sieve.push(local);
    UserPaths {
        seen: conf.join(format!("{local}.seen")),
        subs: conf.join(format!("{local}.sub")),
        sieve_dir: sieve,
    }
}

/// The user files listed with the folders: stat only.
pub(crate) fn list(
    cyrus: &Cyrus,
    user: &str,
    mailboxes: &[Mailbox],
) -> Result<Vec<UserFileStat>, SpoolError> {
    let Some(inbox) = mailboxes.iter().find(|m| &*m.folder == "INBOX") else {
        return Ok(Vec::new());
    };
    let paths = user_paths(&cyrus.layout, user, inbox);
    let mut out = Vec::new();
    if let Some(stat) = stat_opt(&paths.seen)? {
        out.push(UserFileStat {
            id: UserFileId::Seen,
            stat,
        });
    }
    if let Some(stat) = stat_opt(&paths.subs)? {
        out.push(UserFileStat {
            id: UserFileId::Subscriptions,
            stat,
        });
    }
    out.extend(list_sieve_dir(&paths.sieve_dir)?);
    Ok(out)
}

/// Scripts (`<name>.bc`, or `<name>.script` sources) and `defaultbc` in a sieve directory.
fn list_sieve_dir(dir: &Path) -> Result<Vec<UserFileStat>, SpoolError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SpoolError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    // name → (source file, compiled file)
    let mut scripts: BTreeMap<String, (Option<FileStat>, Option<FileStat>)> = BTreeMap::new();
    let mut active = None;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: no name the protocol can carry
        };
        let stat = || -> Result<FileStat, SpoolError> {
            // fstatat on the directory, without following links.
            let meta = entry.metadata().map_err(io_err(&entry.path()))?;
            Ok(file_stat(&meta))
        };
        if name == "defaultbc" {
            active = Some(stat()?);
        } else if let Some(script) = name.strip_suffix(".script") {
            if check_script_name(script).is_ok() {
                scripts.entry(script.into()).or_default().0 = Some(stat()?);
            }
        } else if let Some(script) = name.strip_suffix(".bc") {
            if check_script_name(script).is_ok() {
                scripts.entry(script.into()).or_default().1 = Some(stat()?);
            }
        }
    }
    let mut out: Vec<UserFileStat> = scripts
        .into_iter()
        .filter_map(|(name, (source, compiled))| {
            Some(UserFileStat {
                id: UserFileId::SieveScript(name),
                stat: source.or(compiled)?,
            })
        })
        .collect();
    if let Some(stat) = active {
        out.push(UserFileStat {
            id: UserFileId::SieveActive,
            stat,
        });
    }
    Ok(out)
}

/// See [`Spool::read_user_file`](super::Spool::read_user_file).
pub(crate) fn read_user_file(
    cyrus: &Cyrus,
    user: &str,
    id: &UserFileId,
) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
    if let UserFileId::SieveScript(name) = id {
        check_script_name(name)?;
    }
    let mailboxes = cyrus.live_mailboxes(user)?;
    let Some(inbox) = mailboxes.iter().find(|m| &*m.folder == "INBOX") else {
        return Ok(None);
    };
    let paths = user_paths(&cyrus.layout, user, inbox);
    match id {
        UserFileId::Seen => read_db(&paths.seen, cyrus.lock_timeout),
        UserFileId::Subscriptions => read_db(&paths.subs, cyrus.lock_timeout),
        UserFileId::SieveScript(name) => read_script(cyrus, user, &paths.sieve_dir, name),
        UserFileId::SieveActive => {
            // Under the #sieve mailbox's locks, if it exists: Cyrus moves the link while it
            // holds that mailbox's index lock exclusive.
            let _locked = lock_mailbox(cyrus, user, Target::Sieve)?;
            read_active(&paths.sieve_dir)
        }
    }
}

/// A Cyrus database file, whole, under the shared lock its readers take.
fn read_db(path: &Path, lock_timeout: Duration) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
    let mut file = match open_locked_within(path, lock_timeout) {
        Ok(file) => file,
        Err(SpoolError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data).map_err(io_err(path))?;
    Ok(Some((data, file_stat(&meta))))
}

/// `defaultbc` → `main.bc` gives `main`.
fn read_active(dir: &Path) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
    let link = dir.join("defaultbc");
    let Some(stat) = stat_opt(&link)? else {
        return Ok(None);
    };
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpoolError::Io { path: link, source }),
    };
    let mut name = target.into_os_string().into_encoded_bytes();
    if name.ends_with(b".bc") {
        name.truncate(name.len() - 3);
    }
    Ok(Some((name, stat)))
}

fn read_script(
    cyrus: &Cyrus,
    user: &str,
    dir: &Path,
    name: &str,
) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
    // A source kept as a file (before 3.6): written to `.NEW` and renamed, no lock.
    let source = dir.join(format!("{name}.script"));
    match open_read(&source) {
        Ok(mut file) => {
            let meta = file.metadata().map_err(io_err(&source))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data).map_err(io_err(&source))?;
            return Ok(Some((data, file_stat(&meta))));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&source)(e)),
    }
    let Some(locked) = lock_mailbox(cyrus, user, Target::Sieve)? else {
        return Ok(None);
    };
    // Under the lock, the compiled file and the #sieve messages agree.
    let bytecode = dir.join(format!("{name}.bc"));
    let Some(stat) = stat_opt(&bytecode)? else {
        return Ok(None);
    };
    let mut index_bytes = Vec::new();
    (&locked.index)
        .read_to_end(&mut index_bytes)
        .map_err(io_err(&locked.index_path))?;
    let bad_index = |source| SpoolError::BadIndex {
        path: locked.index_path.clone(),
        attempts: 1,
        source,
    };
    let idx = index::Index::parse(&index_bytes).map_err(bad_index)?;
    let data_dir = cyrus.layout.data_dir(&locked.mailbox)?;
    // Newest first: a replaced script's old message may linger, flagged expunged.
    for i in (0..idx.len()).rev() {
        let Some(rec) = idx.get(i) else { break };
        let rec = rec.map_err(bad_index)?;
        if rec.is_expunged() || rec.is_unlinked() || rec.size > MAX_SCRIPT_MESSAGE {
            continue;
        }
        let path = data_dir.join(format!("{}.", rec.uid));
        let mut msg = Vec::new();
        match open_read(&path) {
            Ok(mut f) => f.read_to_end(&mut msg).map_err(io_err(&path))?,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let split = usize::try_from(rec.header_size)
            .ok()
            .filter(|&n| n <= msg.len())
            .or_else(|| find(&msg, b"\r\n\r\n").map(|n| n + 4))
            .unwrap_or(msg.len());
        let Some(subject) = header_field(&msg[..split], b"subject") else {
            continue;
        };
        if subject == name.as_bytes() || decode_words(&subject).as_deref() == Some(name) {
            return Ok(Some((msg[split..].to_vec(), stat)));
        }
    }
    Err(SpoolError::SieveSource {
        user: user.into(),
        name: name.into(),
        bytecode,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first header field `name` (lower case) in a header block, unfolded
/// (line breaks of continuation lines removed) and trimmed.
fn header_field(header: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut value: Option<Vec<u8>> = None;
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = value.as_mut() {
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                v.extend_from_slice(line);
                continue;
            }
            break;
        }
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            value = Some(line[name.len() + 1..].to_vec());
        }
    }
    value.map(|v| v.trim_ascii().to_vec())
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?Q?...?=`, `B` too; UTF-8 and US-ASCII, as Cyrus
/// writes them); whitespace between two encoded words goes. `None` if nothing decodes to
/// UTF-8.
fn decode_words(value: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    let mut pending_space: &[u8] = &[];
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, used)) = encoded_word(rest) {
            if !last_was_word {
                out.extend_from_slice(pending_space);
            }
            pending_space = &[];
            out.extend_from_slice(&decoded);
            rest = &rest[used..];
            last_was_word = true;
            continue;
        }
        let ws = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if ws > 0 {
            out.extend_from_slice(std::mem::take(&mut pending_space));
            pending_space = &rest[..ws];
            rest = &rest[ws..];
            continue;
        }
        out.extend_from_slice(std::mem::take(&mut pending_space));
        out.push(rest[0]);
        rest = &rest[1..];
        last_was_word = false;
    }
    out.extend_from_slice(pending_space);
    String::from_utf8(out).ok()
}

/// One encoded word at the start of `s`: its decoded bytes and its length.
fn encoded_word(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let body = s.strip_prefix(b"=?")?;
    let q1 = body.iter().position(|&b| b == b'?')?;
    let charset = &body[..q1];
    let charset = charset
        .split(|&b| b == b'*')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if charset != b"utf-8" && charset != b"us-ascii" {
        return None;
    }
    let enc = *body.get(q1 + 1)?;
    if body.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let end = find(&body[text_start..], b"?=")? + text_start;
    let text = &body[text_start..end];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let decoded = match enc.to_ascii_uppercase() {
        b'Q' => decode_q(text)?,
        b'B' => decode_b64(text)?,
        _ => return None,
    };
    Some((decoded, 2 + end + 2))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

fn decode_q(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                out.push(hex(*text.get(i + 1)?)? << 4 | hex(*text.get(i + 2)?)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn decode_b64(text: &[u8]) -> Option<Vec<u8>> {
    let val = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text
        .strip_suffix(b"==")
        .or(text.strip_suffix(b"="))
        .unwrap_or(text);
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for &b in chunk {
            n = n << 6 | val(b)?;
        }
        n <<= 6 * (4 - chunk.len() as u32);
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_unfolded_and_decoded() {
        let header = b"From: <a@b>\r\nSubject: =?UTF-8?Q?caf=C3=A9_?=\r\n =?UTF-8?B?w6k=?= x\r\n\
                       Date: now\r\n\r\n";
        let subject = header_field(header, b"subject").unwrap();
        assert_eq!(subject, b"=?UTF-8?Q?caf=C3=A9_?= =?UTF-8?B?w6k=?= x");
        assert_eq!(decode_words(&subject).unwrap(), "café é x");
        assert_eq!(
            header_field(b"Subject: main\r\n\r\n", b"subject").unwrap(),
            b"main"
        );
        assert_eq!(header_field(b"X-Subject: no\r\n", b"subject"), None);
        assert_eq!(decode_words(b"plain words").unwrap(), "plain words");
        assert_eq!(decode_words(b"=?utf-8?q?a?= b").unwrap(), "a b");
        assert_eq!(decode_b64(b"bWFpbg==").unwrap(), b"main");
        assert_eq!(decode_b64(b"bWFp").unwrap(), b"mai");
    }

    #[test]
    fn legacy_user_paths() {
        let conf = formats::cyrus::imapd_conf::ImapdConf::parse(
            b"configdirectory: /c\npartition-default: /p\nsievedir: /s\nvirtdomains: userid\n",
        )
        .unwrap();
        let layout = SpoolPaths::new(&conf).unwrap();
        let inbox = Mailbox {
            folder: "INBOX".into(),
            uniqueid: "abc".into(),
            partition: "default".into(),
            mbtype: Default::default(),
            deleted_at: None,
            legacy_dir: Some("domain/e/example.com/user/bob".into()),
            uidvalidity: 1,
            foldermodseq: 1,
        };
        let p = user_paths(&layout, "bob@example.com", &inbox);
        assert_eq!(p.seen, Path::new("/c/domain/e/example.com/user/b/bob.seen"));
        assert_eq!(p.subs, Path::new("/c/domain/e/example.com/user/b/bob.sub"));
        assert_eq!(p.sieve_dir, Path::new("/s/domain/e/example.com/b/bob"));
        let by_id = user_paths(
            &layout,
            "bob@example.com",
            &Mailbox {
                legacy_dir: None,
                ..inbox
            },
        );
        assert_eq!(by_id.seen, Path::new("/c/user/uuid/a/b/abc/seen.db"));
        assert_eq!(by_id.sieve_dir, Path::new("/s/uuid/a/b/abc"));
    }
}
