//! `backup-server find`: a user's messages by sender, recipient, subject, date, folder
//! ([`backup_server::find`]), as a table or JSON lines.
//!
//! The table's columns are separated by one tab (names and subjects may hold spaces; a tab
//! or line break inside a field is shown as a space); dates are the Date header (else the
//! internal date) in RFC 3339, UTC; folder names in UTF-8. The GUID column is what
//! `backup-server restore --user U --guid GUID` takes:
//!
//! ```text
//! # user alice, as of now: 2 messages
//! FOLDER  UID  DATE  FROM  SUBJECT  SIZE  STATE  GUID
//! Données  4  2026-11-24T08:30:00Z  Bob <bob@example.com>  Invoice  1834  live  3f2a...
//! INBOX  9  2026-11-20T10:00:00Z  carol@example.org  Re: lunch  912  expunged on 2026-11-22T01:00:03Z  77c1...
//! ```
//!
//! `--json`: one JSON object per line and message, with every field of
//! [`FoundMessage`](backup_server::find::FoundMessage); the notes go to stderr.

use super::{Out, OutputError, Status};
use anyhow::Context;
use backup_server::config::Config;
use backup_server::find::{find, FindQuery, FindReport};
use backup_server::point_in_time::rfc3339;
use formats::Timestamp;
use std::io::Write;

/// `backup-server find` arguments.
#[derive(Debug, clap::Args)]
pub struct FindArgs {
    /// The user.
    #[arg(long)]
    user: String,
    /// Text in From (a name or an address; any case).
    #[arg(long)]
    from: Option<String>,
    /// Text in To or Cc.
    #[arg(long)]
    to: Option<String>,
    /// Text in the Subject.
    #[arg(long)]
    subject: Option<String>,
    /// Dated at or after this (the Date header, else the internal date): RFC 3339
    /// (2026-11-23T04:00:00Z) or unix seconds.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    since: Option<Timestamp>,
    /// Dated before this.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    before: Option<Timestamp>,
    /// Only this folder, named in UTF-8 as `ls` shows it (e.g. Données, Work/Sub).
    #[arg(long)]
    folder: Option<String>,
    /// Only messages no longer in their folder: expunged, or in a deleted folder.
    #[arg(long)]
    deleted: bool,
    /// As of this time (default: the newest backup).
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    at: Option<Timestamp>,
    /// At most this many messages.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line and message.
    #[arg(long)]
    json: bool,
}

/// Prints what matched: exit 0 when something did, 2 when nothing did.
pub fn run(config: &Config, a: &FindArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let q = FindQuery {
        from: a.from.clone(),
        to: a.to.clone(),
        subject: a.subject.clone(),
        since: a.since.map(|t| t.secs),
        before: a.before.map(|t| t.secs),
        folder: a.folder.clone(),
        deleted_only: a.deleted,
        at: a.at.map(|t| t.secs),
        limit: a.limit,
    };
    let report = find(&config.store_root, &a.user, &q).context("find")?;
    for n in &report.notes {
        tracing::warn!("{n}");
    }
    if a.json {
        json(&report, out)?;
    } else {
        table(&a.user, a.at, &report, out)?;
    }
    Ok(if report.messages.is_empty() {
        Status::Incomplete
    } else {
        Status::Ok
    })
}

/// A field on one table line: tabs and line breaks as spaces.
fn cell(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn table(
    user: &str,
    at: Option<Timestamp>,
    r: &FindReport,
    out: &mut Out<impl Write>,
) -> Result<(), OutputError> {
    out.line(format_args!(
        "# user {user}, as of {}: {} messages",
        at.map_or_else(|| "now".to_owned(), rfc3339),
        r.messages.len()
    ))?;
    out.line(format_args!(
        "FOLDER\tUID\tDATE\tFROM\tSUBJECT\tSIZE\tSTATE\tGUID"
    ))?;
    for m in &r.messages {
        out.line(format_args!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            cell(&m.folder),
            m.uid,
            rfc3339(Timestamp::from_secs(m.date.unwrap_or(m.internaldate))),
            cell(&m.from),
            cell(&m.subject),
            m.size,
            m.state,
            m.guid
        ))?;
    }
    Ok(())
}

fn json(r: &FindReport, out: &mut Out<impl Write>) -> Result<(), OutputError> {
    for m in &r.messages {
        let line = serde_json::to_string(m).map_err(|e| OutputError::Write(e.into()))?;
        out.line(format_args!("{line}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_server::find::{FoundMessage, FoundState};

    fn found(state: FoundState) -> FoundMessage {
        FoundMessage {
            folder: "Données".into(),
            folder_stored: "Donn&AOk-es".into(),
            unique_id: "u1".into(),
            uid: 4,
            guid: "ab".repeat(20),
            date: Some(1_795_509_000),
            internaldate: 1_795_509_100,
            from: "Bob\t<bob@example.com>".into(),
            to: String::new(),
            subject: "Fac\"ture".into(),
            size: 1834,
            state,
            message_id: "x@y".into(),
        }
    }

    #[test]
    fn a_table_line_and_a_json_line_per_message() {
        let r = FindReport {
            messages: vec![
                found(FoundState::Live),
                found(FoundState::FolderDeleted { at: 1_795_600_000 }),
            ],
            notes: vec![],
        };
        let mut out = Out::new(Vec::new());
        table("alice", None, &r, &mut out).unwrap();
        let text = String::from_utf8(out.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# user alice, as of now: 2 messages");
        assert_eq!(
            lines[2],
            format!(
                "Données\t4\t2026-11-24T08:30:00Z\tBob <bob@example.com>\tFac\"ture\t1834\tlive\t{}",
                "ab".repeat(20)
            )
        );
        assert!(lines[3].contains("\tfolder deleted on 2026-11-25T09:46:40Z\t"));

        let mut out = Out::new(Vec::new());
        json(&r, &mut out).unwrap();
        let text = String::from_utf8(out.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["folder"], "Données");
        assert_eq!(lines[0]["subject"], "Fac\"ture");
        assert_eq!(lines[0]["state"], "live");
        assert_eq!(lines[1]["state"], "folder-deleted");
        assert_eq!(lines[1]["at"], 1_795_600_000);
    }
}
