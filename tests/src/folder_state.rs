//! What a mail client of one user sees, recorded before a deletion and again after a restore,
//! and compared: `tests/cyrus/folder_state.py` (per folder UIDVALIDITY, HIGHESTMODSEQ,
//! MAILBOXID, UIDNEXT; per message UID, SHA-1, flags, internal date, MODSEQ; subscriptions;
//! sieve scripts) and `tests/cyrus/qresync_check.py` (what a QRESYNC client that had the
//! folder cached is told when it comes back).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cyrus::{run, scripts_dir, CyrusInstance, HOST};

/// One user's folders, subscriptions and sieve scripts, as the user sees them over IMAP and
/// ManageSieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// The user logged in as.
    pub user: String,
    /// Folders by name as on the wire (modified UTF-7, e.g. `Donn&AOk-es`, `Archive/2025`).
    pub folders: BTreeMap<String, FolderState>,
    /// LSUB "" "*", sorted.
    pub subscriptions: Vec<String>,
    /// The sieve scripts, when a ManageSieve port was given.
    #[serde(default)]
    pub sieve: Option<SieveState>,
}

/// One folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// HIGHESTMODSEQ.
    pub highestmodseq: u64,
    /// RFC 8474 MAILBOXID: Cyrus's unique id of the mailbox.
    pub mailboxid: String,
    /// EXISTS on EXAMINE.
    pub exists: usize,
    /// Live messages by ascending UID.
    pub messages: Vec<MessageState>,
}

/// One live message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// UID.
    pub uid: u32,
    /// SHA-1 (hex) of BODY.PEEK[].
    pub sha1: String,
    /// FLAGS, keywords included, sorted, without `\Recent`.
    pub flags: Vec<String>,
    /// INTERNALDATE, verbatim.
    pub internaldate: String,
    /// MODSEQ.
    pub modseq: u64,
}

/// The user's sieve scripts over ManageSieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SieveState {
    /// The ACTIVE script, if any.
    pub active: Option<String>,
    /// Every script's text by name (GETSCRIPT).
    pub scripts: BTreeMap<String, String>,
}

/// What a QRESYNC client that held `uidvalidity_sent` and `modseq_sent` is told by
/// `EXAMINE folder (QRESYNC (...))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QresyncReport {
    /// The folder examined.
    pub folder: String,
    /// The UIDVALIDITY the client held.
    pub uidvalidity_sent: u32,
    /// The mod-sequence the client held.
    pub modseq_sent: u64,
    /// The folder's UIDVALIDITY now.
    pub uidvalidity: u32,
    /// The UIDVALIDITY differs: the client throws its cache away (and nothing else here
    /// means anything).
    pub uidvalidity_changed: bool,
    /// HIGHESTMODSEQ now.
    pub highestmodseq: u64,
    /// EXISTS now.
    pub exists: usize,
    /// UIDs the server says were expunged since (VANISHED (EARLIER)), ascending.
    pub vanished: Vec<u32>,
    /// Messages changed since, ascending by UID.
    pub fetched: Vec<QresyncMessage>,
}

/// A message QRESYNC reported as changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QresyncMessage {
    /// UID.
    pub uid: u32,
    /// Its MODSEQ now.
    pub modseq: u64,
    /// Its FLAGS now, sorted, without `\Recent`.
    pub flags: Vec<String>,
}

impl UserState {
    /// Reads folder_state.py's JSON.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// One folder by name as on the wire.
    pub fn folder(&self, name: &str) -> Option<&FolderState> {
        self.folders.get(name)
    }

    /// How `after` differs from `self` in what a restore "as it was" must keep: the same
    /// folders, each as [`FolderState::differences`] says, the same subscriptions, the same
    /// sieve scripts and active script. MAILBOXID and modseqs are not compared (a restore
    /// may not be able to keep them; compare them where it must). Empty when all is kept.
    pub fn differences(&self, after: &UserState) -> Vec<String> {
        let mut out = Vec::new();
        for (name, before) in &self.folders {
            match after.folders.get(name) {
                None => out.push(format!("folder {name}: missing")),
                Some(now) => out.extend(
                    before
                        .differences(now)
                        .into_iter()
                        .map(|d| format!("folder {name}: {d}")),
                ),
            }
        }
        for name in after.folders.keys() {
            if !self.folders.contains_key(name) {
                out.push(format!("folder {name}: not there before"));
            }
        }
        if self.subscriptions != after.subscriptions {
            out.push(format!(
                "subscriptions {:?}, before {:?}",
                after.subscriptions, self.subscriptions
            ));
        }
        if self.sieve != after.sieve {
            out.push(format!("sieve {:?}, before {:?}", after.sieve, self.sieve));
        }
        out
    }
}

