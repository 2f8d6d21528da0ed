//! `backup-server verify` and `backup-server reindex`: each fault on a line of its own
//! (`user U: FILE at offset N: what; way out`), then a line summing up; a reindex's one
//! line.

use super::{Out, OutputError, Status};
use anyhow::Context;
use backup_server::config::Config;
use backup_server::verify::{reindex_user, verify as verify_stores, Level, VerifyReport};
use std::io::Write;

/// `backup-server verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Only this user (default: every store under the store root).
    #[arg(long)]
    user: Option<String>,
    /// The nightly level: the index's checks and each chunk's framing, no inflating (the
    /// default, full level, reads and hashes every byte and rebuilds the index to compare).
    #[arg(long)]
    quick: bool,
}

/// `backup-server reindex` arguments.
#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    /// The user.
    #[arg(long)]
    user: String,
}

/// Verifies the stores: exit 0 when there is no fault, 1 otherwise.
pub fn verify(
    config: &Config,
    a: &VerifyArgs,
    out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    let level = if a.quick { Level::Quick } else { Level::Full };
    let rep = verify_stores(&config.store_root, a.user.as_deref(), level).context("verify")?;
    print(&rep, out)?;
    Ok(status(&rep))
}

/// What a verify's findings mean for the exit status.
fn status(rep: &VerifyReport) -> Status {
    if rep.is_clean() {
        Status::Ok
    } else {
        Status::Failed
    }
}

fn print(rep: &VerifyReport, out: &mut Out<impl Write>) -> Result<(), OutputError> {
    for (user, fault) in rep.listed() {
        out.line(format_args!(
            "user {user}: {fault}; {}",
            fault.way_out().for_user(user)
        ))?;
    }
    for s in &rep.stores {
        if let Some(d) = &s.damage {
            out.line(format_args!("user {}: {d}", s.user))?;
        }
    }
    if rep.not_listed() > 0 {
        out.line(format_args!("... and {} more faults", rep.not_listed()))?;
    }
    for s in rep.stores.iter().filter(|s| s.immutable) {
        out.line(format_args!(
            "user {}: read without SQLite's shared memory (its file system is full), the writer lock held meanwhile",
            s.user
        ))?;
    }
    let quick = rep.stores.iter().any(|s| s.level == Level::Quick);
    if quick {
        out.line(format_args!(
            "verify --quick: {} stores, {} chunks framed right; {} faults",
            rep.stores.len(),
            rep.chunks(),
            rep.faults()
        ))
    } else {
        out.line(format_args!(
            "verify: {} stores, {} chunks, {} entries, {} messages hashed, {} bytes, {} index rows compared; {} faults",
            rep.stores.len(),
            rep.chunks(),
            rep.entries(),
            rep.messages(),
            rep.bytes(),
            rep.rows(),
            rep.faults()
        ))
    }
}

/// Rebuilds a user's index from the data file.
pub fn reindex(
    config: &Config,
    a: &ReindexArgs,
    out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    let user = &a.user;
    let r = reindex_user(&config.store_root, user).with_context(|| format!("reindex {user}"))?;
    out.line(format_args!(
        "reindex {user}: {} chunks, {} entries ({} of unknown kinds), {} of {} bytes valid, tail {:?}",
        r.chunks, r.entries, r.unknown_entries, r.valid_end, r.file_len, r.tail
    ))?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_server::verify::{Fault, StoreVerdict, UnreadableDir};
    use std::path::PathBuf;

    fn verdict(user: &str, faults: Vec<Fault>, not_listed: u64) -> StoreVerdict {
        StoreVerdict {
            user: user.into(),
            chunks: 2,
            entries: 5,
            messages: 3,
            bytes: 900,
            rows: backup_server::store::CompareCounts {
                found: 40,
                implied: 40,
                ..Default::default()
            },
            faults,
            faults_not_listed: not_listed,
            ..StoreVerdict::default()
        }
    }

    fn rule(problem: &str) -> Fault {
        Fault::IndexRule {
            index: PathBuf::from("/s/ab/cd/u/backupstate.sqlite3"),
            problem: backup_server::store::IndexFault::Sqlite(problem.into()),
        }
    }

    fn printed(rep: &VerifyReport) -> String {
        let mut out = Out::new(Vec::new());
        print(rep, &mut out).unwrap();
        String::from_utf8(out.into_inner()).unwrap()
    }

    #[test]
    fn a_clean_report_is_0_and_any_fault_1() {
        let clean = VerifyReport {
            unreadable: Vec::new(),
            stores: vec![verdict("a", Vec::new(), 0), verdict("b", Vec::new(), 0)],
        };
        assert_eq!(status(&clean).code(), 0);
        assert_eq!(
            printed(&clean),
            "verify: 2 stores, 4 chunks, 10 entries, 6 messages hashed, 1800 bytes, 80 index rows compared; 0 faults\n"
        );
        let faulty = VerifyReport {
            unreadable: Vec::new(),
            stores: vec![
                verdict("a", Vec::new(), 0),
                verdict("b", vec![rule("x")], 0),
            ],
        };
        assert_eq!(status(&faulty).code(), 1);
        // Faults counted but not listed are faults too.
        let unlisted = VerifyReport {
            unreadable: Vec::new(),
            stores: vec![verdict("a", Vec::new(), 3)],
        };
        assert_eq!(status(&unlisted), Status::Failed);
        // So is a directory holding no readable store.
        let dir = VerifyReport {
            unreadable: vec![UnreadableDir {
                name: "zed".into(),
                fault: Fault::NoIndex {
                    index: PathBuf::from("/s/ab/cd/zed/backupstate.sqlite3"),
                    data_file: "backupdata-1.tar.gz".into(),
                    len: 4,
                },
            }],
            stores: Vec::new(),
        };
        assert_eq!(status(&dir), Status::Failed);
        assert_eq!(
            printed(&dir),
            "user zed: /s/ab/cd/zed/backupstate.sqlite3: no index, but data file backupdata-1.tar.gz holds 4 bytes; run backup-server reindex --user zed\n\
             verify: 0 stores, 0 chunks, 0 entries, 0 messages hashed, 0 bytes, 0 index rows compared; 1 faults\n"
        );
    }

    #[test]
    fn faults_are_listed_by_user_then_counted() {
        let rep = VerifyReport {
            unreadable: Vec::new(),
            stores: vec![
                verdict("a", vec![rule("chunk at 0: bad")], 0),
                verdict("b", vec![rule("one"), rule("two")], 7),
            ],
        };
        assert_eq!(
            printed(&rep),
            "user a: /s/ab/cd/u/backupstate.sqlite3: chunk at 0: bad; run backup-server repair --user a\n\
             user b: /s/ab/cd/u/backupstate.sqlite3: one; run backup-server repair --user b\n\
             user b: /s/ab/cd/u/backupstate.sqlite3: two; run backup-server repair --user b\n\
             ... and 7 more faults\n\
             verify: 2 stores, 4 chunks, 10 entries, 6 messages hashed, 1800 bytes, 80 index rows compared; 10 faults\n"
        );
    }
}
