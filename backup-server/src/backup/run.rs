//! `backup-server run` and `backup-server users refresh`: the config, the state db, the
//! backupd connections and the scheduler put together. What a run did comes back as a
//! [`RunSummary`]; progress is shown through [`RunProgress`], which the binary provides
//! (a bar on a terminal, log lines otherwise).

use super::summary::{RunSummary, UserResult};
use super::user::{backup_user, BackupError, UserJob, UserOutcome};
use super::QuietKey;
use crate::client::{load_secret, Client, ClientError, ClientOptions};
use crate::config::Config;
use crate::scheduler::{
    self, Backend, Event, RaidSetQueue, ScheduledUser, SchedulerOptions, UserDone,
};
use crate::state::{Attempt, RefreshCounts, StateDb, StateError, RENEW_EVERY};
use crate::store::StoreOptions;
use formats::protocol::{Secret, SecretError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `run` should back up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRequest {
    /// Only these users (empty: everyone).
    pub users: Vec<String>,
    /// Only this RAID set.
    pub raidset: Option<String>,
    /// Refresh every server's user list first, however recent it is.
    pub force_refresh: bool,
}

/// What a run shows while it goes: the binary's progress bar or log lines. Every method
/// has a default that does nothing ([`NoProgress`]).
pub trait RunProgress {
    /// The run starts with `planned` users.
    fn start(&mut self, planned: u64) {
        let _ = planned;
    }
    /// A user's backup ended; `summary` holds the totals so far.
    fn user_ended(&mut self, summary: &RunSummary) {
        let _ = summary;
    }
    /// Runs `log` (which writes a log line) so that it does not garble the display.
    fn log(&mut self, log: &mut dyn FnMut()) {
        log()
    }
    /// The run is over.
    fn finish(&mut self) {}
}

/// Shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl RunProgress for NoProgress {}

/// Why a run failed as a whole (exit status 1), as opposed to some users failing.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state db could not be opened, read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A server's secret file is unusable: no user of that server could be backed up.
    #[error("server {server}: secret_file: {source}")]
    Secret {
        /// The server's config name.
        server: String,
        /// What is wrong with the file.
        #[source]
        source: SecretError,
    },
    /// What the run was asked to back up does not exist.
    #[error("{source}{}", unreachable_note(*.unreachable))]
    Request {
        /// What was wrong.
        #[source]
        source: RequestError,
        /// Mail servers that did not answer the user list refresh (a user asked for by
        /// name may be on one of them).
        unreachable: u64,
    },
}

fn unreachable_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} mail servers did not answer the user list refresh)")
    }
}

/// A `--user` or `--raidset` that names nothing the run can back up.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No `[[raidset]]` of that name.
    #[error("--raidset {name}: no [[raidset]] of that name in {config} (known: {known})", config = .config.display())]
    UnknownRaidset {
        /// The name asked for.
        name: String,
        /// The config file.
        config: PathBuf,
        /// The RAID sets it names, comma-separated.
        known: String,
    },
    /// No mail server lists the user.
    #[error("--user {user}: no mail server lists this user")]
    UnknownUser {
        /// The user.
        user: String,
    },
    /// The user's server no longer lists it.
    #[error("--user {user}: server {server} no longer lists this user")]
    Vanished {
        /// The user.
        user: String,
        /// Its server.
        server: String,
    },
    /// The user belongs to another backup host (docs/fleet.md).
    #[error("--user {user}: belongs to backup host {host}, not {this} (move it with `backup-server users assign {user} --to {this}`)")]
    OtherHost {
        /// The user.
        user: String,
        /// Its host.
        host: String,
        /// This host's `host_name`.
        this: String,
    },
    /// The user's partition is on no RAID set.
    #[error("--user {user}: partition {partition:?} of server {server} is in no [[raidset]] of {config}", config = .config.display())]
    NoRaidset {
        /// The user.
        user: String,
        /// Its partition.
        partition: String,
        /// Its server.
        server: String,
        /// The config file.
        config: PathBuf,
    },
}

/// Why one server's user list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Its secret file is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// backupd could not be reached or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    unix(SystemTime::now())
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// What a refresh of every server did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Per server (config name): what changed, or why its list could not be read.
    pub servers: BTreeMap<String, Result<RefreshCounts, RefreshError>>,
    /// Users renamed or created again in Cyrus, stores moved to their user's name
    /// ([`crate::lifecycle::after_refresh`]).
    pub lifecycle: crate::lifecycle::Followed,
}

