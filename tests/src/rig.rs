//! The setup the backup and restore end-to-end tests share: an in-process backupd serving a
//! [`CyrusInstance`]'s spool, backups of users into a store root, the `backup-server`
//! binary with a configuration file, and changes made with `backup_changes.py`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_server::backup::{backup_user, BackupError, UserJob, UserOutcome};
use backup_server::client::{Client, ClientOptions, TlsSettings, TlsTrust};
use backup_server::store::StoreOptions;
use backupd::server::{self, ServerHandle, Settings, SpoolAccess};
use backupd::spool::{Spool, SpoolError, UserList, UserListCache};
use formats::protocol::Secret;
use formats::protocol::{MetaCopy, UserFileId, UserListing};
use formats::{FileStat, Timestamp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::cyrus::{scripts_dir, CyrusInstance};

/// What a backupd served, counted at the daemon's spool side (not by the client).
#[derive(Debug, Default)]
pub struct Served {
    /// Folder listings.
    pub listings: AtomicU64,
    /// Meta copies (cyrus.header/index/annotations under Cyrus's locks).
    pub meta_copies: AtomicU64,
    /// Message files opened.
    pub messages_opened: AtomicU64,
    /// Holds folder listings past a count (a run stopped at a chosen user).
    pub gate: Gate,
}

/// Holds the folder listings after the n-th until opened: a test stops a run in the middle
/// of a user's backup, at a point it observes ([`Gate::waiting`]) instead of a guessed delay.
#[derive(Debug, Default)]
pub struct Gate {
    hold_after: std::sync::Mutex<Option<u64>>,
    opened: std::sync::Condvar,
    waiting: AtomicU64,
}

impl Gate {
    /// Listings after the `n`-th (counted by [`Served::listings`]) wait.
    pub fn hold_after(&self, n: u64) {
        *self.hold_after.lock().unwrap() = Some(n);
    }

    /// Lets every listing through.
    pub fn open(&self) {
        *self.hold_after.lock().unwrap() = None;
        self.opened.notify_all();
    }

    /// Listings waiting at the gate now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    fn pass(&self, n: u64) {
        let mut hold = self.hold_after.lock().unwrap();
        if hold.is_some_and(|h| n > h) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while hold.is_some_and(|h| n > h) {
                hold = self.opened.wait(hold).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Served {
    /// (listings, meta copies, messages opened) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.listings.load(Ordering::Relaxed),
            self.meta_copies.load(Ordering::Relaxed),
            self.messages_opened.load(Ordering::Relaxed),
        )
    }
}

/// The real spool, counting what it serves.
struct CountingSpool {
    spool: Spool,
    served: Arc<Served>,
}

impl SpoolAccess for CountingSpool {
    fn users(&self) -> Result<Arc<UserList>, SpoolError> {
        self.spool.users()
    }
    fn folders(&self, user: &str) -> Result<UserListing, SpoolError> {
        let n = self.served.listings.fetch_add(1, Ordering::Relaxed) + 1;
        self.served.gate.pass(n);
        self.spool.folders(user)
    }
    fn copy_meta(&self, user: &str, uniqueid: &str) -> Result<MetaCopy, SpoolError> {
        self.served.meta_copies.fetch_add(1, Ordering::Relaxed);
        self.spool.copy_meta(user, uniqueid)
    }
    fn open_message(
        &self,
        user: &str,
        uniqueid: &str,
        uid: u32,
    ) -> Result<Option<(std::fs::File, u64)>, SpoolError> {
        self.served.messages_opened.fetch_add(1, Ordering::Relaxed);
        self.spool.open_message(user, uniqueid, uid)
    }
    fn read_user_file(
        &self,
        user: &str,
        id: &UserFileId,
    ) -> Result<Option<(Vec<u8>, FileStat)>, SpoolError> {
        self.spool.read_user_file(user, id)
    }
}

/// The TLS identity of every in-process backupd of a test process: one key and self-signed
/// certificate (made by `backupd keygen`'s own code, in memory) and the pin the clients
/// and configurations trust it by.
#[derive(Debug)]
pub struct TestTls {
    /// The key, its certificate and its pin.
    pub pair: backupd::keygen::Pair,
    /// The server side.
    pub server: Arc<rustls::ServerConfig>,
}

impl TestTls {
    /// A new identity (a relay in the middle has one of its own).
    pub fn generate() -> TestTls {
        let pair = backupd::keygen::generate(&["localhost".into()]).expect("a test key");
        let material =
            backupd::tls::TlsMaterial::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())
                .unwrap();
        let server = backupd::tls::server_config_of(material).unwrap();
        TestTls { pair, server }
    }

    /// The client settings that trust this identity by its pin.
    pub fn client_settings(&self) -> TlsSettings {
        TlsSettings {
            trust: TlsTrust::Pins(vec![self.pair.pin]),
            client_cert: None,
            server_name: "localhost".into(),
        }
    }
}

/// The process's test TLS identity, made on first use.
pub fn test_tls() -> &'static TestTls {
    static TLS: OnceLock<TestTls> = OnceLock::new();
    TLS.get_or_init(TestTls::generate)
}

/// A backupd serving a Cyrus instance's spool on 127.0.0.1 (any port), in this process.
pub struct Backupd {
    /// The running server; stopped on drop or by [`Backupd::shutdown`].
    pub handle: ServerHandle,
    /// What it served, counted at the daemon.
    pub served: Arc<Served>,
    /// The shared secret, as written in a secret file.
    pub secret_text: String,
    /// The shared secret.
    pub secret: Secret,
    /// Whether it serves TLS (with [`test_tls`]).
    pub tls: bool,
    /// The spool's user list cache: its `builds()` counts the reads of mailboxes.db.
    pub user_list: Arc<UserListCache>,
}

