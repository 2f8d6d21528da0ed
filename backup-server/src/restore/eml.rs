//! `eml:DIR`: one file per message, its bytes exactly as stored (RFC 5322, CRLF), in a
//! directory per folder: `DIR/INBOX/`, `DIR/Sub.Folder/` (levels made safe by
//! [`safe_component`](super::safe_component), joined with `.`). A message is `<uid>.eml`
//! (`<guid>.eml` when restored by GUID alone); its mtime is its internal date. Flags have
//! no place in an .eml file and are not kept (said in a note).
//!
//! Directories and files are created through [`confined`](super::confined): relative to
//! the opened target, never through a symlink, 0700/0600, owned by `--owner`.

use std::io::{Read, Write};
use std::path::Path;

use formats::Guid;
use sha1::{Digest, Sha1};

use super::confined::{Dir, Owner};
use super::{set_mtime, Item, Note, RestoreError, SafeFolder, Sink};

/// An .eml target.
#[derive(Debug)]
pub struct Eml {
    root: Dir,
    dir: Option<Dir>,
    flags_dropped: u64,
}

impl Eml {
    /// A target writing under `root` (created if needed), what it creates owned by
    /// `owner` when given.
    pub fn new(root: &Path, owner: Option<Owner>) -> Result<Eml, RestoreError> {
        Ok(Eml {
            root: Dir::open_root(root, owner)?,
            dir: None,
            flags_dropped: 0,
        })
    }
}

impl Sink for Eml {
    fn any_order(&self) -> bool {
        true
    }

    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError> {
        self.dir = Some(self.root.subdir(&f.flat())?);
        Ok(())
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError> {
        let dir = self.dir.as_ref().ok_or(RestoreError::NoFolderYet)?;
        let name = if m.uid == 0 {
            format!("{}.eml", m.guid.to_hex())
        } else {
            format!("{}.eml", m.uid)
        };
        // Written under a temporary name, linked into place once the bytes hashed to
        // their GUID (failing if the name is taken meanwhile: never replaced).
        let tmp = format!(".{name}.tmp");
        write_checked(dir, &tmp, m, data)?;
        if let Err(e) = dir.move_new(&tmp, dir, &name) {
            dir.remove(&tmp);
            return Err(e);
        }
        if !m.flags.is_empty() {
            self.flags_dropped += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Note>, RestoreError> {
        Ok(if self.flags_dropped > 0 {
            vec![Note::FlagsNotKept {
                messages: self.flags_dropped,
            }]
        } else {
            Vec::new()
        })
    }
}

/// Writes a message to the new file `tmp` of `dir` (mtime: its internal date, set on the
/// descriptor), for the caller to move into place; when the bytes do not hash to the
/// message's GUID, or anything fails, `tmp` is removed again and the error returned.
pub(super) fn write_checked(
    dir: &Dir,
    tmp: &str,
    m: &Item,
    data: &mut dyn Read,
) -> Result<(), RestoreError> {
    let mut f = dir.create_new(tmp)?;
    let mut data = Checked::new(data);
    let written = std::io::copy(&mut data, &mut f)
        .and_then(|_| f.flush())
        .map_err(|source| RestoreError::Write {
            path: dir.path_of(tmp),
            source,
        })
        .and_then(|()| data.check(m));
    if let Err(e) = written {
        drop(f);
        dir.remove(tmp);
        return Err(e);
    }
    set_mtime(&f, m.internal_date);
    Ok(())
}

/// A message's bytes on their way into a target, hashed as they pass, so that a target
/// makes a message visible only once its bytes proved to be the ones its GUID names.
/// (The restore's own check comes after the target has written the message: too late to
/// keep damaged bytes out of a Maildir, an .eml directory or an mbox file.)
pub(super) struct Checked<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha1,
}

impl<'a> Checked<'a> {
    pub(super) fn new(inner: &'a mut dyn Read) -> Checked<'a> {
        Checked {
            inner,
            hasher: Sha1::new(),
        }
    }

    /// Reads what is left, then fails unless the SHA-1 of every byte is `m`'s GUID.
    pub(super) fn check(mut self, m: &Item) -> Result<(), RestoreError> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|source| {
            RestoreError::ReadMessage {
                guid: m.guid,
                source,
            }
        })?;
        let mut sha1 = Guid::NULL;
        sha1.0.copy_from_slice(&self.hasher.finalize());
        if !m.guid.is_null() && sha1 != m.guid {
            return Err(RestoreError::NotWritten { guid: m.guid, sha1 });
        }
        Ok(())
    }
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
