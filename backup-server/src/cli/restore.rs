//! `backup-server restore`: the arguments made into a [`Selection`] and a [`Target`],
//! [`restore()`](backup_server::restore::restore) run, its notes and a summary printed.

use super::{Out, Status};
use anyhow::{bail, Context};
use backup_server::config::Config;
use backup_server::restore::imap::IntoFolder;
use backup_server::restore::{restore_as, Owner, Selection, Target};
use formats::{Guid, Timestamp};
use std::io::Write;
use std::path::PathBuf;

/// `backup-server restore` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The user.
    #[arg(long)]
    user: String,
    /// Only this folder, as `ls` names it, in UTF-8 (e.g. INBOX, Work/Sub, Données; the
    /// modified UTF-7 form Donn&AOk-es is taken too).
    #[arg(long)]
    folder: Option<String>,
    /// With --folder: its subfolders too.
    #[arg(long, requires = "folder")]
    subfolders: bool,
    /// One message of --folder, by UID.
    #[arg(long, requires = "folder", conflicts_with = "guid")]
    uid: Option<u32>,
    /// One message by GUID (40 hex digits).
    #[arg(long, value_parser = parse_guid)]
    guid: Option<Guid>,
    /// As of this time: RFC 3339 (2026-11-23T04:00:00Z) or unix seconds (default: newest).
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    at: Option<Timestamp>,
    /// Messages expunged by then too, in their last state known.
    #[arg(long)]
    include_expunged: bool,
    /// Keep \Deleted on messages that had been expunged (by default a restore takes it off,
    /// so that the next EXPUNGE does not delete them again).
    #[arg(long)]
    keep_deleted_flag: bool,
    /// maildir:DIR, mbox:FILE, eml:DIR, imap://ADMIN@HOST:PORT/ or cyrus://ADMIN@HOST:PORT
    /// (Cyrus's sync_server: keeps folder identity, UIDs, flags; see docs/restore.md).
    #[arg(long)]
    to: Target,
    /// imap:// and cyrus:// targets: the file holding the admin's password (not readable
    /// by others).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// imap:// and cyrus:// targets: restore under this folder; `/` restores into the
    /// original names (imap:// default: `Restored/<date>`; cyrus:// default: `/`).
    #[arg(long, value_parser = IntoFolder::parse)]
    into: Option<IntoFolder>,
    /// imap:// target: restore into this user's account instead of --user's (a user
    /// deleted in Cyrus restored under a new name; the admin authenticates as this user).
    #[arg(long, value_name = "USER")]
    as_user: Option<String>,
    /// cyrus:// target: STARTTLS, the server's certificate checked against the CA
    /// certificates in this PEM file and the URL's host name.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// imap:// and cyrus:// targets: to a host that is not loopback, send the admin's
    /// password and the mail in clear (refused otherwise).
    #[arg(long)]
    plaintext: bool,
    /// cyrus:// target: read the server's state and say what would be written, writing
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// cyrus:// target: create folders on this partition (default: the one the backup
    /// recorded).
    #[arg(long)]
    partition: Option<String>,
    /// maildir:, mbox:, eml: targets: what the restore creates belongs to this local user
    /// (and its primary group), e.g. a Maildir restored into its home as root.
    #[arg(long)]
    owner: Option<String>,
}

/// Reads `--guid`: 40 hex digits.
fn parse_guid(s: &str) -> Result<Guid, String> {
    let b =
        hex::decode(s.trim()).map_err(|e| format!("expected 40 hex digits, found {s:?}: {e}"))?;
    let mut g = Guid::NULL;
    if b.len() != 20 {
        return Err(format!(
            "expected 40 hex digits, found {} in {s:?}",
            2 * b.len()
        ));
    }
    g.0.copy_from_slice(&b);
    Ok(g)
}

/// Restores, then prints the notes and a summary: exit 0; 2 when damaged messages were
/// skipped, or part of the selection was not kept as of its time (compacted away, before
/// the first backup), each named in a note; 1 on failure.
pub fn run(config: &Config, a: &RestoreArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let sel = Selection {
        folder: a.folder.as_deref().map(formats::imap::mutf7::from_typed),
        subfolders: a.subfolders,
        uid: a.uid,
        guid: a.guid,
        at: a.at,
        include_expunged: a.include_expunged,
        keep_deleted_flag: a.keep_deleted_flag,
    };
    let mut to = a.to.clone();
    match &mut to {
        Target::Imap(t) => {
            t.plaintext = a.plaintext;
            t.password_file = a.password_file.clone();
            t.into = a.into.clone().unwrap_or_default();
            t.account = a.as_user.clone();
        }
        Target::Cyrus(t) => {
            t.password_file = a.password_file.clone();
            t.into = a.into.clone().unwrap_or(IntoFolder::Original);
            t.partition = a.partition.clone();
            t.dry_run = a.dry_run;
            t.tls_ca_file = a.tls_ca_file.clone();
            t.plaintext = a.plaintext;
        }
        _ if a.password_file.is_some() || a.into.is_some() || a.plaintext => {
            bail!("--password-file, --into and --plaintext are for imap:// and cyrus:// targets")
        }
        _ => {}
    }
    if a.as_user.is_some() && !matches!(to, Target::Imap(_)) {
        bail!("--as-user is for an imap:// target (a file target names its own place)");
    }
    if (a.partition.is_some() || a.dry_run || a.tls_ca_file.is_some())
        && !matches!(to, Target::Cyrus(_))
    {
        bail!("--partition, --dry-run and --tls-ca-file are for a cyrus:// target");
    }
    let owner = a.owner.as_deref().map(Owner::lookup).transpose()?;
    let mut rep = restore_as(&config.store_root, &a.user, &sel, &to, owner)
        .with_context(|| format!("restore {}", a.user))?;
    rep.note_past_retention(sel.at, i64::from(config.retention_days) * 86_400);
    for n in &rep.notes {
        out.line(format_args!("note: {n}"))?;
    }
    if let Some(d) = &rep.damage_recorded {
        out.line(format_args!("note: {d}"))?;
    }
    out.line(format_args!(
        "{} {} messages ({} bytes) in {} folders; {} not stored; {} damaged, not restored",
        if a.dry_run {
            "dry run: read and checked"
        } else {
            "restored"
        },
        rep.messages,
        rep.bytes,
        rep.folders,
        rep.not_stored,
        rep.damaged
    ))?;
    if rep.not_kept > 0 {
        out.line(format_args!(
            "{} not kept as of {}: compacted away, before the retention cutoff or before the oldest backup (see the notes above)",
            rep.not_kept,
            backup_server::point_in_time::when(sel.at)
        ))?;
    }
    // Everything intact and kept was restored; what was not is named in the notes above.
    Ok(if rep.damaged > 0 || rep.not_kept > 0 {
        Status::Incomplete
    } else {
        Status::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::parse_guid;

    #[test]
    fn guids_are_40_hex_digits() {
        let g = parse_guid(&"0a".repeat(20)).unwrap();
        assert_eq!(g.to_hex(), "0a".repeat(20));
        assert_eq!(
            parse_guid("xyz").unwrap_err(),
            "expected 40 hex digits, found \"xyz\": Odd number of digits"
        );
        assert!(parse_guid("0a0b").unwrap_err().contains("found 4 in"));
    }
}
