//! The benchmark's machinery: a private Cyrus filled by bulk.py, backupd serving it, the
//! backup host's configuration, and the commands that change the spool between nights.
//! Everything is started by the project's own scripts under tests/cyrus/ and stopped on drop.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{describe, to_log, wait_for};

/// Runs a setup command (not measured), its output appended to `log`; fails naming the log.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<Duration> {
    let t = Instant::now();
    let status = to_log(cmd, log)?
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its output is in {}",
            describe(cmd),
            log.display()
        );
    }
    Ok(t.elapsed())
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it in
/// between, which start.sh reports with exit status 3).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A private Cyrus on 127.0.0.1 (tests/cyrus/start.sh), stopped on drop.
pub struct Cyrus {
    /// The instance directory (imapd.conf, conf/, spool/p1, spool/p2, sieve/).
    pub dir: PathBuf,
    /// IMAP port.
    pub imap: u16,
    /// LMTP port.
    pub lmtp: u16,
    /// sync_server's port (csync, for a `cyrus://` restore and Cyrus's `restore`), when
    /// started with [`Cyrus::start_for_restore`].
    pub sync: Option<u16>,
    repo: PathBuf,
}

impl Cyrus {
    /// Starts an instance in `dir`, retrying with other ports if one was taken meanwhile.
    pub fn start(repo: &Path, dir: &Path, log: &Path) -> Result<Cyrus> {
        Cyrus::start_with(repo, dir, log, false)
    }

    /// Starts an instance that also serves sync_server (and ManageSieve, which start.sh
    /// wants before it) and deletes folders at once (`delete_mode: immediate`): a deleted
    /// folder is really gone, so each restore starts from nothing.
    pub fn start_for_restore(repo: &Path, dir: &Path, log: &Path) -> Result<Cyrus> {
        Cyrus::start_with(repo, dir, log, true)
    }

    fn start_with(repo: &Path, dir: &Path, log: &Path, restore: bool) -> Result<Cyrus> {
        for _ in 0..5 {
            let (imap, lmtp) = (free_port()?, free_port()?);
            let mut start = Command::new("bash");
            start
                .arg(repo.join("tests/cyrus/start.sh"))
                .arg(dir)
                .arg(imap.to_string())
                .arg(lmtp.to_string());
            let mut sync = None;
            if restore {
                let (sieve, port) = (free_port()?, free_port()?);
                start
                    .arg(sieve.to_string())
                    .arg(port.to_string())
                    .env("CYRUS_DELETE_MODE", "immediate");
                sync = Some(port);
            }
            let status = to_log(&mut start, log)?
                .status()
                .context("running tests/cyrus/start.sh")?;
            match status.code() {
                Some(0) => {
                    return Ok(Cyrus {
                        dir: dir.to_path_buf(),
                        imap,
                        lmtp,
                        sync,
                        repo: repo.to_path_buf(),
                    })
                }
                Some(3) => continue,
                _ => bail!(
                    "tests/cyrus/start.sh {} failed ({status}); see {}",
                    dir.display(),
                    log.display()
                ),
            }
        }
        bail!("tests/cyrus/start.sh: ports kept being taken (5 tries)")
    }

    /// The partition roots and the per-user files (seen, subscriptions, sieve): what a
    /// file-level backup of this server's mail has to take.
    pub fn mail_trees(&self) -> Vec<PathBuf> {
        vec![
            self.dir.join("spool/p1"),
            self.dir.join("spool/p2"),
            self.dir.join("conf/user"),
            self.dir.join("sieve"),
        ]
    }

    /// The same trees relative to [`Cyrus::dir`] (for tar -C).
    pub fn mail_trees_relative(&self) -> Vec<&'static str> {
        vec!["spool/p1", "spool/p2", "conf/user", "sieve"]
    }

    /// imapd.conf of the instance.
    pub fn imapd_conf(&self) -> PathBuf {
        self.dir.join("imapd.conf")
    }

    /// A python3 script of tests/cyrus with this instance's host and ports first.
    pub fn script(&self, name: &str, with_lmtp: bool) -> Command {
        let mut c = Command::new("python3");
        c.arg(self.repo.join("tests/cyrus").join(name))
            .arg("127.0.0.1")
            .arg(self.imap.to_string());
        if with_lmtp {
            c.arg(self.lmtp.to_string());
        }
        c
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.repo.join("tests/cyrus/stop.sh"))
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// backupd serving a Cyrus instance on 127.0.0.1, killed on drop.
pub struct Backupd {
    child: Child,
    /// Its address.
    pub addr: String,
    /// The shared secret's file (0600).
    pub secret_file: PathBuf,
    /// With TLS: the pin of its key (`tls_pin` for the backup host), as `backupd keygen`
    /// printed it.
    pub pin: Option<String>,
}

