//! Figures for the planner on a bulk.py spool (ignored by default; run with
//! `cargo test --release -p tests --test backup_run_bench -- --ignored --nocapture`,
//! options through BENCH_USERS / BENCH_FOLDERS / BENCH_MESSAGES): time of a first backup of
//! every user, of a second one with nothing changed, and peak RSS of the process (backupd
//! runs in it too).

use backup_server::backup::UserOutcome;
use backup_server::store::StoreOptions;
use tests::rig::{backup_all, user_names, Backupd};
use tests::CyrusInstance;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "benchmark: builds a bulk spool"]
fn planner_bench_bulk() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    let (users, folders, messages) = (
        env("BENCH_USERS", "20"),
        env("BENCH_FOLDERS", "8"),
        env("BENCH_MESSAGES", "100"),
    );
    let summary = cyrus
        .bulk(&[
            "--users",
            &users,
            "--folders",
            &folders,
            "--messages",
            &messages,
        ])
        .expect("bulk.py");
    eprintln!("{}", summary.line);
    let backupd = Backupd::start(&cyrus, "planner-bench-secret-0123");
    let mut c = backupd.connect();
    let names = user_names(&mut c);
    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();
    for pass in ["first", "unchanged"] {
        let (outcomes, took) = backup_all(&mut c, root.path(), &opts, &names);
        let mut sum = UserOutcome::default();
        for o in outcomes.values() {
            sum.folders += o.folders;
            sum.meta_copies += o.meta_copies;
            sum.messages_fetched += o.messages_fetched;
            sum.bytes_fetched += o.bytes_fetched;
            sum.messages_stored += o.messages_stored;
        }
        let secs = took.as_secs_f64();
        if pass == "unchanged" {
            assert_eq!((sum.meta_copies, sum.messages_fetched), (0, 0));
        }
        eprintln!(
            "planner bench, {pass} backup: {} users, {} folders, {} meta copies, {} messages \
             ({:.1} MB) fetched, {} stored, in {secs:.2} s: {:.0} users/hour, {:.1} MB/s; \
             peak RSS {} MiB",
            names.len(),
            sum.folders,
            sum.meta_copies,
            sum.messages_fetched,
            sum.bytes_fetched as f64 / 1e6,
            sum.messages_stored,
            names.len() as f64 / secs * 3600.0,
            sum.bytes_fetched as f64 / 1e6 / secs,
            peak_rss_kib() / 1024
        );
    }
    backupd.shutdown();
}
