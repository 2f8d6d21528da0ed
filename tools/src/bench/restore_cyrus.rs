//! The restore-into-Cyrus workload (`bench --workloads restore-cyrus`, issue 15): one folder
//! of N messages deleted from a live Cyrus and put back three ways, repetitions interleaved:
//! by us through Cyrus's sync_server (`cyrus://`, UIDs kept), by us over IMAP APPEND
//! (`imap://`), and by Cyrus's own `restore -U` from its own backup system (the
//! cyrus-backups peer). Every result is compared with what a mail client saw before the
//! deletion (tests/cyrus/folder_state.py: every body's SHA-1, UIDs, flags, internal dates),
//! so a fast wrong restore cannot win: the table says how many came back and what they kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::measure::{self, describe, measure, Sample};
use super::rig::{self, run_logged, Backupd, Cyrus};
use super::say;

/// The one user bulk.py makes (`--users 1`).
const USER: &str = "b00000";
/// The folder deleted and restored (bulk.py's second folder; INBOX cannot be deleted alone).
const FOLDER: &str = "Archive";
/// A restore still running after this long is stopped and reported as failed.
const TIMEOUT_S: u32 = 1800;

/// What the workload needs from the command line and the harness.
pub struct Setup {
    /// The repository (tests/cyrus scripts, the peer script).
    pub repo: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// The harness's log.
    pub log: PathBuf,
    /// backupd and backup-server (release).
    pub backupd_bin: PathBuf,
    /// backup-server (release).
    pub server_bin: PathBuf,
    /// Messages in the folder.
    pub messages: u32,
    /// bulk.py's size scale.
    pub size_scale: f64,
    /// Timed restores of each way.
    pub reps: usize,
    /// The machine, for the report.
    pub machine: String,
    /// Cyrus's package version, for the report.
    pub cyrus_version: String,
    /// When the benchmark started (UTC), for the report.
    pub started: String,
}

/// A way of putting the deleted folder back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// `backup-server restore --to cyrus://admin@...` (sync_server).
    OursCyrus,
    /// `backup-server restore --to imap://admin@.../ --into /` (APPEND).
    OursImap,
    /// Cyrus's `restore -U -X` from Cyrus Backups into the same sync_server.
    CyrusRestore,
}

impl Way {
    const ALL: [Way; 3] = [Way::OursCyrus, Way::OursImap, Way::CyrusRestore];

    fn name(self) -> &'static str {
        match self {
            Way::OursCyrus => "mailbackup cyrus://",
            Way::OursImap => "mailbackup imap:// (APPEND)",
            Way::CyrusRestore => "Cyrus restore -U (Cyrus Backups)",
        }
    }
}

/// What a mail client sees of a folder (the parts of folder_state.py's JSON compared).
#[derive(Debug, Clone, Deserialize)]
struct FolderState {
    uidvalidity: u64,
    mailboxid: String,
    messages: Vec<Msg>,
}

/// One message as a client sees it.
#[derive(Debug, Clone, Deserialize)]
struct Msg {
    uid: u32,
    sha1: String,
    flags: Vec<String>,
    internaldate: String,
}

#[derive(Debug, Deserialize)]
struct UserState {
    folders: BTreeMap<String, FolderState>,
}

/// How a restored folder compares with the one deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Kept {
    uidvalidity: bool,
    mailboxid: bool,
    /// Messages of before found after (by body; each copy counted once).
    back: usize,
    /// Messages after that were not there before (by body).
    extra: usize,
    /// Messages back under their old UID (same body, same UIDVALIDITY: a UID under a new
    /// UIDVALIDITY is another UID to a client).
    uids: usize,
    /// Messages with the same flags and keywords (matched by body).
    flags: usize,
    /// Messages with the same internal date (matched by body).
    dates: usize,
    /// Messages in the folder before.
    total: usize,
}

impl Kept {
    /// Every message back, none added.
    fn complete(&self) -> bool {
        self.back == self.total && self.extra == 0
    }
}

