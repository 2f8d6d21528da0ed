//! The nightly run's scheduler: one feeder thread per RAID set, N worker threads.
//!
//! A feeder holds its RAID set's users in backup order and offers one batch at a time on a
//! rendezvous channel; with `batches_per_raidset` batches out (1 by default), it offers the
//! next only once a worker has finished one of them. So by default at most one batch per
//! RAID set is ever in flight: no set of drives serves two backups at once. A worker waits on every feeder's channel at once
//! (crossbeam's `Select` picks at random among those ready), which is "a random feeder
//! whose RAID set is idle".
//!
//! The scheduler is generic over the per-user backup ([`Backend`]) so its tests need no
//! network; results come back to the calling thread, which records them (state db,
//! progress) one at a time.

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Select, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A user to back up, as the scheduler hands it to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledUser {
    /// User id.
    pub name: String,
    /// The mail server it lives on (config name).
    pub server: String,
    /// Its RAID set.
    pub raidset: String,
    /// The quiet key the state db holds for it ([`crate::backup::QuietKey`]).
    pub quiet_key: Option<String>,
}

/// One RAID set's users, already in backup order (see
/// [`crate::state::StateDb::users_to_back_up`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidSetQueue {
    /// The RAID set.
    pub name: String,
    /// Its users, first to back up first.
    pub users: Vec<ScheduledUser>,
}

/// How many threads, how many users per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Worker threads.
    pub workers: usize,
    /// Users per batch.
    pub batch_size: usize,
    /// Batches of one RAID set in flight at once (1: one backup per set of drives).
    pub batches_per_raidset: usize,
}

/// The per-user backup the workers run. The scheduler knows nothing of what a backup
/// returns: it hands each [`Backend::Outcome`] back to the calling thread.
pub trait Backend: Sync {
    /// What a worker keeps between users (its backupd connections).
    type Worker;
    /// What one user's backup returns.
    type Outcome: Send;
    /// A worker's state, made on the worker's thread.
    fn new_worker(&self, index: usize) -> Self::Worker;
    /// Backs up one user.
    fn backup(&self, worker: &mut Self::Worker, user: &ScheduledUser) -> Self::Outcome;
}

/// One user's backup finished (or failed, or was skipped).
#[derive(Debug)]
pub struct UserDone<O> {
    /// Who.
    pub user: ScheduledUser,
    /// When its backup started (wall clock).
    pub started: SystemTime,
    /// How long it took.
    pub elapsed: Duration,
    /// Which worker.
    pub worker: usize,
    /// What came of it.
    pub result: O,
}

/// What the scheduler did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Users handed to [`Backend::backup`].
    pub users_attempted: u64,
    /// Users never reached because the run was stopped.
    pub users_not_reached: u64,
    /// Batches handed out.
    pub batches: u64,
    /// Whether the stop flag ended the run early.
    pub stopped: bool,
}

struct Batch {
    users: Vec<ScheduledUser>,
    /// Dropped by the worker when the batch is finished: frees the RAID set's slot.
    _slot: Slot,
}

/// One of a RAID set's `batches_per_raidset` places in flight: the feeder fills one (a
/// bounded channel of that capacity) before offering a batch, and the batch gives it back
/// when dropped (finished, stopped or panicked alike).
struct Slot(Receiver<()>);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}

/// How long a worker waits for a batch before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// What the calling thread hears from a run ([`run_events`]).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per user, moved once: a Box would buy nothing
pub enum Event<O> {
    /// A user's backup ended (or failed, or was skipped).
    Done(UserDone<O>),
    /// No backup has ended for [`IDLE`]: time to flush what waits for the next result.
    Idle,
}

/// How long the calling thread waits for a result before it hears [`Event::Idle`].
pub const IDLE: Duration = Duration::from_millis(500);

/// Runs every queue through `backend` with `opts.workers` workers. `on_done` is called on
/// the calling thread for each user as its backup ends; when it returns an error, the run
/// stops as on `stop` (workers finish their current user) and the first error is
/// returned. `stop` (set by a signal handler) stops the run the same way.
pub fn run<B, F, E>(
    backend: &B,
    queues: Vec<RaidSetQueue>,
    opts: SchedulerOptions,
    stop: &AtomicBool,
    mut on_done: F,
) -> Result<SchedulerReport, E>
where
    B: Backend,
    F: FnMut(UserDone<B::Outcome>) -> Result<(), E>,
{
    run_events(backend, queues, opts, stop, |event| match event {
        Event::Done(done) => on_done(done),
        Event::Idle => Ok(()),
    })
}

