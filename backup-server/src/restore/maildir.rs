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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::eml::write_checked;
use super::{mkdirs, Item, Note, RestoreError, SafeFolder, Sink};

/// A Maildir++ target.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    dir: Option<PathBuf>,
    /// The current folder's keywords, by letter index.
    keywords: BTreeMap<String, u8>,
    dropped: BTreeMap<String, ()>,
    notes: Vec<Note>,
}

impl Maildir {
    /// A target rooted at `root` (created if needed; existing mail there is left alone).
    pub fn new(root: &Path) -> Result<Maildir, RestoreError> {
        mkdirs(root)?;
        Ok(Maildir {
            root: root.to_path_buf(),
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
                let p = dir.join("dovecot-keywords");
                std::fs::write(&p, text)
                    .map_err(|source| RestoreError::Write { path: p, source })?;
            }
            if !self.dropped.is_empty() {
                self.notes.push(Note::KeywordsLeftOut {
                    dir: dir.clone(),
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
    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError> {
        self.end_folder()?;
        let dir = if f.levels.is_empty() {
            self.root.clone()
        } else {
            self.root.join(format!(".{}", f.levels.join(".")))
        };
        for sub in ["cur", "new", "tmp"] {
            mkdirs(&dir.join(sub))?;
        }
        if !f.levels.is_empty() {
            let p = dir.join("maildirfolder");
            std::fs::write(&p, b"").map_err(|source| RestoreError::Write { path: p, source })?;
        }
        self.dir = Some(dir);
        Ok(())
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError> {
        let dir = self.dir.clone().ok_or(RestoreError::NoFolderYet)?;
        let flags = self.letters(&m.flags);
        let base = format!(
            "{}.R{}G{}.mailbackup,S={}",
            m.internal_date.secs,
            m.uid,
            &m.guid.to_hex()[..16],
            m.size
        );
        let tmp = dir.join("tmp").join(&base);
        // Only bytes that hash to their GUID leave tmp.
        write_checked(&tmp, m, data)?;
        let dest = dir.join("cur").join(format!("{base}:2,{flags}"));
        if dest.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(RestoreError::Exists { path: dest });
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|source| RestoreError::Rename { path: dest, source })?;
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Note>, RestoreError> {
        self.end_folder()?;
        Ok(std::mem::take(&mut self.notes))
    }
}
