//! [`Mailbox`]: one mailbox of mailboxes.db as backupd keeps it in memory, the type every
//! part of the spool passes around.

use formats::cyrus::mailboxes::MailboxType;
use std::sync::Arc;

/// One mailbox as backupd keeps it in memory: what a backup needs to find, identify and
/// compare it. The ACL and the name history stay in mailboxes.db (and cyrus.header, which is
/// backed up whole); `formats::cyrus::mailboxes::MailboxEntry` has everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The folder as the owner sees it: `INBOX`, `Work/Sub`; a shared mailbox's whole name.
    pub folder: Box<str>,
    /// The unique id (empty for the rare entry without one).
    pub uniqueid: Box<str>,
    /// The partition (empty if none); shared between the mailboxes of one partition.
    pub partition: Arc<str>,
    /// Kind and flags; [`MailboxType::has_spool_dir`] says whether files exist here.
    pub mbtype: MailboxType,
    /// Set for a delayed-deleted mailbox (`DELETED.user.alice.Work.<hex time>`): its time.
    pub deleted_at: Option<u32>,
    /// The directory under the partition root, for mailboxes stored by name (flag `l`);
    /// `None` for those stored by unique id (see [`Mailbox::spool_dir`]).
    pub legacy_dir: Option<Box<str>>,
    /// `V`.
    pub uidvalidity: u32,
    /// `F`: bumped when the folder itself (name, ACL, annotations) changes.
    pub foldermodseq: u64,
}

impl Mailbox {
    /// The directory relative to the partition root (`uuid/<c1>/<c2>/<unique id>`, or the
    /// name-based one), or `None` if the mailbox has no files on this server.
    pub fn spool_dir(&self) -> Option<String> {
        if !self.mbtype.has_spool_dir() || self.partition.is_empty() {
            return None;
        }
        if let Some(dir) = &self.legacy_dir {
            return Some(dir.to_string());
        }
        let mut c = self.uniqueid.chars();
        let (c1, c2) = (c.next()?, c.next()?);
        Some(format!("uuid/{c1}/{c2}/{}", self.uniqueid))
    }
}

/// Whether a mailbox is live (not delayed-deleted) and has files on this server (not a
/// tombstone, reservation, intermediate or remote entry).
pub(crate) fn is_live(m: &Mailbox) -> bool {
    m.deleted_at.is_none() && m.mbtype.has_spool_dir()
}
