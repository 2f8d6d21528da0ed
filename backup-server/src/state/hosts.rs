//! Backup hosts sharing one state db (docs/fleet.md): each user belongs to one host (its
//! store lives there), and a run takes its users with leases, so that two runs never back
//! up one user at once:
//!
//! * a run claims its users before it starts them (`SELECT ... FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL, so that two claiming runs pass each other instead of waiting; SQLite's
//!   write lock serialises them anyway), setting `lease_run` and `lease_until`;
//! * a user's lease is free when it has none, when it has expired, or when the run holding
//!   it is no longer `running` (a killed run on this host is marked `interrupted` when the
//!   next run starts, so its leases are free at once; a dead host's expire);
//! * the run renews its leases every [`RENEW_EVERY`] and frees each as the user's attempt
//!   is recorded, the rest when it ends.

use super::backend::{vals, Dialect, Value};
use super::{StateDb, StateError};

/// How long a lease holds without renewal, in seconds.
pub const LEASE_SECS: i64 = 600;

/// How often a run renews its leases (a third of their length: two renewals may fail).
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(LEASE_SECS as u64 / 3);

/// Users claimed per statement.
const CLAIM_BATCH: usize = 500;

/// A backup host as `backup-server hosts` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    /// Its `host_name`.
    pub name: String,
    /// Users assigned to it (vanished ones left out).
    pub users: i64,
    /// Last sign of life of one of its runs; `None`: it never ran.
    pub heartbeat: Option<i64>,
    /// Its latest run: id, start, end, status.
    pub last_run: Option<(i64, i64, Option<i64>, String)>,
}

impl HostRow {
    /// `running` (a run under way, renewing its leases), `dead` (a run recorded as running
    /// that stopped renewing: killed or cut off; its leases expire), `idle`, or `never ran`.
    pub fn state(&self, now: i64) -> &'static str {
        match (&self.last_run, self.heartbeat) {
            (Some((_, _, _, status)), Some(hb)) if status == "running" => {
                if now - hb <= LEASE_SECS {
                    "running"
                } else {
                    "dead"
                }
            }
            (Some(_), _) => "idle",
            (None, _) => "never ran",
        }
    }
}

impl StateDb {
    /// The SQL that gives a claimed user to this host, and the condition "the user is this
    /// host's to back up", this host's name being the parameter `param`. PostgreSQL (a
    /// fleet): the users assigned to it or to no host yet, which become its own. SQLite (one
    /// host): every user, whatever host name it was given, so that a machine whose hostname
    /// changed still backs up all its users (and they take the new name).
    pub(super) fn ownership(&self, param: &str) -> (String, String) {
        match self.conn.dialect() {
            Dialect::Postgres => (
                format!("COALESCE(host, {param})"),
                format!("(host = {param} OR host IS NULL)"),
            ),
            Dialect::Sqlite => (param.to_string(), format!("({param} IS NOT NULL)")),
        }
    }

    /// Records a sign of life of this host (and its latest run).
    pub(super) fn host_heartbeat(&self, run: Option<i64>, now: i64) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO hosts (name, first_seen, heartbeat, last_run) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET heartbeat = ?2,
                 last_run = COALESCE(?3, hosts.last_run)",
                vals![&self.host, now, run],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Claims for run `run` the leases of those of `users` that are this host's (or no
    /// host's: they become this host's), still listed, and not leased by another live run;
    /// returns the users claimed, by name. Each batch of users is one transaction.
    pub fn claim_users(
        &mut self,
        run: i64,
        users: &[String],
        now: i64,
    ) -> Result<Vec<String>, StateError> {
        let lock = match self.conn.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let (take, mine) = self.ownership("?1");
        let mut claimed = Vec::new();
        for chunk in users.chunks(CLAIM_BATCH) {
            let places: Vec<String> = (0..chunk.len()).map(|k| format!("?{}", k + 5)).collect();
            let sql = format!(
                "UPDATE users SET host = {take}, lease_run = ?2, lease_until = ?3
                 WHERE name IN (SELECT name FROM users WHERE name IN ({})
                   AND {mine} AND vanished_at IS NULL
                   AND (lease_until IS NULL OR lease_until < ?4
                        OR lease_run NOT IN (SELECT id FROM runs WHERE status = 'running'))
                   {lock})
                 RETURNING name",
                places.join(", ")
            );
            let mut params: Vec<Value> = vec![
                self.host.as_str().into(),
                run.into(),
                (now + LEASE_SECS).into(),
                now.into(),
            ];
            params.extend(chunk.iter().map(Value::from));
            let e = self.err();
            let rows = self
                .conn
                .transaction(&e, |c| c.query(&sql, &params).map_err(&e))?;
            for r in rows {
                claimed.push(r.text(0).map_err(|x| e(x.into()))?);
            }
        }
        // RETURNING's order is the database's: by name, as the callers compare.
        claimed.sort();
        Ok(claimed)
    }