/// Compares `after` with `before`: which messages came back (by body) and what they kept.
fn compare(before: &FolderState, after: &FolderState) -> Kept {
    let uidvalidity = before.uidvalidity == after.uidvalidity;
    let by_uid: BTreeMap<u32, &str> = after
        .messages
        .iter()
        .map(|m| (m.uid, m.sha1.as_str()))
        .collect();
    let uids = if uidvalidity {
        before
            .messages
            .iter()
            .filter(|m| by_uid.get(&m.uid) == Some(&m.sha1.as_str()))
            .count()
    } else {
        0
    };
    // Copies of one body (a message filed twice in the folder) paired in UID order.
    let group = |st: &FolderState| {
        let mut g: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
        for m in &st.messages {
            g.entry(m.sha1.clone()).or_default().push(m.clone());
        }
        for v in g.values_mut() {
            v.sort_by_key(|m| m.uid);
        }
        g
    };
    let (b, a) = (group(before), group(after));
    let (mut back, mut flags, mut dates) = (0, 0, 0);
    for (sha1, xs) in &b {
        let ys = a.get(sha1).map(Vec::as_slice).unwrap_or_default();
        for (x, y) in xs.iter().zip(ys) {
            back += 1;
            flags += usize::from(x.flags == y.flags);
            dates += usize::from(x.internaldate == y.internaldate);
        }
    }
    Kept {
        uidvalidity,
        mailboxid: before.mailboxid == after.mailboxid,
        back,
        extra: after.messages.len() - back,
        uids,
        flags,
        dates,
        total: before.messages.len(),
    }
}

/// One way's results.
struct Outcome {
    way: Way,
    command: String,
    samples: Vec<Sample>,
    kept: Vec<Kept>,
    error: String,
}

