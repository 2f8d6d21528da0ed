//! `backup-server users refresh`: every server's user list read into the state db
//! ([`backup_server::backup::refresh`]), one line per server; `users assign U... --to HOST`:
//! users given to a backup host (docs/fleet.md).

use super::{Out, Status};
use anyhow::Context;
use backup_server::backup;
use backup_server::config::Config;
use backup_server::state::StateDb;
use std::io::Write;

/// `backup-server users ...`.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Read every backupd's user list into the state db (vanished users are marked; users
    /// of no backup host yet become this host's).
    Refresh,
    /// Give users to a backup host (docs/fleet.md). The store does not move: that host's
    /// next run backs them up in full.
    Assign {
        /// The users.
        #[arg(required = true)]
        users: Vec<String>,
        /// The backup host (its `host_name`).
        #[arg(long, value_name = "HOST")]
        to: String,
    },
}

/// Runs `users refresh`: exit 0 when every server answered, 2 when some did not, 1 when
/// none did.
pub fn run(
    config: &Config,
    command: &UsersCommand,
    out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    let refresh = match command {
        UsersCommand::Refresh => true,
        UsersCommand::Assign { users, to } => {
            let mut db =
                StateDb::open_at(&config.state, &config.host_name).context("users assign")?;
            let n = db
                .assign_users(users, to, backup::unix_now())
                .context("users assign")?;
            out.line(format_args!("{n} users assigned to backup host {to}"))?;
            false
        }
    };
    if !refresh {
        return Ok(Status::Ok);
    }
    let report = StateDb::open_at(&config.state, &config.host_name)
        .and_then(|mut db| backup::refresh(config, &mut db, true))
        .context("users refresh")?;
    for (server, r) in &report.servers {
        match r {
            Ok(c) => out.line(format_args!(
                "{server}: {} users listed, {} new, {} moved, {} vanished, {} back, {} on no RAID set",
                c.listed, c.added, c.moved, c.vanished, c.returned, c.unassigned
            ))?,
            Err(e) => out.line(format_args!("{server}: not refreshed: {e}"))?,
        }
    }
    let l = &report.lifecycle;
    for (from, to) in &l.renamed {
        out.line(format_args!(
            "{from}: renamed {to} in Cyrus: the store follows"
        ))?;
    }
    for (user, kept) in &l.recreated {
        out.line(format_args!(
            "{user}: deleted and created again in Cyrus: a new store; the old one kept as {kept}"
        ))?;
    }
    for (from, to) in &l.moved {
        out.line(format_args!("{to}: store moved from {from}"))?;
    }
    for user in &l.restarted {
        out.line(format_args!(
            "{user}: listed again after its store was removed or handed on: starts afresh"
        ))?;
    }
    for (user, why) in &l.problems {
        out.line(format_args!("{user}: not followed yet: {why}"))?;
    }
    Ok(match report.failed() {
        0 if !l.problems.is_empty() => Status::Incomplete,
        0 => Status::Ok,
        n if n == report.servers.len() => Status::Failed,
        _ => Status::Incomplete,
    })
}
