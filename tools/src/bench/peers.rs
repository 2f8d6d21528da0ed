//! The tools compared, and the exact command each runs for a workload. Every peer is run as
//! an administrator would run it from Debian's packages, with its defaults (restic's own
//! compression, borg's lz4, tar's gzip -6): the peers are not tuned down.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::rig::{Cyrus, OneMessage};

/// A backup tool in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    /// mailbackup: backupd on the mail server, `backup-server run` on the backup host,
    /// configured for this machine (`batches_per_raidset = 4`: the two partitions share one
    /// virtual disk).
    Ours,
    /// mailbackup configured as [`Tool::Ours`], over TLS 1.3: a second backupd serving the
    /// same spool with a key from `backupd keygen`, pinned by the backup host. Beside
    /// `mailbackup` (plain TCP on loopback) it is the cost of TLS.
    OursTls,
    /// mailbackup with the configuration's default of one batch per RAID set.
    OursSerial,
    /// mailbackup configured as [`Tool::Ours`], run by another build of backup-server
    /// (`bench --compare-server-bin`: a branch measured beside the one built here). Not in
    /// [`Tool::ALL`]: it runs only when that binary is given.
    OursAlt,
    /// `tar czf` (with `-g`, GNU tar's listed incremental, for the nights).
    Tar,
    /// `rsync -a` into a mirror.
    Rsync,
    /// restic 0.14, a local repository.
    Restic,
    /// borg 1.2, a local unencrypted repository, lz4 (its default).
    Borg,
    /// Cyrus's own backup system: its backupd on a second instance, fed by sync_client -A.
    CyrusBackups,
}

impl Tool {
    /// Every tool, ours first.
    pub const ALL: [Tool; 8] = [
        Tool::Ours,
        Tool::OursTls,
        Tool::OursSerial,
        Tool::Tar,
        Tool::Rsync,
        Tool::Restic,
        Tool::Borg,
        Tool::CyrusBackups,
    ];

    /// Its name in the report and on the command line (`--peers`).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Ours => "mailbackup",
            Tool::OursTls => "mailbackup-tls",
            Tool::OursSerial => "mailbackup-1-per-set",
            Tool::OursAlt => "mailbackup-alt",
            Tool::Tar => "tar",
            Tool::Rsync => "rsync",
            Tool::Restic => "restic",
            Tool::Borg => "borg",
            Tool::CyrusBackups => "cyrus-backups",
        }
    }

    /// The tool named `s`.
    pub fn parse(s: &str) -> Result<Tool> {
        Tool::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .with_context(|| {
                format!(
                    "unknown tool {s:?}; known: {}",
                    Tool::ALL.map(|t| t.name()).join(", ")
                )
            })
    }

    /// mailbackup, in either configuration: backupd does part of the work.
    pub fn is_ours(self) -> bool {
        matches!(
            self,
            Tool::Ours | Tool::OursTls | Tool::OursSerial | Tool::OursAlt
        )
    }

    /// Exit statuses that mean success (tar and borg exit 1 when a file changed as it was
    /// read, which Cyrus may cause; they still wrote a usable backup).
    pub fn ok_codes(self) -> &'static [i32] {
        match self {
            Tool::Tar | Tool::Borg => &[0, 1],
            _ => &[0],
        }
    }
}

/// Where everything of one benchmark lives.
pub struct Paths {
    /// The repository (scripts, docs/report.sql).
    pub repo: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// target/release/backup-server.
    pub server_bin: PathBuf,
    /// backup-server's configuration.
    pub server_config: PathBuf,
    /// The store root (in the configuration).
    pub store_root: PathBuf,
    /// The state db (in the configuration).
    pub state_db: PathBuf,
    /// The Cyrus Backups instance directory.
    pub cyrus_backups: PathBuf,
    /// Its backupd port.
    pub cyrus_backups_port: u16,
    /// The spool's users (bulk.py's names), for the tools that take a user list.
    pub users: Vec<String>,
    /// The other backup-server build [`Tool::OursAlt`] runs.
    pub alt_server_bin: Option<PathBuf>,
}

impl Paths {
    /// Where `tool` keeps its backup.
    pub fn dest(&self, tool: Tool) -> PathBuf {
        match tool {
            Tool::Ours => self.store_root.clone(),
            Tool::OursSerial => self.work.join("store-1"),
            Tool::OursTls => self.work.join("store-tls"),
            Tool::OursAlt => self.work.join("store-alt"),
            Tool::Tar => self.work.join("tar"),
            Tool::Rsync => self.work.join("rsync"),
            Tool::Restic => self.work.join("restic"),
            Tool::Borg => self.work.join("borg"),
            Tool::CyrusBackups => self.cyrus_backups.join("backups"),
        }
    }

