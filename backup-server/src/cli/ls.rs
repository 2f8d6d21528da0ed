//! `backup-server ls`: folders and messages of a user's backup as of a point in time.

use super::{Out, Status};
use backup_server::config::Config;
use std::io::Write;

/// `backup-server ls` arguments.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The user.
    #[arg(long)]
    user: String,
    /// Only this folder (its messages are listed).
    #[arg(long)]
    folder: Option<String>,
    /// The point in time: RFC 3339 (2026-11-23T04:00:00Z) or unix seconds.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    at: Option<formats::Timestamp>,
}

/// Prints the listing.
pub fn run(config: &Config, a: &LsArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let mut text = Vec::new();
    let r = backup_server::ls::ls(
        &config.store_root,
        &a.user,
        a.folder.as_deref(),
        a.at,
        &mut text,
    );
    out.text(&String::from_utf8_lossy(&text))?;
    r.map_err(|e| e.context("ls"))?;
    Ok(Status::Ok)
}
