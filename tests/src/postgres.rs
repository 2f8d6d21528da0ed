//! The fleet tests' private PostgreSQL 15 (testkit's, so that backup-server's own state db
//! tests share it): started by tests/postgres/start.sh, stopped on drop.

pub use testkit::postgres::*;
