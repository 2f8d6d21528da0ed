//! backupd: the daemon that runs beside Cyrus on each mail server (library part; `main.rs`
//! is the thin binary).
//!
//! * [`spool`]: reading Cyrus's files under Cyrus's locks; [`spool::Spool`] is everything the
//!   protocol side asks of the spool, built from:
//!   [`spool::folders`] (a user's folder listing, stat only), [`spool::meta`] (meta files copied under
//!   lock), [`spool::messages`] (message files by UID), [`spool::user_files`] (seen, subscriptions,
//!   sieve), [`spool::locks`] (Cyrus's locks, docs/cyrus-locks.md), [`spool::layout`] (where the files are).
//! * [`server`]: the network side: connections, authentication, requests answered from
//!   the spool (the protocol itself is `formats::protocol`, specified in docs/protocol.md).
//! * [`auth`]: reading the shared secret file and drawing nonces (the proofs are
//!   `formats::protocol::handshake`).
//! * [`allow`]: `allow_from`, the peers that may connect.
//! * [`config`]: the daemon's TOML configuration; [`check`]: `backupd check`.

pub mod allow;
pub mod auth;
pub mod check;
pub mod config;
pub mod privileges;
pub mod server;
pub mod spool;

pub use spool::locks;
