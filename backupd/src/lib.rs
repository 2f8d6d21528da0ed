//! backupd: the daemon that runs beside Cyrus on each mail server (library part; `main.rs`
//! is the thin binary).
//!
//! * [`spool`]: reading Cyrus's files under Cyrus's locks (the mailbox list so far).

pub mod spool;