    fn peer_script(&self) -> PathBuf {
        self.repo.join("tools/bench/cyrus-backups-peer.sh")
    }

    /// Environment the peers read (repository passwords, cache directories inside the work
    /// directory, borg's questions answered).
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", self.work.join("restic-cache"))
            .env("BORG_BASE_DIR", self.work.join("borg-base"))
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes");
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        self.env(&mut c);
        c
    }

    /// Empties `tool`'s backup and makes it ready for a first full backup (not measured).
    pub fn reset(&self, tool: Tool, cyrus: &Cyrus, log: &Path) -> Result<()> {
        use super::rig::run_logged;
        let dest = self.dest(tool);
        match tool {
            Tool::Ours | Tool::OursTls | Tool::OursSerial | Tool::OursAlt => {
                let state_db = self.state_db(tool);
                remove(&dest)?;
                remove(&state_db)?;
                for ext in ["-wal", "-shm"] {
                    let mut p = state_db.clone().into_os_string();
                    p.push(ext);
                    remove(Path::new(&p))?;
                }
            }
            Tool::Tar | Tool::Rsync => {
                remove(&dest)?;
                fs::create_dir_all(&dest)?;
            }
            Tool::Restic => {
                remove(&dest)?;
                remove(&self.work.join("restic-cache"))?;
                run_logged(
                    self.cmd("restic")
                        .args(["init", "--quiet", "--repo"])
                        .arg(&dest),
                    log,
                )?;
            }
            Tool::Borg => {
                remove(&dest)?;
                remove(&self.work.join("borg-base"))?;
                run_logged(
                    self.cmd("borg").args(["init", "-e", "none"]).arg(&dest),
                    log,
                )?;
            }
            Tool::CyrusBackups => {
                let script = self.peer_script();
                let _ = run_logged(
                    Command::new("bash")
                        .arg(&script)
                        .arg("stop")
                        .arg(&self.cyrus_backups),
                    log,
                );
                remove(&self.cyrus_backups)?;
                run_logged(
                    Command::new("bash")
                        .arg(&script)
                        .arg("start")
                        .arg(&self.cyrus_backups)
                        .arg(self.cyrus_backups_port.to_string())
                        .arg(&cyrus.dir),
                    log,
                )?;
            }
        }
        Ok(())
    }

    /// The command of a backup run: the first (`night` = 0) or a later one. `night` names
    /// the archive for the tools that name them.
    pub fn backup(&self, tool: Tool, cyrus: &Cyrus, night: u32) -> Command {
        let dest = self.dest(tool);
        match tool {
            Tool::Ours | Tool::OursTls | Tool::OursSerial | Tool::OursAlt => {
                let bin = match (tool, &self.alt_server_bin) {
                    (Tool::OursAlt, Some(alt)) => alt,
                    _ => &self.server_bin,
                };
                let mut c = Command::new(bin);
                c.arg("--config")
                    .arg(self.config(tool))
                    .args(["run", "--progress", "quiet"]);
                c
            }
            Tool::Tar => {
                // Night 0 writes the level-0 snapshot file; later nights work on a copy made
                // by `prepare_night` so each is measured against the state it would see.
                let mut c = Command::new("tar");
                c.arg("-C")
                    .arg(&cyrus.dir)
                    .arg("--listed-incremental")
                    .arg(dest.join("snar.now"))
                    .arg("-czf")
                    .arg(dest.join(format!("night{night}.tar.gz")))
                    .args(cyrus.mail_trees_relative());
                c
            }
            Tool::Rsync => {
                let mut c = Command::new("rsync");
                c.arg("-a");
                for t in cyrus.mail_trees() {
                    c.arg(t);
                }
                c.arg(format!("{}/", dest.display()));
                c
            }
            Tool::Restic => {
                let mut c = self.cmd("restic");
                c.args(["backup", "--quiet", "--repo"]).arg(&dest);
                c.args(cyrus.mail_trees());
                c
            }
            Tool::Borg => {
                let mut c = self.cmd("borg");
                c.arg("create")
                    .arg(format!("{}::night{night}-{}", dest.display(), unique()));
                c.args(cyrus.mail_trees());
                c
            }
            Tool::CyrusBackups => {
                // One sync_client per user: a single -A session makes Cyrus 3.6's backupd
                // append new users' mail to every backup it holds open (quadratic).
                let mut c = Command::new("bash");
                c.arg(self.peer_script())
                    .arg("sync")
                    .arg(&cyrus.dir)
                    .args(&self.users);
                c
            }
        }
    }

    /// Work before a measured backup that is not part of it: tar's snapshot file for this
    /// night (`chain`: continue from the last night; otherwise start again from level 0).
    pub fn prepare_night(&self, tool: Tool, chain: bool) -> Result<()> {
        if tool != Tool::Tar {
            return Ok(());
        }
        let dest = self.dest(tool);
        let now = dest.join("snar.now");
        let level0 = dest.join("snar.level0");
        let last = dest.join("snar.last");
        if now.exists() {
            // The run before just finished: keep its result.
            if !level0.exists() {
                fs::copy(&now, &level0)?;
            }
            fs::rename(&now, &last)?;
        }
        if level0.exists() {
            let from = if chain { &last } else { &level0 };
            fs::copy(from, &now).with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(())
    }

    /// Bytes `tool` keeps for its backup (hard links once).
    pub fn stored_bytes(&self, tool: Tool) -> Result<u64> {
        let dest = self.dest(tool);
        let mut bytes = super::measure::tree_bytes(&dest)?.0;
        if tool.is_ours() {
            let state_db = self.state_db(tool);
            bytes += super::measure::tree_bytes(
                state_db.parent().context("state db without a directory")?,
            )?
            .0;
        }
        Ok(bytes)
    }

    /// The command restoring `msg` into the empty directory `target`, and where the restored
    /// file lands (`None`: found as the only file under `target`). `None` for tools without
    /// a single-message restore.
    pub fn restore_one(
        &self,
        tool: Tool,
        cyrus: &Cyrus,
        msg: &OneMessage,
        target: &Path,
    ) -> Option<Command> {
        let dest = self.dest(tool);
        match tool {
            Tool::Ours => {
                let mut c = Command::new(&self.server_bin);
                c.arg("--config")
                    .arg(&self.server_config)
                    .args(["restore", "--user", &msg.user, "--folder", &msg.folder])
                    .args(["--uid", &msg.uid.to_string()])
                    .arg("--to")
                    .arg(format!("eml:{}", target.display()));
                Some(c)
            }
            Tool::Tar => {
                let rel = msg.path.strip_prefix(&cyrus.dir).ok()?;
                let mut c = Command::new("tar");
                c.arg("-C")
                    .arg(target)
                    .arg("-xzf")
                    .arg(dest.join("night0.tar.gz"))
                    .arg(rel);
                Some(c)
            }
            Tool::Restic => {
                let mut c = self.cmd("restic");
                c.args(["restore", "latest", "--quiet", "--repo"])
                    .arg(&dest)
                    .arg("--target")
                    .arg(target)
                    .arg("--include")
                    .arg(&msg.path);
                Some(c)
            }
            Tool::Borg => {
                // borg extracts into the current directory, paths without the leading '/'.
                let archive = fs::read_to_string(self.work.join("borg-last-archive")).ok()?;
                let mut c = self.cmd("borg");
                c.current_dir(target)
                    .arg("extract")
                    .arg(format!("{}::{}", dest.display(), archive.trim()))
                    .arg(msg.path.strip_prefix("/").ok()?);
                Some(c)
            }
            Tool::CyrusBackups => {
                // cyr_backup prints the message on stdout; the GUID is its SHA-1.
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!(
                    "/usr/lib/cyrus/bin/cyr_backup -C {} -u {} dump message {} > {}",
                    self.cyrus_backups.join("imapd.conf").display(),
                    msg.user,
                    msg.guid,
                    target.join("message").display()
                ));
                Some(c)
            }
            Tool::Rsync | Tool::OursTls | Tool::OursSerial | Tool::OursAlt => None,
        }
    }

    /// backup-server's configuration file for `tool` (one of ours).
    pub fn config(&self, tool: Tool) -> PathBuf {
        match tool {
            Tool::OursSerial => self.work.join("backup-server-1.toml"),
            Tool::OursTls => self.work.join("backup-server-tls.toml"),
            Tool::OursAlt => self.work.join("backup-server-alt.toml"),
            _ => self.server_config.clone(),
        }
    }

    /// The state db for `tool` (one of ours).
    pub fn state_db(&self, tool: Tool) -> PathBuf {
        match tool {
            Tool::OursSerial => self.work.join("state-1/state.sqlite3"),
            Tool::OursTls => self.work.join("state-tls/state.sqlite3"),
            Tool::OursAlt => self.work.join("state-alt/state.sqlite3"),
            _ => self.state_db.clone(),
        }
    }
}

/// A suffix that keeps borg archive names apart across repetitions.
fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Removes a file or directory tree if it exists.
pub fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("looking at {}", path.display())),
    }
}
