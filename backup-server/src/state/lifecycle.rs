//! The user lifecycle in the state db: users deleted, renamed or created again in Cyrus
//! (docs/backup-server.md, "Users that vanish, are renamed or move"). The decisions are
//! [`crate::lifecycle`]'s; these are the rows they read and write.
//!
//! The columns (schema version 5): `removed_at` (a vanished user's store was removed when
//! its retention ended; the row stays), `renamed_to` (the user was renamed in Cyrus and its
//! store is now that user's), `store_from` (this user's store is still under that name and
//! is to be moved to this one: recorded before the move, cleared after it, so a crash in
//! between leaves the intent to finish, never two stores). Plain SQL, as the rest of the
//! state db.

use super::backend::{vals, Row, Value};
use super::{StateDb, StateError};

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
    fn vanished_where(&self, cond: &str, p: &[Value]) -> Result<Vec<VanishedStore>, StateError> {
        let rows = self
            .conn
            .query(
                &format!(
                    "SELECT name, server, vanished_at FROM users
                     WHERE vanished_at IS NOT NULL AND removed_at IS NULL AND renamed_to IS NULL
                     AND store_from IS NULL {cond} ORDER BY name"
                ),
                p,
            )
            .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                Ok(VanishedStore {
                    name: r.text(0)?,
                    server: r.text(1)?,
                    vanished_at: r.int(2)?,
                })
            })
            .collect::<Result<Vec<_>, super::backend::ColumnError>>()
            .map_err(|x| self.err()(x.into()))
    }

    /// Vanished users whose stores are kept, by name.
    pub fn vanished_stores(&self) -> Result<Vec<VanishedStore>, StateError> {
        self.vanished_where("", vals![])
    }

    /// Vanished users whose stores are kept and who vanished at or before `cutoff`: their
    /// retention is over.
    pub fn vanished_before(&self, cutoff: i64) -> Result<Vec<VanishedStore>, StateError> {
        self.vanished_where("AND vanished_at <= ?1", vals![cutoff])
    }

    fn text_pairs(&self, sql: &str) -> Result<Vec<(String, String)>, StateError> {
        let rows: Vec<Row> = self.conn.query(sql, vals![]).map_err(self.err())?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect::<Result<Vec<_>, super::backend::ColumnError>>()
            .map_err(|x| self.err()(x.into()))
    }

    /// Listed users in a RAID set that have never had a backup committed and wait for no
    /// store: what a user renamed in Cyrus looks like under its new name (name, server).
    pub fn never_backed_up(&self) -> Result<Vec<(String, String)>, StateError> {
        self.text_pairs(
            "SELECT name, server FROM users WHERE vanished_at IS NULL AND last_commit IS NULL
             AND store_from IS NULL AND raidset IS NOT NULL ORDER BY name",
        )
    }

    /// Records that `from` was renamed `to` in Cyrus, in one transaction: `to` takes
    /// `from`'s backup history and is to take its store (`store_from`); `from` stays,
    /// vanished (since `now` if it was not yet), naming `to`.
    pub fn record_rename(&mut self, from: &str, to: &str, now: i64) -> Result<(), StateError> {
        let e = self.err();
        let sets: Vec<String> = HISTORY
            .split(',')
            .map(|c| c.trim())
            .map(|c| format!("{c} = (SELECT {c} FROM users WHERE name = ?1)"))
            .collect();
        self.conn.transaction(&e, |c| {
            c.execute(
                &format!(
                    "UPDATE users SET store_from = ?1, quiet_key = NULL, {} WHERE name = ?2",
                    sets.join(", ")
                ),
                vals![from, to],
            )
            .map_err(&e)?;
            c.execute(
                "UPDATE users SET renamed_to = ?2, vanished_at = coalesce(vanished_at, ?3),
                 quiet_key = NULL WHERE name = ?1",
                vals![from, to, now],
            )
            .map_err(&e)?;
            Ok(())
        })
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
        let e = self.err();
        self.conn.transaction(&e, |c| {
            c.execute(
                &format!(
                    "INSERT INTO users (name, server, partition, raidset, last_seen, vanished_at,
                     store_from, host, {HISTORY})
                     SELECT ?2, server, partition, NULL, last_seen, ?3, ?1, host, {HISTORY}
                     FROM users WHERE name = ?1"
                ),
                vals![user, kept_as, vanished_at],
            )
            .map_err(&e)?;
            c.execute(
                &format!("UPDATE users SET first_seen = last_seen, {FRESH} WHERE name = ?1"),
                vals![user],
            )
            .map_err(&e)?;
            Ok(())
        })
    }

    /// Stores recorded as still to be moved, by user.
    pub fn pending_moves(&self) -> Result<Vec<PendingMove>, StateError> {
        Ok(self
            .text_pairs(
                "SELECT name, store_from FROM users WHERE store_from IS NOT NULL ORDER BY name",
            )?
            .into_iter()
            .map(|(user, from)| PendingMove { user, from })
            .collect())
    }

    /// Records that `user`'s store is now under its own name.
    pub fn store_moved(&mut self, user: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE users SET store_from = NULL WHERE name = ?1",
                vals![user],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that the vanished user's store was removed at `now` (the row stays).
    pub fn store_removed(&mut self, user: &str, now: i64) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE users SET removed_at = ?2, quiet_key = NULL
                 WHERE name = ?1 AND vanished_at IS NOT NULL",
                vals![user, now],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Users listed again whose row describes a store they no longer have (removed after
    /// its retention, or handed to the user it was renamed to): the row starts afresh, as
    /// a new user's. Returns their names.
    pub fn reset_returned(&mut self) -> Result<Vec<String>, StateError> {
        let rows = self
            .conn
            .query(
                "SELECT name FROM users WHERE vanished_at IS NULL
                 AND (removed_at IS NOT NULL OR renamed_to IS NOT NULL) ORDER BY name",
                vals![],
            )
            .map_err(self.err())?;
        let names = rows
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|x| self.err()(x.into()))?;
        for n in &names {
            self.conn
                .execute(
                    &format!(
                        "UPDATE users SET removed_at = NULL, renamed_to = NULL,
                         first_seen = last_seen, {FRESH} WHERE name = ?1"
                    ),
                    vals![n],
                )
                .map_err(self.err())?;
        }
        Ok(names)
    }
}
