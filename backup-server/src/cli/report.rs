//! `backup-server report`: the backup-age report ([`backup_server::report`]) as a table,
//! one JSON object or Prometheus text on stdout, or the table mailed with sendmail(8)
//! (docs/backup-server.md, "The backup-age report"). Exit 2 when any user is at or over
//! the limit or was never backed up.

use super::{Out, Status};
use anyhow::Context;
use backup_server::config::Config;
use backup_server::report::{
    age_report_at, late_users_at, AgeReport, LateUser, LateUsers, DEFAULT_MAX_AGE_HOURS,
};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The sendmail(8) run by `--mail-to` when `MAILBACKUP_SENDMAIL` is not set.
const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// The environment variable naming another sendmail (tests, hosts with it elsewhere).
const SENDMAIL_ENV: &str = "MAILBACKUP_SENDMAIL";

/// `backup-server report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Output: table, json or prometheus.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "prometheus"])]
    format: String,
    /// Mark users whose last complete backup is this many hours old or more.
    #[arg(long, value_name = "H", default_value_t = DEFAULT_MAX_AGE_HOURS)]
    max_age_hours: u32,
    /// Mail the table to this address with sendmail(8) instead of printing it.
    #[arg(long, value_name = "ADDR")]
    mail_to: Option<String>,
    /// The clock to compute ages against (default: now): RFC 3339 or unix seconds.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    now: Option<formats::Timestamp>,
    /// Name every late user (by default the first 20: never backed up, then the oldest).
    #[arg(long)]
    all: bool,
}

/// Late users named when `--all` is not given.
const LATE_SHOWN: usize = 20;

/// Makes the report from the configured state db and prints it (or mails the table,
/// printing nothing).
pub fn run(config: &Config, a: &ReportArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let now = a.now.map_or_else(system_now, |t| t.secs);
    let report = age_report_at(&config.state, now, a.max_age_hours).context("report")?;
    let limit = (!a.all).then_some(LATE_SHOWN);
    let late = late_users_at(&config.state, now, a.max_age_hours, limit).context("report")?;
    // A fleet's report names the late users' hosts; one SQLite host's has no host column.
    let fleet = matches!(
        config.state,
        backup_server::state::StateLocation::Postgres(_)
    );
    match &a.mail_to {
        Some(to) => {
            mail(&report, &late_lines(&late, fleet), to, &sendmail_path()).context("report")?
        }
        None => out.text(&match a.format.as_str() {
            "json" => json(&report, &late.oldest),
            "prometheus" => prometheus(&report),
            _ => table(&report) + &late_lines(&late, fleet),
        })?,
    }
    Ok(status(&report))
}

/// What the report means for the exit status: 0 when every user is recent, else 2.
fn status(report: &AgeReport) -> Status {
    if report.all_recent() {
        Status::Ok
    } else {
        Status::Incomplete
    }
}

/// Unix seconds now, from the system clock.
fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn now_text(r: &AgeReport) -> String {
    jiff::Timestamp::from_second(r.now)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| r.now.to_string())
}

/// The table for people (and for the mail).
fn table(r: &AgeReport) -> String {
    let h = r.max_age_hours;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Backup age at {}: users by whole hours since their last complete backup",
        now_text(r)
    );
    let _ = writeln!(
        s,
        "(vanished users left out; marked: {h} h or more, or never)"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "{:>8}  {:>9}", "hours", "users");
    for row in &r.rows {
        let age = row
            .age_hours
            .map_or_else(|| "never".to_string(), |a| a.to_string());
        let mark = if row.over { "  over" } else { "" };
        let _ = writeln!(s, "{age:>8}  {:>9}{mark}", row.users);
    }
    let _ = writeln!(s, "{:>8}  {:>9}", "total", r.users());
    let _ = writeln!(s);
    let over = r.over_max_age();
    if over == 0 {
        let _ = writeln!(s, "All users backed up complete within {h} h.");
    } else {
        let _ = writeln!(
            s,
            "{over} users not backed up complete within {h} h ({} never).",
            r.never_backed_up()
        );
    }
    s
}

