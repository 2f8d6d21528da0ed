//! What the IMAP server itself said about a spool: the JSON written by
//! `tests/cyrus/imap_truth.py` (the fixture's `tests/fixtures/cyrus-3.6/truth.json` too), or
//! its older, smaller shape (`status` and `messages` only), which is still read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Every folder of every user, keyed `"<user>/<folder>"` (folder as its owner sees it over
/// IMAP, e.g. `u000/INBOX`, `u000/Archive/2025`; non-ASCII names in modified UTF-7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Truth {
    /// Folders by `"<user>/<folder>"`.
    pub folders: BTreeMap<String, FolderTruth>,
}

/// One folder as IMAP reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderTruth {
    /// The server's verbatim `STATUS (UIDNEXT UIDVALIDITY HIGHESTMODSEQ)` answer.
    pub status: String,
    /// Live messages by ascending UID (expunged records are not here).
    pub messages: Vec<MessageTruth>,
    /// The mailbox unique id (absent from the older shape).
    #[serde(default)]
    pub uniqueid: Option<String>,
    /// UIDVALIDITY (filled from `status` when the JSON lacks it).
    #[serde(default)]
    pub uidvalidity: u32,
    /// UIDNEXT (filled from `status` when the JSON lacks it).
    #[serde(default)]
    pub uidnext: u32,
    /// HIGHESTMODSEQ (filled from `status` when the JSON lacks it).
    #[serde(default)]
    pub highestmodseq: u64,
    /// EXISTS on EXAMINE (filled with the number of messages when the JSON lacks it).
    #[serde(default)]
    pub exists: Option<usize>,
    /// The Cyrus partition holding the folder (absent from the older shape).
    #[serde(default)]
    pub partition: Option<String>,
    /// Whether the owner is subscribed to the folder (absent from the older shape).
    #[serde(default)]
    pub subscribed: Option<bool>,
}

/// One live message as IMAP reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageTruth {
    /// UID.
    pub uid: u32,
    /// FLAGS, keywords included, sorted, without `\Recent`.
    pub flags: Vec<String>,
    /// INTERNALDATE, verbatim (e.g. `23-Nov-2026 06:30:24 +0000`).
    pub internaldate: String,
    /// RFC822.SIZE.
    pub size: u64,
    /// Lower-case hex SHA-1 of `BODY.PEEK[]`: the GUID Cyrus keeps in cyrus.index.
    pub sha1: String,
}

impl Truth {
    /// Parses truth JSON and fills the numbers the older shape leaves out.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut truth: Truth = serde_json::from_str(text).context("parsing truth JSON")?;
        for (key, folder) in &mut truth.folders {
            folder
                .fill_from_status()
                .with_context(|| format!("truth folder {key}"))?;
        }
        Ok(truth)
    }

    /// Reads and parses a truth JSON file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The users, sorted.
    pub fn users(&self) -> BTreeSet<&str> {
        self.folders.keys().map(|k| split_key(k).0).collect()
    }

    /// One folder of one user (`folder` as the user sees it, e.g. `Archive/2025`).
    pub fn folder(&self, user: &str, folder: &str) -> Option<&FolderTruth> {
        self.folders.get(&format!("{user}/{folder}"))
    }

    /// `(folder name, folder)` of every folder of `user`.
    pub fn folders_of<'a>(
        &'a self,
        user: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a FolderTruth)> + 'a {
        self.folders.iter().filter_map(move |(k, v)| {
            let (u, f) = split_key(k);
            (u == user).then_some((f, v))
        })
    }

    /// Every `(user, folder, message)`.
    pub fn messages(&self) -> impl Iterator<Item = (&str, &str, &MessageTruth)> {
        self.folders.iter().flat_map(|(k, v)| {
            let (u, f) = split_key(k);
            v.messages.iter().map(move |m| (u, f, m))
        })
    }
}

/// Splits `"<user>/<folder>"` at the first `/` (user names never hold one).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((key, ""))
}

impl FolderTruth {
    /// The message with this UID.
    pub fn message(&self, uid: u32) -> Option<&MessageTruth> {
        self.messages.iter().find(|m| m.uid == uid)
    }

    fn fill_from_status(&mut self) -> Result<()> {
        let inner = match (self.status.rfind('('), self.status.rfind(')')) {
            (Some(a), Some(b)) if a < b => &self.status[a + 1..b],
            _ => bail!("STATUS answer {:?} has no (...) list", self.status),
        };
        let words: Vec<&str> = inner.split_whitespace().collect();
        for pair in words.chunks(2) {
            let [name, value] = pair else {
                bail!("odd STATUS list in {:?}", self.status)
            };
            let parse = |v: &str| -> Result<u64> {
                v.parse()
                    .with_context(|| format!("{name} {v:?} in {:?}", self.status))
            };
            match name.to_ascii_uppercase().as_str() {
                "UIDVALIDITY" if self.uidvalidity == 0 => {
                    self.uidvalidity = u32::try_from(parse(value)?)?
                }
                "UIDNEXT" if self.uidnext == 0 => self.uidnext = u32::try_from(parse(value)?)?,
                "HIGHESTMODSEQ" if self.highestmodseq == 0 => self.highestmodseq = parse(value)?,
                _ => {}
            }
        }
        if self.exists.is_none() {
            self.exists = Some(self.messages.len());
        }
        Ok(())
    }
}
