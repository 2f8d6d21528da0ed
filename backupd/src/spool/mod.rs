//! The spool of one Cyrus server, read under Cyrus's locks: [`Spool`] is everything the
//! protocol side asks of it, [`SpoolError`] what can go wrong. The formats themselves are
//! parsed by the `formats` crate; this module is the I/O edge.
//!
//! [`Spool`]'s methods are answered by the helpers below it: [`folders`] (a user's folder
//! listing, stat only), [`meta`] (meta files copied under Cyrus's locks), [`messages`]
//! (message files by UID) and [`user_files`] (seen state, subscriptions, sieve scripts).
//! They stand on [`mailboxes`] (mailboxes.db, read under its lock), [`layout`] (where
//! imapd.conf puts each file), [`locks`] (Cyrus's locks, docs/cyrus-locks.md), [`files`]
//! (opening and stat'ing without following links), and the shared types: [`Mailbox`],
//! [`SpoolError`] ([`error`]) and the name checks ([`names`]).
//!
//! Dependencies go one way: this file uses the helpers and nothing below it uses this file.
//! The helpers take a `Cyrus` (cyrus.rs: imapd.conf, the layout, the lock timeout, a user's
//! live mailboxes) where the [`Spool`] would otherwise be passed down.

pub mod cyrus;
pub mod error;
pub mod files;
pub mod folders;
pub mod layout;
pub mod locks;
pub mod mailbox;
pub mod mailboxes;
pub mod messages;
pub mod meta;
pub mod names;
pub mod user_files;
pub mod user_list;

pub use cyrus::load_imapd_conf;
pub use error::SpoolError;
pub use locks::{open_locked, open_locked_within, read_locked};
pub use mailbox::Mailbox;
pub use mailboxes::{
    list_mailboxes, mailboxes_db_path, read_mailbox_list, user_mailboxes, MailboxList, BATCH,
};
pub use names::{check_name, check_script_name, check_uniqueid};
pub use user_list::{DbStamp, UserList, UserListCache};

use cyrus::Cyrus;
use formats::cyrus::imapd_conf::ImapdConf;
use formats::protocol::{MetaCopy, UserFileId, UserListing};
use formats::FileStat;
use mailboxes::read_user_list_in_batches;
use messages::DirCache;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The spool of one Cyrus server, as the daemon reads it: every request of the protocol that
/// touches Cyrus's files goes through one of these methods. Shared by the daemon's blocking
/// pool (`Send + Sync`); each call opens what it needs and holds no lock after it returns.
///
/// Names from clients are checked ([`check_name`], [`check_uniqueid`]) and looked up in the
/// mailbox list; paths are built only from imapd.conf's roots and the unique ids and
/// partitions mailboxes.db holds.
#[derive(Debug)]
pub struct Spool {
    cyrus: Cyrus,
    /// (user, unique id) → message directories, so that streaming a folder's messages does
    /// not look the mailbox up once per message. Checked again when a file is missing.
    message_dirs: DirCache,
    /// The user list LIST_USERS sends, kept while mailboxes.db is unchanged.
    user_list: Arc<UserListCache>,
}

impl Spool {
    /// Reads imapd.conf (and its `@include`s) and checks that the mailbox list is there.
    pub fn open(imapd_conf: &Path) -> Result<Spool, SpoolError> {
        Ok(Spool {
            cyrus: Cyrus::open(imapd_conf)?,
            message_dirs: DirCache::default(),
            user_list: Arc::default(),
        })
    }

    /// The same spool, waiting at most `timeout` for each of Cyrus's locks (the
    /// configuration's `lock_timeout_secs`; [`locks::DEFAULT_LOCK_TIMEOUT`] unless set): a
    /// request that waits longer fails with [`SpoolError::LockTimeout`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Spool {
        self.cyrus.lock_timeout = timeout;
        self
    }

    /// The longest wait for one of Cyrus's locks.
    pub fn lock_timeout(&self) -> Duration {
        self.cyrus.lock_timeout
    }

    /// The parsed imapd.conf.
    pub fn imapd_conf(&self) -> &ImapdConf {
        &self.cyrus.conf
    }

    /// Every user with a live INBOX, and the partition of that INBOX (for the feeders), in
    /// user id order. Read from mailboxes.db when it changed since the last read, else the
    /// list kept from then; one read at a time, shared by the requests that wait for it (see
    /// [`user_list`]).
    pub fn users(&self) -> Result<Arc<UserList>, SpoolError> {
        let path = &self.cyrus.layout.mailboxes_db;
        self.user_list.get(
            || DbStamp::of(path),
            || read_user_list_in_batches(&self.cyrus.conf, BATCH, self.cyrus.lock_timeout),
        )
    }

    /// The user list's cache, shared: its [`UserListCache::builds`] counts the reads of
    /// mailboxes.db (the tests and the benchmark watch it).
    pub fn user_list_cache(&self) -> Arc<UserListCache> {
        self.user_list.clone()
    }

    /// One user's folders (mail folders only: not delayed-deleted ones, tombstones, the
    /// hidden `#sieve` mailbox or DAV collections) with the stat data of their meta files,
    /// and the stat data of the user's own files. Stat only: no lock is taken and no message
    /// file is opened or stat'ed. See [`folders`].
    pub fn folders(&self, user: &str) -> Result<UserListing, SpoolError> {
        folders::folders(&self.cyrus, user)
    }

    /// cyrus.header, cyrus.index and cyrus.annotations of one of the user's folders, copied
    /// whole under the locks Cyrus takes (docs/cyrus-locks.md), and checked. See
    /// [`meta`].
    pub fn copy_meta(&self, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError> {
        meta::copy_meta(&self.cyrus, user, uniqueid)
    }

    /// The message file of `uid` in one of the user's folders, open for reading, with its
    /// size; `None` when Cyrus has removed it. See [`messages`].
    pub fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(File, u64)>, SpoolError> {
        messages::open_message(&self.cyrus, &self.message_dirs, user, uniqueid, uid)
    }

    /// A user file's bytes and stat data; `None` when it does not exist. See
    /// [`user_files`].
    pub fn read_user_file(
        &self,
        user: &str,
        id: &UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
        user_files::read_user_file(&self.cyrus, user, id)
    }
}
