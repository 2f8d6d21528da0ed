//! `eml:DIR`: one file per message, its bytes exactly as stored (RFC 5322, CRLF), in a
//! directory per folder: `DIR/INBOX/`, `DIR/Sub.Folder/` (levels made safe by
//! [`safe_component`](super::safe_component), joined with `.`). A message is `<uid>.eml`
//! (`<guid>.eml` when restored by GUID alone); its mtime is its internal date. Flags have
//! no place in an .eml file and are not kept (said in a note).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{mkdirs, set_mtime, Item, SafeFolder, Sink};

/// An .eml target.
#[derive(Debug)]
pub struct Eml {
    root: PathBuf,
    dir: Option<PathBuf>,
    flags_dropped: u64,
}

impl Eml {
    /// A target writing under `root` (created if needed).
    pub fn new(root: &Path) -> anyhow::Result<Eml> {
        mkdirs(root)?;
        Ok(Eml {
            root: root.to_path_buf(),
            dir: None,
            flags_dropped: 0,
        })
    }
}

impl Sink for Eml {
    fn folder(&mut self, f: &SafeFolder) -> anyhow::Result<()> {
        let dir = self.root.join(f.flat());
        mkdirs(&dir)?;
        self.dir = Some(dir);
        Ok(())
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> anyhow::Result<()> {
        let dir = self.dir.as_ref().context("a message before its folder")?;
        let name = if m.uid == 0 {
            format!("{}.eml", m.guid.to_hex())
        } else {
            format!("{}.eml", m.uid)
        };
        let p = dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        std::io::copy(data, &mut f).with_context(|| format!("writing {}", p.display()))?;
        f.flush()?;
        set_mtime(&f, m.internal_date);
        if !m.flags.is_empty() {
            self.flags_dropped += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<Vec<String>> {
        Ok(if self.flags_dropped > 0 {
            vec![format!(
                "eml keeps no flags: {} messages had some",
                self.flags_dropped
            )]
        } else {
            Vec::new()
        })
    }
}
