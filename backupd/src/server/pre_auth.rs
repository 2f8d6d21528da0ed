//! The pre-authentication pool: connections that have not yet proved they hold the secret.
//!
//! It is small (`max_unauthenticated`, 16 by default) and separate from the
//! `max_connections` slots, which only authenticated backup hosts take, so idle
//! unauthenticated sockets never keep a backup host out of a slot.
//!
//! When the pool is full, the listener makes room before it accepts the next connection:
//! it evicts the oldest member (closed without a word) once that member has had
//! [`EVICTION_GRACE`] for its handshake, and until then it waits, leaving new connections
//! in the kernel's listen queue. So:
//!
//! * a backup host's connection, once admitted, is never evicted before it has had the
//!   grace, 100 times what a TLS 1.3 handshake and the proofs take on a loaded machine;
//!   a burst of honest connections larger than the pool waits its turn instead of being
//!   cut off;
//! * sockets that connect and say nothing hold their place for [`EVICTION_GRACE`] at most
//!   while others are waiting, and for the handshake timeout (`auth_timeout_secs`) at most
//!   otherwise: 200 of them delay a backup host by about 200 / 16 × 0.25 s ≈ 3 s;
//! * to keep a backup host out for good, an attacker must open new connections faster
//!   than the pool admits them (16 / 0.25 s = 64 a second by default) for as long as it
//!   wants the backup to fail, from an address `allow_from` admits.
//!
//! Evicting at once (no grace) would raise that rate to thousands a second, but would cut
//! off honest connections in any burst larger than the pool; refusing new connections
//! instead (the old scheme) let 64 idle sockets fail the nightly run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// How long a connection in the pool is safe from eviction.
pub(super) const EVICTION_GRACE: Duration = Duration::from_millis(250);

/// The connections still in their handshake, oldest first.
#[derive(Debug)]
pub(super) struct PreAuthPool {
    limit: usize,
    grace: Duration,
    inner: Mutex<Inner>,
    /// Woken when a connection leaves the pool.
    left: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Admission number → when it was admitted, and the sender whose drop tells that
    /// connection it is evicted.
    waiting: BTreeMap<u64, (Instant, oneshot::Sender<()>)>,
}

/// One connection's place in the pool; leaving (drop) frees it.
#[derive(Debug)]
pub(super) struct Ticket {
    pool: Arc<PreAuthPool>,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl PreAuthPool {
    /// A pool of at most `limit` connections (at least 1), each safe from eviction for
    /// `grace` after its admission.
    pub(super) fn new(limit: usize, grace: Duration) -> Arc<PreAuthPool> {
        Arc::new(PreAuthPool {
            limit: limit.max(1),
            grace,
            inner: Mutex::new(Inner::default()),
            left: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the pool has room for one more connection, evicting the oldest member
    /// once it has had its grace; says whether one was evicted. Cancel-safe.
    pub(super) async fn make_room(&self) -> bool {
        loop {
            let notified = self.left.notified();
            let wait = {
                let mut inner = self.lock();
                if inner.waiting.len() < self.limit {
                    return false;
                }
                let (&oldest, &(admitted, _)) =
                    inner.waiting.first_key_value().expect("the pool is full");
                let age = admitted.elapsed();
                if age >= self.grace {
                    // Dropping the sender wakes the connection's `evicted()`.
                    inner.waiting.remove(&oldest);
                    return true;
                }
                self.grace - age
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Admits a new connection (after [`PreAuthPool::make_room`]).
    pub(super) fn admit(self: &Arc<Self>) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.waiting.insert(id, (Instant::now(), tx));
        Ticket {
            pool: self.clone(),
            id,
            evicted: Some(rx),
        }
    }

    /// Connections in the pool now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Ticket {
    /// Completes when the pool has evicted this connection.
    pub(super) async fn evicted(&mut self) {
        if let Some(rx) = self.evicted.as_mut() {
            let _ = rx.await;
            self.evicted = None;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let removed = self.pool.lock().waiting.remove(&self.id).is_some();
        if removed {
            self.pool.left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn done<T>(f: impl Future<Output = T>) -> Option<T> {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(t) => Some(t),
            Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_waits_out_the_grace_then_evicts_the_oldest() {
        let pool = PreAuthPool::new(2, Duration::from_secs(1));
        assert_eq!(done(pool.make_room()), Some(false));
        let mut a = pool.admit();
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut b = pool.admit();
        assert_eq!(pool.len(), 2);
        // Full, and nobody has had the grace yet: no room, nobody evicted.
        assert_eq!(done(pool.make_room()), None);
        assert!(done(a.evicted()).is_none() && done(b.evicted()).is_none());
        // The grace runs out for `a` (virtual time): it goes, `b` stays.
        assert!(pool.make_room().await);
        assert!(done(a.evicted()).is_some(), "the oldest goes");
        assert!(done(b.evicted()).is_none());
        let mut c = pool.admit();
        assert_eq!(pool.len(), 2);
        // One that authenticates and leaves makes room at once.
        let room = tokio::spawn({
            let pool = pool.clone();
            async move { pool.make_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished());
        drop(b);
        assert!(
            !room.await.unwrap(),
            "room made by a leaver, nobody evicted"
        );
        assert!(done(c.evicted()).is_none());
        drop(a);
        assert_eq!(pool.len(), 1, "an evicted ticket's drop changes nothing");
    }
}
