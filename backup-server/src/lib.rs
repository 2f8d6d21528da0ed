//! The backup host's library: store, planner, scheduler, state db, restore, compaction and
//! report. Built so far: the per-user store ([`store`]), one user's backup ([`planner`],
//! [`ls`]), and the nightly run: [`config`], [`state`] (the state db), [`scheduler`],
//! [`nightly`] (run and users refresh), [`summary`] (output, exit status), [`cli`]; the backup-age
//! [`report`]; getting mail back ([`restore`]) and proving stores good ([`verify`], with
//! reindex); [`compact`] rewrites stores whose dirty ratio passes a threshold.
//! docs/backup-server.md describes the run.

pub mod client;
pub mod compact;
pub mod config;
pub mod ls;
pub mod nightly;
pub mod planner;
pub mod point_in_time;
pub mod report;
pub mod restore;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod summary;
pub mod verify;
