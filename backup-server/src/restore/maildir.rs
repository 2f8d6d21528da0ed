//! `maildir:DIR`: a Maildir++ tree, as Dovecot and Courier read it.
//!
//! INBOX is `DIR` itself; a folder `A/B` is `DIR/.A.B` (each level made safe by
//! [`safe_component`](super::safe_component), which escapes `.`), each with `cur`, `new`,
//! `tmp`, and subfolders with an empty `maildirfolder` file. Messages go to `cur` (they have
//! flags) as `<internal date secs>.R<uid>G<guid>.mailbackup,S=<size>:2,<flags>`, written in
//! `tmp` first and renamed; the file's mtime is the internal date. Flags: `\Draft` D,
//! `\Flagged` F, `\Answered` R, `\Seen` S, `\Deleted` T; keywords as the letters `a`..`z`
//! that the folder's `dovecot-keywords` file names (Dovecot's convention). A folder with
//! more than 26 keywords keeps the first 26; the others are left out, with a note.
//!
//! Every directory and file is created through [`confined`](super::confined): relative to
//! the opened target, never through a symlink, 0700/0600 and owned by `--owner`. A
//! message goes to `tmp/` as a new file and is linked into `cur/` under a name nothing
//! holds yet; `dovecot-keywords` is written new in `tmp/` and renamed over the old one.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use super::confined::{Dir, Owner};
use super::eml::write_checked;
use super::{Item, Note, RestoreError, SafeFolder, Sink};

/// A folder's opened directories.
#[derive(Debug)]
struct FolderDirs {
    dir: Dir,
    cur: Dir,
    tmp: Dir,
}

/// A Maildir++ target.
#[derive(Debug)]
pub struct Maildir {
    root: Dir,
    dir: Option<FolderDirs>,
    /// The current folder's keywords, by letter index.
    keywords: BTreeMap<String, u8>,
    dropped: BTreeMap<String, ()>,
    notes: Vec<Note>,
}

impl Maildir {
    /// A target rooted at `root` (created if needed; existing mail there is left alone),
    /// what it creates owned by `owner` when given.
    pub fn new(root: &Path, owner: Option<Owner>) -> Result<Maildir, RestoreError> {
        Ok(Maildir {
            root: Dir::open_root(root, owner)?,
            dir: None,
            keywords: BTreeMap::new(),
            dropped: BTreeMap::new(),
            notes: Vec::new(),
        })
    }

    fn end_folder(&mut self) -> Result<(), RestoreError> {
        if let Some(dir) = self.dir.take() {
            if !self.keywords.is_empty() {
                let mut by_letter: Vec<(&u8, &String)> =
                    self.keywords.iter().map(|(k, v)| (v, k)).collect();
                by_letter.sort();
                let mut text = String::new();
                for (i, k) in by_letter {
                    text.push_str(&format!("{i} {k}\n"));
                }
                // Written new in tmp/, then renamed over the old file: a hard link or a
                // symlink planted there is never written through.
                let tmp_name = "dovecot-keywords.mailbackup";
                // Left by a restore that failed half-way (a symlink there is unlinked, not
                // followed).
                dir.tmp.remove(tmp_name);
                let mut f = dir.tmp.create_new(tmp_name)?;
                if let Err(source) = f.write_all(text.as_bytes()) {
                    dir.tmp.remove(tmp_name);
                    return Err(RestoreError::Write {
                        path: dir.tmp.path_of(tmp_name),
                        source,
                    });
                }
                drop(f);
                dir.tmp.replace(tmp_name, &dir.dir, "dovecot-keywords")?;
            }
            if !self.dropped.is_empty() {
                self.notes.push(Note::KeywordsLeftOut {
                    dir: dir.dir.path().to_path_buf(),
                    keywords: self.dropped.keys().cloned().collect(),
                });
            }
        }
        self.keywords.clear();
        self.dropped.clear();
        Ok(())
    }

    fn letters(&mut self, flags: &[String]) -> String {
        let mut upper = Vec::new();
        let mut lower = Vec::new();
        for f in flags {
            match f.to_ascii_lowercase().as_str() {
                "\\draft" => upper.push('D'),
                "\\flagged" => upper.push('F'),
                "\\answered" => upper.push('R'),
                "\\seen" => upper.push('S'),
                "\\deleted" => upper.push('T'),
                _ if f.starts_with('\\') => {}
                _ => {
                    let n = self.keywords.len() as u8;
                    let i = match self.keywords.get(f) {
                        Some(i) => Some(*i),
                        None if n < 26 => {
                            self.keywords.insert(f.clone(), n);
                            Some(n)
                        }
                        None => {
                            self.dropped.insert(f.clone(), ());
                            None
                        }
                    };
                    if let Some(i) = i {
                        lower.push((b'a' + i) as char);
                    }
                }
            }
        }
        upper.sort_unstable();
        lower.sort_unstable();
        upper.dedup();
        lower.dedup();
        upper.into_iter().chain(lower).collect()
    }
}

impl Sink for Maildir {
    fn any_order(&self) -> bool {
        true
    }

    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError> {
        self.end_folder()?;
        let dir = if f.levels.is_empty() {
            self.root.dup()?
        } else {
            self.root.subdir(&format!(".{}", f.levels.join(".")))?
        };
        let cur = dir.subdir("cur")?;
        dir.subdir("new")?;
        let tmp = dir.subdir("tmp")?;
        if !f.levels.is_empty() {
            dir.ensure_marker("maildirfolder")?;
        }
        self.dir = Some(FolderDirs { dir, cur, tmp });
        Ok(())
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError> {
        let flags = self.letters(&m.flags);
        let dir = self.dir.as_ref().ok_or(RestoreError::NoFolderYet)?;
        let base = format!(
            "{}.R{}G{}.mailbackup,S={}",
            m.internal_date.secs,
            m.uid,
            &m.guid.to_hex()[..16],
            m.size
        );
        // Only bytes that hash to their GUID leave tmp.
        write_checked(&dir.tmp, &base, m, data)?;
        let dest = format!("{base}:2,{flags}");
        if let Err(e) = dir.tmp.move_new(&base, &dir.cur, &dest) {
            dir.tmp.remove(&base);
            return Err(e);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Note>, RestoreError> {
        self.end_folder()?;
        Ok(std::mem::take(&mut self.notes))
    }
}