impl RefreshReport {
    /// Servers whose list could not be read.
    pub fn failed(&self) -> usize {
        self.servers.values().filter(|r| r.is_err()).count()
    }
}

/// The client options of a `[[server]]` (also the lifecycle's listings at refresh).
pub(crate) fn client_options(s: &crate::config::Server) -> ClientOptions {
    ClientOptions {
        connect_timeout: s.connect_timeout,
        io_timeout: Some(s.io_timeout),
        tls: s.tls.clone(),
    }
}

/// Reads the user list of every server (only those last read longer than
/// `config.refresh_after` ago unless `force`) into the state db. A server that cannot be
/// reached is logged and recorded; its users are left as they were.
pub fn refresh(
    config: &Config,
    db: &mut StateDb,
    force: bool,
) -> Result<RefreshReport, StateError> {
    let mut report = RefreshReport::default();
    let now = unix_now();
    let before = crate::lifecycle::before_refresh(db)?;
    for server in &config.servers {
        if !force {
            if let Some(last) = db.last_refresh(&server.name)? {
                if now.saturating_sub(last) < config.refresh_after.as_secs() as i64 {
                    continue;
                }
            }
        }
        let listed = (|| -> Result<Vec<formats::protocol::UserEntry>, RefreshError> {
            let secret = load_secret(&server.secret_file)?;
            let mut c = Client::connect(server.address.as_str(), &secret, &client_options(server))?;
            Ok(c.list_users()?)
        })();
        match listed {
            Ok(users) => {
                let raidset_of =
                    |p: &str| config.raidset_of(&server.name, p).map(|r| r.name.clone());
                let counts =
                    db.refresh_server(&server.name, &server.address, &users, &raidset_of, now)?;
                tracing::info!(
                    server = %server.name,
                    listed = counts.listed,
                    added = counts.added,
                    moved = counts.moved,
                    vanished = counts.vanished,
                    returned = counts.returned,
                    "user list refreshed"
                );
                if counts.unassigned > 0 {
                    tracing::warn!(
                        server = %server.name,
                        users = counts.unassigned,
                        "users on partitions in no [[raidset]] of {}: they are not backed up",
                        config.path.display()
                    );
                }
                report.servers.insert(server.name.clone(), Ok(counts));
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(server = %server.name, "user list not refreshed: {message}");
                db.refresh_failed(&server.name, &server.address, &message)?;
                report.servers.insert(server.name.clone(), Err(e));
            }
        }
    }
    report.lifecycle = crate::lifecycle::after_refresh(config, db, &before, now)?;
    Ok(report)
}

/// The real per-user backup: each worker keeps one authenticated connection per server.
pub struct NetBackend<'c> {
    config: &'c Config,
    store_options: StoreOptions,
    secrets: HashMap<String, Secret>,
}

impl<'c> NetBackend<'c> {
    /// Loads every server's secret (an unreadable secret fails the run before it starts).
    pub fn new(config: &'c Config) -> Result<NetBackend<'c>, RunError> {
        let mut secrets = HashMap::new();
        for s in &config.servers {
            let secret = load_secret(&s.secret_file).map_err(|source| RunError::Secret {
                server: s.name.clone(),
                source,
            })?;
            secrets.insert(s.name.clone(), secret);
        }
        Ok(NetBackend {
            config,
            store_options: config.store_options(),
            secrets,
        })
    }
}

/// A worker's connections, one per server, and the servers it could not reach lately.
#[derive(Default)]
pub struct NetWorker {
    conns: HashMap<String, Client>,
    /// Server → when a connect failed and what it said: users of that server fail at once
    /// for [`RECONNECT_AFTER`] instead of each waiting out the connect timeout.
    down: HashMap<String, (Instant, String)>,
}

/// How long a worker waits before it tries again a server it could not connect to.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(30);

impl Backend for NetBackend<'_> {
    type Worker = NetWorker;
    type Outcome = Result<UserOutcome, BackupError>;

    fn new_worker(&self, _index: usize) -> NetWorker {
        NetWorker::default()
    }