/// The late users after the table: on a fleet, counted per backup host; then by name (with
/// their host on a fleet), the first [`LATE_SHOWN`] unless `--all`.
fn late_lines(late: &LateUsers, fleet: bool) -> String {
    let mut s = String::new();
    if late.oldest.is_empty() {
        return s;
    }
    let host = |h: &Option<String>| h.clone().unwrap_or_else(|| "(no host yet)".into());
    if fleet {
        let _ = writeln!(s, "\nLate users by backup host:");
        for (h, n) in &late.by_host {
            let _ = writeln!(s, "  {:<24} {n:>9}", host(h));
        }
    }
    let shown = late.oldest.len() as u64;
    if shown < late.total {
        let _ = writeln!(
            s,
            "\nLate users (the first {shown} of {}; --all names every one):",
            late.total
        );
    } else {
        let _ = writeln!(s, "\nLate users:");
    }
    for u in &late.oldest {
        let age = u
            .age_hours
            .map_or_else(|| "never".to_string(), |h| format!("{h} h"));
        if fleet {
            let _ = writeln!(s, "  {}\t{age}\t{}", u.user, host(&u.host));
        } else {
            let _ = writeln!(s, "  {}\t{age}", u.user);
        }
    }
    s
}

/// One JSON object on one line (fields in docs/backup-server.md); `late`: the late users
/// named.
fn json(r: &AgeReport, late: &[LateUser]) -> String {
    // Only integers, booleans and null: written by hand, no JSON crate needed.
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"now\":{},\"max_age_hours\":{},\"users\":{},\"never_backed_up\":{},\"over_max_age\":{},\"rows\":[",
        r.now,
        r.max_age_hours,
        r.users(),
        r.never_backed_up(),
        r.over_max_age()
    );
    for (i, row) in r.rows.iter().enumerate() {
        let age = row
            .age_hours
            .map_or_else(|| "null".to_string(), |a| a.to_string());
        let _ = write!(
            s,
            "{}{{\"age_hours\":{age},\"users\":{},\"over\":{}}}",
            if i == 0 { "" } else { "," },
            row.users,
            row.over
        );
    }
    s.push_str("],\"late\":[");
    for (i, u) in late.iter().enumerate() {
        let name = serde_json::to_string(&u.user).unwrap_or_else(|_| "\"\"".into());
        let age = u
            .age_hours
            .map_or_else(|| "null".to_string(), |a| a.to_string());
        let _ = write!(
            s,
            "{}{{\"user\":{name},\"age_hours\":{age}}}",
            if i == 0 { "" } else { "," }
        );
    }
    s.push_str("]}\n");
    s
}

/// Prometheus text exposition format 0.0.4, all gauges.
fn prometheus(r: &AgeReport) -> String {
    let mut s = String::new();
    let gauge = |s: &mut String, name: &str, help: &str| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} gauge");
    };
    gauge(
        &mut s,
        "mailbackup_users_by_backup_age_hours",
        "Users by whole hours since their last complete backup started (vanished users left out).",
    );
    for row in &r.rows {
        if let Some(a) = row.age_hours {
            let _ = writeln!(
                s,
                "mailbackup_users_by_backup_age_hours{{age=\"{a}\"}} {}",
                row.users
            );
        }
    }
    gauge(
        &mut s,
        "mailbackup_users_never_backed_up",
        "Users never backed up complete (vanished users left out).",
    );
    let _ = writeln!(
        s,
        "mailbackup_users_never_backed_up {}",
        r.never_backed_up()
    );
    gauge(
        &mut s,
        "mailbackup_users_over_max_age",
        "Users whose last complete backup is max_age_hours or more old, or who never had one.",
    );
    let _ = writeln!(s, "mailbackup_users_over_max_age {}", r.over_max_age());
    gauge(
        &mut s,
        "mailbackup_users",
        "Users counted by the report (vanished users left out).",
    );
    let _ = writeln!(s, "mailbackup_users {}", r.users());
    gauge(
        &mut s,
        "mailbackup_report_max_age_hours",
        "The limit the report marked users against.",
    );
    let _ = writeln!(s, "mailbackup_report_max_age_hours {}", r.max_age_hours);
    gauge(
        &mut s,
        "mailbackup_report_time_seconds",
        "The clock the ages were computed against.",
    );
    let _ = writeln!(s, "mailbackup_report_time_seconds {}", r.now);
    s
}

