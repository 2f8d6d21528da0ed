//! Users renamed, or deleted and created again, in Cyrus: found at refresh by their INBOX's
//! unique id, their stores moved to the right name.
//!
//! A user's identity on the mail server is its INBOX's unique id: Cyrus 3.6 keeps it (and
//! every folder's) across `RENAME user/a user/b`, and a user deleted and created again
//! under the same name gets a new one. The user list backupd sends names users only, so
//! the unique ids are asked for only where they decide something:
//!
//! * **Renamed**: after a refresh, when some vanished user still has a store, each listed
//!   user never backed up (a new name) is listed (`LIST_FOLDERS`, one round trip) and its
//!   INBOX's unique id compared with the INBOX each vanished store holds. A match is a
//!   rename: the new name takes the store and the backup history
//!   ([`StateDb::record_rename`]), and the next backup is incremental. Cost: one round trip
//!   per new user, only on refreshes where some vanished user's store is kept.
//! * **Created again**: a user that vanished and is listed again is listed too; when its
//!   INBOX's unique id differs from the one its store holds, the store is kept aside as
//!   `<user>~vanished-<unix time it vanished>` (vanished, restorable, removed after the
//!   retention like any vanished user's) and the user starts a new store
//!   ([`StateDb::record_recreated`]). The same id: the user simply comes back.
//! * **Moves**: every store recorded as to be moved (`store_from`) is moved
//!   ([`crate::store::move_store`], crash-safe) and the record cleared; one that cannot be
//!   moved now (a backup holds it) stays recorded, and its user is not backed up until it
//!   is (a backup would start a second store).
//!
//! A user deleted and created again between two refreshes (never seen vanished) is not
//! noticed here but by its next backup (`BackupError::Recreated`), after which the run
//! keeps the store aside with [`keep_recreated`].

use std::collections::{BTreeMap, HashMap};

use crate::backup::client_options;
use crate::client::{load_secret, Client};
use crate::config::Config;
use crate::state::{StateDb, StateError, VanishedStore};
use crate::store::{move_store, StoreReader, UserDir};

/// What the state db held before a refresh that matters after it.
#[derive(Debug, Clone, Default)]
pub struct BeforeRefresh {
    vanished: Vec<VanishedStore>,
}

/// Reads what [`after_refresh`] compares with: the vanished users whose stores are kept.
pub fn before_refresh(db: &StateDb) -> Result<BeforeRefresh, StateError> {
    Ok(BeforeRefresh {
        vanished: db.vanished_stores()?,
    })
}

/// What [`after_refresh`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followed {
    /// Users renamed in Cyrus: (old name, new name); the store follows the new name.
    pub renamed: Vec<(String, String)>,
    /// Users deleted and created again under the same name: (user, the name the old
    /// store is kept under).
    pub recreated: Vec<(String, String)>,
    /// Stores moved to their user's name: (from, to).
    pub moved: Vec<(String, String)>,
    /// Users listed again after their store was removed or handed on: they start afresh.
    pub restarted: Vec<String>,
    /// What could not be done now, per user (tried again at the next refresh).
    pub problems: Vec<(String, String)>,
}

/// INBOX unique ids as backupd lists them, one connection per server, opened when first
/// needed.
struct Listings<'c> {
    config: &'c Config,
    clients: HashMap<String, Client>,
}

impl Listings<'_> {
    fn inbox(&mut self, server: &str, user: &str) -> Result<Option<String>, String> {
        if !self.clients.contains_key(server) {
            let s = self.config.server(server).ok_or_else(|| {
                format!("server {server} is not in {}", self.config.path.display())
            })?;
            let secret = load_secret(&s.secret_file).map_err(|e| e.to_string())?;
            let c = Client::connect(s.address.as_str(), &secret, &client_options(s))
                .map_err(|e| format!("server {server}: {e}"))?;
            self.clients.insert(server.to_owned(), c);
        }
        let c = self.clients.get_mut(server).expect("inserted above");
        match c.list_folders(user) {
            Ok(l) => Ok(l
                .folders
                .into_iter()
                .find(|f| f.name == "INBOX")
                .map(|f| f.uniqueid)),
            Err(e) => {
                self.clients.remove(server);
                Err(format!("listing {user} on {server}: {e}"))
            }
        }
    }
}

/// The unique id of the INBOX a user's store holds (its live INBOX, else the newest
/// deleted one), or `None` when there is no store or no INBOX in it.
pub fn store_inbox(root: &std::path::Path, user: &str) -> Option<String> {
    let r = StoreReader::open(root, user).ok()?;
    let held = r.catalog().held_folders().ok()?;
    let inbox = |deleted: bool| {
        held.iter()
            .filter(|f| f.name == "INBOX" && f.deleted == deleted)
            .max_by_key(|f| f.since)
            .map(|f| f.unique_id.clone())
    };
    inbox(false).or_else(|| inbox(true))
}