    fn backup(&self, w: &mut NetWorker, user: &ScheduledUser) -> Result<UserOutcome, BackupError> {
        let Some(server) = self.config.server(&user.server) else {
            return Err(BackupError::UnknownServer {
                user: user.name.clone(),
                server: user.server.clone(),
            });
        };
        if !w.conns.contains_key(&server.name) {
            if let Some((when, why)) = w.down.get(&server.name) {
                if when.elapsed() < RECONNECT_AFTER {
                    return Err(BackupError::ServerDown {
                        user: user.name.clone(),
                        server: server.address.clone(),
                        secs_ago: when.elapsed().as_secs_f64(),
                        reason: why.clone(),
                    });
                }
            }
            let secret = &self.secrets[&server.name];
            match Client::connect(server.address.as_str(), secret, &client_options(server)) {
                Ok(c) => {
                    w.down.remove(&server.name);
                    w.conns.insert(server.name.clone(), c);
                }
                Err(source) => {
                    w.down
                        .insert(server.name.clone(), (Instant::now(), source.to_string()));
                    return Err(BackupError::Connection {
                        user: user.name.clone(),
                        server: server.address.clone(),
                        source,
                    });
                }
            }
        }
        let conn = w.conns.get_mut(&server.name).expect("just inserted");
        let key = user.quiet_key.clone().map(QuietKey::from_stored);
        let job = UserJob {
            user: &user.name,
            store_root: &self.config.store_root,
            store_options: &self.store_options,
            quiet_key: key.as_ref(),
        };
        let r = backup_user(&job, conn);
        if let Err(BackupError::Connection { .. }) = &r {
            // Reconnect for the next user of this server.
            w.conns.remove(&server.name);
        }
        r
    }
}

/// State db rows written per transaction, at most...
const STATE_BATCH_USERS: usize = 500;
/// ...and for at most this long (so `report` beside a run sees progress).
const STATE_BATCH_TIME: Duration = Duration::from_secs(1);

/// The run's users from the state db, in backup order, one queue per RAID set.
pub fn queues(
    config: &Config,
    db: &StateDb,
    req: &RunRequest,
) -> Result<Vec<RaidSetQueue>, RunError> {
    let wrong = |source| RunError::Request {
        source,
        unreachable: 0,
    };
    if let Some(name) = &req.raidset {
        if !config.raidsets.iter().any(|r| &r.name == name) {
            return Err(wrong(RequestError::UnknownRaidset {
                name: name.clone(),
                config: config.path.clone(),
                known: config
                    .raidsets
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }));
        }
    }
    let wanted: BTreeSet<&str> = req.users.iter().map(String::as_str).collect();
    for u in &wanted {
        let user = u.to_string();
        let bad = match db.user(u)? {
            None => RequestError::UnknownUser { user },
            Some(row) if row.vanished_at.is_some() => RequestError::Vanished {
                user,
                server: row.server,
            },
            Some(row) if row.raidset.is_none() => RequestError::NoRaidset {
                user,
                partition: row.partition,
                server: row.server,
                config: config.path.clone(),
            },
            Some(row) if db.is_postgres() && row.host.as_ref().is_some_and(|h| h != db.host()) => {
                RequestError::OtherHost {
                    user,
                    host: row.host.unwrap_or_default(),
                    this: db.host().to_string(),
                }
            }
            Some(_) => continue,
        };
        return Err(wrong(bad));
    }
    let mut queues = Vec::new();
    for set in &config.raidsets {
        if req.raidset.as_ref().is_some_and(|n| n != &set.name) {
            continue;
        }
        let users: Vec<ScheduledUser> = db
            .users_to_back_up(&set.name)?
            .into_iter()
            .filter(|u| wanted.is_empty() || wanted.contains(u.name.as_str()))
            .map(|u| ScheduledUser {
                name: u.name,
                server: u.server,
                raidset: set.name.clone(),
                quiet_key: u.quiet_key,
            })
            .collect();
        if !users.is_empty() {
            queues.push(RaidSetQueue {
                name: set.name.clone(),
                users,
            });
        }
    }
    Ok(queues)
}