/// The mail `--mail-to` sends: headers (sendmail adds From, Date, Message-ID), the table
/// and `late` (the late users' lines).
fn mail_message(r: &AgeReport, late: &str, to: &str) -> String {
    let over = r.over_max_age();
    let subject = if over == 0 {
        format!(
            "mailbackup: all {} users backed up within {} h",
            r.users(),
            r.max_age_hours
        )
    } else {
        format!(
            "mailbackup: {over} users not backed up within {} h",
            r.max_age_hours
        )
    };
    format!(
        "To: {to}\nSubject: {subject}\nAuto-Submitted: auto-generated\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{}{late}",
        table(r)
    )
}

/// The report could not be mailed.
#[derive(Debug, thiserror::Error)]
enum MailError {
    /// The address would break the mail's header.
    #[error("--mail-to: expected one address without line breaks, found {0:?}")]
    BadAddress(String),
    /// sendmail could not be started (not installed, not executable).
    #[error("cannot run {path} to mail the report: {source} (install an MTA providing sendmail(8), set {SENDMAIL_ENV}, or drop --mail-to)", path = .path.display())]
    SendmailMissing {
        /// The program.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// sendmail exited with a failure.
    #[error("{path} did not take the report: it exited with {status}", path = .path.display())]
    Refused {
        /// The program.
        path: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// The message could not be handed to sendmail.
    #[error("{path} did not take the report: writing the message: {source}", path = .path.display())]
    Write {
        /// The program.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// sendmail's end could not be waited for.
    #[error("{path} did not take the report: {source}", path = .path.display())]
    Wait {
        /// The program.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The sendmail to run: `$MAILBACKUP_SENDMAIL` or [`DEFAULT_SENDMAIL`].
fn sendmail_path() -> PathBuf {
    std::env::var_os(SENDMAIL_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SENDMAIL), PathBuf::from)
}

/// Hands the table to `sendmail -i -- TO` and waits for it to take the mail.
fn mail(report: &AgeReport, late: &str, to: &str, sendmail: &Path) -> Result<(), MailError> {
    if to.trim().is_empty() || to.contains(['\r', '\n']) || to.starts_with('-') {
        return Err(MailError::BadAddress(to.to_string()));
    }
    let mut child = Command::new(sendmail)
        .args(["-i", "--", to])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| MailError::SendmailMissing {
            path: sendmail.to_path_buf(),
            source,
        })?;
    let path = || sendmail.to_path_buf();
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(mail_message(report, late, to).as_bytes()));
    // stdin is closed here (dropped), so sendmail sees the end of the message.
    let status = child.wait().map_err(|source| MailError::Wait {
        path: path(),
        source,
    })?;
    if !status.success() {
        return Err(MailError::Refused {
            path: path(),
            status,
        });
    }
    if let Some(Err(source)) = written {
        return Err(MailError::Write {
            path: path(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_server::report::AgeRow;

    /// 2026-11-23T04:00:00Z.
    const NOW: i64 = 1_795_406_400;

    fn report(rows: &[(Option<u64>, u64, bool)]) -> AgeReport {
        AgeReport {
            now: NOW,
            max_age_hours: 24,
            rows: rows
                .iter()
                .map(|&(age_hours, users, over)| AgeRow {
                    age_hours,
                    users,
                    over,
                })
                .collect(),
        }
    }

    fn sample() -> AgeReport {
        report(&[
            (Some(0), 3, false),
            (Some(23), 1, false),
            (Some(24), 2, true),
            (None, 2, true),
        ])
    }

    #[test]
    fn over_the_limit_is_2_and_all_recent_0() {
        assert_eq!(status(&sample()).code(), 2);
        assert_eq!(status(&report(&[(Some(3), 5, false)])).code(), 0);
        // No users: nothing is late.
        assert_eq!(status(&report(&[])), Status::Ok);
        // Never backed up is always over.
        assert_eq!(status(&report(&[(None, 1, true)])), Status::Incomplete);
    }

    #[test]
    fn the_table() {
        assert_eq!(
            table(&sample()),
            "Backup age at 2026-11-23 04:00:00 UTC: users by whole hours since their last complete backup\n\
             (vanished users left out; marked: 24 h or more, or never)\n\
             \n\
             \x20  hours      users\n\
             \x20      0          3\n\
             \x20     23          1\n\
             \x20     24          2  over\n\
             \x20  never          2  over\n\
             \x20  total          8\n\
             \n\
             4 users not backed up complete within 24 h (2 never).\n"
        );
        assert!(table(&report(&[(Some(1), 2, false)]))
            .ends_with("\nAll users backed up complete within 24 h.\n"));
    }

    #[test]
    fn json_and_prometheus() {
        assert_eq!(
            json(
                &sample(),
                &[
                    LateUser {
                        user: "b\"ob".into(),
                        age_hours: None,
                        host: None
                    },
                    LateUser {
                        user: "carol".into(),
                        age_hours: Some(30),
                        host: None
                    }
                ]
            ),
            format!(
                "{{\"now\":{NOW},\"max_age_hours\":24,\"users\":8,\"never_backed_up\":2,\"over_max_age\":4,\"rows\":[\
                 {{\"age_hours\":0,\"users\":3,\"over\":false}},\
                 {{\"age_hours\":23,\"users\":1,\"over\":false}},\
                 {{\"age_hours\":24,\"users\":2,\"over\":true}},\
                 {{\"age_hours\":null,\"users\":2,\"over\":true}}],\
                 \"late\":[{{\"user\":\"b\\\"ob\",\"age_hours\":null}},{{\"user\":\"carol\",\"age_hours\":30}}]}}\n"
            )
        );
        let late = LateUsers {
            by_host: [(Some("backup1".to_string()), 3)].into_iter().collect(),
            oldest: vec![LateUser {
                user: "dave".into(),
                age_hours: Some(25),
                host: Some("backup1".into()),
            }],
            total: 3,
        };
        assert_eq!(
            late_lines(&late, false),
            "\nLate users (the first 1 of 3; --all names every one):\n  dave\t25 h\n"
        );
        assert_eq!(
            late_lines(&late, true),
            "\nLate users by backup host:\n  backup1                          3\n\
             \nLate users (the first 1 of 3; --all names every one):\n  dave\t25 h\tbackup1\n"
        );
        let p = prometheus(&sample());
        let samples: Vec<&str> = p.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "mailbackup_users_by_backup_age_hours{age=\"0\"} 3",
                "mailbackup_users_by_backup_age_hours{age=\"23\"} 1",
                "mailbackup_users_by_backup_age_hours{age=\"24\"} 2",
                "mailbackup_users_never_backed_up 2",
                "mailbackup_users_over_max_age 4",
                "mailbackup_users 8",
                "mailbackup_report_max_age_hours 24",
                "mailbackup_report_time_seconds 1795406400",
            ]
        );
    }

    #[test]
    fn the_mail_and_refused_addresses() {
        let m = mail_message(&sample(), "", "ops@example.org");
        assert!(m.starts_with(
            "To: ops@example.org\nSubject: mailbackup: 4 users not backed up within 24 h\n"
        ));
        assert!(m.ends_with(&format!("\n\n{}", table(&sample()))));
        let m = mail_message(&report(&[(Some(1), 2, false)]), "", "ops");
        assert!(m.contains("\nSubject: mailbackup: all 2 users backed up within 24 h\n"));
        for bad in ["", "-oQ/tmp", "a\nBcc: b"] {
            let e = mail(&sample(), "", bad, Path::new("/nonexistent")).unwrap_err();
            assert!(matches!(e, MailError::BadAddress(_)), "{bad:?}: {e}");
        }
    }
}
