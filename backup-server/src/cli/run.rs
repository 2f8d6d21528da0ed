//! `backup-server run`: the nightly job ([`backup_server::nightly::run`]), its summary on
//! stdout and the exit status the summary decides ([`backup_server::summary::exit_status`]).

use super::{error_text, Out, Status};
use anyhow::Context;
use backup_server::config::Config;
use backup_server::nightly::{self, ProgressMode, RunRequest};
use backup_server::summary;
use std::io::Write;
use std::sync::atomic::AtomicBool;

/// `backup-server run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only this user (repeatable).
    #[arg(long = "user", value_name = "USER")]
    users: Vec<String>,
    /// Only the users of this RAID set.
    #[arg(long, value_name = "NAME")]
    raidset: Option<String>,
    /// Read every server's user list first, however recent the last refresh.
    #[arg(long)]
    refresh: bool,
    /// Progress: auto (a bar on a terminal, log lines otherwise), log, quiet.
    #[arg(long, default_value = "auto", value_parser = ["auto", "log", "quiet"])]
    progress: String,
}

/// Runs the nightly job and prints its summary.
pub fn run(
    config: &Config,
    a: &RunArgs,
    stop: &AtomicBool,
    out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    let req = RunRequest {
        users: a.users.clone(),
        raidset: a.raidset.clone(),
        force_refresh: a.refresh,
    };
    let mode = match a.progress.as_str() {
        "log" => ProgressMode::Log,
        "quiet" => ProgressMode::Quiet,
        _ => ProgressMode::Auto,
    };
    let result = nightly::run(config, &req, stop, mode);
    let status = Status::from_code(summary::exit_status(&result));
    match &result {
        Ok(s) => {
            out.line(format_args!("{s}"))?;
            tracing::info!(
                status = s.status_word(),
                done = s.users_done,
                incomplete = s.users_incomplete,
                skipped = s.users_skipped,
                failed = s.users_failed,
                not_reached = s.users_not_reached,
                "run ended"
            );
        }
        Err(e) => tracing::error!("run failed: {}", error_text(e)),
    }
    result.context("run failed")?;
    Ok(status)
}
