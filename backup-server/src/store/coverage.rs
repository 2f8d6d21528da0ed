//! How far back a store reaches: what a restore or `ls` at an older time can still find.
//!
//! Run markers are never dirty, so the oldest run is the store's first backup: nothing
//! older was ever held ([`Catalog::first_backup`]). Compaction drops the rest of what no
//! restore inside the retention window needs (docs/store.md, "Dirty bytes"): snapshots
//! superseded before the cutoff, folders deleted and messages expunged before it. It
//! leaves no record of itself but the new data file, whose name carries the time it was
//! written ([`Catalog::rewritten_on`]); a folder named at a time older than its oldest
//! snapshot kept ([`Catalog::oldest_snapshot`]) lost its state of then.

use formats::Timestamp;
use rusqlite::OptionalExtension;

use super::catalog::Catalog;
use super::error::{Result, SqlContext};
use super::ingest::from_ns;
use super::layout::data_file_secs;

impl Catalog {
    /// When the store's first backup run was done: the time of its last entry (its end
    /// marker, or for a run that never ended its last entry written), the oldest time as
    /// of which the store holds a backup (`None`: no run yet). Run markers are never
    /// dirty, so compaction keeps this.
    pub fn first_backup(&self) -> Result<Option<Timestamp>> {
        let t: Option<i64> = self
            .db
            .conn
            .prepare_cached(
                // Entries are numbered in file order and runs follow each other: a run
                // that never ended ends just before the next one starts.
                "SELECT coalesce(r.ended,
                        (SELECT time FROM entries WHERE id = coalesce(
                            (SELECT min(start_entry) FROM runs WHERE run > r.run) - 1,
                            (SELECT max(id) FROM entries))),
                        r.started)
                 FROM runs r ORDER BY r.run LIMIT 1",
            )
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
            .sql(&self.db.path)?
            .flatten();
        Ok(t.map(from_ns))
    }

    /// When the store's data file was last rewritten (by a compaction, or a repair), if it
    /// was: the time its name carries, when that is later than the first backup (a store's
    /// first data file is created just before its first run).
    pub fn rewritten_on(&self) -> Result<Option<Timestamp>> {
        let Some(secs) = data_file_secs(self.data_file_name()) else {
            return Ok(None);
        };
        Ok(match self.first_backup()? {
            Some(first) if secs > first.secs => Some(Timestamp::from_secs(secs)),
            _ => None,
        })
    }

    /// The time of folder `unique_id`'s oldest snapshot the store holds.
    pub fn oldest_snapshot(&self, unique_id: &str) -> Result<Option<Timestamp>> {
        let t: Option<i64> = self
            .db
            .conn
            .prepare_cached(
                "SELECT min(time) FROM snapshots
                 WHERE folder_key = (SELECT id FROM folders WHERE uniqueid = ?1)",
            )
            .and_then(|mut st| st.query_row([unique_id], |r| r.get(0)).optional())
            .sql(&self.db.path)?
            .flatten();
        Ok(t.map(from_ns))
    }
}
