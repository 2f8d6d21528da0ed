//! Compaction ("dirty ratio", DESIGN.md): a store whose entries no restore inside the
//! retention window can need ([`crate::store::Usage`]) pass a threshold is rewritten into
//! a new data file holding only the live entries, and switched to atomically.
//!
//! The steps, and why a kill -9 at any of them is harmless:
//!
//! 1. Take the user's writer lock (a running backup holds it: the user is skipped), open
//!    the store, count dirty bytes at `now - retention`.
//! 2. Close the store (the lock stays held) and stream the live entries, in file order,
//!    from the old data file into `backupdata-<now>.tar.gz` through
//!    [`ArchiveWriter`], chunks capped as configured; fsync the file and the directory.
//!    A crash here leaves a data file the index does not name: the next open removes it.
//! 3. [`LockedDir::install_data_file`]: the new index is built aside from the new file by
//!    reindex's ingest, switched in the way reindex switches, and the store reopened,
//!    which removes the old data file. Before the switch the old index stands; after it
//!    the new one; open finishes a switch that was interrupted half-way.
//!
//! Time is injected (`now`), never read from the system here.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use formats::archive::{ArchiveWriter, EntryMeta, ScanEvent, Scanner};
use formats::Timestamp;

use crate::store::{
    data_file_name, DamagedMessage, LockedDir, Result, Store, StoreError, StoreOptions, Usage,
    UserDir,
};

/// Default dirty ratio above which a store is compacted.
pub const DEFAULT_THRESHOLD: f64 = 0.3;
/// Default minimum of dirty bytes (uncompressed) worth a rewrite.
pub const DEFAULT_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// What compaction is asked to do.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Compact when `dirty / total` is above this.
    pub threshold: f64,
    /// ... and dirty bytes are above this.
    pub min_bytes: u64,
    /// Only count and decide; change nothing.
    pub dry_run: bool,
    /// Now: the cutoff is `now - retention`, the new data file is named after it.
    pub now: Timestamp,
    /// Retention in seconds.
    pub retention_secs: i64,
    /// Chunk cap and gzip level of the new file (the clock is not used).
    pub store: StoreOptions,
}

impl CompactOptions {
    /// The retention cutoff: entries no restore at or after it can need are dirty.
    pub fn cutoff(&self) -> Timestamp {
        Timestamp::from_secs(self.now.secs.saturating_sub(self.retention_secs))
    }
}

/// What was decided for one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Rewritten (or would be, in a dry run).
    Compact,
    /// The dirty ratio is not above the threshold.
    UnderThreshold,
    /// Dirty bytes are not above the minimum.
    UnderMinimum,
    /// The user's writer lock is held (a backup runs): not touched.
    Locked,
}

/// One store's compaction.
#[derive(Debug, Clone)]
pub struct StoreCompaction {
    /// The user.
    pub user: String,
    /// The accounting before (default when locked).
    pub before: Usage,
    /// The decision.
    pub decision: Decision,
    /// The accounting after a rewrite.
    pub after: Option<Usage>,
    /// The new data file's name after a rewrite.
    pub new_data_file: Option<String>,
    /// Damaged messages whose only copy the rewrite dropped (it could not be restored
    /// anyway): marked lost in the new index, so the next run fetches again those the mail
    /// server still has.
    pub dropped_damaged: Vec<DamagedMessage>,
}

/// Compacts `user`'s store under `root` if it passes the threshold (see the module docs).
pub fn compact_user(root: &Path, user: &str, o: &CompactOptions) -> Result<StoreCompaction> {
    let locked = match UserDir::new(root, user)?.lock() {
        Ok(l) => l,
        Err(StoreError::Locked { .. }) => {
            return Ok(StoreCompaction {
                user: user.to_owned(),
                before: Usage::default(),
                decision: Decision::Locked,
                after: None,
                new_data_file: None,
                dropped_damaged: Vec::new(),
            })
        }
        Err(e) => return Err(e),
    };
    let store = locked.open_existing(o.store.clone())?;
    compact_store(store, o).map(|(_, r)| r)
}

/// Compacts an opened store if it passes the threshold; hands back the store (the new one
/// after a rewrite).
pub fn compact_store(store: Store, o: &CompactOptions) -> Result<(Store, StoreCompaction)> {
    let cutoff = o.cutoff();
    let before = store.catalog().usage(cutoff)?;
    let decision = if before.dirty_bytes <= o.min_bytes {
        Decision::UnderMinimum
    } else if before.dirty_ratio() <= o.threshold {
        Decision::UnderThreshold
    } else {
        Decision::Compact
    };
    let mut report = StoreCompaction {
        user: store.catalog().user().to_owned(),
        before,
        decision,
        after: None,
        new_data_file: None,
        dropped_damaged: Vec::new(),
    };
    if decision != Decision::Compact || o.dry_run {
        return Ok((store, report));
    }
    report.dropped_damaged = store
        .catalog()
        .damaged()?
        .into_iter()
        .filter(|d| d.entry.is_some())
        .collect();
    let mut live = HashSet::new();
    store.catalog().entry_states(cutoff, |e| {
        if !e.dirty {
            live.insert((e.chunk_offset, e.header_offset));
        }
        Ok(())
    })?;
    let old_path = store.catalog().data_path().to_path_buf();
    let old_name = store.catalog().data_file_name().to_owned();
    let committed = store.committed_len();
    let locked = store.close()?;
    let new_name = write_live(&locked, &old_path, &old_name, committed, &live, o)?;
    // The rebuilt index marks the records whose message was dropped as lost, so the
    // planner still copies their folders again.
    let (store, _) = locked.install_data_file(&new_name, o.store.clone())?;
    report.after = Some(store.catalog().usage(cutoff)?);
    report.new_data_file = Some(new_name);
    Ok((store, report))
}

