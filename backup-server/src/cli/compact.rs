//! `backup-server compact`.

use super::{Out, Status};
use backup_server::compact::{CompactOptions, DEFAULT_MIN_BYTES, DEFAULT_THRESHOLD};
use backup_server::config::Config;
use backup_server::store::{Clock, StoreOptions, SystemClock};
use std::io::Write;

/// `backup-server compact` arguments.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Only this user (default: every store under the store root).
    #[arg(long)]
    user: Option<String>,
    /// Compact when dirty / total bytes is above this.
    #[arg(long, value_name = "R", default_value_t = DEFAULT_THRESHOLD)]
    threshold: f64,
    /// ... and dirty bytes (uncompressed) are above this.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MIN_BYTES)]
    min_bytes: u64,
    /// Print each user's total, dirty bytes, ratio and decision; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The time to count retention from (default: now): RFC 3339 or unix seconds.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    now: Option<formats::Timestamp>,
}

/// Compacts the stores.
pub fn run(config: &Config, a: &CompactArgs, _out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let o = CompactOptions {
        threshold: a.threshold,
        min_bytes: a.min_bytes,
        dry_run: a.dry_run,
        now: a.now.unwrap_or_else(|| SystemClock.now()),
        retention_secs: i64::from(config.retention_days) * 86_400,
        store: StoreOptions {
            chunk_cap: config.chunk_size_cap,
            gzip_level: config.gzip_level,
            ..StoreOptions::default()
        },
    };
    Ok(Status::from_code(backup_server::compact::run(
        &config.store_root,
        a.user.as_deref(),
        &o,
    )))
}