/// Runs the workload and returns the markdown section.
pub fn run(s: &Setup) -> Result<String> {
    let cyrus = Cyrus::start_for_restore(&s.repo, &s.work.join("cyrus"), &s.log)?;
    let sync = cyrus.sync.context("the instance has no sync_server port")?;
    say(&format!(
        "filling it: user {USER}, INBOX and {FOLDER} of {} messages each (bulk.py)",
        s.messages
    ));
    let bulk_log = s.work.join("bulk.log");
    let took = run_logged(
        cyrus
            .script("bulk.py", false)
            .arg("--dir")
            .arg(&cyrus.dir)
            .args(["--users", "1", "--folders", "2"])
            .args(["--messages", &s.messages.to_string()])
            .args(["--size-scale", &s.size_scale.to_string()]),
        &bulk_log,
    )?;
    let bulk = format!(
        "{} ({:.0} s)",
        super::last_line_starting(&bulk_log, "bulk:")?,
        took.as_secs_f64()
    );
    let before = folder_state(&cyrus, &s.work.join("before.json"), &s.log)?;
    let bytes = folder_bytes(&cyrus, &before)?;
    say(&format!(
        "{FOLDER}: {} live messages, {:.1} MB; backing it up (mailbackup, Cyrus Backups)",
        before.messages.len(),
        bytes as f64 / 1e6
    ));

    let backupd = Backupd::start(&s.backupd_bin, &cyrus, &s.work, false)?;
    let config = s.work.join("backup-server.toml");
    rig::write_server_config(
        &config,
        &s.work.join("store"),
        &s.work.join("state/state.sqlite3"),
        &backupd,
        1,
    )?;
    let t = run_logged(
        Command::new(&s.server_bin)
            .arg("--config")
            .arg(&config)
            .args(["run", "--progress", "quiet"]),
        &s.log,
    )?;
    say(&format!("mailbackup backup: {:.1} s", t.as_secs_f64()));
    drop(backupd);
    let peer = s.repo.join("tools/bench/cyrus-backups-peer.sh");
    let bdir = s.work.join("cyrus-backups");
    run_logged(
        Command::new("bash")
            .arg(&peer)
            .arg("start")
            .arg(&bdir)
            .arg(rig::free_port()?.to_string())
            .arg(&cyrus.dir),
        &s.log,
    )?;
    let t = run_logged(
        Command::new("bash")
            .arg(&peer)
            .arg("sync")
            .arg(&cyrus.dir)
            .arg(USER),
        &s.log,
    )?;
    say(&format!("Cyrus Backups backup: {:.1} s", t.as_secs_f64()));

    let password = s.work.join("admin.password");
    testkit::config::write_secret(&password, "x")?;
    let command = |way: Way| -> Command {
        match way {
            Way::OursCyrus | Way::OursImap => {
                let mut c = Command::new(&s.server_bin);
                c.arg("--config")
                    .arg(&config)
                    .args(["restore", "--user", USER, "--folder", FOLDER, "--to"]);
                if way == Way::OursCyrus {
                    c.arg(format!("cyrus://admin@127.0.0.1:{sync}"));
                } else {
                    c.arg(format!("imap://admin@127.0.0.1:{}/", cyrus.imap))
                        .args(["--into", "/"]);
                }
                c.arg("--password-file").arg(&password);
                c
            }
            Way::CyrusRestore => {
                // As the cyrus user: the backups are its files (umask 077). Folders are named
                // as the admin sees them; -X leaves out expunged records, as we do by default.
                let mut c = Command::new("runuser");
                c.args(["-u", "cyrus", "--", "/usr/lib/cyrus/bin/restore", "-C"])
                    .arg(bdir.join("imapd.conf"))
                    .args(["-U", "-X"])
                    .arg(format!("127.0.0.1:{sync}"))
                    .args(["-u", USER])
                    .arg(format!("user/{USER}/{FOLDER}"));
                c
            }
        }
    };

    delete_folder(&cyrus, &s.log)?;
    let mut outcomes: Vec<Outcome> = Way::ALL
        .iter()
        .map(|&w| Outcome {
            way: w,
            command: describe(&command(w)),
            samples: Vec::new(),
            kept: Vec::new(),
            error: String::new(),
        })
        .collect();
    for rep in 1..=s.reps {
        for o in outcomes.iter_mut().filter(|o| o.error.is_empty()) {
            let cmd = with_timeout(&command(o.way));
            let result = measure(&cmd, &s.log, &[0]).and_then(|sample| {
                let path = s.work.join(format!("after-{rep}-{:?}.json", o.way));
                let after = folder_state(&cyrus, &path, &s.log)?;
                Ok((sample, compare(&before, &after)))
            });
            match result {
                Ok((sample, kept)) => {
                    say(&format!(
                        "{} rep {rep}: {:.2} s; {} of {} messages back ({} more), {} UIDs kept",
                        o.way.name(),
                        sample.wall,
                        kept.back,
                        kept.total,
                        kept.extra,
                        kept.uids
                    ));
                    o.samples.push(sample);
                    o.kept.push(kept);
                }
                Err(e) => {
                    o.error = format!("rep {rep}: {e:#}");
                    say(&format!("{} failed: {}", o.way.name(), o.error));
                }
            }
            // Whatever came back (even part of it) goes before the next restore.
            let gone = delete_folder(&cyrus, &s.log);
            if o.error.is_empty() {
                gone?;
            }
        }
        // What was measured so far survives a later failure or a stopped run.
        let partial = s.work.join("restore-cyrus.md");
        fs::write(
            &partial,
            render(s, &bulk, before.messages.len(), bytes, &outcomes),
        )
        .with_context(|| format!("writing {}", partial.display()))?;
    }
    let _ = run_logged(
        Command::new("bash").arg(&peer).arg("stop").arg(&bdir),
        &s.log,
    );
    Ok(render(s, &bulk, before.messages.len(), bytes, &outcomes))
}

/// `cmd` stopped after [`TIMEOUT_S`] (a hung restore fails its way instead of the run);
/// killed a minute later, as backup-server takes SIGTERM as "stop after the work under way",
/// which for a restore is all of it.
fn with_timeout(cmd: &Command) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "60"])
        .arg(TIMEOUT_S.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c
}

