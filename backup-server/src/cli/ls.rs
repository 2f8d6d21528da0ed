//! `backup-server ls`: a user's folders, or a folder's messages, as of a point in time
//! ([`backup_server::ls`]), as readable text.
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

use super::{Out, OutputError, Status};
use anyhow::Context;
use backup_server::config::Config;
use backup_server::ls::{ls, Listing};
use backup_server::point_in_time::{rfc3339, when};
use formats::imap::mutf7;
use formats::Timestamp;
use std::io::Write;

/// `backup-server ls` arguments.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The user.
    #[arg(long)]
    user: String,
    /// Only this folder (its messages are listed), named in UTF-8 as listed (Données);
    /// the modified UTF-7 form (Donn&AOk-es) is taken too.
    #[arg(long)]
    folder: Option<String>,
    /// The point in time: RFC 3339 (2026-11-23T04:00:00Z) or unix seconds.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    at: Option<Timestamp>,
}

/// Prints the listing.
pub fn run(config: &Config, a: &LsArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let folder = a.folder.as_deref().map(mutf7::from_typed);
    let listing = ls(&config.store_root, &a.user, folder.as_deref(), a.at).context("ls")?;
    print(&listing, out)?;
    Ok(Status::Ok)
}

/// An internal date in IMAP's INTERNALDATE form, in UTC.
fn imap_date(t: Timestamp) -> String {
    match jiff::Timestamp::from_second(t.secs) {
        Ok(j) => j.strftime("%d-%b-%Y %H:%M:%S +0000").to_string(),
        Err(_) => t.to_string(),
    }
}

fn print(listing: &Listing, out: &mut Out<impl Write>) -> Result<(), OutputError> {
    match listing {
        Listing::Folders { user, at, folders } => {
            out.line(format_args!(
                "# user {user}, as of {}: {} folders",
                when(*at),
                folders.len()
            ))?;
            out.line(format_args!(
                "FOLDER\tMESSAGES\tUIDVALIDITY\tLAST-UID\tSNAPSHOT\tUNIQUEID"
            ))?;
            for f in folders {
                match &f.snapshot {
                    Some(s) => out.line(format_args!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        mutf7::decode_or_keep(&f.name),
                        s.exists,
                        s.uidvalidity,
                        s.last_uid,
                        rfc3339(s.time),
                        f.unique_id
                    ))?,
                    None => out.line(format_args!(
                        "{}\t-\t-\t-\t-\t{}",
                        mutf7::decode_or_keep(&f.name),
                        f.unique_id
                    ))?,
                }
            }
        }
        Listing::Messages {
            user,
            at,
            folder,
            unique_id,
            snapshot,
            messages,
        } => {
            out.line(format_args!(
                "# user {user}, folder {} (unique id {unique_id}), as of {}: {} messages, snapshot {}",
                mutf7::decode_or_keep(folder),
                when(*at),
                snapshot.exists,
                rfc3339(snapshot.time)
            ))?;
            out.line(format_args!("UID\tFLAGS\tINTERNALDATE\tSIZE\tGUID"))?;
            for m in messages {
                let flags = if m.flags.is_empty() {
                    "-".to_owned()
                } else {
                    m.flags.join(" ")
                };
                out.line(format_args!(
                    "{}\t{}\t{}\t{}\t{}",
                    m.uid,
                    flags,
                    imap_date(m.internal_date),
                    m.size,
                    m.guid.to_hex()
                ))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_server::store::{EntryRef, FolderAt, MessageAt, MessageState, SnapshotInfo};
    use formats::Guid;

    fn snapshot() -> SnapshotInfo {
        let e = EntryRef {
            id: 1,
            chunk_offset: 0,
            header_offset: 0,
            data_offset: 512,
            data_len: 100,
        };
        SnapshotInfo {
            unique_id: "u-1".into(),
            run: 1,
            time: Timestamp::new(1_795_406_400, 123_000_000).unwrap(),
            folder: "INBOX".into(),
            partition: None,
            minor_version: 17,
            uidvalidity: 9,
            last_uid: 4,
            highestmodseq: None,
            records: 3,
            exists: 2,
            header: None,
            index: e,
            annotations: None,
        }
    }

    fn printed(l: &Listing) -> String {
        let mut out = Out::new(Vec::new());
        print(l, &mut out).unwrap();
        String::from_utf8(out.into_inner()).unwrap()
    }

    #[test]
    fn folders_one_per_line() {
        let l = Listing::Folders {
            user: "alice".into(),
            at: None,
            folders: vec![
                FolderAt {
                    unique_id: "u-1".into(),
                    name: "INBOX".into(),
                    snapshot: Some(snapshot()),
                },
                FolderAt {
                    unique_id: "u-2".into(),
                    name: "Work Mail".into(),
                    snapshot: None,
                },
            ],
        };
        assert_eq!(
            printed(&l),
            "# user alice, as of now: 2 folders\n\
             FOLDER\tMESSAGES\tUIDVALIDITY\tLAST-UID\tSNAPSHOT\tUNIQUEID\n\
             INBOX\t2\t9\t4\t2026-11-23T04:00:00.123Z\tu-1\n\
             Work Mail\t-\t-\t-\t-\tu-2\n"
        );
    }

    #[test]
    fn messages_one_per_line() {
        let m = |uid, flags: &[&str]| MessageAt {
            uid,
            guid: Guid::of(b"x"),
            size: 1834,
            internal_date: Timestamp::from_secs(1_795_458_624),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            state: MessageState::Visible,
            stored: true,
            valid_from: Timestamp::from_secs(0),
            valid_to: None,
        };
        let l = Listing::Messages {
            user: "alice".into(),
            at: Some(Timestamp::from_secs(1_795_406_400)),
            folder: "INBOX".into(),
            unique_id: "u-1".into(),
            snapshot: Box::new(snapshot()),
            messages: vec![m(1, &["\\Seen", "$Label1"]), m(3, &[])],
        };
        let g = Guid::of(b"x").to_hex();
        assert_eq!(
            printed(&l),
            format!(
                "# user alice, folder INBOX (unique id u-1), as of 2026-11-23T04:00:00Z: 2 messages, snapshot 2026-11-23T04:00:00.123Z\n\
                 UID\tFLAGS\tINTERNALDATE\tSIZE\tGUID\n\
                 1\t\\Seen $Label1\t23-Nov-2026 18:30:24 +0000\t1834\t{g}\n\
                 3\t-\t23-Nov-2026 18:30:24 +0000\t1834\t{g}\n"
            )
        );
    }
}
