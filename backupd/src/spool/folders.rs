//! One user's folder listing: identity and the stat data of the meta files, for the backup
//! host to decide which folders changed.
//!
//! Stat only, and only of cyrus.header, cyrus.index and cyrus.annotations: no lock is taken
//! and no message file is opened or stat'ed (a test checks this with strace). The listing is
//! not one atomic snapshot, and need not be: a folder that changes after its files were
//! stat'ed shows new stat data the next night, and the copy taken under lock for a changed
//! folder is never older than the stat data that triggered it.

use super::cyrus::Cyrus;
use super::error::SpoolError;
use super::files::stat_opt;
use super::mailbox::Mailbox;
use super::user_files;
use formats::cyrus::mailboxes::MailboxKind;
use formats::cyrus::MetaFile;
use formats::protocol::{FolderStat, UserListing};
use std::io::ErrorKind;

/// Whether a live mailbox is a mail folder the listing reports: not the hidden `#sieve`
/// mailbox (its scripts are user files) nor a DAV or JMAP collection.
pub(crate) fn is_mail_folder(m: &Mailbox) -> bool {
    matches!(m.mbtype.kind, MailboxKind::Email | MailboxKind::Netnews)
}

/// The folder's meta file stat data; `None` if cyrus.header or cyrus.index is missing.
fn stat_folder(cyrus: &Cyrus, m: &Mailbox) -> Result<Option<FolderStat>, SpoolError> {
    let layout = &cyrus.layout;
    let Some(index) = stat_opt(&layout.meta_path(m, MetaFile::Index)?)? else {
        return Ok(None);
    };
    let Some(header) = stat_opt(&layout.meta_path(m, MetaFile::Header)?)? else {
        return Ok(None);
    };
    let annotations = stat_opt(&layout.meta_path(m, MetaFile::Annotations)?)?;
    Ok(Some(FolderStat {
        name: m.folder.to_string(),
        uniqueid: m.uniqueid.to_string(),
        partition: m.partition.to_string(),
        uidvalidity: m.uidvalidity,
        header,
        index,
        annotations,
    }))
}

/// See [`Spool::folders`](super::Spool::folders).
pub(crate) fn folders(cyrus: &Cyrus, user: &str) -> Result<UserListing, SpoolError> {
    let mailboxes = cyrus.live_mailboxes(user)?;
    let mut folders = Vec::with_capacity(mailboxes.len());
    let mut missing = Vec::new();
    for m in mailboxes.iter().filter(|m| is_mail_folder(m)) {
        match stat_folder(cyrus, m)? {
            Some(f) => folders.push(f),
            None => missing.push(m),
        }
    }
    if !missing.is_empty() {
        // Deleted (or renamed away) while we looked? Then it is rightly left out. Still in
        // the list: its files are missing, which the operator must hear about.
        let now = cyrus.live_mailboxes(user).unwrap_or_default();
        for m in missing {
            if now.iter().any(|n| n.uniqueid == m.uniqueid) {
                let path = cyrus.layout.meta_path(m, MetaFile::Index)?;
                let header = cyrus.layout.meta_path(m, MetaFile::Header)?;
                return Err(SpoolError::Io {
                    source: std::io::Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "folder {:?} of user {user:?} is in the mailbox list, but this \
                             file or {} is missing",
                            m.folder,
                            header.display()
                        ),
                    ),
                    path,
                });
            }
        }
    }
    let user_files = user_files::list(cyrus, user, &mailboxes)?;
    Ok(UserListing {
        folders,
        user_files,
    })
}