impl Backupd {
    /// Opens `cyrus`'s spool and serves it in TLS ([`test_tls`]) with default settings and
    /// `secret`.
    pub fn start(cyrus: &CyrusInstance, secret: &str) -> Backupd {
        Self::start_with(cyrus, secret, true)
    }

    /// [`Backupd::start`] without TLS.
    pub fn start_plain(cyrus: &CyrusInstance, secret: &str) -> Backupd {
        Self::start_with(cyrus, secret, false)
    }

    /// [`Backupd::start`] with TLS or not.
    pub fn start_with(cyrus: &CyrusInstance, secret: &str, tls: bool) -> Backupd {
        let secret_text = secret.to_owned();
        let secret = Secret::from_bytes(secret.as_bytes()).unwrap();
        let spool = Spool::open(&cyrus.imapd_conf()).expect("opening the spool");
        let user_list = spool.user_list_cache();
        let served = Arc::new(Served::default());
        let counting = CountingSpool {
            spool,
            served: served.clone(),
        };
        let handle = server::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(counting),
            secret.clone(),
            Settings {
                tls: tls.then(|| test_tls().server.clone()),
                ..Settings::default()
            },
        )
        .expect("starting backupd");
        Backupd {
            handle,
            served,
            secret_text,
            secret,
            tls,
            user_list,
        }
    }

    /// Client options for this server: TLS with [`test_tls`]'s pin when it serves TLS.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            tls: if self.tls {
                test_tls().client_settings()
            } else {
                TlsSettings::default()
            },
            ..ClientOptions::default()
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.handle.addr()
    }

    /// A client connected and authenticated with default options.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr(), &self.secret, &self.client_options())
            .expect("connecting to backupd")
    }

    /// Stops the server and waits for it (asserting it stopped cleanly).
    pub fn shutdown(self) {
        self.handle.shutdown().unwrap();
    }
}

/// The time now, as the store's timestamps count it.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now()).unwrap()
}

/// One `backup_user` of `user` into the store root `root`.
pub fn backup(
    c: &mut Client,
    root: &Path,
    opts: &StoreOptions,
    user: &str,
) -> Result<UserOutcome, BackupError> {
    let job = UserJob {
        user,
        store_root: root,
        store_options: opts,
        quiet_key: None,
    };
    backup_user(&job, c)
}

/// Backs up every one of `users`, asserting each backup is complete; returns the outcomes
/// and the time it took.
pub fn backup_all<'a>(
    c: &mut Client,
    root: &Path,
    opts: &StoreOptions,
    users: impl IntoIterator<Item = &'a String>,
) -> (BTreeMap<String, UserOutcome>, Duration) {
    let t = Instant::now();
    let mut out = BTreeMap::new();
    for u in users {
        let o = backup(c, root, opts, u).unwrap_or_else(|e| panic!("{e}"));
        assert!(o.incomplete.is_empty(), "{u}: {:?}", o.incomplete);
        out.insert(u.clone(), o);
    }
    (out, t.elapsed())
}

/// Runs `backup_changes.py` on `user` (new mail, an expunge, flag changes, a rename, folders
/// deleted and created, a sieve script activated), asserting it succeeded; returns its
/// stdout.
pub fn backup_changes(cyrus: &CyrusInstance, user: &str) -> String {
    let out = Command::new("python3")
        .arg(scripts_dir().join("backup_changes.py"))
        .arg("127.0.0.1")
        .arg(cyrus.imap_port().to_string())
        .arg(cyrus.lmtp_port().to_string())
        .args(["--user", user])
        .args(["--sieve-port", &cyrus.sieve_port().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "backup_changes.py {user}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// target/<profile>/<package>, the binary named as its package, built if this test run
/// did not build it.
pub fn workspace_bin(package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = dir.join(package);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", package])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(bin.exists(), "{}", bin.display());
    bin
}

/// target/<profile>/backup-server, built if this test run did not build it.
pub fn backup_server_bin() -> PathBuf {
    workspace_bin("backup-server")
}

/// `backup-server --config <config> run --progress log`, not started yet.
pub fn run_command(bin: &Path, config: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--config")
        .arg(config)
        .args(["run", "--progress", "log"]);
    c
}

/// A finished process's status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (done, incomplete, skipped, failed) from the run summary's "users:" line.
pub fn counts(o: &Output) -> (u64, u64, u64, u64) {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("users: "))
        .unwrap_or_else(|| panic!("no users: line\n{}", text(o)));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

/// Writes under `dir` (created) a backup-server configuration: store root `store`, state db
/// `state/state.sqlite3`, one server `mail1` at `addr` with `secret` in a 0600 secret file,
/// trusted in TLS by [`test_tls`]'s pin (a [`Backupd::start`] backupd), and two RAID sets,
/// `drives-a` for partition `default` and `drives-b` for `p2`. Returns the configuration
/// file's path.
pub fn write_config(
    dir: &Path,
    addr: std::net::SocketAddr,
    secret: &str,
    workers: usize,
    batch_size: usize,
) -> PathBuf {
    let config = dir.join("backup-server.toml");
    testkit::config::ServerConfig::new("store")
        .state_db("state/state.sqlite3")
        .workers(workers)
        .batch_size(batch_size)
        .server("mail1", &addr.to_string(), "mail1.secret")
        .tls_pin(test_tls().pair.pin)
        .raidset("drives-a", "mail1", &["default"])
        .raidset("drives-b", "mail1", &["p2"])
        .write_with_secrets(&config, secret)
        .unwrap();
    config
}

/// The users backupd lists, by name.
pub fn user_names(c: &mut Client) -> BTreeSet<String> {
    c.list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.user)
        .collect()
}
