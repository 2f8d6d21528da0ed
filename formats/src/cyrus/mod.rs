//! Cyrus IMAP 3.x on-disk formats.
//!
//! * [`dlist`]: the typed list notation Cyrus writes into cyrus.header and mailboxes.db.
//! * [`header`]: a mailbox's cyrus.header.
//! * [`index`]: a mailbox's cyrus.index (header and message records).
//! * [`twoskip`]: the twoskip key-value database file (mailboxes.db and others).
//! * [`mailboxes`]: the mailbox list entries kept in mailboxes.db.
//! * [`MetaFile`]: which of a mailbox's meta files (one enum for every layer).
//! * [`sync`]: the replication protocol (csync) a restore speaks to `sync_server`.
//! * [`imapd_conf`]: imapd.conf, Cyrus's configuration (directories, partitions, switches).

pub mod dlist;
pub mod header;
pub mod imapd_conf;
pub mod index;
pub mod mailboxes;
mod meta_file;
pub mod sync;
pub mod twoskip;

pub use meta_file::MetaFile;
