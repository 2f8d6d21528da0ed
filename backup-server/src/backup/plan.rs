//! The plan of one user's backup, decided from data alone (no socket, no file): which
//! folders to copy, rename or tombstone, which user files and which messages to fetch.
//! [`super::user`] carries it out.
//!
//! * [`plan`]: from backupd's listing and what the store holds, which folders are
//!   unchanged, renamed (a name link, no data), to copy (new, changed or revived), which
//!   held folders vanished (tombstones), which user files to fetch. A folder is unchanged
//!   when the stat data (size, mtime, inode) of cyrus.header, cyrus.index and
//!   cyrus.annotations, and its partition, equal those of the store's newest snapshot of
//!   the same unique id.
//! * [`messages_to_fetch`]: from a copied cyrus.index, the UIDs whose GUIDs the store
//!   lacks, one UID per GUID.
//! * [`unanswered_live`]: the live UIDs a fetch reply did not account for.

use crate::store::{Catalog, HeldFolder, HeldUserFile, StoreError};
use formats::archive::UserFileKind;
use formats::cyrus::index::{Index, IndexError};
use formats::protocol::{FolderStat, UserFileId, UserListing};
use formats::{Guid, Timestamp};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a folder's meta files are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyReason {
    /// The store has never held this unique id (or holds no snapshot of it).
    New,
    /// Its stat data (or partition) differ from the store's newest snapshot.
    Changed,
    /// The store holds it as deleted, and it is back.
    Revived,
    /// Unchanged (or only renamed), but a live record's message is marked damaged or was
    /// lost: copied again so the run fetches the message while Cyrus still has it.
    Damaged,
}

/// What to do with one listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderAction {
    /// Same stat data, same name: nothing.
    Unchanged,
    /// Same stat data, new name: a name link only (`from` is the name the store has).
    Rename {
        /// The store's name.
        from: String,
    },
    /// Copy the meta files, fetch the messages the store lacks, store a snapshot.
    Copy {
        /// Why.
        reason: CopyReason,
        /// The store's name when it differs from the listing's (a rename with changes).
        renamed_from: Option<String>,
    },
}

/// One listed folder's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStep {
    /// Position in [`UserListing::folders`].
    pub index: usize,
    /// What to do.
    pub action: FolderAction,
}

/// What a user's backup will do, decided from the listing and the store alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// One step per listed folder, in listing order (a unique id listed twice: the first).
    pub folders: Vec<FolderStep>,
    /// Unique ids of live folders the store holds that the listing lacks.
    pub tombstones: Vec<String>,
    /// User files whose stat data changed (or that are new).
    pub user_files: Vec<UserFileId>,
}

impl Plan {
    /// Whether the plan does nothing at all: every folder unchanged, no tombstone, no user
    /// file. Such a backup writes nothing to the store (no run is recorded).
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
            && self.user_files.is_empty()
            && self
                .folders
                .iter()
                .all(|s| s.action == FolderAction::Unchanged)
    }

    /// Copies again every folder of `damaged` (unique ids: [`Catalog::damaged_folders`])
    /// that the plan left unchanged or only renamed, so the run fetches its damaged
    /// messages again (a rename stays a rename, within the copy).
    pub fn heal(&mut self, listing: &UserListing, damaged: &HashSet<String>) {
        if damaged.is_empty() {
            return;
        }
        for step in &mut self.folders {
            let Some(f) = listing.folders.get(step.index) else {
                continue;
            };
            if !damaged.contains(&f.uniqueid) {
                continue;
            }
            let renamed_from = match &step.action {
                FolderAction::Unchanged => None,
                FolderAction::Rename { from } => Some(from.clone()),
                FolderAction::Copy { .. } => continue,
            };
            step.action = FolderAction::Copy {
                reason: CopyReason::Damaged,
                renamed_from,
            };
        }
    }

    /// Steps that copy meta files.
    pub fn copies(&self) -> impl Iterator<Item = &FolderStep> {
        self.folders
            .iter()
            .filter(|s| matches!(s.action, FolderAction::Copy { .. }))
    }
}

/// Whether the store's newest snapshot of a folder has exactly the listed stat data.
pub fn stat_matches(held: &HeldFolder, f: &FolderStat) -> bool {
    let Some(s) = &held.snapshot else {
        return false;
    };
    s.header == Some(f.header)
        && s.index == Some(f.index)
        && s.annotations == f.annotations
        && s.partition.as_deref() == Some(f.partition.as_str())
}

