//! The backup host's library: what `backup-server` does, as functions that return what they
//! found or did (or a typed error naming the user, folder or file concerned). Nothing here
//! writes to standard output or ends the process (a run logs, and draws its progress bar, on
//! stderr): the binary (`src/main.rs`, `src/cli/`) prints the results and decides the exit
//! status.
//!
//! * [`config`]: the configuration file.
//! * [`client`]: the blocking client of backupd's protocol.
//! * [`store`]: the per-user store (a data file of gzip chunks and its SQLite index).
//! * [`backup`]: the nightly backup: one user's plan, quiet check and backup, the run and
//!   `users refresh` put together, and what a run did; [`scheduler`]: feeders per RAID set
//!   and worker threads; [`state`]: the state db.
//! * [`find`]: a user's messages by sender, recipient, subject, date and folder, with
//!   where each is now (live, expunged, in a deleted folder).
//! * [`ls`]: a store's folders and messages as of a point in time; [`point_in_time`]: times
//!   as the command line takes them and output shows them.
//! * [`restore`]: mail back out into Maildir, mbox, .eml files or an IMAP account.
//! * [`verify`]: checking stores, and rebuilding an index from its data file.
//! * [`compact`]: rewriting stores whose dirty ratio passes a threshold.
//! * [`repair`]: a new store from the intact chunks of a damaged or truncated data file.
//! * [`report`]: the backup-age report.
//! * [`lifecycle`]: users deleted, renamed, created again or moved in Cyrus, followed at
//!   refresh; deleted users' stores removed after their retention.
//! * [`console`]: the support staff's web console (`backup-server console`).
//! * [`private`]: stores, indexes, locks and the state db created 0700/0600 whatever the
//!   umask; places others can write refused.
//!
//! docs/backup-server.md describes the run and the commands, docs/store.md the store,
//! docs/restore.md restore, verify and reindex.

pub mod backup;
pub mod client;
pub mod compact;
pub mod config;
pub mod console;
pub mod find;
pub mod lifecycle;
pub mod ls;
pub mod point_in_time;
pub mod private;
pub mod repair;
pub mod report;
pub mod restore;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod verify;
