//! `backup-server run` and `backup-server users refresh`: the config, the state db, the
//! backupd connections and the scheduler put together.

use crate::client::{Client, ClientOptions};
use crate::config::Config;
use crate::planner::{backup_user, listing_unchanged, BackupError, UserJob, UserOutcome};
use crate::scheduler::{
    self, Backend, Event, RaidSetQueue, ScheduledUser, SchedulerOptions, UserDone,
};
use crate::state::{Attempt, RefreshCounts, StateDb};
use crate::store::{StoreError, StoreOptions, UserDir};
use crate::summary::{RunSummary, UserResult};
use anyhow::{bail, Context};
use formats::protocol::Secret;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
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

/// How `run` reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    Auto,
    /// Log lines every `log_interval`.
    Log,
    /// Nothing but the summary.
    Quiet,
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

/// An error and its causes on one line, leaving out a cause its parent already quotes.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// What a refresh of every server did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Per server (config name): what changed, or why its list could not be read.
    pub servers: BTreeMap<String, Result<RefreshCounts, String>>,
}

impl RefreshReport {
    /// Servers whose list could not be read.
    pub fn failed(&self) -> usize {
        self.servers.values().filter(|r| r.is_err()).count()
    }
}

fn client_options(s: &crate::config::Server) -> ClientOptions {
    ClientOptions {
        connect_timeout: s.connect_timeout,
        io_timeout: Some(s.io_timeout),
    }
}

