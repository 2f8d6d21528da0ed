//! The pre-authentication pool: connections that have not yet proved they hold the secret.
//!
//! It is small (`max_unauthenticated`, 16 by default) and separate from the
//! `max_connections` slots, which only authenticated backup hosts take. When it is full, a
//! new connection evicts the oldest one in it (closed without a word) rather than being
//! turned away: a peer that opens sockets and says nothing can then never lock the backup
//! host out. To keep a real handshake (two round trips, a few milliseconds) from being
//! evicted, an attacker has to open `max_unauthenticated` connections within that time,
//! thousands a second, from an address `allow_from` admits; refusing new connections
//! instead would let 16 idle sockets block every backup until they time out. Each
//! connection is in the pool for at most the handshake timeout (`auth_timeout_secs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The connections still in their handshake, oldest first.
#[derive(Debug)]
pub(super) struct PreAuthPool {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Admission number → the sender whose drop tells that connection it is evicted.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One connection's place in the pool; leaving (drop) frees it.
#[derive(Debug)]
pub(super) struct Ticket {
    pool: Arc<PreAuthPool>,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl PreAuthPool {
    /// A pool of at most `limit` connections (at least 1).
    pub(super) fn new(limit: usize) -> Arc<PreAuthPool> {
        Arc::new(PreAuthPool {
            limit: limit.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Admits a new connection, evicting the oldest one when the pool is full; says
    /// whether one was evicted.
    pub(super) fn admit(self: &Arc<Self>) -> (Ticket, bool) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        while inner.waiting.len() >= self.limit {
            // Dropping the sender wakes the connection's `evicted()`.
            evicted |= inner.waiting.pop_first().is_some();
        }
        let id = inner.next;
        inner.next += 1;
        inner.waiting.insert(id, tx);
        (
            Ticket {
                pool: self.clone(),
                id,
                evicted: Some(rx),
            },
            evicted,
        )
    }

    /// Connections in the pool now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .len()
    }
}

impl Ticket {
    /// Completes when a newer connection has evicted this one.
    pub(super) async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            Some(rx) => {
                let _ = rx.await;
                self.evicted = None;
            }
            None => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pool
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn done(f: impl Future<Output = ()>) -> bool {
        let mut f = pin!(f);
        matches!(
            f.as_mut().poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(())
        )
    }

    #[test]
    fn a_full_pool_evicts_its_oldest_and_leaving_frees_a_place() {
        let pool = PreAuthPool::new(2);
        let (mut a, ea) = pool.admit();
        let (mut b, eb) = pool.admit();
        assert!(!ea && !eb);
        assert_eq!(pool.len(), 2);
        assert!(!done(a.evicted()) && !done(b.evicted()));
        let (mut c, ec) = pool.admit();
        assert!(ec, "the pool was full");
        assert!(done(a.evicted()), "the oldest goes");
        assert!(!done(b.evicted()) && !done(c.evicted()));
        assert_eq!(pool.len(), 2);
        // b authenticates and leaves: the next one evicts nobody.
        drop(b);
        let (_d, ed) = pool.admit();
        assert!(!ed);
        assert!(!done(c.evicted()));
        drop(a);
        assert_eq!(pool.len(), 2, "an evicted ticket's drop changes nothing");
    }
}