/// Takes the leases of the run's users (docs/fleet.md); a user whose lease another live run
/// holds is left out of the queues and counted as skipped, naming the holder.
fn claim(
    db: &mut StateDb,
    run_id: i64,
    queues: &mut Vec<RaidSetQueue>,
    summary: &mut RunSummary,
    progress: &mut dyn RunProgress,
) -> Result<(), StateError> {
    let now = unix_now();
    for q in queues.iter_mut() {
        let names: Vec<String> = q.users.iter().map(|u| u.name.clone()).collect();
        let claimed: BTreeSet<String> = db.claim_users(run_id, &names, now)?.into_iter().collect();
        if claimed.len() == names.len() {
            continue;
        }
        for u in q.users.iter().filter(|u| !claimed.contains(&u.name)) {
            let holder = match db.lease_holder(&u.name, now)? {
                Some((host, run)) => format!("run {run} of backup host {host}"),
                // Gone between the claim and this look: vanished, reassigned, or freed.
                None => "another run, or it changed meanwhile (vanished or reassigned)".into(),
            };
            let line = format!("user {}: skipped: its lease is held by {holder}", u.name);
            progress.log(&mut || tracing::warn!("{line}"));
            summary.users_skipped += 1;
            if summary.problems.len() < super::summary::MAX_LISTED {
                summary.problems.push(line);
            }
            db.record_attempt(run_id, &u.name, now, &Attempt::Skipped)?;
        }
        q.users.retain(|u| claimed.contains(&u.name));
    }
    queues.retain(|q| !q.users.is_empty());
    Ok(())
}

/// Records one user's result in the state db and the summary, and logs it.
fn record(
    db: &mut StateDb,
    run_id: i64,
    summary: &mut RunSummary,
    done: &UserDone<Result<UserOutcome, BackupError>>,
    progress: &mut dyn RunProgress,
) -> Result<(), StateError> {
    let user = &done.user.name;
    let kind = summary.add(user, &done.result);
    let attempt = match (&done.result, kind) {
        (Ok(o), UserResult::Done) => Attempt::Done {
            messages_stored: o.messages_stored,
            bytes_stored: o.bytes_stored,
        },
        (Ok(o), _) => Attempt::Incomplete {
            messages_stored: o.messages_stored,
            bytes_stored: o.bytes_stored,
            message: o.incomplete_text(),
        },
        (Err(BackupError::Locked { .. }), _) => Attempt::Skipped,
        (Err(e), _) => Attempt::Failed {
            message: e.to_string(),
        },
    };
    db.record_attempt(run_id, user, unix(done.started), &attempt)?;
    if let (Ok(o), UserResult::Done) = (&done.result, kind) {
        // After the attempt's row: the key speaks of the store as this backup left it.
        let key = o.quiet_key.as_ref().map(QuietKey::as_str);
        if key != done.user.quiet_key.as_deref() {
            db.set_quiet_key(user, key)?;
        }
    }
    let line = match (&done.result, kind) {
        (Ok(o), UserResult::Done) => {
            tracing::debug!(
                user = %user,
                raidset = %done.user.raidset,
                secs = done.elapsed.as_secs_f64(),
                messages_stored = o.messages_stored,
                bytes_stored = o.bytes_stored,
                "backed up"
            );
            None
        }
        (Ok(o), _) => Some(format!("user {user}: incomplete: {}", o.incomplete_text())),
        (Err(e), _) => Some(e.to_string()),
    };
    if let Some(line) = line {
        progress.log(&mut || tracing::warn!("{line}"));
    }
    Ok(())
}

/// `backup-server run`: refreshes stale user lists, backs up the planned users, records
/// each in the state db, and returns the summary. An error means the run failed as a
/// whole; the summary's [verdict](RunSummary::verdict) tells the rest.
pub fn run(
    config: &Config,
    req: &RunRequest,
    stop: &AtomicBool,
    progress: &mut dyn RunProgress,
) -> Result<RunSummary, RunError> {
    run_with(config, req, stop, progress, &NetBackend::new(config)?)
}

