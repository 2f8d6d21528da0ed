//! The user lifecycle in the state db: users deleted, renamed or created again in Cyrus
//! (docs/backup-server.md, "Users that vanish, are renamed or move"). The decisions are
//! [`crate::lifecycle`]'s; these are the rows they read and write.
//!
//! The columns (schema version 4): `removed_at` (a vanished user's store was removed when
//! its retention ended; the row stays), `renamed_to` (the user was renamed in Cyrus and its
//! store is now that user's), `store_from` (this user's store is still under that name and
//! is to be moved to this one: recorded before the move, cleared after it, so a crash in
//! between leaves the intent to finish, never two stores). Plain SQL, as the rest of the
//! state db.

use super::{StateDb, StateError};
use rusqlite::params;

/// A vanished user whose store is still kept (not removed, not handed to another name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VanishedStore {
    /// The user (the store's name).
    pub name: String,
    /// The mail server that listed it last.
    pub server: String,
    /// When a refresh first no longer listed it.
    pub vanished_at: i64,
}

/// A store still to be moved to the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMove {
    /// The user the store belongs to now.
    pub user: String,
    /// The name the store is still under.
    pub from: String,
}

/// The columns copied from one row to another when a store changes hands: the backup
/// history that describes the store.
const HISTORY: &str = "first_seen, last_success, last_commit, last_attempt, last_error, last_run,
    backups_ok, backups_incomplete, backups_failed, skips, messages_stored, bytes_stored";

/// A row's history cleared: a user whose store is not (or no longer) the one described.
const FRESH: &str = "last_success = NULL, last_commit = NULL, last_attempt = NULL,
    last_error = NULL, last_run = NULL, backups_ok = 0, backups_incomplete = 0,
    backups_failed = 0, skips = 0, messages_stored = 0, bytes_stored = 0, quiet_key = NULL";

impl StateDb {
    fn vanished_where(
        &self,
        cond: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<VanishedStore>, StateError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT name, server, vanished_at FROM users
                 WHERE vanished_at IS NOT NULL AND removed_at IS NULL AND renamed_to IS NULL
                 AND store_from IS NULL {cond} ORDER BY name"
            ))
            .map_err(self.err())?;
        let rows = st
            .query_map(p, |r| {
                Ok(VanishedStore {
                    name: r.get(0)?,
                    server: r.get(1)?,
                    vanished_at: r.get(2)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Vanished users whose stores are kept, by name.
    pub fn vanished_stores(&self) -> Result<Vec<VanishedStore>, StateError> {
        self.vanished_where("", [])
    }

    /// Vanished users whose stores are kept and who vanished at or before `cutoff`: their
    /// retention is over.
    pub fn vanished_before(&self, cutoff: i64) -> Result<Vec<VanishedStore>, StateError> {
        self.vanished_where("AND vanished_at <= ?1", [cutoff])
    }

    /// Listed users in a RAID set that have never had a backup committed and wait for no
    /// store: what a user renamed in Cyrus looks like under its new name (name, server).
    pub fn never_backed_up(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT name, server FROM users WHERE vanished_at IS NULL AND last_commit IS NULL
                 AND store_from IS NULL AND raidset IS NOT NULL ORDER BY name",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Records that `from` was renamed `to` in Cyrus, in one transaction: `to` takes
    /// `from`'s backup history and is to take its store (`store_from`); `from` stays,
    /// vanished (since `now` if it was not yet), naming `to`.
    pub fn record_rename(&mut self, from: &str, to: &str, now: i64) -> Result<(), StateError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let sets: Vec<String> = HISTORY
            .split(',')
            .map(|c| c.trim())
            .map(|c| format!("{c} = (SELECT {c} FROM users WHERE name = ?1)"))
            .collect();
        tx.execute(
            &format!(
                "UPDATE users SET store_from = ?1, quiet_key = NULL, {} WHERE name = ?2",
                sets.join(", ")
            ),
            params![from, to],
        )
        .map_err(self.err())?;
        tx.execute(
            "UPDATE users SET renamed_to = ?2, vanished_at = coalesce(vanished_at, ?3),
             quiet_key = NULL WHERE name = ?1",
            params![from, to, now],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(())
    }

    /// Records that `user` was deleted and created again in Cyrus: the earlier user's store
    /// is to be kept under `kept_as` (a new row, vanished at `vanished_at`, in no RAID set,
    /// with the history, and `store_from` = `user`), and `user` starts afresh. One
    /// transaction.
    pub fn record_recreated(
        &mut self,
        user: &str,
        kept_as: &str,
        vanished_at: i64,
    ) -> Result<(), StateError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute(
            &format!(
                "INSERT INTO users (name, server, partition, raidset, last_seen, vanished_at,
                 store_from, {HISTORY})
                 SELECT ?2, server, partition, NULL, last_seen, ?3, ?1, {HISTORY}
                 FROM users WHERE name = ?1"
            ),
            params![user, kept_as, vanished_at],
        )
        .map_err(self.err())?;
        tx.execute(
            &format!("UPDATE users SET first_seen = last_seen, {FRESH} WHERE name = ?1"),
            params![user],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(())
    }

    /// Stores recorded as still to be moved, by user.
    pub fn pending_moves(&self) -> Result<Vec<PendingMove>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT name, store_from FROM users WHERE store_from IS NOT NULL ORDER BY name",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(PendingMove {
                    user: r.get(0)?,
                    from: r.get(1)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Records that `user`'s store is now under its own name.
    pub fn store_moved(&mut self, user: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE users SET store_from = NULL WHERE name = ?1", [user])
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that the vanished user's store was removed at `now` (the row stays).
    pub fn store_removed(&mut self, user: &str, now: i64) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE users SET removed_at = ?2, quiet_key = NULL
                 WHERE name = ?1 AND vanished_at IS NOT NULL",
                params![user, now],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Users listed again whose row describes a store they no longer have (removed after
    /// its retention, or handed to the user it was renamed to): the row starts afresh, as
    /// a new user's. Returns their names.
    pub fn reset_returned(&mut self) -> Result<Vec<String>, StateError> {
        let names: Vec<String> = {
            let mut st = self
                .conn
                .prepare(
                    "SELECT name FROM users WHERE vanished_at IS NULL
                     AND (removed_at IS NOT NULL OR renamed_to IS NOT NULL) ORDER BY name",
                )
                .map_err(self.err())?;
            let rows = st
                .query_map([], |r| r.get(0))
                .map_err(self.err())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.err())?;
            rows
        };
        for n in &names {
            self.conn
                .execute(
                    &format!(
                        "UPDATE users SET removed_at = NULL, renamed_to = NULL,
                         first_seen = last_seen, {FRESH} WHERE name = ?1"
                    ),
                    [n],
                )
                .map_err(self.err())?;
        }
        Ok(names)
    }
}
