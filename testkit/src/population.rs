//! The made-up population the report's benchmarks run over (backup-server's `report_bench`
//! test and `mailbackup-tools bench` W6).

use crate::Rng;
use rusqlite::Connection;

/// Fills the `users` table of the state db `conn` with `users` made-up users whose last
/// backups spread the way a real night leaves them (most within a day, 9 % up to ten days
/// behind, 1 % never backed up, 1 % vanished), deterministically: the same spread on every
/// machine. Plain SQL over the state db's schema (backup-server's `state` module).
pub fn fill(conn: &Connection, users: u64, now: i64) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO users (name, server, partition, raidset, first_seen, last_seen,
                                vanished_at, last_success, last_attempt)
             VALUES (?1, ?2, 'default', ?3, ?4, ?4, ?5, ?6, ?6)",
        )?;
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        for i in 0..users {
            let x = rng.next_u64();
            let last_success = match x % 100 {
                0 => None,
                1..=9 => Some(now - (x >> 8) as i64 % (10 * 86_400)),
                _ => Some(now - (x >> 8) as i64 % 86_400),
            };
            let vanished = (x % 100 == 99).then_some(now - 3600);
            ins.execute(rusqlite::params![
                format!("user{i:06}"),
                format!("mail{}", i % 8),
                format!("r{}", i % 16),
                now - 400 * 86_400,
                vanished,
                last_success,
            ])?;
        }
    }
    tx.commit()
}