impl FolderState {
    /// The message with this UID.
    pub fn message(&self, uid: u32) -> Option<&MessageState> {
        self.messages.iter().find(|m| m.uid == uid)
    }

    /// How `after` differs from `self` in what a client keys its cache on: UIDVALIDITY and,
    /// per UID, the message (SHA-1), its flags and keywords, and its internal date. One line
    /// per difference; empty when all is kept.
    pub fn differences(&self, after: &FolderState) -> Vec<String> {
        let mut out = Vec::new();
        if self.uidvalidity != after.uidvalidity {
            out.push(format!(
                "UIDVALIDITY {}, before {}",
                after.uidvalidity, self.uidvalidity
            ));
        }
        for m in &self.messages {
            match after.message(m.uid) {
                None => out.push(format!("UID {}: missing", m.uid)),
                Some(n) => {
                    if n.sha1 != m.sha1 {
                        out.push(format!(
                            "UID {}: SHA-1 {}, before {}",
                            m.uid, n.sha1, m.sha1
                        ));
                    }
                    if n.flags != m.flags {
                        out.push(format!(
                            "UID {}: flags {:?}, before {:?}",
                            m.uid, n.flags, m.flags
                        ));
                    }
                    if n.internaldate != m.internaldate {
                        out.push(format!(
                            "UID {}: internal date {}, before {}",
                            m.uid, n.internaldate, m.internaldate
                        ));
                    }
                }
            }
        }
        for n in &after.messages {
            if self.message(n.uid).is_none() {
                out.push(format!("UID {}: not there before", n.uid));
            }
        }
        out
    }

    /// The UIDs, as a sequence set for `--known-uids` (e.g. `1:3,7`).
    pub fn uid_set(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut uids = self.messages.iter().map(|m| m.uid).peekable();
        while let Some(lo) = uids.next() {
            let mut hi = lo;
            while uids.peek() == Some(&(hi + 1)) {
                hi = uids.next().unwrap_or(hi);
            }
            parts.push(if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}:{hi}")
            });
        }
        parts.join(",")
    }
}

