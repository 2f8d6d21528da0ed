//! Pure parsers and writers for the bytes mailbackup reads and writes.
//!
//! Nothing in this crate touches a socket, a thread or the filesystem: every parser takes
//! `&[u8]` (or `impl Read`), every writer takes `impl Write`. The I/O lives in `backupd` and
//! `backup-server`; this crate is the layer below them, and the layer the fuzz targets test.
//!
//! * [`cyrus`]: what Cyrus IMAP 3.x keeps on disk (cyrus.header, cyrus.index, the mailbox
//!   list in mailboxes.db and the dlist notation they share).
//! * [`archive`]: mailbackup's data file, gzip members of tar entries.

pub mod archive;
pub mod cyrus;
