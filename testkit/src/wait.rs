//! Waiting for what another thread or process does, without guessing how long it takes.
//!
//! A test never sleeps for a fixed time hoping that something happened meanwhile: it waits
//! until it can see that it happened. The deadline below is not a performance limit. It is
//! long enough for the slowest, most loaded machine and is reached only when something is
//! stuck, so that a stuck test fails with a message naming what it waited for instead of
//! hanging.

use std::process::{Child, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a wait lasts before the test calls it stuck.
pub const STUCK: Duration = Duration::from_secs(300);

/// Polls `check` until it returns a value; panics naming `what` after [`STUCK`].
pub fn until_some<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    until_some_within(STUCK, what, check)
}

/// [`until_some`] with another deadline (one that, too, only a stuck test reaches).
pub fn until_some_within<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "stuck: still waiting for {what} after {limit:?}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls `done` until it is true; panics naming `what` after [`STUCK`].
pub fn until(what: &str, mut done: impl FnMut() -> bool) {
    until_some(what, || done().then_some(()))
}

/// Receives from `rx`; panics naming `what` after [`STUCK`] or if every sender is gone.
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(STUCK) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("stuck: still waiting for {what} after {STUCK:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: the sender is gone"),
    }
}

/// Waits for `child` to exit; after [`STUCK`] kills it (SIGKILL) and panics naming `what`.
pub fn exit(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
            return status;
        }
        if start.elapsed() >= STUCK {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stuck: {what} had not exited after {STUCK:?} (killed it)");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