impl CyrusInstance {
    /// What `user` sees: every folder of its own (`folders` empty) or the folders named
    /// (other users' folders too, e.g. `Other Users/u000/Lists`, for the user's own `\Seen`
    /// there), subscriptions and, with `sieve`, the sieve scripts.
    pub fn folder_state(&self, user: &str, folders: &[&str], sieve: bool) -> Result<UserState> {
        let out_file = self.scratch_file("folder-state", "json");
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("folder_state.py"))
            .arg(HOST)
            .arg(self.imap_port().to_string())
            .args(["--user", user])
            .arg("--out")
            .arg(&out_file);
        if !folders.is_empty() {
            cmd.arg("--folders").arg(folders.join(","));
        }
        if sieve {
            cmd.arg("--sieve-port").arg(self.sieve_port().to_string());
        }
        run(&mut cmd, "folder_state.py").map_err(|e| self.with_log(e))?;
        UserState::load(&out_file)
    }

    /// What a QRESYNC client of `user` that held `uidvalidity` and `modseq` (and the UIDs of
    /// `known_uids`, a sequence set like `1:5,7`, if given) is told about `folder` now.
    pub fn qresync_check(
        &self,
        user: &str,
        folder: &str,
        uidvalidity: u32,
        modseq: u64,
        known_uids: Option<&str>,
    ) -> Result<QresyncReport> {
        let out_file = self.scratch_file("qresync", "json");
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("qresync_check.py"))
            .arg(HOST)
            .arg(self.imap_port().to_string())
            .args(["--user", user, "--folder", folder])
            .args(["--uidvalidity", &uidvalidity.to_string()])
            .args(["--modseq", &modseq.to_string()])
            .arg("--out")
            .arg(&out_file);
        if let Some(known) = known_uids {
            cmd.args(["--known-uids", known]);
        }
        run(&mut cmd, "qresync_check.py").map_err(|e| self.with_log(e))?;
        let text = std::fs::read_to_string(&out_file)
            .with_context(|| format!("reading {}", out_file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", out_file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(uid: u32, sha1: &str, flags: &[&str]) -> MessageState {
        MessageState {
            uid,
            sha1: sha1.to_string(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internaldate: " 3-Dec-2026 16:01:23 +0000".to_string(),
            modseq: u64::from(uid) + 3,
        }
    }

    fn folder(messages: Vec<MessageState>) -> FolderState {
        FolderState {
            uidvalidity: 1796313683,
            uidnext: 9,
            highestmodseq: 12,
            mailboxid: "89xi77brd1pqmgwyqcibnzqk".to_string(),
            exists: messages.len(),
            messages,
        }
    }

    #[test]
    fn uid_set_joins_runs() {
        let f = folder(vec![
            msg(1, "a", &[]),
            msg(2, "b", &[]),
            msg(3, "c", &[]),
            msg(5, "d", &[]),
            msg(7, "e", &[]),
            msg(8, "f", &[]),
        ]);
        assert_eq!(f.uid_set(), "1:3,5,7:8");
        assert_eq!(folder(vec![]).uid_set(), "");
    }

    #[test]
    fn differences_name_what_a_client_would_notice() {
        let before = folder(vec![msg(1, "a", &["\\Seen"]), msg(2, "b", &[])]);
        let mut after = before.clone();
        // Modseqs, MAILBOXID and HIGHESTMODSEQ are not what this compares.
        after.highestmodseq = 40;
        after.mailboxid = "other".to_string();
        after.messages[0].modseq = 30;
        assert!(before.differences(&after).is_empty());

        after.uidvalidity = 1;
        after.messages[0].flags = vec!["\\Deleted".to_string(), "\\Seen".to_string()];
        after.messages[1].uid = 3;
        let d = before.differences(&after);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            d[0].starts_with("UIDVALIDITY 1, before 1796313683"),
            "{d:?}"
        );
        assert!(d[1].starts_with("UID 1: flags"), "{d:?}");
        assert_eq!(d[2], "UID 2: missing");
        assert_eq!(d[3], "UID 3: not there before");
    }

    #[test]
    fn user_differences_cover_folders_subscriptions_and_sieve() {
        let before = UserState {
            user: "u000".to_string(),
            folders: BTreeMap::from([("INBOX".to_string(), folder(vec![msg(1, "a", &[])]))]),
            subscriptions: vec!["INBOX".to_string()],
            sieve: Some(SieveState {
                active: Some("main".to_string()),
                scripts: BTreeMap::from([("main".to_string(), "keep;".to_string())]),
            }),
        };
        assert!(before.differences(&before.clone()).is_empty());
        let mut after = before.clone();
        after.folders.insert("Work".to_string(), folder(vec![]));
        after.subscriptions.clear();
        after.sieve.as_mut().unwrap().active = None;
        let d = after.differences(&before);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0], "folder Work: missing");
        let d = before.differences(&after);
        assert_eq!(d[0], "folder Work: not there before");
    }

    #[test]
    fn parses_what_the_scripts_write() {
        let state: UserState = serde_json::from_str(
            r#"{"user": "u000", "folders": {"Work": {"uidvalidity": 1796313683, "uidnext": 5,
            "highestmodseq": 11, "mailboxid": "89xi77brd1pqmgwyqcibnzqk", "exists": 1,
            "messages": [{"uid": 1, "sha1": "d1b0adece5e304ef0652fcaded8eb9223505b269",
            "flags": ["$Work", "\\Seen"], "internaldate": " 3-Dec-2026 16:01:23 +0000",
            "modseq": 7}]}}, "subscriptions": ["Work"]}"#,
        )
        .unwrap();
        assert_eq!(state.folder("Work").unwrap().message(1).unwrap().modseq, 7);
        assert_eq!(state.sieve, None);
        let q: QresyncReport = serde_json::from_str(
            r#"{"folder": "INBOX", "uidvalidity_sent": 17, "modseq_sent": 5,
            "uidvalidity": 1796313683, "uidvalidity_changed": true, "highestmodseq": 33,
            "exists": 19, "vanished": [3, 5], "fetched": [{"uid": 1, "modseq": 23,
            "flags": ["$Work"]}]}"#,
        )
        .unwrap();
        assert!(q.uidvalidity_changed);
        assert_eq!(q.vanished, [3, 5]);
    }
}
