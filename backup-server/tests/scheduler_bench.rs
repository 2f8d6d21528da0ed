//! The run's own overhead (scheduler, state db row per user, summary) with a backup that
//! does nothing: `cargo test --release -p backup-server --test scheduler_bench -- --ignored --nocapture`.

use backup_server::backup::{self, NoProgress, RunRequest};
use backup_server::backup::{BackupError, UserOutcome};
use backup_server::config::Config;
use backup_server::scheduler::{Backend, ScheduledUser};
use backup_server::state::StateDb;
use formats::protocol::UserEntry;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use testkit::config::ServerConfig;

struct Nothing;

impl Backend for Nothing {
    type Worker = ();
    type Outcome = Result<UserOutcome, BackupError>;
    fn new_worker(&self, _: usize) {}
    fn backup(&self, _: &mut (), _: &ScheduledUser) -> Result<UserOutcome, BackupError> {
        Ok(UserOutcome::default())
    }
}

#[test]
#[ignore = "benchmark"]
fn run_overhead_per_user() {
    let users = 100_000;
    let sets = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut text = ServerConfig::new("store").server("m", "127.0.0.1:1", "s");
    for s in 0..sets {
        text = text.raidset(&format!("r{s}"), "m", &[&format!("p{s}")]);
    }
    let path = dir.path().join("c.toml");
    text.write(&path).unwrap();
    let config = Config::load(&path).unwrap();
    let entries: Vec<UserEntry> = (0..users)
        .map(|i| UserEntry {
            user: format!("user{i:06}"),
            partition: format!("p{}", i % sets),
        })
        .collect();
    let t = Instant::now();
    let mut db = StateDb::open(&config.state_db).unwrap();
    let raidset_of = |p: &str| config.raidset_of("m", p).map(|r| r.name.clone());
    db.refresh_server(
        "m",
        "127.0.0.1:1",
        &entries,
        &raidset_of,
        backup::unix_now(),
    )
    .unwrap();
    let refresh = t.elapsed();
    drop(db);
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let s = backup::run_with(
        &config,
        &RunRequest::default(),
        &stop,
        &mut NoProgress,
        &Nothing,
    )
    .unwrap();
    let run = t.elapsed();
    assert_eq!(s.users_done, users as u64);
    println!(
        "refresh of {users} users: {:.2} s; run over {users} users in {sets} RAID sets: {:.2} s ({:.0} users/s of overhead)",
        refresh.as_secs_f64(),
        run.as_secs_f64(),
        users as f64 / run.as_secs_f64()
    );
}
