//! A private Cyrus IMAP instance on 127.0.0.1 for end-to-end tests, driven by the scripts
//! in `tests/cyrus/` (start.sh, stop.sh, populate.py, imap_truth.py, bulk.py).
//!
//! Instances live in `/tmp/mailbackup-cyrus/<name>/` (override the parent with
//! `MAILBACKUP_CYRUS_TMP`; the cyrus user must be able to reach it, so not under /root).
//! Each holds an `owner` file naming the test process; an instance whose owner is gone
//! (a test killed before its `Drop` ran) is stopped and removed by the next
//! [`CyrusInstance::start`]. Set `MAILBACKUP_KEEP_CYRUS=1` to keep directories for a look
//! after the test (the server is stopped all the same).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

use crate::truth::Truth;

/// Where Debian's cyrus-imapd puts its programs.
pub const CYRUS_BIN: &str = "/usr/lib/cyrus/bin";

/// The host every instance listens on.
pub const HOST: &str = "127.0.0.1";

/// start.sh's exit status when a port was taken meanwhile: retry with other ports.
const EXIT_PORT_IN_USE: i32 = 3;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `tests/cyrus/`, where the scripts are.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cyrus")
}

/// The parent of every instance directory.
pub fn base_dir() -> PathBuf {
    std::env::var_os("MAILBACKUP_CYRUS_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/mailbackup-cyrus"))
}

/// Makes sure Cyrus is installed, running `tests/cyrus/install.sh` if it is not (once per
/// process). Fails, never skips: CI installs Cyrus, and a test that silently skipped would
/// prove nothing.
pub fn ensure_installed() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // install.sh checks every package the tests use (Cyrus, strace, sqlite3, ...) with dpkg
        // and returns at once when all are there, so it runs every time.
        let script = scripts_dir().join("install.sh");
        run(&mut Command::new(&script), "install.sh")
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "what the tests need (Cyrus IMAP, strace, sqlite3) is not installed and {} failed (run it as root; CI does): {e:#}",
                    script.display()
                )
            })
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Runs a command; on failure the error holds its exit status, stdout and stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Four distinct free ports on 127.0.0.1 (held together while chosen, so they differ).
fn free_ports() -> Result<[u16; 4]> {
    let listeners = [
        TcpListener::bind((HOST, 0))?,
        TcpListener::bind((HOST, 0))?,
        TcpListener::bind((HOST, 0))?,
        TcpListener::bind((HOST, 0))?,
    ];
    Ok([
        listeners[0].local_addr()?.port(),
        listeners[1].local_addr()?.port(),
        listeners[2].local_addr()?.port(),
        listeners[3].local_addr()?.port(),
    ])
}

/// imapd.conf's `delete_mode`: what DELETE of a folder (or a user) leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteMode {
    /// Cyrus's default: the folder is renamed to `DELETED.<name>.<hex time>` (same unique
    /// id, files kept) until `cyr_expire -D` removes it.
    #[default]
    Delayed,
    /// The folder and its files are gone at once.
    Immediate,
}

/// imapd.conf's `expunge_mode`: what EXPUNGE leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpungeMode {
    /// Cyrus's default: index records and files stay until `cyr_expire -X`.
    #[default]
    Delayed,
    /// Index records stay (for QRESYNC), files go at once.
    Semidelayed,
    /// Records and files go as soon as no other process has the folder open.
    Immediate,
}

impl DeleteMode {
    /// The imapd.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteMode::Delayed => "delayed",
            DeleteMode::Immediate => "immediate",
        }
    }
}

impl ExpungeMode {
    /// The imapd.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpungeMode::Delayed => "delayed",
            ExpungeMode::Semidelayed => "semidelayed",
            ExpungeMode::Immediate => "immediate",
        }
    }
}

/// How an instance is configured where tests differ; [`CyrusInstance::start`] takes the
/// defaults (Cyrus's own: delayed delete and expunge).
#[derive(Debug, Clone, Copy, Default)]
pub struct CyrusOptions {
    /// imapd.conf's `delete_mode`.
    pub delete_mode: DeleteMode,
    /// imapd.conf's `expunge_mode`.
    pub expunge_mode: ExpungeMode,
    /// A TLS certificate for `localhost` (self-signed: [`CyrusInstance::tls_ca_file`] is
    /// the file to trust), so that IMAP and sync_server offer STARTTLS.
    pub tls: bool,
}

