//! backupd: the daemon that runs beside Cyrus on each mail server (library part; `main.rs`
//! is the thin binary).
//!
//! * [`spool`]: reading Cyrus's files under Cyrus's locks. [`spool::Spool`] (in
//!   `spool/mod.rs`) is everything the protocol side asks of the spool; the files below it
//!   answer it, one per request (`folders.rs`, `meta.rs`, `messages.rs`, `user_files.rs`),
//!   standing on mailboxes.db (`mailboxes.rs`), where the files are (`layout.rs`), Cyrus's
//!   locks (`locks.rs`, docs/cyrus-locks.md) and what they all share (`mailbox.rs`,
//!   `error.rs`, `names.rs`, `files.rs`, `cyrus.rs`). The module's page has the map.
//! * [`server`]: the network side, laid out as tokio's mini-redis is: `server/mod.rs` the
//!   listener, connection limit and shutdown; `server/connection.rs` one connection (frames,
//!   handshake, request loop); `server/handlers.rs` one function per request, answered from
//!   the spool. The protocol itself is `formats::protocol`, specified in docs/protocol.md.
//! * [`auth`]: reading the shared secret file and drawing nonces (the proofs are
//!   `formats::protocol::handshake`).
//! * [`tls`]: the key and certificate files, the rustls configuration (TLS 1.3 only) and
//!   the binding of the handshake to the TLS session; [`keygen`]: `backupd keygen`.
//! * [`allow`]: `allow_from`, the peers that may connect.
//! * [`config`]: the daemon's TOML configuration; [`check`]: `backupd check`;
//!   [`privileges`]: dropping root to the cyrus user.

pub mod allow;
pub mod auth;
pub mod check;
pub mod config;
pub mod keygen;
pub mod privileges;
pub mod server;
pub mod spool;
pub mod tls;

/// Cyrus's locks ([`spool::locks`]), also here for the tests that play a Cyrus process
/// (`locks::cyrus_style_lock`).
pub use spool::locks;
