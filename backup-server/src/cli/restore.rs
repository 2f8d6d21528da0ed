//! `backup-server restore`.

use super::{Out, Status};
use backup_server::config::Config;
use std::io::Write;

pub use backup_server::restore::RestoreArgs;

/// Restores.
pub fn run(config: &Config, a: &RestoreArgs, _out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    Ok(Status::from_code(backup_server::restore::run(
        &config.store_root,
        a,
    )))
}