/// Reads the user list of every server (only those last read longer than
/// `config.refresh_after` ago unless `force`) into the state db. A server that cannot be
/// reached is logged and recorded; its users are left as they were.
pub fn refresh(config: &Config, db: &mut StateDb, force: bool) -> anyhow::Result<RefreshReport> {
    let mut report = RefreshReport::default();
    let now = unix_now();
    for server in &config.servers {
        if !force {
            if let Some(last) = db.last_refresh(&server.name)? {
                if now.saturating_sub(last) < config.refresh_after.as_secs() as i64 {
                    continue;
                }
            }
        }
        let listed = (|| -> anyhow::Result<Vec<formats::protocol::UserEntry>> {
            let secret = crate::client::load_secret(&server.secret_file)?;
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
                let message = error_chain(&e);
                tracing::error!(server = %server.name, "user list not refreshed: {message}");
                db.refresh_failed(&server.name, &server.address, &message)?;
                report.servers.insert(server.name.clone(), Err(message));
            }
        }
    }
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
    pub fn new(config: &'c Config) -> anyhow::Result<NetBackend<'c>> {
        let mut secrets = HashMap::new();
        for s in &config.servers {
            let secret = crate::client::load_secret(&s.secret_file)
                .with_context(|| format!("server {}: secret_file", s.name))?;
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

    fn new_worker(&self, _index: usize) -> NetWorker {
        NetWorker::default()
    }

    fn backup(&self, w: &mut NetWorker, user: &ScheduledUser) -> Result<UserOutcome, BackupError> {
        let Some(server) = self.config.server(&user.server) else {
            return Err(BackupError::Failed {
                user: user.name.clone(),
                message: format!("server {:?} is not in the configuration", user.server),
            });
        };
        if !w.conns.contains_key(&server.name) {
            if let Some((when, why)) = w.down.get(&server.name) {
                if when.elapsed() < RECONNECT_AFTER {
                    return Err(BackupError::Failed {
                        user: user.name.clone(),
                        message: format!(
                            "backupd {} unreachable {:.0} s ago, not retried yet: {why}",
                            server.address,
                            when.elapsed().as_secs_f64()
                        ),
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
        if let Some(key) = &user.unchanged_key {
            // A quiet user: the listing alone, and one stat of the store's data file,
            // tell whether the store would have anything to do (docs/store.md, "Quiet
            // users"). Any difference: the whole backup below, which lists again under
            // the store's lock.
            match quiet(conn, &self.config.store_root, &user.name, key) {
                Ok(Some(out)) => return Ok(out),
                Ok(None) => {}
                Err(e) => {
                    if let BackupError::Connection { .. } = &e {
                        w.conns.remove(&server.name);
                    }
                    return Err(e);
                }
            }
        }
        let job = UserJob {
            user: &user.name,
            store_root: &self.config.store_root,
            store_options: &self.store_options,
        };
        let r = backup_user(&job, conn);
        if let Err(BackupError::Connection { .. }) = &r {
            // Reconnect for the next user of this server.
            w.conns.remove(&server.name);
        }
        r
    }
}

/// The outcome of a backup that found `key` still true (nothing to do, store not opened);
/// `None` when the listing or the store differs from what the key recorded, or the look
/// failed in a way the whole backup will report better. The store's writer lock is held
/// (not written) while its data file is looked at, so a writer under way makes the user
/// skipped as the whole backup would.
fn quiet(
    conn: &mut Client,
    store_root: &std::path::Path,
    user: &str,
    key: &str,
) -> Result<Option<UserOutcome>, BackupError> {
    let listing = match conn.list_folders(user) {
        Ok(l) => l,
        Err(e) if e.connection_usable() => return Ok(None),
        Err(source) => {
            return Err(BackupError::Connection {
                user: user.to_owned(),
                server: conn.addr().to_owned(),
                source,
            })
        }
    };
    let Ok(dir) = UserDir::new(store_root, user) else {
        return Ok(None);
    };
    let _lock = match dir.lock_if_present() {
        Ok(Some(l)) => l,
        Err(StoreError::Locked { holder, .. }) => {
            return Err(BackupError::Locked {
                user: user.to_owned(),
                holder,
            })
        }
        Ok(None) | Err(_) => return Ok(None),
    };
    if !listing_unchanged(key, user, &listing, &dir) {
        return Ok(None);
    }
    Ok(Some(UserOutcome {
        folders: listing.folders.len() as u64,
        store_untouched: true,
        unchanged_key: Some(key.to_owned()),
        ..UserOutcome::default()
    }))
}

/// State db rows written per transaction, at most...
const STATE_BATCH_USERS: usize = 500;
/// ...and for at most this long (so `report` beside a run sees progress).
const STATE_BATCH_TIME: Duration = Duration::from_secs(1);

/// Picks the users of the run from the state db, in backup order, one queue per RAID set.
pub fn plan(config: &Config, db: &StateDb, req: &RunRequest) -> anyhow::Result<Vec<RaidSetQueue>> {
    if let Some(name) = &req.raidset {
        if !config.raidsets.iter().any(|r| &r.name == name) {
            bail!(
                "--raidset {name}: no [[raidset]] of that name in {} (known: {})",
                config.path.display(),
                config
                    .raidsets
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let wanted: BTreeSet<&str> = req.users.iter().map(String::as_str).collect();
    for u in &wanted {
        match db.user(u)? {
            None => bail!("--user {u}: no mail server lists this user"),
            Some(row) if row.vanished_at.is_some() => {
                bail!(
                    "--user {u}: server {} no longer lists this user",
                    row.server
                )
            }
            Some(row) if row.raidset.is_none() => bail!(
                "--user {u}: partition {:?} of server {} is in no [[raidset]] of {}",
                row.partition,
                row.server,
                config.path.display()
            ),
            Some(_) => {}
        }
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
                unchanged_key: u.unchanged_key,
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

/// Progress: a bar on a terminal, a log line now and then otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    log_every: Option<Duration>,
    last_log: Instant,
}

impl Progress {
    fn new(mode: ProgressMode, total: u64, log_interval: Duration) -> Progress {
        let on_terminal = std::io::stderr().is_terminal();
        let (bar, log_every) = match mode {
            ProgressMode::Auto if on_terminal => {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{wide_bar}] {pos}/{len} users ({per_sec}, eta {eta}) {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                (Some(bar), None)
            }
            ProgressMode::Auto | ProgressMode::Log => (None, Some(log_interval)),
            ProgressMode::Quiet => (None, None),
        };
        Progress {
            bar,
            log_every,
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, s: &RunSummary) {
        if let Some(bar) = &self.bar {
            bar.set_position(s.users_finished());
            bar.set_message(format!(
                "{} skipped, {} failed, {}",
                s.users_skipped,
                s.users_failed,
                crate::summary::human_bytes(s.outcome.bytes_fetched)
            ));
        } else if let Some(every) = self.log_every {
            if self.last_log.elapsed() >= every {
                self.last_log = Instant::now();
                tracing::info!(
                    finished = s.users_finished(),
                    planned = s.users_planned,
                    done = s.users_done,
                    incomplete = s.users_incomplete,
                    skipped = s.users_skipped,
                    failed = s.users_failed,
                    messages_fetched = s.outcome.messages_fetched,
                    bytes_fetched = s.outcome.bytes_fetched,
                    "progress"
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Records one user's result in the state db and the summary, and logs it.
fn record(
    db: &mut StateDb,
    run_id: i64,
    summary: &mut RunSummary,
    done: &UserDone,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
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
            message: o.incomplete.join("; "),
        },
        (Err(BackupError::Locked { .. }), _) => Attempt::Skipped,
        (Err(e), _) => Attempt::Failed {
            message: e.to_string(),
        },
    };
    db.record_attempt(run_id, user, unix(done.started), &attempt)?;
    if let (Ok(o), UserResult::Done) = (&done.result, kind) {
        // After the attempt's row: the key speaks of the store as this backup left it.
        if o.unchanged_key != done.user.unchanged_key {
            db.set_unchanged_key(user, o.unchanged_key.as_deref())?;
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
        (Ok(o), _) => Some(format!(
            "user {user}: incomplete: {}",
            o.incomplete.join("; ")
        )),
        (Err(e), _) => Some(e.to_string()),
    };
    if let Some(line) = line {
        match bar {
            Some(bar) => bar.suspend(|| tracing::warn!("{line}")),
            None => tracing::warn!("{line}"),
        }
    }
    Ok(())
}

/// `backup-server run`: refreshes stale user lists, backs up the planned users, records
/// each in the state db, and returns the summary. An error means the run failed as a
/// whole (exit status 1); the summary's own status tells the rest.
pub fn run(
    config: &Config,
    req: &RunRequest,
    stop: &AtomicBool,
    mode: ProgressMode,
) -> anyhow::Result<RunSummary> {
    run_with(config, req, stop, mode, &NetBackend::new(config)?)
}

/// [`run`] over any backend (tests use a fake one).
pub fn run_with<B: Backend>(
    config: &Config,
    req: &RunRequest,
    stop: &AtomicBool,
    mode: ProgressMode,
    backend: &B,
) -> anyhow::Result<RunSummary> {
    let t0 = Instant::now();
    let mut db = StateDb::open(&config.state_db)?;
    let refreshed = refresh(config, &mut db, req.force_refresh)?;
    let mut unreachable = refreshed.failed() as u64;
    // A user asked for by name but not known yet: maybe new since the last refresh.
    if !req.force_refresh
        && refreshed.servers.len() < config.servers.len()
        && req.users.iter().any(|u| !matches!(db.user(u), Ok(Some(_))))
    {
        unreachable = refresh(config, &mut db, true)?.failed() as u64;
    }
    let queues = match plan(config, &db, req) {
        Ok(q) => q,
        Err(e) if unreachable > 0 => {
            return Err(e.context(format!(
                "{unreachable} mail servers did not answer the user list refresh"
            )))
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
    let mut progress = Progress::new(mode, planned, config.log_interval);
    let mut last_row = Instant::now();
    let mut batch = (0usize, Instant::now());
    let opts = SchedulerOptions {
        workers: config.workers,
        batch_size: config.batch_size,
        batches_per_raidset: config.batches_per_raidset,
    };
    let result =
        scheduler::run_events(backend, queues, opts, stop, |event| -> anyhow::Result<()> {
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
            record(&mut db, run_id, &mut summary, &done, progress.bar.as_ref())?;
            batch.0 += 1;
            if batch.0 >= STATE_BATCH_USERS || batch.1.elapsed() >= STATE_BATCH_TIME {
                db.end_batch()?;
                batch.0 = 0;
            }
            summary.elapsed = t0.elapsed();
            progress.update(&summary);
            if last_row.elapsed() >= Duration::from_secs(30) {
                last_row = Instant::now();
                db.update_run(run_id, &summary.totals(), "running", None, None)?;
            }
            Ok(())
        });
    progress.finish();
    summary.elapsed = t0.elapsed();
    let result = match (result, db.end_batch()) {
        (Ok(r), Ok(())) => Ok(r),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(anyhow::Error::from(e)),
    };
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
            let message = error_chain(&e);
            // Best effort: the state db itself may be what failed.
            let _ = db.update_run(
                run_id,
                &summary.totals(),
                "failed",
                Some(unix_now()),
                Some(&message),
            );
            Err(e)
        }
    }
}