    /// Extends the leases run `run` holds to `now` + [`LEASE_SECS`], and records the host's
    /// heartbeat; returns the leases renewed.
    pub fn renew_leases(&mut self, run: i64, now: i64) -> Result<u64, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE users SET lease_until = ?2 WHERE lease_run = ?1",
                vals![run, now + LEASE_SECS],
            )
            .map_err(self.err())?;
        self.host_heartbeat(Some(run), now)?;
        Ok(n)
    }

    /// Frees the leases run `run` still holds (users it did not reach) and records the
    /// host's heartbeat.
    pub fn release_leases(&mut self, run: i64, now: i64) -> Result<u64, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE users SET lease_run = NULL, lease_until = NULL WHERE lease_run = ?1",
                vals![run],
            )
            .map_err(self.err())?;
        self.host_heartbeat(Some(run), now)?;
        Ok(n)
    }

    /// Who holds the user's lease, if anyone holds a live one at `now`: the host and the run.
    pub fn lease_holder(&self, user: &str, now: i64) -> Result<Option<(String, i64)>, StateError> {
        let row = self
            .conn
            .query_opt(
                "SELECT r.host, r.id FROM users u JOIN runs r ON r.id = u.lease_run
                 WHERE u.name = ?1 AND u.lease_until >= ?2 AND r.status = 'running'",
                vals![user, now],
            )
            .map_err(self.err())?;
        let e = self.err();
        row.map(|r| Ok((r.opt_text(0)?.unwrap_or_default(), r.int(1)?)))
            .transpose()
            .map_err(|x: super::backend::ColumnError| e(x.into()))
    }

    /// Assigns `users` to backup host `host` (`backup-server users assign`), in one
    /// transaction; an unknown user changes nothing. The store does not move: the new
    /// host's next run makes a full backup (docs/fleet.md).
    pub fn assign_users(
        &mut self,
        users: &[String],
        host: &str,
        now: i64,
    ) -> Result<u64, StateError> {
        let e = self.err();
        let location = self.location.clone();
        self.conn.transaction(&e, |c| -> Result<u64, StateError> {
            c.execute(
                "INSERT INTO hosts (name, first_seen) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                vals![host, now],
            )
            .map_err(&e)?;
            let mut n = 0;
            for u in users {
                let changed = c
                    .execute("UPDATE users SET host = ?2 WHERE name = ?1", vals![u, host])
                    .map_err(&e)?;
                if changed == 0 {
                    return Err(StateError::UnknownUser {
                        location: location.clone(),
                        user: u.clone(),
                    });
                }
                n += changed;
            }
            Ok(n)
        })
    }

    /// Every backup host: those that ran and those users are assigned to, by name.
    pub fn hosts(&self) -> Result<Vec<HostRow>, StateError> {
        let rows = self
            .conn
            .query(
                "SELECT n.name,
                        (SELECT count(*) FROM users u WHERE u.host = n.name AND u.vanished_at IS NULL),
                        h.heartbeat, r.id, r.started, r.ended, r.status
                   FROM (SELECT name FROM hosts UNION SELECT DISTINCT host FROM users
                          WHERE host IS NOT NULL) AS n
                   LEFT JOIN hosts h ON h.name = n.name
                   LEFT JOIN runs r ON r.id = h.last_run
                  ORDER BY n.name",
                vals![],
            )
            .map_err(self.err())?;
        let e = self.err();
        rows.iter()
            .map(|r| {
                let last_run = match r.opt_int(3)? {
                    Some(id) => Some((id, r.int(4)?, r.opt_int(5)?, r.text(6)?)),
                    None => None,
                };
                Ok(HostRow {
                    name: r.text(0)?,
                    users: r.int(1)?,
                    heartbeat: r.opt_int(2)?,
                    last_run,
                })
            })
            .collect::<Result<Vec<_>, super::backend::ColumnError>>()
            .map_err(|x| e(x.into()))
    }
}
