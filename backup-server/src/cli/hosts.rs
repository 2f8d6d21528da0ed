//! `backup-server hosts`: the backup hosts sharing the state db, one line each: users
//! assigned, latest run, heartbeat, state ([`backup_server::state::HostRow::state`]).

use super::{Out, Status};
use anyhow::Context;
use backup_server::backup::unix_now;
use backup_server::config::Config;
use backup_server::state::StateDb;
use std::io::Write;

fn when(t: Option<i64>) -> String {
    t.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || "-".into(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// Lists the hosts; exit 2 when one is dead (a run recorded as running stopped renewing
/// its leases).
pub fn run(config: &Config, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let db = StateDb::open_at(&config.state, &config.host_name).context("hosts")?;
    let hosts = db.hosts().context("hosts")?;
    let now = unix_now();
    out.line(format_args!(
        "{:<24} {:>8}  {:<9}  {:<19}  {:<19}  {:<11}  heartbeat",
        "host", "users", "state", "last run started", "last run ended", "status"
    ))?;
    let mut dead = false;
    for h in &hosts {
        let state = h.state(now);
        dead |= state == "dead";
        let (started, ended, status) = match &h.last_run {
            Some((_, s, e, st)) => (Some(*s), *e, st.as_str()),
            None => (None, None, "-"),
        };
        out.line(format_args!(
            "{:<24} {:>8}  {:<9}  {:<19}  {:<19}  {:<11}  {}",
            h.name,
            h.users,
            state,
            when(started),
            when(ended),
            status,
            when(h.heartbeat)
        ))?;
    }
    Ok(if dead { Status::Incomplete } else { Status::Ok })
}
