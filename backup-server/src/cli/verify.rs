//! `backup-server verify` and `backup-server reindex`.

use super::{Out, Status};
use backup_server::config::Config;
use std::io::Write;

/// `backup-server verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Only this user (default: every store under the store root).
    #[arg(long)]
    user: Option<String>,
}

/// `backup-server reindex` arguments.
#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    /// The user.
    #[arg(long)]
    user: String,
}

/// Verifies the stores.
pub fn verify(
    config: &Config,
    a: &VerifyArgs,
    _out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    Ok(Status::from_code(backup_server::verify::run_verify(
        &config.store_root,
        a.user.as_deref(),
    )))
}

/// Rebuilds a user's index.
pub fn reindex(
    config: &Config,
    a: &ReindexArgs,
    _out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    Ok(Status::from_code(backup_server::verify::run_reindex(
        &config.store_root,
        &a.user,
    )))
}
