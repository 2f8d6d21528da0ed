//! What `formats` reads from a mailbox directory, compared with what the IMAP server said about
//! the same folder. One comparison serves the captured fixture and every live Cyrus the tests
//! start, so both hold the readers to the same standard.

use std::path::Path;

use anyhow::{Context, Result};
use formats::cyrus::{header, index};
use sha1::{Digest, Sha1};

use crate::truth::FolderTruth;

/// What a folder check counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FolderCounts {
    /// Records IMAP lists, each matched field by field.
    pub live: usize,
    /// Records flagged expunged (still in cyrus.index, not listed by IMAP).
    pub expunged: usize,
}

/// INTERNALDATE as IMAP prints it (`23-Nov-2026 06:30:24 +0000`), as unix seconds.
pub fn imap_date(s: &str) -> Result<i64> {
    let ts = jiff::fmt::strtime::parse("%d-%b-%Y %H:%M:%S %z", s.trim())
        .and_then(|t| t.to_timestamp())
        .with_context(|| format!("INTERNALDATE {s:?}"))?;
    Ok(ts.as_second())
}

/// Reads `dir`'s cyrus.header and cyrus.index with `formats` and compares them with `truth`:
/// UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT, EXISTS, the unique id, and for every record IMAP lists
/// its UID, FLAGS (keywords included), INTERNALDATE, RFC822.SIZE and GUID; every record IMAP does
/// not list must be flagged expunged; and every live message file's SHA-1 must equal its GUID.
/// Returns every mismatch, each naming the folder and UID, or the counts when all agree.
pub fn check_folder(
    name: &str,
    dir: &Path,
    truth: &FolderTruth,
) -> Result<FolderCounts, Vec<String>> {
    let mut bad = Vec::new();
    let read = |file: &str| {
        std::fs::read(dir.join(file)).map_err(|e| vec![format!("{name}: reading {file}: {e}")])
    };
    let header_bytes = read("cyrus.header")?;
    let index_bytes = read("cyrus.index")?;
    let mailbox = header::parse(&header_bytes)
        .map_err(|e| vec![format!("{name}: {}/cyrus.header: {e}", dir.display())])?;
    let idx = index::Index::parse(&index_bytes)
        .map_err(|e| vec![format!("{name}: {}/cyrus.index: {e}", dir.display())])?;
    let h = idx.header();

    let ctx = name.to_string();
    let same = |bad: &mut Vec<String>, what: &str, ours: String, imap: String| {
        if ours != imap {
            bad.push(format!(
                "{ctx}: {what}: formats read {ours}, IMAP said {imap}"
            ));
        }
    };
    same(
        &mut bad,
        "UIDVALIDITY",
        h.uidvalidity.to_string(),
        truth.uidvalidity.to_string(),
    );
    same(
        &mut bad,
        "HIGHESTMODSEQ",
        format!("{:?}", h.highestmodseq),
        format!("{:?}", Some(truth.highestmodseq)),
    );
    same(
        &mut bad,
        "UIDNEXT",
        (u64::from(h.last_uid) + 1).to_string(),
        truth.uidnext.to_string(),
    );
    if let Some(exists) = truth.exists {
        same(
            &mut bad,
            "EXISTS",
            format!("{:?}", h.exists),
            format!("{:?}", Some(exists as u32)),
        );
    }
    if let Some(id) = &truth.uniqueid {
        same(
            &mut bad,
            "unique id",
            format!("{:?}", mailbox.unique_id),
            format!("{:?}", Some(id)),
        );
    }

    let mut counts = FolderCounts::default();
    let mut wanted = truth.messages.iter().peekable();
    for record in idx.records() {
        let r = match record {
            Ok(r) => r,
            Err(e) => {
                bad.push(format!("{name}: {}/cyrus.index: {e}", dir.display()));
                continue;
            }
        };
        if r.is_expunged() {
            counts.expunged += 1;
            if truth.message(r.uid).is_some() {
                bad.push(format!(
                    "{name} UID {}: flagged expunged, but IMAP lists it",
                    r.uid
                ));
            }
            continue;
        }
        let Some(t) = wanted.next_if(|t| t.uid == r.uid) else {
            bad.push(format!(
                "{name} UID {}: live in cyrus.index, but IMAP does not list it",
                r.uid
            ));
            continue;
        };
        counts.live += 1;
        let uid = r.uid;
        let ctx = format!("{name} UID {uid}");
        let same = |bad: &mut Vec<String>, what: &str, ours: String, imap: String| {
            if ours != imap {
                bad.push(format!(
                    "{ctx}: {what}: formats read {ours}, IMAP said {imap}"
                ));
            }
        };
        let mut flags = r.flag_names(&mailbox.user_flags);
        flags.sort();
        let mut want_flags = t.flags.clone();
        want_flags.sort();
        same(&mut bad, "FLAGS", flags.join(" "), want_flags.join(" "));
        match imap_date(&t.internaldate) {
            Ok(secs) => same(
                &mut bad,
                "INTERNALDATE",
                r.internaldate.secs.to_string(),
                secs.to_string(),
            ),
            Err(e) => bad.push(format!("{name} UID {uid}: {e:#}")),
        }
        same(
            &mut bad,
            "RFC822.SIZE",
            r.size.to_string(),
            t.size.to_string(),
        );
        let guid = r.guid.map(|g| g.to_hex()).unwrap_or_default();
        same(&mut bad, "GUID", guid.clone(), t.sha1.clone());
        match std::fs::read(dir.join(format!("{uid}."))) {
            Ok(bytes) => same(
                &mut bad,
                "SHA-1 of the message file",
                hex::encode(Sha1::digest(&bytes)),
                guid,
            ),
            Err(e) => bad.push(format!("{name} UID {uid}: reading the message file: {e}")),
        }
    }
    for t in wanted {
        bad.push(format!(
            "{name} UID {}: IMAP lists it, cyrus.index has no live record",
            t.uid
        ));
    }
    if bad.is_empty() {
        Ok(counts)
    } else {
        Err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_dates_become_unix_seconds() {
        assert_eq!(imap_date("01-Jan-1970 00:00:00 +0000").unwrap(), 0);
        assert_eq!(
            imap_date("29-Feb-2000 12:00:01 +0000").unwrap(),
            951_825_601
        );
        assert_eq!(imap_date(" 1-Jan-1970 01:00:00 +0100").unwrap(), 0);
        assert!(imap_date("yesterday").is_err());
    }
}