/// [`run`], with [`Event::Idle`] as well whenever no backup ended for [`IDLE`] (a long
/// user's backup must not hold back what the caller batches, such as state db rows).
pub fn run_events<B, F, E>(
    backend: &B,
    queues: Vec<RaidSetQueue>,
    opts: SchedulerOptions,
    stop: &AtomicBool,
    mut on_event: F,
) -> Result<SchedulerReport, E>
where
    B: Backend,
    F: FnMut(Event<B::Outcome>) -> Result<(), E>,
{
    let batch_size = opts.batch_size.max(1);
    let per_raidset = opts.batches_per_raidset.max(1);
    let workers = opts.workers.max(1);
    let total: u64 = queues.iter().map(|q| q.users.len() as u64).sum();
    let mut report = SchedulerReport::default();
    let mut first_error = None;
    let (res_tx, res_rx) = unbounded::<UserDone<B::Outcome>>();
    let (batch_count_tx, batch_count_rx) = unbounded::<()>();

    std::thread::scope(|s| {
        let mut receivers: Vec<Receiver<Batch>> = Vec::new();
        for q in queues {
            let (tx, rx) = bounded::<Batch>(0);
            receivers.push(rx);
            let batch_count_tx = batch_count_tx.clone();
            std::thread::Builder::new()
                .name(format!("feeder-{}", q.name))
                .spawn_scoped(s, move || {
                    let (slots_tx, slots_rx) = bounded::<()>(per_raidset);
                    for chunk in q.users.chunks(batch_size) {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        // Blocks while every slot is out; a worker dropping a batch frees
                        // one. The feeder holds slots_rx too, so this never disconnects.
                        if slots_tx.send(()).is_err() {
                            break;
                        }
                        let batch = Batch {
                            users: chunk.to_vec(),
                            _slot: Slot(slots_rx.clone()),
                        };
                        // Blocks until a worker takes it; fails once every worker is gone.
                        if tx.send(batch).is_err() {
                            break;
                        }
                        let _ = batch_count_tx.send(());
                    }
                })
                .expect("spawn feeder thread");
        }
        drop(batch_count_tx);
        for index in 0..workers {
            let receivers = receivers.clone();
            let res_tx = res_tx.clone();
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn_scoped(s, move || worker(backend, index, receivers, res_tx, stop))
                .expect("spawn worker thread");
        }
        // Only workers hold receivers and result senders now: when they are all gone,
        // feeders see a closed channel and the loop below ends.
        drop(receivers);
        drop(res_tx);
        loop {
            let event = match res_rx.recv_timeout(IDLE) {
                Ok(done) => {
                    report.users_attempted += 1;
                    Event::Done(done)
                }
                Err(RecvTimeoutError::Timeout) => Event::Idle,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if first_error.is_none() {
                if let Err(e) = on_event(event) {
                    first_error = Some(e);
                    stop.store(true, Ordering::SeqCst);
                }
            }
        }
    });
    report.batches = batch_count_rx.try_iter().count() as u64;
    report.users_not_reached = total.saturating_sub(report.users_attempted);
    report.stopped = stop.load(Ordering::SeqCst) && report.users_not_reached > 0;
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn worker<B: Backend>(
    backend: &B,
    index: usize,
    mut receivers: Vec<Receiver<Batch>>,
    results: Sender<UserDone<B::Outcome>>,
    stop: &AtomicBool,
) {
    let mut state = backend.new_worker(index);
    while !receivers.is_empty() && !stop.load(Ordering::SeqCst) {
        let mut sel = Select::new();
        for rx in &receivers {
            sel.recv(rx);
        }
        let op = match sel.select_timeout(POLL) {
            Ok(op) => op,
            Err(_) => continue,
        };
        let i = op.index();
        let batch = match op.recv(&receivers[i]) {
            Ok(b) => b,
            Err(_) => {
                // That feeder has handed out all its users.
                receivers.swap_remove(i);
                continue;
            }
        };
        for user in batch.users.iter() {
            // Graceful stop: the user under way is finished, no new one is started.
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let started = SystemTime::now();
            let t0 = Instant::now();
            let result = backend.backup(&mut state, user);
            let done = UserDone {
                user: user.clone(),
                started,
                elapsed: t0.elapsed(),
                worker: index,
                result,
            };
            if results.send(done).is_err() {
                return;
            }
        }
        drop(batch);
    }
}