impl Backupd {
    /// Writes its configuration under `work` (created), with a TLS key made by `backupd
    /// keygen` if `tls`, checks it (`backupd check`) and starts it.
    pub fn start(bin: &Path, cyrus: &Cyrus, work: &Path, tls: bool) -> Result<Backupd> {
        fs::create_dir_all(work)?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let secret_file = work.join("backupd.secret");
        testkit::config::write_secret(&secret_file, "bench-secret-0123456789abcdef0123456789")?;
        let config = work.join("backupd.toml");
        let log = work.join("backupd.log");
        let mut text = format!(
            "listen = \"{addr}\"\nsecret_file = \"{}\"\nimapd_conf = \"{}\"\n",
            secret_file.display(),
            cyrus.imapd_conf().display()
        );
        let mut pin = None;
        if tls {
            let out = Command::new(bin)
                .args(["keygen", "--force", "--name", "localhost", "--dir"])
                .arg(work)
                .output()
                .with_context(|| format!("running {} keygen", bin.display()))?;
            let printed = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!(
                    "backupd keygen failed: {printed}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            for line in printed.lines() {
                if line.starts_with("tls_cert_file") || line.starts_with("tls_key_file") {
                    text.push_str(line);
                    text.push('\n');
                } else if let Some(p) = line.strip_prefix("tls_pin = ") {
                    pin = Some(p.trim_matches('"').to_string());
                }
            }
            if pin.is_none() {
                bail!("backupd keygen printed no tls_pin line: {printed}");
            }
        }
        fs::write(&config, text)?;
        run_logged(
            Command::new(bin).arg("check").arg("--config").arg(&config),
            &log,
        )?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::options().append(true).open(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let up = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(&addr).is_ok()
        });
        if !up {
            bail!(
                "backupd did not listen on {addr} within 10 s; see {}",
                log.display()
            );
        }
        Ok(Backupd {
            child,
            addr,
            secret_file,
            pin,
        })
    }

    /// Its process id (for CPU time, peak RSS and strace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Backupd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a backup-server configuration: two RAID sets (one per partition), the store root
/// and state db given, `per_set` batches of a RAID set at once; TLS with backupd's pin when
/// it serves TLS.
pub fn write_server_config(
    path: &Path,
    store_root: &Path,
    state_db: &Path,
    backupd: &Backupd,
    per_set: usize,
) -> Result<()> {
    let mut c = testkit::config::ServerConfig::new(store_root)
        .state_db(state_db)
        .batches_per_raidset(per_set)
        .server("bench", &backupd.addr, &backupd.secret_file);
    if let Some(pin) = &backupd.pin {
        c = c.tls_pin(pin);
    }
    c.raidset("bench-p1", "bench", &["default"])
        .raidset("bench-p2", "bench", &["p2"])
        .write(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// One message of the spool, as the peers and we name it for a single-message restore.
#[derive(Debug, Clone)]
pub struct OneMessage {
    /// Its user.
    pub user: String,
    /// Its folder (INBOX).
    pub folder: String,
    /// Its UID.
    pub uid: u32,
    /// The message file in the spool.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Their SHA-1 in hex (Cyrus's GUID).
    pub guid: String,
}

/// The lowest-UID message of `user`'s INBOX, found through mailboxes.db as backupd finds it.
pub fn pick_message(cyrus: &Cyrus, user: &str) -> Result<OneMessage> {
    let conf = backupd::spool::load_imapd_conf(&cyrus.imapd_conf())?;
    let boxes = backupd::spool::user_mailboxes(&conf, user)?;
    let inbox = boxes
        .iter()
        .find(|m| &*m.folder == "INBOX")
        .with_context(|| format!("user {user} has no INBOX in mailboxes.db"))?;
    let root = conf
        .partition(&inbox.partition)
        .with_context(|| format!("partition {} not in imapd.conf", inbox.partition))?;
    let dir = Path::new(root).join(inbox.spool_dir().context("INBOX without a directory")?);
    let mut uids: Vec<u32> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix('.')?.parse().ok()
        })
        .collect();
    uids.sort_unstable();
    let uid = *uids
        .first()
        .with_context(|| format!("no message file in {}", dir.display()))?;
    let path = dir.join(format!("{uid}."));
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    use sha1::Digest;
    let guid = hex::encode(sha1::Sha1::digest(&bytes));
    Ok(OneMessage {
        user: user.to_owned(),
        folder: "INBOX".into(),
        uid,
        path,
        bytes,
        guid,
    })
}

/// Finds the one regular file under `dir` (a restore's output).
pub fn only_file(dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                found.push(e.path());
            }
        }
    }
    match found.len() {
        1 => Ok(found.pop().unwrap()),
        n => bail!(
            "expected one restored file under {}, found {n}",
            dir.display()
        ),
    }
}