/// Streams the live entries of `old_path` into a new data file; returns its name.
fn write_live(
    locked: &LockedDir,
    old_path: &Path,
    old_name: &str,
    committed: u64,
    live: &HashSet<(u64, u64)>,
    o: &CompactOptions,
) -> Result<String> {
    let dir = locked.dir();
    let mut secs = o.now.secs;
    let name = loop {
        let n = data_file_name(secs);
        if n != old_name && !dir.file(&n).exists() {
            break n;
        }
        secs += 1;
    };
    let new_path = dir.file(&name);
    let io = |path: &Path, op: &'static str| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, op, source }
    };
    let out = crate::private::create_new(&new_path)
        .map_err(io(&new_path, "creating the compacted data file"))?;
    let arch = |source| StoreError::Archive {
        path: new_path.clone(),
        source,
    };
    let damaged = |source| StoreError::Damaged {
        path: old_path.to_path_buf(),
        source,
    };
    let mut w = ArchiveWriter::new(std::io::BufWriter::new(out), 0);
    w.set_level(o.store.gzip_level);
    let old = File::open(old_path).map_err(io(old_path, "opening the data file"))?;
    let mut sc = Scanner::new(old);
    loop {
        match sc.next_event().map_err(damaged)? {
            ScanEvent::ChunkStart { offset } if offset >= committed => break,
            ScanEvent::ChunkStart { .. } => {}
            ScanEvent::Entry(mut e) => {
                if !live.contains(&(e.location.chunk_offset, e.location.header_offset)) {
                    continue;
                }
                if matches!(e.header.meta, EntryMeta::Unknown { .. }) {
                    // This version cannot write entries it does not understand.
                    return Err(StoreError::Invalid {
                        what: "compaction",
                        expected: "only entry kinds this version can write",
                        found: e.header.meta.kind().to_owned(),
                    });
                }
                let span = e.header.size + 4 * 512;
                if let Some(len) = w.chunk_len() {
                    if len > 0 && len + span > o.store.chunk_cap {
                        w.finish_chunk().map_err(arch)?;
                    }
                }
                if w.chunk_len().is_none() {
                    w.start_chunk().map_err(arch)?;
                }
                let meta = e.header.meta.clone();
                let size = e.header.size;
                w.append_reader(&meta, size, &mut e).map_err(arch)?;
            }
            ScanEvent::ChunkEnd(_) => {}
            ScanEvent::End(_) => break,
        }
    }
    if w.chunk_len().is_some() {
        w.finish_chunk().map_err(arch)?;
    }
    let mut buf = w.into_inner().ok_or_else(|| StoreError::Invalid {
        what: "compacted data file writer",
        expected: "a writer holding its file",
        found: "none".into(),
    })?;
    buf.flush()
        .map_err(io(&new_path, "writing the compacted data file"))?;
    let f = buf
        .into_inner()
        .map_err(|e| io(&new_path, "writing the compacted data file")(e.into_error()))?;
    f.sync_all()
        .map_err(io(&new_path, "syncing the compacted data file"))?;
    File::open(dir.path())
        .and_then(|d| d.sync_all())
        .map_err(io(dir.path(), "syncing the directory"))?;
    Ok(name)
}

/// One user's compaction among many: what was done, or why it failed.
#[derive(Debug)]
pub struct UserCompaction {
    /// The user.
    pub user: String,
    /// The store's compaction, or what stopped it.
    pub result: Result<StoreCompaction>,
}

/// What a compaction of many stores did, user by user.
#[derive(Debug, Default)]
pub struct CompactReport {
    /// Whether it was a dry run (decisions only, nothing changed).
    pub dry_run: bool,
    /// Each user's compaction, in the order they were done.
    pub users: Vec<UserCompaction>,
}

impl CompactReport {
    /// Users whose compaction failed.
    pub fn failed(&self) -> usize {
        self.users.iter().filter(|u| u.result.is_err()).count()
    }
}

/// The stores to compact could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("listing stores: {source}")]
pub struct CompactError {
    /// The store root.
    pub root: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The compaction of every store under a root (or one user's), one store each time it is
/// advanced, so a caller can say what was done store by store (and stop between two).
#[derive(Debug)]
pub struct Compactions<'a> {
    root: &'a Path,
    users: std::vec::IntoIter<String>,
    o: &'a CompactOptions,
}

impl Iterator for Compactions<'_> {
    type Item = UserCompaction;

    fn next(&mut self) -> Option<UserCompaction> {
        let user = self.users.next()?;
        let result = compact_user(self.root, &user, self.o);
        Some(UserCompaction { user, result })
    }
}

/// The compactions of `user`'s store, or of every store under `root` (in user order), each
/// done when the iterator gets to it ([`compact_user`]).
pub fn compactions<'a>(
    root: &'a Path,
    user: Option<&str>,
    o: &'a CompactOptions,
) -> std::result::Result<Compactions<'a>, CompactError> {
    let users = match user {
        Some(u) => vec![u.to_owned()],
        None => {
            crate::verify::store_users(root)
                .map_err(|source| CompactError {
                    root: root.to_path_buf(),
                    source,
                })?
                .0
        }
    };
    Ok(Compactions {
        root,
        users: users.into_iter(),
        o,
    })
}

/// Compacts `user`'s store, or every store under `root`, one after the other.
pub fn compact(
    root: &Path,
    user: Option<&str>,
    o: &CompactOptions,
) -> std::result::Result<CompactReport, CompactError> {
    Ok(CompactReport {
        dry_run: o.dry_run,
        users: compactions(root, user, o)?.collect(),
    })
}
