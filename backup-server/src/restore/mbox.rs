//! `mbox:FILE`: mboxrd. One folder (or one message) goes to `FILE`; several folders to a
//! directory `FILE` holding `<folder>.mbox` each (levels made safe by
//! [`safe_component`](super::safe_component), joined with `.`; INBOX is `INBOX.mbox`).
//! Files are created new, never appended to.
//!
//! Each message: a `From mailbackup <asctime of its internal date, UTC>` line; then, when
//! it has flags, `Status:` (`R` for `\Seen`, and `O`), `X-Status:` (`A` `\Answered`, `F`
//! `\Flagged`, `T` `\Draft`, `D` `\Deleted`) and `X-Keywords:` (keywords, comma-separated)
//! header lines, as mutt and Thunderbird write them; then the message with CRLF line ends
//! turned to LF and every line matching `^>*From ` quoted by one more `>` (mboxrd: a reader
//! removes one `>` and gets the line back); then an empty line.
//!
//! Files (and the directory) are created through [`confined`](super::confined): relative
//! to an opened directory, new (`O_EXCL`), never through a symlink, 0600/0700, owned by
//! `--owner`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::confined::{Dir, Owner};
use super::eml::Checked;
use super::{Item, Note, RestoreError, SafeFolder, Sink};

/// An mboxrd target.
#[derive(Debug)]
pub struct Mbox {
    /// The directory the file(s) go in.
    dir: Dir,
    /// With one folder: the file's name in `dir`.
    single: Option<String>,
    out: Option<(PathBuf, BufWriter<File>)>,
}

impl Mbox {
    /// A target at `path`: the file itself when `single` (one folder), else a directory;
    /// what it creates owned by `owner` when given.
    pub fn new(path: &Path, single: bool, owner: Option<Owner>) -> Result<Mbox, RestoreError> {
        let (dir, single) = if single {
            let (dir, name) = Dir::open_parent(path, owner)?;
            (dir, Some(name))
        } else {
            (Dir::open_root(path, owner)?, None)
        };
        Ok(Mbox {
            dir,
            single,
            out: None,
        })
    }

    fn close(&mut self) -> Result<(), RestoreError> {
        if let Some((p, mut w)) = self.out.take() {
            if let Err(source) = w.flush() {
                return Err(RestoreError::Write { path: p, source });
            }
            if let Err(source) = w.get_ref().sync_all() {
                return Err(RestoreError::Sync { path: p, source });
            }
        }
        Ok(())
    }
}

/// Whether a line (without its end) must be quoted: `>*From `.
fn needs_quote(line: &[u8]) -> bool {
    let rest = &line[line.iter().take_while(|&&b| b == b'>').count()..];
    rest.starts_with(b"From ")
}

fn asctime(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t.strftime("%a %b %e %H:%M:%S %Y").to_string(),
        Err(_) => "Thu Jan  1 00:00:00 1970".to_owned(),
    }
}

impl Sink for Mbox {
    fn folder(&mut self, f: &SafeFolder) -> Result<(), RestoreError> {
        if self.single.is_some() && self.out.is_some() {
            return Ok(());
        }
        self.close()?;
        let name = match &self.single {
            Some(name) => name.clone(),
            None => format!("{}.mbox", f.flat()),
        };
        let file = self.dir.create_new(&name)?;
        self.out = Some((self.dir.path_of(&name), BufWriter::new(file)));
        Ok(())
    }

    fn message(&mut self, m: &Item, data: &mut dyn Read) -> Result<(), RestoreError> {
        let (p, w) = self.out.as_mut().ok_or(RestoreError::NoFolderYet)?;
        let write_err = |source| RestoreError::Write {
            path: p.clone(),
            source,
        };
        // Where this message starts: damaged bytes are cut off again (below).
        let start = w.stream_position().map_err(write_err)?;
        let mut data = Checked::new(data);
        let r = (|| -> std::io::Result<()> {
            writeln!(w, "From mailbackup {}", asctime(m.internal_date.secs))?;
            let (mut status, mut xstatus, mut keywords) =
                (String::new(), String::new(), Vec::new());
            for f in &m.flags {
                match f.to_ascii_lowercase().as_str() {
                    "\\seen" => status.push('R'),
                    "\\answered" => xstatus.push('A'),
                    "\\flagged" => xstatus.push('F'),
                    "\\draft" => xstatus.push('T'),
                    "\\deleted" => xstatus.push('D'),
                    _ if f.starts_with('\\') => {}
                    _ => keywords.push(f.as_str()),
                }
            }
            if !m.flags.is_empty() {
                status.push('O');
                writeln!(w, "Status: {status}")?;
                if !xstatus.is_empty() {
                    writeln!(w, "X-Status: {xstatus}")?;
                }
                if !keywords.is_empty() {
                    writeln!(w, "X-Keywords: {}", keywords.join(", "))?;
                }
            }
            let mut r = BufReader::new(&mut data);
            let mut line = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                let body = line
                    .strip_suffix(b"\n")
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
                let body = body.unwrap_or(&line);
                if needs_quote(body) {
                    w.write_all(b">")?;
                }
                w.write_all(body)?;
                w.write_all(b"\n")?;
            }
            w.write_all(b"\n")
        })();
        let r = r.map_err(write_err).and_then(|()| data.check(m));
        if let Err(original) = r {
            // Only messages whose bytes hashed to their GUID stay in the file.
            let cut = w
                .flush()
                .and_then(|()| w.get_ref().set_len(start))
                .and_then(|()| w.seek(SeekFrom::Start(start)).map(|_| ()));
            return Err(match cut {
                Ok(()) => original,
                Err(cut) => RestoreError::CutFailed {
                    path: p.clone(),
                    cut,
                    original: Box::new(original),
                },
            });
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Note>, RestoreError> {
        self.close()?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn from_lines_are_quoted() {
        assert!(super::needs_quote(b"From x"));
        assert!(super::needs_quote(b">>From x"));
        assert!(!super::needs_quote(b"Fromx"));
        assert!(!super::needs_quote(b" From x"));
    }
}
