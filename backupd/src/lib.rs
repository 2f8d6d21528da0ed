//! backupd: the daemon that runs beside Cyrus on each mail server (library part; `main.rs`
//! is the thin binary).
//!
//! * [`spool`]: reading Cyrus's files under Cyrus's locks.
//! * [`access`]: what one request reads, as plain data (the contract between the spool side
//!   and the protocol side).

pub mod access;
pub mod spool;
