//! `backup-server ls`: what a user's store holds at a point in time, as readable text.
//!
//! Columns are separated by one tab (so a script can split them; names may hold spaces);
//! within the flags column flags are separated by spaces, `-` when there are none. Times
//! are UTC: internal dates in IMAP's INTERNALDATE form (`23-Nov-2026 06:30:24 +0000`),
//! backup times in RFC 3339. Folders (tabs shown as two spaces):
//!
//! ```text
//! # user alice, as of now: 3 folders
//! FOLDER  MESSAGES  UIDVALIDITY  LAST-UID  SNAPSHOT  UNIQUEID
//! INBOX  12  1700000000  14  2026-11-23T15:00:01.123Z  4c0f...
//! ```
//!
//! and with `--folder`, that folder's messages then (expunged ones left out):
//!
//! ```text
//! # user alice, folder INBOX (unique id 4c0f...), as of now: 12 messages, snapshot 2026-...
//! UID  FLAGS  INTERNALDATE  SIZE  GUID
//! 1  \Seen $Label1  23-Nov-2026 06:30:24 +0000  1834  3f2a...
//! ```

use crate::point_in_time::{rfc3339, when};
use crate::store::{StoreError, StoreReader};
use anyhow::{bail, Context};
use formats::Timestamp;

/// An internal date in IMAP's INTERNALDATE form, in UTC.
pub fn imap_date(t: Timestamp) -> String {
    match jiff::Timestamp::from_second(t.secs) {
        Ok(j) => j.strftime("%d-%b-%Y %H:%M:%S +0000").to_string(),
        Err(_) => t.to_string(),
    }
}

/// `backup-server ls --user U [--folder F] [--at TIME]`, printed to `out` (TIME already parsed).
pub fn ls(
    store_root: &std::path::Path,
    user: &str,
    folder: Option<&str>,
    at: Option<formats::Timestamp>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let reader = match StoreReader::open(store_root, user) {
        Ok(r) => r,
        Err(e @ StoreError::NoStore { .. }) => bail!("user {user}: no backup ({e})"),
        Err(e) => return Err(e).with_context(|| format!("user {user}: opening the store")),
    };
    let cat = reader.catalog();
    match folder {
        None => {
            let mut folders = cat.folders_at(at)?;
            folders.sort_by(|a, b| a.name.cmp(&b.name));
            writeln!(
                out,
                "# user {user}, as of {}: {} folders",
                when(at),
                folders.len()
            )?;
            writeln!(
                out,
                "FOLDER\tMESSAGES\tUIDVALIDITY\tLAST-UID\tSNAPSHOT\tUNIQUEID"
            )?;
            for f in folders {
                match &f.snapshot {
                    Some(s) => writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        f.name,
                        s.exists,
                        s.uidvalidity,
                        s.last_uid,
                        rfc3339(s.time),
                        f.unique_id
                    )?,
                    None => writeln!(out, "{}\t-\t-\t-\t-\t{}", f.name, f.unique_id)?,
                }
            }
        }
        Some(name) => {
            let Some(f) = cat.folder_at(name, at)? else {
                bail!("user {user}: no folder {name:?} as of {}", when(at));
            };
            let Some(snap) = &f.snapshot else {
                bail!(
                    "user {user}: folder {name:?} has no snapshot as of {}",
                    when(at)
                );
            };
            writeln!(
                out,
                "# user {user}, folder {} (unique id {}), as of {}: {} messages, snapshot {}",
                f.name,
                f.unique_id,
                when(at),
                snap.exists,
                rfc3339(snap.time)
            )?;
            writeln!(out, "UID\tFLAGS\tINTERNALDATE\tSIZE\tGUID")?;
            let mut werr = None;
            cat.messages_at(&f.unique_id, at, false, |m| {
                let flags = if m.flags.is_empty() {
                    "-".to_owned()
                } else {
                    m.flags.join(" ")
                };
                if let Err(e) = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    m.uid,
                    flags,
                    imap_date(m.internal_date),
                    m.size,
                    m.guid.to_hex()
                ) {
                    werr.get_or_insert(e);
                }
                Ok(())
            })?;
            if let Some(e) = werr {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