/// Decides every folder's step and the user files to fetch (see the module header).
pub fn plan(listing: &UserListing, held: &[HeldFolder], held_files: &[HeldUserFile]) -> Plan {
    let by_id: HashMap<&str, &HeldFolder> =
        held.iter().map(|h| (h.unique_id.as_str(), h)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut folders = Vec::with_capacity(listing.folders.len());
    for (index, f) in listing.folders.iter().enumerate() {
        if !seen.insert(f.uniqueid.as_str()) {
            continue;
        }
        let action = match by_id.get(f.uniqueid.as_str()) {
            None => FolderAction::Copy {
                reason: CopyReason::New,
                renamed_from: None,
            },
            Some(h) => {
                let renamed_from = (h.name != f.name).then(|| h.name.clone());
                if h.deleted {
                    FolderAction::Copy {
                        reason: CopyReason::Revived,
                        renamed_from,
                    }
                } else if h.snapshot.is_none() {
                    FolderAction::Copy {
                        reason: CopyReason::New,
                        renamed_from,
                    }
                } else if !stat_matches(h, f) {
                    FolderAction::Copy {
                        reason: CopyReason::Changed,
                        renamed_from,
                    }
                } else if let Some(from) = renamed_from {
                    FolderAction::Rename { from }
                } else {
                    FolderAction::Unchanged
                }
            }
        };
        folders.push(FolderStep { index, action });
    }
    let tombstones = held
        .iter()
        .filter(|h| !h.deleted && !seen.contains(h.unique_id.as_str()))
        .map(|h| h.unique_id.clone())
        .collect();
    Plan {
        folders,
        tombstones,
        user_files: plan_user_files(listing, held_files),
    }
}

/// The store's kind (without the active flag) for a listed user file; `None` for the
/// "active script" pseudo-file, which the store keeps as a flag on the script.
fn kind_key(id: &UserFileId) -> Option<(&'static str, &str)> {
    match id {
        UserFileId::Seen => Some(("seen", "")),
        UserFileId::Subscriptions => Some(("subscriptions", "")),
        UserFileId::SieveScript(n) => Some(("sieve", n.as_str())),
        UserFileId::SieveActive => None,
    }
}

fn held_key(k: &UserFileKind) -> (&'static str, &str) {
    match k {
        UserFileKind::Seen => ("seen", ""),
        UserFileKind::Subscriptions => ("subscriptions", ""),
        UserFileKind::Sieve { name, .. } => ("sieve", name.as_str()),
    }
}

/// User files to fetch: those whose stat data differ from the store's newest copy. The
/// active sieve script is asked for too whenever it may have changed: a script is fetched,
/// the store's idea of "some script is active" disagrees with the listing, or the active
/// link was changed after the store's newest sieve copy (activating another script changes
/// no script file). The scripts whose active flag then differs are fetched again by
/// [`super::user`].
pub fn plan_user_files(listing: &UserListing, held_files: &[HeldUserFile]) -> Vec<UserFileId> {
    let held: HashMap<(&str, &str), &HeldUserFile> =
        held_files.iter().map(|h| (held_key(&h.kind), h)).collect();
    let mut out = Vec::new();
    let mut active_stat = None;
    for f in &listing.user_files {
        match kind_key(&f.id) {
            Some(key) => {
                if held.get(&key).and_then(|h| h.stat) != Some(f.stat) {
                    out.push(f.id.clone());
                }
            }
            None => active_stat = Some(f.stat),
        }
    }
    let listed_scripts: HashSet<&str> = listing
        .user_files
        .iter()
        .filter_map(|f| match &f.id {
            UserFileId::SieveScript(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let held_active = held_files.iter().any(|h| {
        matches!(&h.kind, UserFileKind::Sieve { name, active: true } if listed_scripts.contains(name.as_str()))
    });
    let newest_sieve = held_files
        .iter()
        .filter(|h| matches!(h.kind, UserFileKind::Sieve { .. }))
        .map(|h| h.time)
        .max();
    let script_fetched = out
        .iter()
        .any(|id| matches!(id, UserFileId::SieveScript(_)));
    let active_changed = match (active_stat, newest_sieve) {
        (Some(s), Some(t)) => s.mtime >= t,
        _ => false,
    };
    if (script_fetched || held_active != active_stat.is_some() || active_changed)
        && !listed_scripts.is_empty()
    {
        out.push(UserFileId::SieveActive);
    }
    out
}

/// One message to fetch from a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Its UID.
    pub uid: u32,
    /// Its GUID (the SHA-1 its bytes must have).
    pub guid: Guid,
    /// IMAP INTERNALDATE.
    pub internal_date: Timestamp,
    /// Whether the record is expunged (then "gone" is expected, not an error).
    pub expunged: bool,
}

/// The live records asked for that backupd's reply did not mention at all (neither bytes nor
/// "gone"), in UID order. A reply that skips a UID must not let the folder's snapshot be stored
/// with a live record whose message the store lacks.
pub fn unanswered_live(wanted: &[Wanted], answered: &HashSet<u32>) -> Vec<u32> {
    wanted
        .iter()
        .filter(|w| !w.expunged && !answered.contains(&w.uid))
        .map(|w| w.uid)
        .collect()
}

/// The records of a cyrus.index whose message the store lacks (`held(guid)` false), one
/// per GUID (a live record's UID preferred over an expunged one's), in UID order. Records
/// without a GUID and records whose file Cyrus has already unlinked are skipped; the
/// former are returned as the second value (they cannot be checked, so never stored).
///
/// `stored`: the folder's records the store already holds the message of, as (UID, GUID)
/// in UID order (`RunWriter::held_records`). The cyrus.index is diffed against them: a
/// record with the same UID and GUID is held without asking `held`, so a changed folder
/// costs one lookup per new or changed record, not one per record (a night's flag change
/// in a 100,000-message folder). `&[]` asks `held` for every GUID.
pub fn messages_to_fetch(
    index: &[u8],
    stored: &[(u32, Guid)],
    mut held: impl FnMut(&Guid) -> Result<bool, StoreError>,
) -> Result<(Vec<Wanted>, Vec<u32>), PlanError> {
    let idx = Index::parse(index).map_err(PlanError::Index)?;
    let mut by_guid: BTreeMap<Guid, Wanted> = BTreeMap::new();
    let mut no_guid = Vec::new();
    let mut checked: HashMap<Guid, bool> = HashMap::new();
    let mut stored = stored.iter().peekable();
    for r in idx.records() {
        let r = r.map_err(PlanError::Index)?;
        if r.is_unlinked() {
            continue;
        }
        let guid = match r.guid {
            Some(g) if !g.is_null() => g,
            _ => {
                if !r.is_expunged() {
                    no_guid.push(r.uid);
                }
                continue;
            }
        };
        // Both sides in UID order (a cyrus.index out of order only costs lookups).
        while stored.next_if(|(uid, _)| *uid < r.uid).is_some() {}
        let same = stored
            .peek()
            .is_some_and(|(uid, g)| *uid == r.uid && *g == guid);
        let have = match checked.get(&guid) {
            _ if same => true,
            Some(h) => *h,
            None => {
                let h = held(&guid).map_err(PlanError::Store)?;
                checked.insert(guid, h);
                h
            }
        };
        if have {
            continue;
        }
        let w = Wanted {
            uid: r.uid,
            guid,
            internal_date: r.internaldate,
            expunged: r.is_expunged(),
        };
        // Keep the first record of a GUID, unless a live one follows an expunged one.
        let replace = by_guid
            .get(&guid)
            .is_none_or(|old| old.expunged && !w.expunged);
        if replace {
            by_guid.insert(guid, w);
        }
    }
    let mut out: Vec<Wanted> = by_guid.into_values().collect();
    out.sort_by_key(|w| w.uid);
    Ok((out, no_guid))
}

/// Why [`messages_to_fetch`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The copied cyrus.index does not parse (the error has the byte offset).
    #[error("cyrus.index: {0}")]
    Index(IndexError),
    /// The store could not answer.
    #[error(transparent)]
    Store(StoreError),
}

/// The plan this store would follow for `listing` (the catalog queries [`plan`] starts
/// from), for tests and tools.
pub fn plan_for(catalog: &Catalog, listing: &UserListing) -> Result<Plan, StoreError> {
    let held = catalog.held_folders()?;
    let files = catalog.user_files_at(None)?;
    let mut p = plan(listing, &held, &files);
    p.heal(listing, &catalog.damaged_folders()?);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::FileStat;

    fn folder(name: &str, id: &str) -> FolderStat {
        let st = FileStat {
            size: 1,
            mtime: Timestamp::from_secs(1),
            inode: 1,
        };
        FolderStat {
            name: name.into(),
            uniqueid: id.into(),
            partition: "default".into(),
            uidvalidity: 1,
            header: st,
            index: st,
            annotations: None,
        }
    }

    #[test]
    fn heal_copies_unchanged_and_renamed_folders_with_damage_only() {
        let listing = UserListing {
            folders: vec![
                folder("INBOX", "a"),
                folder("New", "b"),
                folder("Work", "c"),
                folder("Old", "d"),
            ],
            ..UserListing::default()
        };
        let step = |index, action| FolderStep { index, action };
        let mut p = Plan {
            folders: vec![
                step(0, FolderAction::Unchanged),
                step(
                    1,
                    FolderAction::Rename {
                        from: "Prev".into(),
                    },
                ),
                step(
                    2,
                    FolderAction::Copy {
                        reason: CopyReason::Changed,
                        renamed_from: None,
                    },
                ),
                step(3, FolderAction::Unchanged),
            ],
            ..Plan::default()
        };
        p.heal(&listing, &HashSet::new());
        assert_eq!(p.folders[0].action, FolderAction::Unchanged);
        let damaged: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        p.heal(&listing, &damaged);
        let copy = |renamed_from: Option<&str>| FolderAction::Copy {
            reason: CopyReason::Damaged,
            renamed_from: renamed_from.map(str::to_owned),
        };
        assert_eq!(p.folders[0].action, copy(None));
        assert_eq!(p.folders[1].action, copy(Some("Prev")));
        // Copied anyway: its reason stays.
        assert_eq!(
            p.folders[2].action,
            FolderAction::Copy {
                reason: CopyReason::Changed,
                renamed_from: None
            }
        );
        assert_eq!(p.folders[3].action, FolderAction::Unchanged);
        assert!(!p.is_empty());
    }
}
