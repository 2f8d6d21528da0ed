//! What the tests and benchmarks of every crate of the workspace share, once.
//!
//! It depends on none of the workspace's crates, so that backupd's and backup-server's own
//! tests can use it (as a dev-dependency) as well as the end-to-end `tests` crate and `tools`
//! (which depend on backup-server).
//!
//! * [`Rng`]: a small seeded generator (xorshift64) for test data and random moments.
//! * [`wait`]: waiting on a condition or a process with a deadline that only a stuck test
//!   reaches, never a slow machine.
//! * [`config`]: backup-server configuration files and secret files.
//! * [`population`]: the made-up state db the report's benchmarks run over.
//! * [`postgres`]: a private PostgreSQL 15 on loopback (the state db of a fleet).
//! * [`python`]: restored Maildirs and mboxes read back with Python's `mailbox` module.

pub mod config;
pub mod population;
pub mod postgres;
pub mod python;
mod rng;
pub mod wait;

pub use rng::Rng;