/// Start time (clock ticks since boot) of a process, from /proc: with the pid, it tells a
/// live owner from a reused pid.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn owner_line() -> String {
    let pid = std::process::id();
    format!("{pid} {}\n", process_start_time(pid).unwrap_or(0))
}

fn owner_alive(line: &str) -> bool {
    let mut it = line.split_whitespace();
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    process_start_time(pid) == Some(start)
}

/// One line of `key=value` words printed by populate.py / bulk.py.
#[derive(Debug, Clone)]
pub struct ScriptSummary {
    /// The line as printed.
    pub line: String,
}

impl ScriptSummary {
    /// The value of `key=value` in the line.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.line
            .split_whitespace()
            .filter_map(|w| w.trim_matches(|c| c == '(' || c == ')').split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The value of `key=value` as a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// A running private Cyrus instance; stopped (and its directory removed) on drop, even when
/// the test panics.
#[derive(Debug)]
pub struct CyrusInstance {
    dir: PathBuf,
    imap_port: u16,
    lmtp_port: u16,
    sieve_port: u16,
    sync_port: u16,
    options: CyrusOptions,
    running: bool,
}

impl CyrusInstance {
    /// Starts a fresh instance (IMAP, LMTP, ManageSieve and sync_server on free ports of
    /// 127.0.0.1) in a new directory, after installing Cyrus if needed and cleaning up stale
    /// instances. Delayed delete and expunge, as Cyrus's defaults.
    pub fn start() -> Result<Self> {
        Self::start_with(CyrusOptions::default())
    }

    /// [`CyrusInstance::start`] with other `delete_mode` / `expunge_mode`.
    pub fn start_with(options: CyrusOptions) -> Result<Self> {
        ensure_installed()?;
        let base = base_dir();
        fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        // The cyrus user must get through it; our umask may say otherwise.
        set_mode(&base, 0o755)?;
        reap_stale(&base);

        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "i{}-{}-{nanos:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = base.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Written whole then renamed: a reaper must never read a half-written owner file.
        fs::write(dir.join("owner.tmp"), owner_line())?;
        fs::rename(dir.join("owner.tmp"), dir.join("owner"))?;

        if options.tls {
            let pair = backupd::keygen::generate(&["localhost".into()])
                .map_err(|e| anyhow!("a TLS certificate for the test Cyrus: {e}"))?;
            fs::create_dir(dir.join("tls"))?;
            fs::write(dir.join("tls/cert.pem"), &pair.cert_pem)?;
            fs::write(dir.join("tls/key.pem"), &pair.key_pem)?;
        }

        let mut last_err = None;
        for _attempt in 0..5 {
            let [imap, lmtp, sieve, sync] = free_ports()?;
            let mut cmd = Command::new(scripts_dir().join("start.sh"));
            cmd.arg(&dir)
                .args([imap, lmtp, sieve, sync].map(|p| p.to_string()))
                .env("CYRUS_DELETE_MODE", options.delete_mode.as_str())
                .env("CYRUS_EXPUNGE_MODE", options.expunge_mode.as_str());
            if options.tls {
                cmd.env("CYRUS_TLS_CERT", dir.join("tls/cert.pem"))
                    .env("CYRUS_TLS_KEY", dir.join("tls/key.pem"));
            }
            let out = cmd.output().context("running tests/cyrus/start.sh")?;
            if out.status.success() {
                return Ok(CyrusInstance {
                    dir,
                    imap_port: imap,
                    lmtp_port: lmtp,
                    sieve_port: sieve,
                    sync_port: sync,
                    options,
                    running: true,
                });
            }
            let err = anyhow!(
                "tests/cyrus/start.sh {} failed ({}):\n{}{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.code() != Some(EXIT_PORT_IN_USE) {
                let _ = fs::remove_dir_all(&dir);
                return Err(err);
            }
            last_err = Some(err);
        }
        let _ = fs::remove_dir_all(&dir);
        Err(last_err.unwrap_or_else(|| anyhow!("start.sh failed")))
    }

    /// Fills the instance with populate.py's default mail (3 users, sieve scripts included).
    pub fn populate(&self) -> Result<ScriptSummary> {
        self.populate_with(&[])
    }

    /// populate.py with extra options (e.g. `["--users", "5", "--seed", "7"]`).
    pub fn populate_with(&self, extra: &[&str]) -> Result<ScriptSummary> {
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("populate.py"))
            .arg(HOST)
            .arg(self.imap_port.to_string())
            .arg(self.lmtp_port.to_string())
            .arg("--sieve-port")
            .arg(self.sieve_port.to_string())
            .args(extra);
        self.summary(cmd, "populate.py", "populate:")
    }

    /// bulk.py with extra options (e.g. `["--users", "50", "--messages", "100"]`).
    pub fn bulk(&self, extra: &[&str]) -> Result<ScriptSummary> {
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("bulk.py"))
            .arg(HOST)
            .arg(self.imap_port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args(extra);
        self.summary(cmd, "bulk.py", "bulk: users=")
    }

    /// Runs a script against the instance and returns its last line starting with `prefix`.
    pub(crate) fn summary(
        &self,
        mut cmd: Command,
        what: &str,
        prefix: &str,
    ) -> Result<ScriptSummary> {
        let out = run(&mut cmd, what).map_err(|e| self.with_log(e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with(prefix))
            .ok_or_else(|| anyhow!("{what} printed no summary line:\n{stdout}"))?;
        Ok(ScriptSummary {
            line: line.to_string(),
        })
    }

    /// What IMAP says about every folder of every user (imap_truth.py).
    pub fn truth(&self) -> Result<Truth> {
        self.truth_for(&[])
    }

    /// What IMAP says about the folders of these users (all users if empty).
    pub fn truth_for(&self, users: &[&str]) -> Result<Truth> {
        let out_file = self.scratch_file("truth", "json");
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("imap_truth.py"))
            .arg(HOST)
            .arg(self.imap_port.to_string())
            .arg("--out")
            .arg(&out_file);
        if !users.is_empty() {
            cmd.arg("--users").arg(users.join(","));
        }
        run(&mut cmd, "imap_truth.py").map_err(|e| self.with_log(e))?;
        Truth::load(&out_file)
    }

    /// `ctl_mboxlist -d`: mailboxes.db as JSON (internal name -> entry with "partition",
    /// "uniqueid", "mbtype", "acl", ...), deleted and hidden (`#sieve`) mailboxes included.
    pub fn mboxlist(&self) -> Result<serde_json::Value> {
        let out = run(
            Command::new(Path::new(CYRUS_BIN).join("ctl_mboxlist"))
                .arg("-C")
                .arg(self.imapd_conf())
                .arg("-d"),
            "ctl_mboxlist -d",
        )?;
        serde_json::from_slice(&out.stdout).context("parsing ctl_mboxlist -d output")
    }

    /// `e` with the instance named, for errors of the scripts run against it.
    pub(crate) fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        e.context(format!("Cyrus instance in {}", self.dir.display()))
    }

