//! The state db's schema and its migrations: one text for both databases, written in
//! SQLite's spelling. PostgreSQL takes it through [`for_postgres`], which changes the
//! column types only: every `INTEGER` becomes `BIGINT` (times, counters and byte sums
//! outgrow 32 bits; SQLite's INTEGER is 64 bits already) and the runs' `INTEGER PRIMARY
//! KEY` (SQLite's rowid) an identity column. The version lives in `PRAGMA user_version` on
//! SQLite and in the one-row table `state_schema` on PostgreSQL.

/// The schema version this build writes.
pub const STATE_SCHEMA_VERSION: i64 = 5;

/// Version 1 to 2: the quiet key (a listing fingerprint and data-file stamp that lets a run
/// skip a quiet user's store; docs/store.md, "Quiet users"), then called `unchanged_key`.
pub const MIGRATE_1_TO_2: &str = "ALTER TABLE users ADD COLUMN unchanged_key TEXT;";

/// Version 2 to 3: the column takes the name the code and the docs use.
pub const MIGRATE_2_TO_3: &str = "ALTER TABLE users RENAME COLUMN unchanged_key TO quiet_key;";

/// Version 3 to 4: a fleet of backup hosts (docs/fleet.md): each user's backup host, the
/// lease a run holds on a user while it backs it up, the hosts and their heartbeats.
pub const MIGRATE_3_TO_4: &str = "
ALTER TABLE users ADD COLUMN host TEXT;
ALTER TABLE users ADD COLUMN lease_run INTEGER;
ALTER TABLE users ADD COLUMN lease_until INTEGER;
CREATE INDEX users_host ON users (host, raidset);
CREATE TABLE hosts (
    name          TEXT PRIMARY KEY, -- host_name of its config (default: its hostname)
    first_seen    INTEGER NOT NULL,
    heartbeat     INTEGER,          -- last sign of life of a run (start, lease renewal, end)
    last_run      INTEGER           -- runs.id of its latest run
);
";

/// Version 4 to 5: the user lifecycle (`state/lifecycle.rs`; docs/backup-server.md, "Users
/// that vanish, are renamed or move"): a vanished user's store removed after its retention,
/// a user renamed in Cyrus, a store still to follow its user.
pub const MIGRATE_4_TO_5: &str = "
ALTER TABLE users ADD COLUMN removed_at INTEGER;
ALTER TABLE users ADD COLUMN renamed_to TEXT;
ALTER TABLE users ADD COLUMN store_from TEXT;
";

/// The migrations, in order: `MIGRATIONS[v - 1]` takes version `v` to `v + 1`.
pub const MIGRATIONS: [&str; 4] = [
    MIGRATE_1_TO_2,
    MIGRATE_2_TO_3,
    MIGRATE_3_TO_4,
    MIGRATE_4_TO_5,
];

/// The schema, version 3 (version 2 called `users.quiet_key` `unchanged_key`; version 1
/// lacked it). A new state db gets this, then the migrations from 3 on.
pub const STATE_SCHEMA_V3: &str = "
CREATE TABLE servers (
    name          TEXT PRIMARY KEY,
    address       TEXT NOT NULL,
    last_refresh  INTEGER,          -- last time its user list was read whole
    last_error    TEXT              -- why the last refresh failed (NULL: it did not)
);
CREATE TABLE users (
    name          TEXT PRIMARY KEY, -- the Cyrus user id (one store per name on this host)
    server        TEXT NOT NULL,
    partition     TEXT NOT NULL,    -- of the user's INBOX
    raidset       TEXT,             -- NULL: the partition is in no configured RAID set
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL, -- last refresh that listed the user
    vanished_at   INTEGER,          -- set when a refresh no longer lists the user; kept, not deleted
    last_success  INTEGER,          -- start of the last backup that committed complete
    last_commit   INTEGER,          -- start of the last backup that committed (maybe incomplete)
    last_attempt  INTEGER,          -- start of the last backup tried, whatever came of it
    last_error    TEXT,             -- what the last attempt said when it failed or was incomplete
    last_run      INTEGER,          -- runs.id of the last attempt
    backups_ok    INTEGER NOT NULL DEFAULT 0,
    backups_incomplete INTEGER NOT NULL DEFAULT 0,
    backups_failed INTEGER NOT NULL DEFAULT 0,
    skips         INTEGER NOT NULL DEFAULT 0, -- locked by another run
    messages_stored INTEGER NOT NULL DEFAULT 0, -- summed over all backups
    bytes_stored  INTEGER NOT NULL DEFAULT 0,
    quiet_key     TEXT              -- listing fingerprint + store stamp when the last complete
                                    -- backup left nothing to do (NULL: unknown); docs/store.md
);
CREATE INDEX users_last_success ON users (last_success);
CREATE INDEX users_raidset ON users (raidset, last_success);
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    started       INTEGER NOT NULL,
    ended         INTEGER,
    status        TEXT NOT NULL,    -- running, done, incomplete, interrupted, failed
    host          TEXT,
    pid           INTEGER,
    users_planned INTEGER NOT NULL DEFAULT 0,
    users_done    INTEGER NOT NULL DEFAULT 0,
    users_incomplete INTEGER NOT NULL DEFAULT 0,
    users_skipped INTEGER NOT NULL DEFAULT 0,
    users_failed  INTEGER NOT NULL DEFAULT 0,
    messages_fetched INTEGER NOT NULL DEFAULT 0,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    messages_stored INTEGER NOT NULL DEFAULT 0,
    bytes_stored  INTEGER NOT NULL DEFAULT 0,
    message       TEXT              -- why it failed or was interrupted
);
";

/// The whole schema of this version, as a new state db gets it.
pub fn current_schema() -> String {
    let mut s = STATE_SCHEMA_V3.to_string();
    for m in &MIGRATIONS[2..] {
        s.push_str(m);
    }
    s
}

/// The PostgreSQL spelling of schema text: 64-bit integers, the runs' id an identity column.
pub fn for_postgres(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace("INTEGER", "BIGINT")
}

/// PostgreSQL's version table (SQLite keeps the version in `PRAGMA user_version`).
pub const POSTGRES_VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS state_schema (version BIGINT NOT NULL)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_spelling_changes_integer_types_only() {
        let pg = for_postgres(&current_schema());
        assert!(!pg.contains("INTEGER"), "{pg}");
        assert!(pg.contains("id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"));
        // Nothing else moved: put the words back and the text is the same.
        let back = pg
            .replace(
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                "INTEGER PRIMARY KEY",
            )
            .replace("BIGINT", "INTEGER");
        assert_eq!(back, current_schema());
    }

    #[test]
    fn a_new_sqlite_db_and_a_migrated_one_have_the_same_tables() {
        let columns = |c: &rusqlite::Connection| -> Vec<String> {
            let mut st = c
                .prepare(
                    "SELECT m.name || '.' || p.name || ' ' || p.type FROM sqlite_master m, \
                     pragma_table_info(m.name) p WHERE m.type = 'table' ORDER BY 1",
                )
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let new = rusqlite::Connection::open_in_memory().unwrap();
        new.execute_batch(&current_schema()).unwrap();
        let old = rusqlite::Connection::open_in_memory().unwrap();
        old.execute_batch(&STATE_SCHEMA_V3.replace("quiet_key     TEXT", "unchanged_key TEXT"))
            .unwrap();
        for m in &MIGRATIONS[1..] {
            old.execute_batch(m).unwrap();
        }
        assert_eq!(columns(&new), columns(&old));
    }
}
