//! Benchmark: the backup-age report over 500,000 users answers in under a second.
//!
//! Ignored by default (building the state db takes a few seconds); run in release mode:
//! `cargo test --release -p backup-server --test report_bench -- --ignored --nocapture`.

use backup_server::report;
use backup_server::state::StateDb;
use std::process::Command;
use std::time::{Duration, Instant};

const USERS: u64 = 500_000;
const NOW: i64 = 1_795_406_400;

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn report_over_500k_users_under_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store/state.sqlite3");
    let t = Instant::now();
    {
        let db = StateDb::open(&path).unwrap();
        testkit::population::fill(db.connection(), USERS, NOW).unwrap();
    }
    println!("built a state db of {USERS} users in {:?}", t.elapsed());

    // The library: open read-only and run docs/report.sql; best of 3 and the first (cold).
    let mut times = Vec::new();
    let mut rep = None;
    for _ in 0..3 {
        let t = Instant::now();
        let conn = report::open_state_db(&path).unwrap();
        let r = report::query(&conn, NOW, 24).unwrap();
        times.push(t.elapsed());
        rep = Some(r);
    }
    let rep = rep.unwrap();
    assert!(rep.users() > USERS * 97 / 100 && rep.users() < USERS);
    println!(
        "report (library): {} users in {} rows, {} over 24 h; first {:?}, best {:?}",
        rep.users(),
        rep.rows.len(),
        rep.over_max_age(),
        times[0],
        times.iter().min().unwrap()
    );

    // The whole program, as cron runs it: start, parse the config, open, query, print.
    let config = dir.path().join("backup-server.toml");
    testkit::config::ServerConfig::minimal("127.0.0.1:1")
        .write_with_secrets(&config, "bench-secret-0123456789abcdef")
        .unwrap();
    let mut bin_times = Vec::new();
    for format in ["table", "json", "prometheus"] {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_backup-server"))
            .arg("--config")
            .arg(&config)
            .args(["report", "--now", &NOW.to_string(), "--format", format])
            .output()
            .unwrap();
        bin_times.push(t.elapsed());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("report (binary, table/json/prometheus): {bin_times:?}");
    let worst = times.iter().chain(&bin_times).max().unwrap();
    assert!(
        *worst < Duration::from_secs(1),
        "the report took {worst:?} over {USERS} users"
    );
}