    /// A new file name in the instance directory for a script's output
    /// (`<prefix>-<n>.<ext>`), removed with the instance.
    pub(crate) fn scratch_file(&self, prefix: &str, ext: &str) -> PathBuf {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{prefix}-{n}.{ext}"))
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The instance's imapd.conf (give it to Cyrus tools with `-C`).
    pub fn imapd_conf(&self) -> PathBuf {
        self.dir.join("imapd.conf")
    }

    /// configdirectory (mailboxes.db, `user/`, `lock/`, ...).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// sievedir.
    pub fn sieve_dir(&self) -> PathBuf {
        self.dir.join("sieve")
    }

    /// Where master and the services print (Cyrus's syslog lines are not there).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log/master.log")
    }

    /// The partitions, `(name, root)`: `default` and `p2`.
    pub fn partitions(&self) -> Vec<(String, PathBuf)> {
        vec![
            ("default".to_string(), self.dir.join("spool/p1")),
            ("p2".to_string(), self.dir.join("spool/p2")),
        ]
    }

    /// The root of a partition by name.
    pub fn partition_path(&self, name: &str) -> Option<PathBuf> {
        self.partitions()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// A mailbox's directory: `<partition root>/uuid/<c1>/<c2>/<uniqueid>`.
    pub fn mailbox_dir(&self, partition: &str, uniqueid: &str) -> Option<PathBuf> {
        Some(by_id(
            &self.partition_path(partition)?.join("uuid"),
            uniqueid,
        ))
    }

    /// A user's own files (sub.db, seen.db, conversations.db), by the unique id of the user's
    /// INBOX: `<configdirectory>/user/uuid/<c1>/<c2>/<id>`.
    pub fn user_files_dir(&self, inbox_uniqueid: &str) -> PathBuf {
        by_id(&self.config_dir().join("user/uuid"), inbox_uniqueid)
    }

    /// A user's compiled sieve scripts and `defaultbc` link, by INBOX unique id (the script
    /// sources are messages of the hidden mailbox `user/<name>/#sieve`).
    pub fn user_sieve_dir(&self, inbox_uniqueid: &str) -> PathBuf {
        by_id(&self.sieve_dir().join("uuid"), inbox_uniqueid)
    }

    /// The IMAP port.
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// The LMTP port (preauthenticated: no AUTH needed).
    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port
    }

