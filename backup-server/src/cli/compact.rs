//! `backup-server compact`: first one line per vanished user whose store is removed (its
//! `vanished_retention_days` over; [`remove_expired`]), then one line per store as it is done (user, total and dirty bytes,
//! ratio, decision, and the size after a rewrite); a store that fails is named on stderr.

use super::{Out, Status};
use anyhow::Context;
use backup_server::compact::{
    compactions, CompactOptions, CompactReport, Decision, StoreCompaction, DEFAULT_MIN_BYTES,
    DEFAULT_THRESHOLD,
};
use backup_server::config::Config;
use backup_server::lifecycle::{remove_expired, Removal, RemoveOutcome};
use backup_server::state::StateDb;
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

/// Compacts the stores, printing each one's line as it is done (a closed stdout stops
/// before the next store): exit 0, or 1 when any store failed.
pub fn run(config: &Config, a: &CompactArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
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
    let mut failed = false;
    // Deleted users first: a store about to be removed is not worth compacting.
    if a.user.is_none() && config.state_db.exists() {
        let mut db = StateDb::open(&config.state_db).context("compact: the state db")?;
        let removals = remove_expired(
            &config.store_root,
            &mut db,
            o.now.secs,
            config.vanished_retention_days,
            o.dry_run,
        )
        .context("compact: vanished users")?;
        for r in &removals {
            match &r.result {
                Ok(outcome) => out.line(format_args!(
                    "{}",
                    removal_line(r, *outcome, config.vanished_retention_days)
                ))?,
                Err(e) => {
                    failed = true;
                    eprintln!(
                        "backup-server: compact {}: removing the vanished user's store: {e}",
                        r.user
                    )
                }
            }
        }
    }
    let mut report = CompactReport {
        dry_run: o.dry_run,
        users: Vec::new(),
    };
    for c in compactions(&config.store_root, a.user.as_deref(), &o).context("compact")? {
        match &c.result {
            Ok(r) => {
                out.line(format_args!("{}", line(r, o.dry_run)))?;
                for d in &r.dropped_damaged {
                    out.line(format_args!(
                        "{}	message {} was damaged ({}): its only copy dropped; the next run fetches it again if the mail server still has it",
                        r.user,
                        d.guid.to_hex(),
                        d.why
                    ))?;
                }
            }
            Err(e) => eprintln!("backup-server: compact {}: {e}", c.user),
        }
        report.users.push(c);
    }
    Ok(if failed {
        Status::Failed
    } else {
        status(&report)
    })
}

/// A vanished user's line: user, when it vanished, what became of its store.
fn removal_line(r: &Removal, outcome: RemoveOutcome, days: u32) -> String {
    let what = match outcome {
        RemoveOutcome::Removed => "store removed",
        RemoveOutcome::AlreadyGone => "store already gone, marked removed",
        RemoveOutcome::Locked => {
            "store not removed: a backup holds it (the next compact removes it)"
        }
        RemoveOutcome::WouldRemove => "would remove the store",
    };
    format!(
        "{}\tvanished {}\t{what} (vanished_retention_days {days} over)",
        r.user,
        backup_server::point_in_time::when(Some(formats::Timestamp::from_secs(r.vanished_at)))
    )
}

/// What a compaction means for the exit status.
fn status(report: &CompactReport) -> Status {
    if report.failed() == 0 {
        Status::Ok
    } else {
        Status::Failed
    }
}

/// A decision in words.
fn word(d: Decision, dry_run: bool) -> &'static str {
    match (d, dry_run) {
        (Decision::Compact, true) => "would compact",
        (Decision::Compact, false) => "compacted",
        (Decision::UnderThreshold, _) => "under threshold",
        (Decision::UnderMinimum, _) => "under minimum",
        (Decision::Locked, _) => "skipped: backup running",
    }
}

/// One store's line: user, total, dirty, ratio, decision (and the size after).
fn line(r: &StoreCompaction, dry_run: bool) -> String {
    let mut s = format!(
        "{}\ttotal {}\tdirty {}\tratio {:.3}\t{}",
        r.user,
        r.before.total_bytes,
        r.before.dirty_bytes,
        r.before.dirty_ratio(),
        word(r.decision, dry_run)
    );
    if let Some(a) = &r.after {
        s.push_str(&format!(
            "\tnow total {} (file {} -> {} bytes)",
            a.total_bytes, r.before.file_len, a.file_len
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_server::compact::UserCompaction;
    use backup_server::store::{StoreError, Usage};

    fn store(user: &str, decision: Decision, after: Option<Usage>) -> StoreCompaction {
        StoreCompaction {
            user: user.into(),
            before: Usage {
                total_bytes: 4000,
                dirty_bytes: 1000,
                file_len: 1500,
                ..Usage::default()
            },
            decision,
            after,
            new_data_file: None,
            dropped_damaged: Vec::new(),
        }
    }

    #[test]
    fn lines_say_the_decision() {
        let r = store("u", Decision::Compact, None);
        assert_eq!(
            line(&r, true),
            "u\ttotal 4000\tdirty 1000\tratio 0.250\twould compact"
        );
        let after = Usage {
            total_bytes: 3000,
            file_len: 1100,
            ..Usage::default()
        };
        let r = store("u", Decision::Compact, Some(after));
        assert_eq!(
            line(&r, false),
            "u\ttotal 4000\tdirty 1000\tratio 0.250\tcompacted\tnow total 3000 (file 1500 -> 1100 bytes)"
        );
        let r = store("u", Decision::Locked, None);
        assert!(line(&r, false).ends_with("\tskipped: backup running"));
    }

    #[test]
    fn any_failed_store_is_1() {
        let ok = |user: &str| UserCompaction {
            user: user.into(),
            result: Ok(store(user, Decision::UnderMinimum, None)),
        };
        let mut report = CompactReport {
            dry_run: false,
            users: vec![ok("a"), ok("b")],
        };
        assert_eq!(status(&report).code(), 0);
        assert_eq!(status(&CompactReport::default()), Status::Ok);
        report.users.push(UserCompaction {
            user: "c".into(),
            result: Err(StoreError::NoStore {
                user: "c".into(),
                dir: "/s/c".into(),
            }),
        });
        assert_eq!(report.failed(), 1);
        assert_eq!(status(&report).code(), 1);
    }
}
