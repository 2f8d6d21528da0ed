//! Sign-in throttling: after [`MAX_FAILURES`] wrong passwords for one account name, or
//! from one address, within [`WINDOW`], further sign-ins for it are refused until the
//! window has passed since the first of them. Guessing a password online then costs a
//! window per handful of tries; a locked-out colleague waits a quarter of an hour at most.
//! Counts are in memory (a restart forgets them).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed per name or address per window.
pub const MAX_FAILURES: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Names and addresses tracked at most (older entries are dropped first).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    first: Instant,
    count: u32,
}

/// What sign-in failures were seen lately.
#[derive(Debug, Default)]
pub struct Throttle {
    by_name: Mutex<HashMap<String, Failures>>,
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

fn blocked<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Failures>>,
    k: &K,
    now: Instant,
) -> bool {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(k)
        .is_some_and(|f| f.count >= MAX_FAILURES && now.duration_since(f.first) < WINDOW)
}

fn count<K: std::hash::Hash + Eq + Clone>(map: &Mutex<HashMap<K, Failures>>, k: &K, now: Instant) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_TRACKED {
        map.retain(|_, f| now.duration_since(f.first) < WINDOW);
    }
    let f = map.entry(k.clone()).or_insert(Failures {
        first: now,
        count: 0,
    });
    if now.duration_since(f.first) >= WINDOW {
        *f = Failures {
            first: now,
            count: 0,
        };
    }
    f.count += 1;
}

impl Throttle {
    /// Whether a sign-in as `name` from `addr` is refused without looking at the password.
    pub fn refused(&self, name: &str, addr: IpAddr) -> bool {
        let now = Instant::now();
        blocked(&self.by_name, &name.to_owned(), now) || blocked(&self.by_addr, &addr, now)
    }

    /// Counts a wrong password for `name` from `addr`.
    pub fn failed(&self, name: &str, addr: IpAddr) {
        let now = Instant::now();
        count(&self.by_name, &name.to_owned(), now);
        count(&self.by_addr, &addr, now);
    }

    /// Forgets `name`'s failures (it signed in).
    pub fn succeeded(&self, name: &str) {
        self.by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_try_is_refused_for_that_name_and_that_address() {
        let t = Throttle::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(!t.refused("ann", a));
            t.failed("ann", a);
        }
        assert!(t.refused("ann", b), "by name");
        assert!(t.refused("bob", a), "by address");
        assert!(!t.refused("bob", b));
        t.succeeded("ann");
        assert!(!t.refused("ann", b));
    }
}
