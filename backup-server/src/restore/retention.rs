//! A restore that reaches back past what the store kept says so (docs/restore.md, "Past
//! retention"): an `--at` older than the store's first backup, a folder whose state then was
//! compacted away, a record whose message was. Each is a [`Note`] naming folder, UID and
//! why, counted in [`super::RestoreReport::not_kept`]; the CLI exits 2 on any.
//!
//! What cannot be named: compaction leaves no trace of a folder deleted, or of a message
//! gone from cyrus.index, before its cutoff (docs/store.md, "Dirty bytes"), so a restore
//! as of a time before that cannot list them. What it can see is named.

use formats::Timestamp;

use super::Note;
use crate::store::{Catalog, FolderAt, MessageAt, MessageState, Result};

/// How far back the store reaches ([`crate::store::Catalog`]'s coverage queries).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reach {
    first_backup: Option<Timestamp>,
    rewritten_on: Option<Timestamp>,
}

impl Reach {
    /// The store's first backup and last rewrite.
    pub(crate) fn of(cat: &Catalog) -> Result<Reach> {
        Ok(Reach {
            first_backup: cat.first_backup()?,
            rewritten_on: cat.rewritten_on()?,
        })
    }

    /// A note when `at` is older than the store's first backup: the store holds nothing of
    /// then.
    pub(crate) fn before_first_backup(&self, at: Option<Timestamp>) -> Option<Note> {
        match (at, self.first_backup) {
            (Some(at), Some(oldest)) if at < oldest => {
                Some(Note::BeforeOldestBackup { at, oldest })
            }
            _ => None,
        }
    }

    /// When the store was compacted, if that was after `at` (a restore as of now reaches
    /// nothing compaction dropped).
    pub(crate) fn compacted_after(&self, at: Option<Timestamp>) -> Option<Timestamp> {
        self.rewritten_on.filter(|on| at.is_some_and(|at| at < *on))
    }

    /// A note when folder `f`, named at `at`, has no snapshot of then: its state then was
    /// compacted away (a run writes a folder's name link with its first snapshot).
    pub(crate) fn folder(
        &self,
        cat: &Catalog,
        f: &FolderAt,
        at: Option<Timestamp>,
    ) -> Result<Option<Note>> {
        if f.snapshot.is_some() {
            return Ok(None);
        }
        Ok(Some(Note::FolderNotKept {
            folder: f.name.clone(),
            at,
            compacted_on: self.rewritten_on,
            oldest_kept: cat.oldest_snapshot(&f.unique_id)?,
        }))
    }

    /// The note for record `m` of `folder` whose message the store does not hold: compacted
    /// away when the store was rewritten after the record began and the record is history
    /// (no longer current, or expunged: compaction keeps every message of a current live
    /// record); else never fetched.
    pub(crate) fn message_not_held(&self, folder: &str, m: &MessageAt) -> Note {
        let history = m.valid_to.is_some() || m.state != MessageState::Visible;
        match self.rewritten_on {
            Some(on) if history && m.valid_from <= on => Note::MessageNotKept {
                folder: folder.to_owned(),
                uid: m.uid,
                guid: m.guid,
                compacted_on: on,
            },
            _ => Note::NotStored {
                folder: folder.to_owned(),
                uid: m.uid,
                guid: m.guid,
            },
        }
    }
}
