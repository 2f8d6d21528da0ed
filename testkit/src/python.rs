//! Restored Maildirs and mboxes read back with Python's `mailbox` module: what another
//! program makes of restore's output (read_restored.py, run with `python3 -c`).

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = include_str!("read_restored.py");

/// One restored message as Python read it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Restored {
    /// Maildir: `INBOX` or the Maildir++ folder name; mbox: empty.
    pub folder: String,
    /// Maildir: the upper-case flag letters (`D` `F` `R` `S` `T`); mbox: the Status and
    /// X-Status letters but `O` (`A` `D` `F` `R` `T`); sorted.
    pub flags: String,
    /// The keywords, sorted.
    pub keywords: Vec<String>,
    /// SHA-1 in hex: of the file (Maildir), of the message with the export's header lines
    /// taken out and `>From` unquoted once (mbox, LF line ends).
    pub sha1: String,
}

/// Every message of the Maildir at `path` (its folders included), sorted.
pub fn read_maildir(path: &Path) -> Vec<Restored> {
    read("maildir", path)
}

/// Every message of the mbox file at `path`, sorted.
pub fn read_mbox(path: &Path) -> Vec<Restored> {
    read("mbox", path)
}

fn read(kind: &str, path: &Path) -> Vec<Restored> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(kind)
        .arg(path)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "python3 reading {kind} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<Restored> = String::from_utf8(out.stdout)
        .expect("UTF-8 from read_restored.py")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "read_restored.py printed {l:?}");
            Restored {
                folder: f[0].to_owned(),
                flags: f[1].to_owned(),
                keywords: f[2]
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect(),
                sha1: f[3].to_owned(),
            }
        })
        .collect();
    v.sort();
    v
}