/// The name a recreated user's old store is kept under: `<user>~vanished-<unix time>`.
pub fn kept_name(user: &str, vanished_at: i64) -> String {
    format!("{user}~vanished-{vanished_at}")
}

/// Keeps aside the store of `user`, found deleted and created again by its backup started
/// at `started` ([`crate::backup::BackupError::Recreated`]): the store goes to
/// [`kept_name`]`(user, started)` (vanished since then, removed when its retention ends)
/// and the user starts afresh. A store that cannot be moved now stays recorded as to be
/// moved (the next refresh moves it); that is logged, not an error.
pub fn keep_recreated(
    config: &Config,
    db: &mut StateDb,
    user: &str,
    started: i64,
) -> Result<String, StateError> {
    let kept = kept_name(user, started);
    db.record_recreated(user, &kept, started)?;
    match move_store(&config.store_root, user, &kept) {
        Ok(_) => db.store_moved(&kept)?,
        Err(e) => tracing::warn!(user = %user, kept_as = %kept, "store not set aside yet: {e}"),
    }
    Ok(kept)
}

/// After the user lists were read into the state db at `now`: users created again and
/// renamed users found, stores moved (see the module docs). A mail server that cannot be
/// asked leaves its users as they are, named in [`Followed::problems`].
pub fn after_refresh(
    config: &Config,
    db: &mut StateDb,
    before: &BeforeRefresh,
    now: i64,
) -> Result<Followed, StateError> {
    let root = &config.store_root;
    let mut out = Followed {
        restarted: db.reset_returned()?,
        ..Followed::default()
    };
    let mut listings = Listings {
        config,
        clients: HashMap::new(),
    };
    // Created again: listed now, vanished before, with a store holding another INBOX.
    for v in &before.vanished {
        let Some(row) = db.user(&v.name)? else {
            continue;
        };
        if row.vanished_at.is_some() {
            continue;
        }
        let Some(held) = store_inbox(root, &v.name) else {
            continue;
        };
        match listings.inbox(&row.server, &v.name) {
            Ok(Some(now_id)) if now_id != held => {
                let kept = kept_name(&v.name, v.vanished_at);
                db.record_recreated(&v.name, &kept, v.vanished_at)?;
                tracing::info!(user = %v.name, kept_as = %kept, "user deleted and created again in Cyrus: a new store; the old one kept");
                out.recreated.push((v.name.clone(), kept));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(user = %v.name, "not checked for a new INBOX: {e}");
                out.problems.push((v.name.clone(), e))
            }
        }
    }
    // Renamed: a new name whose INBOX a vanished user's store holds.
    let vanished = db.vanished_stores()?;
    if !vanished.is_empty() {
        let candidates = db.never_backed_up()?;
        if !candidates.is_empty() {
            let mut by_inbox: BTreeMap<String, String> = BTreeMap::new();
            for v in &vanished {
                if let Some(id) = store_inbox(root, &v.name) {
                    by_inbox.insert(id, v.name.clone());
                }
            }
            for (user, server) in candidates {
                if by_inbox.is_empty() {
                    break;
                }
                if UserDir::new(root, &user).is_ok_and(|d| d.index_path().exists()) {
                    continue;
                }
                match listings.inbox(&server, &user) {
                    Ok(Some(id)) => {
                        if let Some(from) = by_inbox.remove(&id) {
                            db.record_rename(&from, &user, now)?;
                            tracing::info!(from = %from, to = %user, "user renamed in Cyrus: its store follows");
                            out.renamed.push((from, user));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(user = %user, "not checked for a rename: {e}");
                        out.problems.push((user, e))
                    }
                }
            }
        }
    }
    // Stores to move, this refresh's and any a crash left.
    for p in db.pending_moves()? {
        match move_store(root, &p.from, &p.user) {
            Ok(_) => {
                db.store_moved(&p.user)?;
                out.moved.push((p.from, p.user));
            }
            Err(e) => {
                tracing::warn!(user = %p.user, from = %p.from, "store not moved yet: {e}");
                out.problems
                    .push((p.user, format!("store still under {:?}: {e}", p.from)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_store_has_a_name_of_its_own() {
        assert_eq!(kept_name("alice", 1795400000), "alice~vanished-1795400000");
        let (a, b) = (
            UserDir::new("/s".as_ref(), "alice").unwrap(),
            UserDir::new("/s".as_ref(), &kept_name("alice", 1)).unwrap(),
        );
        assert_ne!(a.path(), b.path());
    }
}