    /// The ManageSieve port.
    pub fn sieve_port(&self) -> u16 {
        self.sieve_port
    }

    /// The replication port: sync_server (csync, dlist-framed), for admins only, SASL PLAIN
    /// over plain TCP.
    pub fn sync_port(&self) -> u16 {
        self.sync_port
    }

    /// The certificate to trust for STARTTLS (an instance started with `tls`).
    pub fn tls_ca_file(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }

    /// The `delete_mode` / `expunge_mode` the instance runs with.
    pub fn options(&self) -> CyrusOptions {
        self.options
    }

    /// Every port the instance listens on.
    pub fn ports(&self) -> [u16; 4] {
        [
            self.imap_port,
            self.lmtp_port,
            self.sieve_port,
            self.sync_port,
        ]
    }

    /// Stops the server and waits until master and its services are gone. The directory
    /// stays until drop.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        run(
            Command::new(scripts_dir().join("stop.sh")).arg(&self.dir),
            "stop.sh",
        )?;
        self.running = false;
        Ok(())
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn by_id(root: &Path, id: &str) -> PathBuf {
    let mut chars = id.chars();
    let c1 = chars.next().map(String::from).unwrap_or_default();
    let c2 = chars.next().map(String::from).unwrap_or_default();
    root.join(c1).join(c2).join(id)
}

impl Drop for CyrusInstance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cyrus instance {} (imap {}, lmtp {}, sieve {}, sync {}); tail of {}:\n{}",
                self.dir.display(),
                self.imap_port,
                self.lmtp_port,
                self.sieve_port,
                self.sync_port,
                self.log_path().display(),
                self.log_tail(20)
            );
        }
        if let Err(e) = self.stop() {
            eprintln!("stopping cyrus in {}: {e:#}", self.dir.display());
        }
        if std::env::var_os("MAILBACKUP_KEEP_CYRUS").is_some_and(|v| v != "0") {
            eprintln!("MAILBACKUP_KEEP_CYRUS: keeping {}", self.dir.display());
        } else if !self.running {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path)?;
    if meta.permissions().mode() & 0o777 != mode {
        // Somebody else's directory (another user ran the tests first) is fine as it is.
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    }
    Ok(())
}

/// Stops and removes every instance under `base` whose owning test process is gone (killed
/// before its `Drop` ran). Directories without an owner file are left alone for ten minutes
/// (one may be being created). Returns how many were removed.
pub fn reap_stale(base: &Path) -> usize {
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        match fs::read_to_string(dir.join("owner")) {
            Ok(line) if owner_alive(&line) => continue,
            Ok(_) => {}
            Err(_) => {
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < Duration::from_secs(600));
                if young {
                    continue;
                }
            }
        }
        let _ = Command::new(scripts_dir().join("stop.sh"))
            .arg(&dir)
            .output();
        if fs::remove_dir_all(&dir).is_ok() {
            reaped += 1;
        }
    }
    reaped
}
