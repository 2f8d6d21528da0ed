//! The user list LIST_USERS answers (every user with a live INBOX, and that INBOX's
//! partition), kept between requests: [`UserList`] is the list in a compact form,
//! [`UserListCache`] keeps one and says when it must be read again.
//!
//! ## Why a cache, and when it is reused
//!
//! Reading the list walks all of mailboxes.db: about 2.8 s at 500,000 users
//! (docs/mailbox-list.md), and every feeder of every RAID set of the backup host asks, as
//! does `users refresh`. The list only changes when mailboxes.db does, so it is kept with the
//! file's stat data (device, inode, size, mtime and ctime with nanoseconds: [`DbStamp`]) and
//! reused while the file's stat data are the same.
//!
//! A list served is never older than mailboxes.db at the moment the request arrived:
//!
//! * A request takes the file's stat data after it arrived; the cached list is served only if
//!   they equal the stamp it was read under.
//! * A list is cached under a stamp only if the file's stat data were the same just before
//!   the read and just after it. Every commit of a twoskip file appends records (its size
//!   grows), and a repack renames a new file over it (a new inode), so a write that lands
//!   during the read changes the stat data even within one tick of the coarse file clock;
//!   the list read is then served to the request that read it (its read began after the
//!   request arrived) but not kept.
//!
//! Single flight: one read at a time. A request that arrives while a read is under way waits
//! for it; it may take that read's list only if the list is cached (its stamp still matches
//! the file), since the read may have passed a key before the request arrived. Otherwise the
//! requests waiting start one new read together and all take its list (it began after they
//! arrived), stamped or not. So a burst of requests costs at most two reads, and a failed
//! read fails everyone who waited for it rather than each trying again in turn.

use super::error::{io_err, SpoolError};
use formats::protocol::UserEntry;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Every user with a live INBOX, in user id order, with the partition of that INBOX; what
/// LIST_USERS sends and nothing more: about 20 bytes per user plus the user id's bytes (the
/// ids in one string, the few partition names once each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserList {
    /// The user ids, one after the other.
    names: String,
    /// Where each user id ends in `names`.
    ends: Vec<usize>,
    /// Each user's INBOX partition, as an index into `partitions`.
    partition_of: Vec<u32>,
    /// The partition names.
    partitions: Vec<Box<str>>,
}

impl UserList {
    /// A list from `(user, partition)` pairs in any order: sorted by user id, and of a user
    /// given twice the first pair kept (as the mailbox list's walk finds them).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> UserList {
        let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0)); // stable: the first of a user stays first
        pairs.dedup_by(|later, first| later.0 == first.0);
        let mut list = UserList {
            names: String::with_capacity(pairs.iter().map(|p| p.0.len()).sum()),
            ends: Vec::with_capacity(pairs.len()),
            partition_of: Vec::with_capacity(pairs.len()),
            partitions: Vec::new(),
        };
        for (user, partition) in pairs {
            list.names.push_str(user);
            list.ends.push(list.names.len());
            let p = match list.partitions.iter().position(|p| **p == *partition) {
                Some(p) => p,
                None => {
                    list.partitions.push(partition.into());
                    list.partitions.len() - 1
                }
            };
            // A handful of partitions per server; u32 cannot run out before memory does.
            list.partition_of.push(p as u32);
        }
        list
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th user and the partition of their INBOX.
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let partition = &self.partitions[self.partition_of[i] as usize];
        Some((&self.names[start..end], partition))
    }

    /// Users `range` as protocol entries, for sending a slice at a time (the whole list is
    /// never turned into entries at once).
    pub fn entries(&self, range: std::ops::Range<usize>) -> Vec<UserEntry> {
        range
            .filter_map(|i| self.get(i))
            .map(|(user, partition)| UserEntry {
                user: user.into(),
                partition: partition.into(),
            })
            .collect()
    }

    /// Bytes the list holds on the heap (what a cached list costs).
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity()
            + self.ends.capacity() * size_of::<usize>()
            + self.partition_of.capacity() * size_of::<u32>()
            + self.partitions.iter().map(|p| p.len() + 16).sum::<usize>()
    }
}

impl From<Vec<UserEntry>> for UserList {
    fn from(entries: Vec<UserEntry>) -> UserList {
        UserList::from_pairs(entries.iter().map(|e| (&*e.user, &*e.partition)))
    }
}

/// mailboxes.db's stat data, which change whenever Cyrus commits to it or replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbStamp {
    /// Device and inode: a repack renames a new file over the old one.
    pub file: (u64, u64),
    /// Size: every twoskip commit appends.
    pub size: u64,
    /// Modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// Status change time, seconds and nanoseconds.
    pub ctime: (i64, i64),
}