/// The folder as its owner sees it, through folder_state.py (written to `out` too).
fn folder_state(cyrus: &Cyrus, out: &Path, log: &Path) -> Result<FolderState> {
    run_logged(
        cyrus
            .script("folder_state.py", false)
            .args(["--user", USER, "--folders", FOLDER, "--out"])
            .arg(out),
        log,
    )?;
    let text = fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let mut st: UserState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", out.display()))?;
    st.folders
        .remove(FOLDER)
        .with_context(|| format!("{} has no folder {FOLDER}", out.display()))
}

/// Deletes the folder as its owner would (delete_mode: immediate: it is gone at once).
fn delete_folder(cyrus: &Cyrus, log: &Path) -> Result<()> {
    run_logged(
        cyrus.script("admin_actions.py", false).args([
            "delete-folder",
            "--user",
            USER,
            "--folder",
            FOLDER,
        ]),
        log,
    )?;
    Ok(())
}

/// Bytes of the folder's live messages in the spool (its files `<uid>.`).
fn folder_bytes(cyrus: &Cyrus, st: &FolderState) -> Result<u64> {
    let conf = backupd::spool::load_imapd_conf(&cyrus.imapd_conf())?;
    let m = backupd::spool::user_mailboxes(&conf, USER)?
        .into_iter()
        .find(|m| &*m.folder == FOLDER)
        .with_context(|| format!("{USER} has no {FOLDER} in mailboxes.db"))?;
    let root = conf
        .partition(&m.partition)
        .with_context(|| format!("partition {} not in imapd.conf", m.partition))?;
    let dir = Path::new(root).join(m.spool_dir().context("folder without a directory")?);
    let mut bytes = 0;
    for msg in &st.messages {
        let p = dir.join(format!("{}.", msg.uid));
        bytes += fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
    }
    Ok(bytes)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

/// The markdown section.
fn render(s: &Setup, bulk: &str, n: usize, bytes: u64, outcomes: &[Outcome]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## Restore into Cyrus: a {n}-message folder (`mailbackup-tools bench --workloads \
         restore-cyrus`), {}\n",
        s.started
    );
    let _ = writeln!(
        t,
        "One user ({USER}) with INBOX and {FOLDER} of {} messages each (bulk.py --size-scale \
         {}; {bulk}); {FOLDER} holds {n} live messages, {:.1} MB. Backed up once by \
         mailbackup and by Cyrus Backups (the cyrus-backups peer); then {FOLDER} is deleted \
         (delete_mode: immediate: really gone) and put back each way, repetitions \
         interleaved, the folder deleted again after each. Every result was read back over \
         IMAP (tests/cyrus/folder_state.py: every body's SHA-1, UID, flags, internal date) \
         and compared with the folder before the deletion (messages matched by body; \
         \"messages back\" in bold: some missing or added). Medians of {} restores. Machine: {}. {}.\n",
        s.messages,
        s.size_scale,
        bytes as f64 / 1e6,
        s.reps,
        s.machine,
        s.cyrus_version
    );
    let ours = outcomes
        .iter()
        .find(|o| o.way == Way::OursCyrus && !o.samples.is_empty())
        .map(|o| measure::median(&o.samples).wall);
    let _ = writeln!(
        t,
        "| way | wall s | min-max s | messages/s | MB/s | x ours (cyrus://) | client CPU s | \
         client peak RSS MiB | messages back | UIDVALIDITY kept | UIDs kept | flags kept | \
         internal dates kept | mailbox id kept |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for o in outcomes {
        if o.samples.is_empty() {
            let _ = writeln!(t, "| {} | failed | | | | | | | | | | | | |", o.way.name());
            continue;
        }
        let m = measure::median(&o.samples);
        let (lo, hi) = o.samples.iter().fold((f64::MAX, 0f64), |(lo, hi), x| {
            (lo.min(x.wall), hi.max(x.wall))
        });
        let ratio = match ours {
            Some(w) if o.way != Way::OursCyrus && w > 0.0 => format!("{:.2}", m.wall / w),
            _ => "–".into(),
        };
        // The worst repetition (they should all agree).
        let k = o
            .kept
            .iter()
            .min_by_key(|k| (k.back, k.uids, k.flags, k.dates))
            .copied()
            .unwrap_or_default();
        let back = if k.complete() {
            format!("{} of {}", k.back, k.total)
        } else {
            format!("**{} of {}** ({} more)", k.back, k.total, k.extra)
        };
        let uids = if k.uidvalidity {
            format!("{} of {}", k.uids, k.total)
        } else {
            "none (new UIDVALIDITY)".into()
        };
        let _ = writeln!(
            t,
            "| {} | {:.2} | {:.2}-{:.2} | {:.0} | {:.1} | {ratio} | {:.2} | {:.0} | {back} | {} | \
             {uids} | {} of {} | {} of {} | {} |",
            o.way.name(),
            m.wall,
            lo,
            hi,
            n as f64 / m.wall,
            bytes as f64 / 1e6 / m.wall,
            m.cpu,
            m.rss_kib as f64 / 1024.0,
            yes_no(k.uidvalidity),
            k.flags,
            k.total,
            k.dates,
            k.total,
            yes_no(k.mailboxid)
        );
    }
    t.push('\n');
    for o in outcomes.iter().filter(|o| !o.error.is_empty()) {
        let _ = writeln!(t, "**{} failed** ({}).\n", o.way.name(), o.error);
    }
    let _ = writeln!(
        t,
        "Wall time is the whole client process; the server's work (sync_server, imapd) runs \
         in Cyrus's own processes and is in the wall time but not in the client CPU column.\n"
    );
    let _ = writeln!(t, "Commands (as run; paths are the work directory's):\n");
    for o in outcomes {
        let _ = writeln!(t, "* {}: `{}`", o.way.name(), o.command);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(uid: u32, sha1: &str, flags: &[&str], date: &str) -> Msg {
        Msg {
            uid,
            sha1: sha1.into(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internaldate: date.into(),
        }
    }

    fn folder(uidvalidity: u64, id: &str, messages: Vec<Msg>) -> FolderState {
        FolderState {
            uidvalidity,
            mailboxid: id.into(),
            messages,
        }
    }

    fn before() -> FolderState {
        folder(
            7,
            "mb1",
            vec![
                msg(1, "aa", &["\\Seen"], "d1"),
                msg(3, "bb", &[], "d2"),
                msg(4, "aa", &["\\Flagged"], "d3"),
            ],
        )
    }

    #[test]
    fn the_same_folder_back_keeps_everything() {
        let k = compare(&before(), &before());
        assert!(k.complete());
        assert_eq!(
            (k.uidvalidity, k.mailboxid, k.back, k.uids, k.flags, k.dates),
            (true, true, 3, 3, 3, 3)
        );
    }

    #[test]
    fn renumbered_uids_count_as_lost_and_a_lost_copy_as_missing() {
        // Cyrus's restore -U, seen: same UIDVALIDITY, new UIDs, one of two identical copies
        // gone, the other with the first copy's flags.
        let after = folder(
            7,
            "mb1",
            vec![msg(5, "aa", &["\\Seen"], "d1"), msg(6, "bb", &[], "d2")],
        );
        let k = compare(&before(), &after);
        assert!(!k.complete());
        assert_eq!((k.back, k.extra, k.uids, k.flags, k.dates), (2, 0, 0, 2, 2));
    }

    #[test]
    fn uids_under_a_new_uidvalidity_are_not_kept_and_extras_are_counted() {
        let mut after = before();
        after.uidvalidity = 8;
        after.mailboxid = "mb2".into();
        after.messages.push(msg(5, "cc", &[], "d4"));
        let k = compare(&before(), &after);
        assert_eq!(
            (k.uidvalidity, k.mailboxid, k.back, k.extra, k.uids),
            (false, false, 3, 1, 0)
        );
        assert!(!k.complete());
    }
}
