//! The audit log: every action taken in the console, one JSON object a line, appended
//! to a file opened `O_APPEND` (0600), each line written with one write and flushed to the
//! file system before the action's answer is sent. Nothing in the console reads it back
//! or truncates it; rotating it is the administrator's (logrotate's `copytruncate` is
//! not needed: the console reopens nothing, so use `create` and restart, or keep it whole).
//!
//! A line: `{"time":"2026-12-03T19:20:00Z","who":"ann","from":"127.0.0.1","action":
//! "restore","user":"alice","detail":"folder INBOX UID 4 to cyrus://admin@mail1",
//! "outcome":"ok"}`. `who` is the account signed in (or the name tried, for a refused
//! sign-in), `from` the peer's address (the reverse proxy's, behind one).

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}; the console refuses to act without it", path = .path.display())]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// What the system said.
    pub source: std::io::Error,
}

/// One action, as logged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry<'a> {
    /// Who did it.
    pub who: &'a str,
    /// From which address.
    pub from: IpAddr,
    /// What (`sign-in`, `sign-in-refused`, `sign-out`, `view-user`, `list-folder`,
    /// `open-message`, `search`, `restore`, `download`, `csrf-refused`).
    pub action: &'a str,
    /// The user whose backup it concerned, if any.
    pub user: Option<&'a str>,
    /// What exactly (folder, UIDs, target, format).
    pub detail: String,
    /// `ok`, or what went wrong.
    pub outcome: String,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
}

/// The open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating 0600 when missing) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::private::FILE_MODE)
            .open(path)
            .map_err(|source| AuditError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one entry (one write of one line, then fdatasync).
    pub fn log(&self, entry: &Entry<'_>) -> Result<(), AuditError> {
        let line = Line {
            time: jiff::Timestamp::now().to_string(),
            entry,
        };
        // Serialising plain strings and numbers cannot fail.
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        let f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        (&*f)
            .write_all(text.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|source| AuditError {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn entries_are_appended_one_json_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        std::fs::write(&p, "earlier\n").unwrap();
        let log = AuditLog::open(&p).unwrap();
        let e = Entry {
            who: "ann",
            from: "127.0.0.1".parse().unwrap(),
            action: "restore",
            user: Some("alice"),
            detail: "folder \"INBOX\" UID 4".into(),
            outcome: "ok".into(),
        };
        log.log(&e).unwrap();
        log.log(&e).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "earlier");
        let v: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(v["who"], "ann");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["detail"], "folder \"INBOX\" UID 4");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let fresh = dir.path().join("new.log");
        AuditLog::open(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }
}
