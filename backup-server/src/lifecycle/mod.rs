//! Users that come, go, are renamed and move in Cyrus, followed by the backup host
//! (docs/backup-server.md, "Users that vanish, are renamed or move"):
//!
//! * [`renamed`]: at each `users refresh` (and the refresh a `run` begins with), a user
//!   renamed in Cyrus is found by its INBOX's unique id (which Cyrus 3.6 keeps across
//!   `RENAME user/a user/b`) and its store follows it to the new name; a user deleted and
//!   created again under the same name (a new INBOX unique id) gets a new store, the old
//!   one kept aside under a distinct name (found by the backup itself when no refresh saw
//!   the user vanish: [`keep_recreated`]); stores still to be moved are moved.
//! * [`vanished`]: a deleted user's store is kept `vanished_retention_days`, restorable,
//!   then removed by `backup-server compact`, which says so; its state db row stays,
//!   marked removed.
//!
//! A user moved to another partition, RAID set or mail server needs nothing here: the
//! refresh updates its row (server, partition, RAID set), the scheduler's feeders read
//! the RAID set from that row, and the store, found by the user's name, makes the next
//! backup incremental (the folders keep their unique ids; only messages the store lacks
//! are fetched).

pub mod renamed;
pub mod vanished;

pub use renamed::{after_refresh, before_refresh, keep_recreated, BeforeRefresh, Followed};
pub use vanished::{remove_expired, remove_store, Removal, RemoveOutcome};
