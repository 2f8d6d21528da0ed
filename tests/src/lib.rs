//! Helpers for the end-to-end tests: a private Cyrus IMAP on loopback, started and stopped
//! by the scripts in `tests/cyrus/`, and the IMAP server's own view of its spool ("truth");
//! for the restores into Cyrus, what one user's client sees (`folder_state`: UIDs, flags,
//! MAILBOXID, QRESYNC, subscriptions, sieve) and what users and admins do that a restore
//! must undo (`admin_actions`: delete a folder or a user, expunge, cyr_expire);
//! and the setup the backup and restore tests share (`rig`: backupd in process, backups,
//! the backup-server binary and its configuration). Without Cyrus: `memspool`, a real
//! backupd over an in-memory spool whose faults the test sets, and `proxy`, a frame-level
//! TCP proxy that closes the connection or rewrites a reply at a chosen frame. For the fleet
//! tests: `postgres`, a private PostgreSQL 15 on loopback.

pub mod admin_actions;
pub mod cyrus;
pub mod folder_state;
pub mod memspool;
pub mod postgres;
pub mod proxy;
pub mod readers;
pub mod rig;
pub mod truth;

pub use cyrus::{CyrusInstance, CyrusOptions, DeleteMode, ExpungeMode, ScriptSummary};
pub use folder_state::{FolderState, MessageState, QresyncReport, SieveState, UserState};
pub use truth::{FolderTruth, MessageTruth, Truth};