/// [`run`] over any backend (tests use a fake one).
pub fn run_with<B>(
    config: &Config,
    req: &RunRequest,
    stop: &AtomicBool,
    progress: &mut dyn RunProgress,
    backend: &B,
) -> Result<RunSummary, RunError>
where
    B: Backend<Outcome = Result<UserOutcome, BackupError>>,
{
    let t0 = Instant::now();
    let mut db = StateDb::open_at(&config.state, &config.host_name)?;
    let refreshed = refresh(config, &mut db, req.force_refresh)?;
    let mut unreachable = refreshed.failed() as u64;
    // A user asked for by name but not known yet: maybe new since the last refresh.
    if !req.force_refresh
        && refreshed.servers.len() < config.servers.len()
        && req.users.iter().any(|u| !matches!(db.user(u), Ok(Some(_))))
    {
        unreachable = refresh(config, &mut db, true)?.failed() as u64;
    }
    let mut queues = match queues(config, &db, req) {
        Ok(q) => q,
        Err(RunError::Request { source, .. }) => {
            return Err(RunError::Request {
                source,
                unreachable,
            })
        }
        Err(e) => return Err(e),
    };
    let planned: u64 = queues.iter().map(|q| q.users.len() as u64).sum();
    tracing::info!(
        users = planned,
        raidsets = queues.len(),
        workers = config.workers,
        batch_size = config.batch_size,
        "run starting"
    );
    let run_id = db.begin_run(unix_now(), planned)?;
    let mut summary = RunSummary {
        users_planned: planned,
        servers_unreachable: unreachable,
        ..Default::default()
    };
    claim(&mut db, run_id, &mut queues, &mut summary, progress)?;
    let mut last_renewal = Instant::now();
    progress.start(planned);
    let mut last_row = Instant::now();
    let mut batch = (0usize, Instant::now());
    // Users found deleted and created again: their stores are kept aside after the run.
    let mut recreated: Vec<(String, i64)> = Vec::new();
    let opts = SchedulerOptions {
        workers: config.workers,
        batch_size: config.batch_size,
        batches_per_raidset: config.batches_per_raidset,
    };
    let result = scheduler::run_events(backend, queues, opts, stop, |event| {
        if last_renewal.elapsed() >= RENEW_EVERY {
            last_renewal = Instant::now();
            db.renew_leases(run_id, unix_now())?;
        }
        let done = match event {
            Event::Done(done) => done,
            Event::Idle => {
                // Nothing ended for a while (long users under way): commit the rows
                // waiting, so that the write lock is not held and `report` sees them.
                if batch.0 > 0 {
                    db.end_batch()?;
                    batch.0 = 0;
                }
                return Ok(());
            }
        };
        // Rows go in batches (one transaction each); each user's store has committed
        // before its row is written, so a crash still leaves the state db behind, never
        // ahead.
        if batch.0 == 0 {
            db.begin_batch()?;
            batch.1 = Instant::now();
        }
        record(&mut db, run_id, &mut summary, &done, progress)?;
        if let Err(BackupError::Recreated { user, .. }) = &done.result {
            recreated.push((user.clone(), unix(done.started)));
        }
        batch.0 += 1;
        if batch.0 >= STATE_BATCH_USERS || batch.1.elapsed() >= STATE_BATCH_TIME {
            db.end_batch()?;
            batch.0 = 0;
        }
        summary.elapsed = t0.elapsed();
        progress.user_ended(&summary);
        if last_row.elapsed() >= Duration::from_secs(30) {
            last_row = Instant::now();
            db.update_run(run_id, &summary.totals(), "running", None, None)?;
        }
        Ok::<(), StateError>(())
    });
    progress.finish();
    summary.elapsed = t0.elapsed();
    let result = match (result, db.end_batch()) {
        (Ok(r), Ok(())) => Ok(r),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    for (user, started) in &recreated {
        let kept = crate::lifecycle::keep_recreated(config, &mut db, user, *started)?;
        tracing::info!(user = %user, kept_as = %kept, "user deleted and created again in Cyrus: the old store kept aside");
    }
    // Users not reached (a stopped run): their leases are freed for the next run. A failed
    // run's are free anyway once its row no longer says `running`.
    let result = result.and_then(|r| db.release_leases(run_id, unix_now()).map(|_| r));
    match result {
        Ok(report) => {
            summary.users_not_reached = report.users_not_reached;
            summary.interrupted = report.stopped;
            let message = summary.interrupted.then(|| {
                format!(
                    "stopped by a signal; {} users not reached",
                    report.users_not_reached
                )
            });
            db.update_run(
                run_id,
                &summary.totals(),
                summary.status_word(),
                Some(unix_now()),
                message.as_deref(),
            )?;
            Ok(summary)
        }
        Err(e) => {
            // Best effort: the state db itself may be what failed.
            let _ = db.update_run(
                run_id,
                &summary.totals(),
                "failed",
                Some(unix_now()),
                Some(&e.to_string()),
            );
            Err(e.into())
        }
    }
}
