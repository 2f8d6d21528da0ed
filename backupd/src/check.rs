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
    /// Fine for now, but it needs attention soon (a certificate near its end).
    pub warning: bool,
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
            warning: false,
            text: text.into(),
        });
    }

    fn warn(&mut self, text: impl Into<String>) {
        self.findings.push(Finding {
            ok: true,
            warning: true,
            text: text.into(),
        });
    }

    fn fail(&mut self, text: impl Into<String>) {
        self.findings.push(Finding {
            ok: false,
            warning: false,
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
                match (finding.ok, finding.warning) {
                    (true, false) => "ok  ",
                    (true, true) => "WARN",
                    (false, _) => "FAIL",
                },
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
    // Read as the daemon reads them: before the privilege drop.
    check_tls(&config, &mut r);
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

/// Seconds before a certificate's end from which `check` warns.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;

/// The TLS key (owner, mode, that it matches the certificate) and the certificate's dates.
fn check_tls(config: &Config, r: &mut Report) {
    let Some(files) = config.tls_files() else {
        if config.listen.ip().is_loopback() {
            r.ok_line(format!(
                "TLS off: plain TCP on loopback ({}); set tls_cert_file and tls_key_file to \
                 turn it on",
                config.listen
            ));
        } else {
            r.warn(format!(
                "TLS off (tls = false) on {}: mail crosses the network in clear",
                config.listen
            ));
        }
        return;
    };
    let euid = nix::unistd::geteuid().as_raw();
    match crate::tls::server_config(&files, euid) {
        Ok(_) => r.ok_line(format!(
            "TLS key {}: owner-only, matches the certificate{}",
            files.key_file.display(),
            match &files.client_ca_file {
                Some(ca) => format!("; client certificates required, from {}", ca.display()),
                None => String::new(),
            }
        )),
        Err(e) => r.fail(e.to_string()),
    }
    let cert = match crate::tls::read_certs("TLS certificate file", &files.cert_file) {
        Ok(certs) => certs.into_iter().next().expect("at least one"),
        Err(e) => {
            r.fail(e.to_string());
            return;
        }
    };
    let Some(facts) = crate::tls::CertFacts::of(&cert) else {
        r.fail(format!(
            "TLS certificate file {}: the first certificate does not parse as X.509",
            files.cert_file.display()
        ));
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let text = format!(
        "TLS certificate {}: {}, valid {} to {}, key pin {} (the backup host's tls_pin)",
        files.cert_file.display(),
        facts.subject,
        facts.not_before_text,
        facts.not_after_text,
        facts.pin
    );
    match facts.warning(now) {
        None => r.ok_line(text),
        Some(w) => r.warn(format!("{text}: {w}")),
    }
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
    fn tls_key_mode_match_and_certificate_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let made = crate::keygen::keygen(dir.path(), &["mail1.example".into()], false).unwrap();
        let config = dir.path().join("backupd.toml");
        std::fs::write(
            &config,
            format!(
                "secret_file = {:?}\nimapd_conf = {:?}\nrun_as = \"backupd-no-such-user\"\n\
                 tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                secret,
                dir.path().join("imapd.conf"),
                made.cert_file,
                made.key_file
            ),
        )
        .unwrap();
        let text = check(&config).to_string();
        assert!(
            text.contains(&format!(
                "ok   TLS key {}: owner-only, matches the certificate",
                made.key_file.display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("key pin {} (the backup host's tls_pin)", made.pin)),
            "{text}"
        );
        std::fs::set_permissions(&made.key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = check(&config).to_string();
        assert!(
            text.contains(&format!(
                "FAIL TLS key file {}: has mode 0640",
                made.key_file.display()
            )),
            "{text}"
        );
        // A key that is not the certificate's.
        std::fs::set_permissions(&made.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let other = crate::keygen::generate(&["x".into()]).unwrap();
        std::fs::write(&made.key_file, other.key_pem).unwrap();
        let text = check(&config).to_string();
        assert!(
            text.contains("FAIL the TLS certificate and key (a key that does not match"),
            "{text}"
        );
    }

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
