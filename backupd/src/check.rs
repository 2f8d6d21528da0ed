//! `backupd check --config FILE`: everything the daemon needs, tried the way the daemon
//! will use it, each finding on a line of its own.

use crate::auth::load_secret;
use crate::config::Config;
use crate::privileges::{self, RunningAs};
use crate::spool::{self, Spool};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Whether this part is fine.
    pub ok: bool,
    /// What was checked and what was found.
    pub text: String,
}

/// Every finding, in the order checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether everything is fine.
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    fn ok_line(&mut self, text: impl Into<String>) {
        self.findings.push(Finding {
            ok: true,
            text: text.into(),
        });
    }

    fn fail(&mut self, text: impl Into<String>) {
        self.findings.push(Finding {
            ok: false,
            text: text.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(
                f,
                "{} {}",
                if finding.ok { "ok  " } else { "FAIL" },
                finding.text
            )?;
        }
        let failed = self.findings.iter().filter(|f| !f.ok).count();
        if failed == 0 {
            write!(f, "all {} checks passed", self.findings.len())
        } else {
            write!(f, "{failed} of {} checks failed", self.findings.len())
        }
    }
}

/// Checks the configuration at `path` and the spool it names. When run as root it drops
/// to `run_as` after reading the secret, as the daemon does, so that file permissions are
/// tried as the daemon will meet them (the process stays that user afterwards).
pub fn check(path: &Path) -> Report {
    let mut r = Report::default();
    let config = match Config::load(path) {
        Ok(c) => {
            r.ok_line(format!(
                "config {}: listen {} for {}, {} connections, {} spool threads, locks waited for {} s at most",
                path.display(),
                c.listen,
                c.allow_from
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                c.max_connections,
                c.blocking_threads,
                c.lock_timeout_secs
            ));
            c
        }
        Err(e) => {
            r.fail(format!("config: {e}"));
            return r;
        }
    };
    match load_secret(&config.secret_file) {
        Ok(s) => r.ok_line(format!(
            "secret file {}: owner-only, {:?}",
            config.secret_file.display(),
            s
        )),
        Err(e) => r.fail(e.to_string()),
    }
    match privileges::drop_to(&config.run_as) {
        Ok(RunningAs::Dropped { user, uid, gid }) => r.ok_line(format!(
            "running as root: switched to {user} (uid {uid}, gid {gid}) for the spool checks"
        )),
        Ok(RunningAs::Unchanged { uid }) => r.ok_line(format!(
            "not root (uid {uid}): spool checks run as this user; the daemon started as root would run as {:?}",
            config.run_as
        )),
        Err(e) => {
            // Still root, or half-way: what root may read says nothing of what the daemon
            // will be able to read, and the spool is not to be touched as root.
            r.fail(format!("privileges: {e}"));
            r.fail("spool checks skipped: the privileges could not be dropped");
            return r;
        }
    }
    check_spool(
        &config.imapd_conf,
        Duration::from_secs(config.lock_timeout_secs),
        &mut r,
    );
    r
}

fn check_spool(imapd_conf: &Path, lock_timeout: Duration, r: &mut Report) {
    let conf = match spool::load_imapd_conf(imapd_conf) {
        Ok(c) => {
            r.ok_line(format!(
                "imapd.conf {}: configdirectory {}",
                imapd_conf.display(),
                c.configdirectory().unwrap_or("(none)")
            ));
            c
        }
        Err(e) => {
            r.fail(format!("imapd.conf {}: {e}", imapd_conf.display()));
            return;
        }
    };
    if conf.configdirectory().is_none() {
        r.fail("imapd.conf: no configdirectory");
    }
    let partitions: Vec<(String, String)> = conf
        .partitions()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    if partitions.is_empty() {
        r.fail("imapd.conf: no partition-<name> entries");
    }
    for (name, dir) in &partitions {
        match std::fs::read_dir(dir) {
            Ok(_) => r.ok_line(format!("partition {name}: {dir} is readable")),
            Err(e) => r.fail(format!("partition {name}: {dir}: {e}")),
        }
    }
    match spool::mailboxes_db_path(&conf) {
        Ok(db) => {
            let t = Instant::now();
            match spool::open_locked_within(&db, lock_timeout) {
                Ok(file) => {
                    drop(file);
                    r.ok_line(format!(
                        "mailboxes.db {}: shared lock taken and released in {:.1} ms",
                        db.display(),
                        t.elapsed().as_secs_f64() * 1e3
                    ));
                }
                Err(e) => r.fail(format!("mailboxes.db: {e}")),
            }
        }
        Err(e) => r.fail(format!("mailboxes.db: {e}")),
    }
    match Spool::open(imapd_conf) {
        Ok(s) => {
            let s = s.with_lock_timeout(lock_timeout);
            let t = Instant::now();
            match s.users() {
                Ok(users) => r.ok_line(format!(
                    "mailbox list: {} users read in {:.2} s",
                    users.len(),
                    t.elapsed().as_secs_f64()
                )),
                Err(e) => r.fail(format!("mailbox list: {e}")),
            }
        }
        Err(e) => r.fail(format!("spool: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn no_spool_check_as_root_when_the_drop_fails() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("backupd.toml");
        std::fs::write(
            &config,
            format!(
                "secret_file = {:?}\nimapd_conf = {:?}\nrun_as = \"backupd-no-such-user\"\n",
                secret,
                dir.path().join("imapd.conf")
            ),
        )
        .unwrap();
        let report = check(&config);
        let text = report.to_string();
        assert!(!report.ok(), "{text}");
        if !nix::unistd::geteuid().is_root() {
            // Not root: nothing to drop, the spool checks run as this user.
            assert!(text.contains("imapd.conf"), "{text}");
            return;
        }
        assert!(text.contains("backupd-no-such-user"), "{text}");
        assert!(text.contains("spool checks skipped"), "{text}");
        assert!(
            !text.contains("imapd.conf"),
            "spool checked as root: {text}"
        );
    }
}
