//! The backup host's library: store, planner, scheduler, state db, restore, compaction and
//! report. Built so far: the per-user store ([`store`]); the rest follows the backup-server
//! issues.

pub mod store;
