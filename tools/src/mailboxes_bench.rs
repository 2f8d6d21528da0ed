//! mailboxes-bench: reads a Cyrus mailbox list the way backupd does and reports what it cost.
//! Driven by tools/mailboxes-bench.sh, which compares it with Cyrus's own tools.
//!
//! Usage: mailboxes-bench <imapd.conf> [window|whole]
//!        mailboxes-bench <imapd.conf> lookup <userid>...
//!        mailboxes-bench <imapd.conf> users [REPEATS]
//!
//! * `window` (default, what backupd does): the file is walked through a 256 KiB window, the
//!   shared lock taken for each batch of `backupd::spool::BATCH` mailboxes.
//! * `whole`: the file is read whole under the lock, the lock released, then parsed.
//! * `lookup`: one user's mailboxes at a time, by seeking (backupd's per-user request).
//! * `users`: what one LIST_USERS costs the daemon (`Spool::users`), asked REPEATS times
//!   (default 3) of one `Spool` as the daemon keeps it: one line per request (seconds, peak
//!   and resident MB after it), so that a first request and the repeats are seen apart.
//!
//! Prints one line: users, mailboxes, seconds holding the lock (in window mode: per batch, on
//! average), total seconds, and the
//! process's memory from /proc/self/status (peak, and what is still resident at the end,
//! i.e. the list itself).

use anyhow::Context;
use backupd::spool;
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let conf_path = args
        .next()
        .context("usage: mailboxes-bench <imapd.conf> [window|whole]")?;
    let mode = args.next().unwrap_or_else(|| "window".into());
    let conf = spool::load_imapd_conf(Path::new(&conf_path))?;

    if mode == "users" {
        let repeats: usize = args.next().map_or(Ok(3), |r| r.parse())?;
        let spool = spool::Spool::open(Path::new(&conf_path))?;
        let mut out = Vec::new();
        for n in 1..=repeats {
            let start = Instant::now();
            let users = spool.users()?;
            let got = start.elapsed();
            // What the handler then does: entries and USERS frames, 8,192 users at a time.
            let mut bytes = 0;
            for from in (0..users.len()).step_by(8192) {
                let batch = users.entries(from..(from + 8192).min(users.len()));
                out.clear();
                formats::protocol::encode_users(1, &batch, &mut out)?;
                bytes += out.len();
            }
            println!(
                "users request {n}: {} users, list in {:.6} s, encoded ({bytes} bytes) in \
                 {:.6} s, reads {} kept_MB {:.1} peak_MB {} resident_MB {}",
                users.len(),
                got.as_secs_f64(),
                (start.elapsed() - got).as_secs_f64(),
                spool.user_list_cache().builds(),
                users.heap_bytes() as f64 / 1e6,
                status_mb("VmHWM"),
                status_mb("RssAnon"),
            );
        }
        return Ok(());
    }
    if mode == "lookup" {
        for user in args {
            let start = Instant::now();
            let found = spool::user_mailboxes(&conf, &user)?;
            println!(
                "lookup {user}: {} mailboxes in {:.3} ms",
                found.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        return Ok(());
    }
    let start = Instant::now();
    let (list, locked) = match mode.as_str() {
        "window" => {
            let list = spool::read_mailbox_list(&conf)?;
            let batches = list.mailbox_count().div_ceil(spool::BATCH).max(1);
            (list, start.elapsed() / batches as u32)
        }
        "whole" => {
            let path = spool::mailboxes_db_path(&conf)?;
            let data = spool::read_locked(&path)?;
            let locked = start.elapsed();
            let list =
                spool::list_mailboxes(&data[..], conf.deletedprefix(), conf.spool_hashing()?)
                    .with_context(|| path.display().to_string())?;
            (list, locked)
        }
        other => anyhow::bail!("unknown mode {other:?}: window or whole"),
    };
    let total = start.elapsed();

    println!(
        "mode {mode} users {} mailboxes {} lock_held_s {:.3} total_s {:.3} peak_MB {} list_MB {}",
        list.users.len(),
        list.mailbox_count(),
        locked.as_secs_f64(),
        total.as_secs_f64(),
        status_mb("VmHWM"),
        status_mb("RssAnon"),
    );
    Ok(())
}

/// A "kB" line of /proc/self/status, in MB ("?" where there is no such file).
fn status_mb(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(key))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1}", kb as f64 / 1024.0))
        })
        .unwrap_or_else(|| "?".into())
}