impl DbStamp {
    /// The stat data of the file at `path` (following the name: a renamed-over file is seen).
    pub fn of(path: &Path) -> Result<DbStamp, SpoolError> {
        let m = std::fs::metadata(path).map_err(io_err(path))?;
        Ok(DbStamp {
            file: (m.dev(), m.ino()),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The last user list read and the state of the read under way; see the module documentation.
#[derive(Debug, Default)]
pub struct UserListCache {
    state: Mutex<State>,
    /// Signalled when a read ends.
    read_done: Condvar,
    /// Reads of mailboxes.db so far.
    builds: AtomicU64,
}

/// A read's number and its outcome, shared by the requests that waited for it.
type SharedRead = (u64, Result<Arc<UserList>, Arc<SpoolError>>);

#[derive(Debug, Default)]
struct State {
    /// The list and the stamp it was read under (stat data the same before and after).
    cached: Option<(DbStamp, Arc<UserList>)>,
    /// Whether a read is under way.
    reading: bool,
    /// Reads started so far; a read's number is the count once it started.
    started: u64,
    /// Requests waiting for a read to end (seen by the tests).
    waiting: usize,
    /// The outcome of the last read that ended, with its number, for the requests that
    /// waited for it.
    last: Option<SharedRead>,
}

impl UserListCache {
    /// How many times the list has been read from mailboxes.db (for the log, the tests and
    /// measurements: a burst of requests served by one read shows as one).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// Requests waiting for a read under way to end (the tests watch it: a request that
    /// arrives during a read waits rather than reading too).
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// The user list, from the cache if `stamp()` (mailboxes.db's stat data, taken now)
    /// matches the cached list's stamp, else from `read()`, one read at a time.
    pub fn get(
        &self,
        stamp: impl Fn() -> Result<DbStamp, SpoolError>,
        read: impl FnOnce() -> Result<UserList, SpoolError>,
    ) -> Result<Arc<UserList>, SpoolError> {
        let mut st = self.lock();
        // Any read that starts from now on began after this request arrived.
        let fresh_from = st.started + 1;
        let mut read = Some(read);
        loop {
            if let Some((n, outcome)) = &st.last {
                if *n >= fresh_from {
                    return outcome.clone().map_err(SpoolError::Shared);
                }
            }
            if !st.reading {
                let now = stamp()?;
                if let Some((at, list)) = &st.cached {
                    if *at == now {
                        return Ok(list.clone());
                    }
                }
                st.reading = true;
                st.started += 1;
                let n = st.started;
                drop(st);
                let read = read.take().expect("one read per request");
                return self.read_once(n, now, &stamp, read);
            }
            st.waiting += 1;
            st = self
                .read_done
                .wait(st)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            st.waiting -= 1;
        }
    }

    /// One read, as number `n`, the file's stat data `before` it taken already; whatever
    /// happens (a panic too), the read is marked ended and the waiting requests woken.
    fn read_once(
        &self,
        n: u64,
        before: DbStamp,
        stamp: &impl Fn() -> Result<DbStamp, SpoolError>,
        read: impl FnOnce() -> Result<UserList, SpoolError>,
    ) -> Result<Arc<UserList>, SpoolError> {
        struct Ended<'a>(&'a UserListCache);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.lock().reading = false;
                self.0.read_done.notify_all();
            }
        }
        let _ended = Ended(self);
        self.builds.fetch_add(1, Ordering::Relaxed);
        let start = std::time::Instant::now();
        let outcome = read().map(Arc::new);
        // Kept only if nothing was written to the file while it was read.
        let unchanged = match (&outcome, stamp()) {
            (Ok(_), Ok(after)) => after == before,
            _ => false,
        };
        if let Ok(list) = &outcome {
            tracing::info!(
                users = list.len(),
                seconds = start.elapsed().as_secs_f64(),
                reads = n,
                kept = unchanged,
                "user list read from mailboxes.db"
            );
        }
        let mut st = self.lock();
        st.cached = match (&outcome, unchanged) {
            (Ok(list), true) => Some((before, list.clone())),
            _ => None,
        };
        let (outcome, shared) = match outcome {
            Ok(list) => (Ok(list.clone()), Ok(list)),
            Err(e) => {
                let e = Arc::new(e);
                (Err(SpoolError::Shared(e.clone())), Err(e))
            }
        };
        st.last = Some((n, shared));
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic: `reading` is reset by `Ended`.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn stamp(size: u64) -> DbStamp {
        DbStamp {
            file: (1, 2),
            size,
            mtime: (1_700_000_000, 5),
            ctime: (1_700_000_000, 5),
        }
    }

    fn list(users: &[&str]) -> UserList {
        UserList::from_pairs(users.iter().map(|u| (*u, "default")))
    }

    #[test]
    fn compact_list_sorted_first_pair_kept() {
        let l = UserList::from_pairs([
            ("bob", "p2"),
            ("alice", "default"),
            ("bob", "default"),
            ("carol@example.com", "p2"),
        ]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(0), Some(("alice", "default")));
        assert_eq!(l.get(1), Some(("bob", "p2")));
        assert_eq!(l.get(2), Some(("carol@example.com", "p2")));
        assert_eq!(l.get(3), None);
        assert_eq!(l.partitions.len(), 2);
        let e = l.entries(1..3);
        assert_eq!((e[0].user.as_str(), e[1].partition.as_str()), ("bob", "p2"));
    }

    #[test]
    fn reused_while_the_stamp_holds_read_again_when_it_changes() {
        let cache = UserListCache::default();
        let size = AtomicU64::new(100);
        let now = || Ok(stamp(size.load(Ordering::SeqCst)));
        let a = cache.get(now, || Ok(list(&["alice"]))).unwrap();
        let b = cache.get(now, || panic!("not read again")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.builds(), 1);
        size.store(200, Ordering::SeqCst); // Cyrus committed: the file grew
        let c = cache.get(now, || Ok(list(&["alice", "bob"]))).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(cache.builds(), 2);
    }

    #[test]
    fn a_list_whose_file_changed_while_read_is_served_not_kept() {
        // A commit lands during the read in the same mtime tick: only the size tells.
        let cache = UserListCache::default();
        let size = AtomicU64::new(100);
        let now = || Ok(stamp(size.load(Ordering::SeqCst)));
        let first = cache
            .get(now, || {
                size.store(150, Ordering::SeqCst);
                Ok(list(&["alice"]))
            })
            .unwrap();
        assert_eq!(first.len(), 1, "served to the request that read it");
        // The file is now at 150; the list read might have missed that commit: read again.
        let second = cache.get(now, || Ok(list(&["alice", "bob"]))).unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(cache.builds(), 2);
        // And that one is kept.
        cache.get(now, || panic!("not read again")).unwrap();
    }

    #[test]
    fn an_error_is_not_kept() {
        let cache = UserListCache::default();
        let now = || Ok(stamp(1));
        let err = cache
            .get(now, || Err(SpoolError::Config("broken".into())))
            .unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        assert_eq!(cache.get(now, || Ok(list(&["a"]))).unwrap().len(), 1);
    }

    #[test]
    fn concurrent_requests_share_one_read() {
        // Requests that arrive while a read is under way wait for it rather than read too.
        let cache = UserListCache::default();
        let reads = AtomicUsize::new(0);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                cache.get(
                    || Ok(stamp(1)),
                    || {
                        reads.fetch_add(1, Ordering::SeqCst);
                        started_tx.send(()).unwrap();
                        go_rx.lock().unwrap().recv().unwrap();
                        Ok(list(&["alice"]))
                    },
                )
            });
            started_rx.recv().unwrap();
            let others: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        cache.get(
                            || Ok(stamp(1)),
                            || {
                                reads.fetch_add(1, Ordering::SeqCst);
                                Ok(list(&["alice"]))
                            },
                        )
                    })
                })
                .collect();
            // All four are in `get` while the read is under way, waiting rather than reading.
            while cache.lock().waiting < 4 {
                std::thread::yield_now();
            }
            go_tx.send(()).unwrap();
            let a = first.join().unwrap().unwrap();
            for o in others {
                assert!(Arc::ptr_eq(&a, &o.join().unwrap().unwrap()));
            }
        });
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.builds(), 1);
    }

    #[test]
    fn waiters_take_a_read_that_began_after_they_arrived_even_if_unkept() {
        // Read 1 is under way when the others arrive; the file changes during it, so its list
        // is neither kept nor good for them: one read 2 serves them all, changed file or not.
        let cache = UserListCache::default();
        let size = AtomicU64::new(1);
        let now = || Ok(stamp(size.load(Ordering::SeqCst)));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                cache.get(now, || {
                    started_tx.send(()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                    size.fetch_add(1, Ordering::SeqCst);
                    Ok(list(&["alice"]))
                })
            });
            started_rx.recv().unwrap();
            let others: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        cache.get(now, || {
                            size.fetch_add(1, Ordering::SeqCst); // still changing
                            Ok(list(&["alice", "bob"]))
                        })
                    })
                })
                .collect();
            while cache.lock().waiting < 3 {
                std::thread::yield_now();
            }
            go_tx.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap().len(), 1);
            for o in others {
                assert_eq!(o.join().unwrap().unwrap().len(), 2);
            }
        });
        assert_eq!(cache.builds(), 2, "read 1, then one read for all three");
    }
}
