//! The rig of the restore-into-Cyrus tests, against the real Cyrus: sync_server answers the
//! admin (and only the admin) on the instance's sync port; folder_state.py and
//! qresync_check.py record what a client sees; admin_actions.py and cyr_expire delete
//! folders, users and messages as a server would, with delete_mode delayed and immediate.
//! Needs Cyrus installed (tests/cyrus/install.sh; CI does it) and root; fails rather than
//! skips without them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::wait;
use tests::{CyrusInstance, CyrusOptions, DeleteMode};

/// base64 of "\0admin\0x": SASL PLAIN for `admin` (the instances accept any password).
const PLAIN_ADMIN: &str = "AGFkbWluAHg=";
/// base64 of "\0u000\0x": SASL PLAIN for the ordinary user u000.
const PLAIN_U000: &str = "AHUwMDAAeA==";

/// A csync session on sync_server: the banner read, then one SASL PLAIN login.
struct Sync {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    banner: Vec<String>,
}

impl Sync {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to sync_server");
        // Only a stuck server takes this long; a test must not hang forever on one.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut sync = Sync {
            reader: BufReader::new(stream),
            writer,
            banner: Vec::new(),
        };
        // `* SASL PLAIN LOGIN`, `* COMPRESS DEFLATE`, ..., then `* OK <host> Cyrus sync server`.
        loop {
            let line = sync.line();
            assert!(line.starts_with("* "), "banner line {line:?}");
            let done = line.starts_with("* OK ");
            sync.banner.push(line);
            if done {
                break;
            }
            assert!(sync.banner.len() < 20, "endless banner {:?}", sync.banner);
        }
        sync
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("reading sync_server");
        assert!(n > 0, "sync_server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Sends one command; returns the untagged `* ` lines and the final OK/NO/BAD line.
    fn command(&mut self, cmd: &str) -> (Vec<String>, String) {
        self.writer
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        let mut untagged = Vec::new();
        loop {
            let line = self.line();
            if line.starts_with("* ") {
                untagged.push(line);
                continue;
            }
            assert!(
                ["OK", "NO", "BAD"].iter().any(|s| line.starts_with(s)),
                "{cmd}: unexpected line {line:?}"
            );
            return (untagged, line);
        }
    }
}

#[test]
fn sync_server_and_round_trip_helpers_on_real_cyrus() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    assert_eq!(cyrus.options().delete_mode, DeleteMode::Delayed);
    let summary = cyrus
        .populate_with(&["--users", "2", "--large", "0"])
        .expect("populate.py");
    assert_eq!(summary.get_u64("users"), Some(2), "{}", summary.line);

    // What u000's client sees: every folder, subscriptions, sieve.
    let before = cyrus.folder_state("u000", &[], true).expect("folder_state");
    for f in ["INBOX", "Work", "Sent", "Archive/2025", "Donn&AOk-es"] {
        assert!(
            before.folder(f).is_some(),
            "{f} in {:?}",
            before.folders.keys()
        );
    }
    let mboxlist = cyrus.mboxlist().unwrap();
    let inbox = before.folder("INBOX").unwrap();
    assert_eq!(
        mboxlist["user.u000"]["uniqueid"].as_str(),
        Some(inbox.mailboxid.as_str()),
        "MAILBOXID is Cyrus's unique id"
    );
    assert!(inbox.messages.len() > 5);
    assert!(inbox
        .messages
        .iter()
        .all(|m| m.modseq > 0 && m.modseq <= inbox.highestmodseq));
    assert!(inbox
        .messages
        .iter()
        .any(|m| m.flags == ["$Work", "\\Flagged"]));
    assert!(before.subscriptions.contains(&"Work".to_string()));
    assert!(!before.subscriptions.contains(&"Trash".to_string()));
    let sieve = before.sieve.as_ref().expect("sieve recorded");
    assert_eq!(sieve.active.as_deref(), Some("main"));
    assert!(
        sieve.scripts["main"].contains("fileinto \"Lists\""),
        "{sieve:?}"
    );
    assert!(
        sieve.scripts["vacation"].contains("vacation :days 7"),
        "{sieve:?}"
    );
    // Recording changes nothing (EXAMINE, BODY.PEEK): a second recording is identical.
    assert_eq!(cyrus.folder_state("u000", &[], true).unwrap(), before);

    // sync_server: the admin gets in and sees the user as Cyrus's replication does.
    let mut sync = Sync::connect(cyrus.sync_port());
    assert!(
        sync.banner
            .iter()
            .any(|l| l.starts_with("* SASL") && l.contains("PLAIN")),
        "{:?}",
        sync.banner
    );
    let (_, auth) = sync.command(&format!("AUTHENTICATE PLAIN {PLAIN_ADMIN}"));
    assert!(auth.starts_with("OK Success"), "{auth}");
    let (lines, done) = sync.command("GET USER u000");
    assert_eq!(done, "OK success");
    let inbox_line = format!(
        "* MAILBOX %(UNIQUEID {} MBOXNAME user.u000 ",
        inbox.mailboxid
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&inbox_line)),
        "{lines:#?}"
    );
    let mailboxes = lines
        .iter()
        .filter(|l| l.starts_with("* MAILBOX %("))
        .count();
    assert!(mailboxes >= before.folders.len(), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("* LSUB (")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("* SIEVE %(FILENAME main.script ")),
        "{lines:#?}"
    );
    // An ordinary user authenticates but may do nothing.
    let mut user = Sync::connect(cyrus.sync_port());
    let (_, auth) = user.command(&format!("AUTHENTICATE PLAIN {PLAIN_U000}"));
    assert!(auth.starts_with("OK"), "{auth}");
    let (lines, refused) = user.command("GET USER u000");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(refused.starts_with("NO"), "{refused}");

    // The active sieve script changes.
    cyrus.activate_sieve("u000", "vacation").unwrap();
    let now = cyrus.folder_state("u000", &["INBOX"], true).unwrap();
    assert_eq!(now.sieve.unwrap().active.as_deref(), Some("vacation"));

    // u001 reads u000's Work: its own \Seen there; u000's flags stay as they were.
    let work = before.folder("Work").unwrap().clone();
    let seen = cyrus.share_seen("u000", "Work", "u001", "1:*").unwrap();
    assert_eq!(
        seen,
        work.messages.iter().map(|m| m.uid).collect::<Vec<_>>()
    );
    let reader = cyrus
        .folder_state("u001", &["Other Users/u000/Work"], false)
        .unwrap();
    let shared = reader.folder("Other Users/u000/Work").unwrap();
    assert_eq!(shared.mailboxid, work.mailboxid);
    assert!(shared
        .messages
        .iter()
        .all(|m| m.flags.contains(&"\\Seen".to_string())));
    let owner_now = cyrus.folder_state("u000", &["Work"], false).unwrap();
    let d = work.differences(owner_now.folder("Work").unwrap());
    assert!(d.is_empty(), "{d:?}");
    assert!(work
        .messages
        .iter()
        .any(|m| !m.flags.contains(&"\\Seen".to_string())));

    // The reader's \Seen is the reader's, but Cyrus bumps the MODSEQ of those messages all
    // the same: the owner's QRESYNC client is told they changed (with flags unchanged).
    let owner_work = owner_now.folder("Work").unwrap();
    assert!(owner_work.highestmodseq > work.highestmodseq);
    let q = cyrus
        .qresync_check("u000", "Work", work.uidvalidity, work.highestmodseq, None)
        .unwrap();
    assert_eq!(q.fetched.len(), work.messages.len(), "{q:?}");
    for (m, was) in q.fetched.iter().zip(&work.messages) {
        assert_eq!((m.uid, &m.flags), (was.uid, &was.flags));
    }

    // Expunge one message of Work: a QRESYNC client that held the folder is told exactly
    // that UID vanished; with another UIDVALIDITY it is told to start over.
    let work = owner_work.clone();
    let gone = work.messages[0].uid;
    assert_eq!(
        cyrus.expunge("u000", "Work", &gone.to_string()).unwrap(),
        [gone]
    );
    let q = cyrus
        .qresync_check(
            "u000",
            "Work",
            work.uidvalidity,
            work.highestmodseq,
            Some(&work.uid_set()),
        )
        .unwrap();
    assert!(!q.uidvalidity_changed, "{q:?}");
    assert_eq!(q.vanished, [gone], "{q:?}");
    assert!(q.fetched.is_empty(), "{q:?}");
    assert_eq!(q.exists, work.messages.len() - 1);
    let q = cyrus
        .qresync_check("u000", "Work", work.uidvalidity - 1, 1, None)
        .unwrap();
    assert!(
        q.uidvalidity_changed && q.vanished.is_empty() && q.fetched.is_empty(),
        "{q:?}"
    );

    // Delayed expunge keeps the file until cyr_expire.
    let work_dir = cyrus.mailbox_dir("default", &work.mailboxid).unwrap();
    let gone_file = work_dir.join(format!("{gone}."));
    assert!(
        gone_file.is_file(),
        "{} kept by delayed expunge",
        gone_file.display()
    );
    cyrus.expire_now().expect("cyr_expire");
    assert!(
        !gone_file.exists(),
        "{} removed by cyr_expire",
        gone_file.display()
    );

    // Delete Work as its owner and Sent as admin: each waits under DELETED.* with its
    // unique id, until cyr_expire removes it.
    cyrus.delete_folder("u000", "Work", false).unwrap();
    cyrus.delete_folder("u000", "Sent", true).unwrap();
    let after = cyrus.folder_state("u000", &[], false).unwrap();
    assert!(after.folder("Work").is_none() && after.folder("Sent").is_none());
    assert!(after.folder("INBOX").is_some());
    let copies = cyrus.deleted_copies("u000").unwrap();
    for (folder, id) in [
        ("Work", &work.mailboxid),
        ("Sent", &before.folder("Sent").unwrap().mailboxid),
    ] {
        let prefix = format!("DELETED.user.u000.{folder}.");
        assert!(
            copies
                .iter()
                .any(|(name, uid)| name.starts_with(&prefix) && uid == id),
            "{folder} ({id}) not under DELETED with its unique id: {copies:?}"
        );
    }
    assert!(work_dir.join("cyrus.header").is_file());
    cyrus.expire_now().expect("cyr_expire");
    assert_eq!(cyrus.deleted_copies("u000").unwrap().len(), 0);
    assert!(
        !work_dir.exists(),
        "{} removed by cyr_expire -D 0",
        work_dir.display()
    );

    // Delete the whole of u001 as admin: its folders wait under DELETED.*, but its seen
    // state and subscriptions are gone at once.
    let u001 = cyrus.folder_state("u001", &["INBOX"], false).unwrap();
    let u001_id = u001.folder("INBOX").unwrap().mailboxid.clone();
    let user_files = cyrus.user_files_dir(&u001_id);
    assert!(
        user_files.join("seen.db").is_file(),
        "u001 read u000's folders"
    );
    cyrus.delete_user("u001").unwrap();
    let gone_user = cyrus.folder_state("u001", &[], false).unwrap();
    assert!(
        gone_user.folders.is_empty(),
        "{:?}",
        gone_user.folders.keys()
    );
    assert!(gone_user.subscriptions.is_empty());
    let copies = cyrus.deleted_copies("u001").unwrap();
    assert!(
        copies.values().any(|id| *id == u001_id),
        "u001's INBOX under DELETED with its unique id: {copies:?}"
    );
    assert!(!user_files.join("seen.db").exists());
    assert!(!user_files.join("sub.db").exists());
}

#[test]
fn delete_mode_immediate_leaves_no_deleted_copy() {
    let cyrus = CyrusInstance::start_with(CyrusOptions {
        delete_mode: DeleteMode::Immediate,
        ..CyrusOptions::default()
    })
    .expect("starting Cyrus");
    let conf = std::fs::read_to_string(cyrus.imapd_conf()).unwrap();
    assert!(conf.contains("\ndelete_mode: immediate\n"), "{conf}");
    assert!(conf.contains("\nexpunge_mode: delayed\n"), "{conf}");
    cyrus
        .populate_with(&["--users", "1", "--large", "0", "--messages", "8"])
        .expect("populate.py");
    let before = cyrus.folder_state("u000", &[], false).unwrap();
    let work = before.folder("Work").unwrap();
    let work_dir = cyrus.mailbox_dir("default", &work.mailboxid).unwrap();
    assert!(work_dir.join("cyrus.header").is_file());

    cyrus.delete_folder("u000", "Work", true).unwrap();
    assert!(cyrus
        .folder_state("u000", &[], false)
        .unwrap()
        .folder("Work")
        .is_none());
    assert_eq!(cyrus.deleted_copies("u000").unwrap().len(), 0);
    wait::until("the deleted folder's directory removed", || {
        !work_dir.exists()
    });

    let inbox_dir = cyrus
        .mailbox_dir("default", &before.folder("INBOX").unwrap().mailboxid)
        .unwrap();
    cyrus.delete_user("u000").unwrap();
    assert!(cyrus
        .folder_state("u000", &[], false)
        .unwrap()
        .folders
        .is_empty());
    assert_eq!(cyrus.deleted_copies("u000").unwrap().len(), 0);
    wait::until("the deleted user's INBOX directory removed", || {
        !inbox_dir.exists()
    });
}

/// An `APPLY MAILBOX` for an empty folder (no records: SYNC_CRC 0, Cyrus's empty-annotations
/// CRC 12345678), as a replica would create it; returns sync_server's answer.
fn apply_empty_mailbox(sync: &mut Sync, uniqueid: &str, name: &str, uidvalidity: u32) -> String {
    let (_, answer) = sync.command(&format!(
        "APPLY MAILBOX %(UNIQUEID {uniqueid} MBOXNAME {name} SYNC_CRC 0 \
         SYNC_CRC_ANNOT 12345678 LAST_UID 20 HIGHESTMODSEQ 40 RECENTUID 0 RECENTTIME 0 \
         LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY {uidvalidity} \
         PARTITION default ACL \"u000\tlrswipkxtecdan\t\" OPTIONS P CREATEDMODSEQ 1 \
         FOLDERMODSEQ 40 RECORD ())"
    ));
    answer
}

/// What the restore into Cyrus must live with (the lead's target writes through
/// sync_server): with delete_mode delayed, a deleted folder's unique id stays taken, by its
/// DELETED.* copy and, after cyr_expire, by mailboxes.db's entry for that id; the copy can be
/// renamed back whole; a new unique id may keep the old UIDVALIDITY. With delete_mode
/// immediate the old unique id is free again.
#[test]
fn sync_server_and_a_deleted_folders_unique_id() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus
        .populate_with(&["--users", "1", "--large", "0", "--messages", "8"])
        .expect("populate.py");
    let before = cyrus.folder_state("u000", &[], false).unwrap();
    let work = before.folder("Work").unwrap().clone();
    let mut sync = Sync::connect(cyrus.sync_port());
    let (_, auth) = sync.command(&format!("AUTHENTICATE PLAIN {PLAIN_ADMIN}"));
    assert!(auth.starts_with("OK"), "{auth}");

    cyrus.delete_folder("u000", "Work", false).unwrap();
    let answer = apply_empty_mailbox(
        &mut sync,
        &work.mailboxid,
        "user.u000.Work",
        work.uidvalidity,
    );
    assert!(answer.starts_with("NO IMAP_MAILBOX_MOVED"), "{answer}");

    // The DELETED copy renamed back is the folder as it was.
    let copies = cyrus.deleted_copies("u000").unwrap();
    let (copy, _) = copies
        .iter()
        .find(|(_, id)| **id == work.mailboxid)
        .expect("Work under DELETED");
    let (_, answer) = sync.command(&format!(
        "APPLY RENAME %(OLDMBOXNAME {copy} NEWMBOXNAME user.u000.Work PARTITION default \
         UIDVALIDITY {})",
        work.uidvalidity
    ));
    assert_eq!(answer, "OK success");
    let back = cyrus.folder_state("u000", &["Work"], false).unwrap();
    let back = back.folder("Work").unwrap();
    // Everything but HIGHESTMODSEQ, which the rename itself raises: a QRESYNC client that
    // held the folder is told nothing changed.
    assert_eq!(
        (&back.mailboxid, back.uidnext, &back.messages),
        (&work.mailboxid, work.uidnext, &work.messages),
        "Work renamed back whole"
    );
    assert!(back.differences(&work).is_empty());
    let q = cyrus
        .qresync_check(
            "u000",
            "Work",
            work.uidvalidity,
            work.highestmodseq,
            Some(&work.uid_set()),
        )
        .unwrap();
    assert!(
        !q.uidvalidity_changed && q.vanished.is_empty() && q.fetched.is_empty(),
        "{q:?}"
    );

    // After cyr_expire the old id is still taken; a new one may keep the UIDVALIDITY.
    cyrus.delete_folder("u000", "Work", false).unwrap();
    cyrus.expire_now().unwrap();
    assert!(cyrus.deleted_copies("u000").unwrap().is_empty());
    let answer = apply_empty_mailbox(
        &mut sync,
        &work.mailboxid,
        "user.u000.Work",
        work.uidvalidity,
    );
    assert!(answer.starts_with("NO IMAP_MAILBOX_MOVED"), "{answer}");
    let new_id = "zzrestoredworkzzzzzzzzzz";
    let answer = apply_empty_mailbox(&mut sync, new_id, "user.u000.Work", work.uidvalidity);
    assert_eq!(answer, "OK success");
    let now = cyrus.folder_state("u000", &["Work"], false).unwrap();
    let now = now.folder("Work").unwrap();
    assert_eq!(
        (now.mailboxid.as_str(), now.uidvalidity),
        (new_id, work.uidvalidity)
    );

    // A deleted user's folders renamed back come back whole, but its subscriptions and
    // sieve scripts do not: Cyrus removed them with the user (sub.db, the compiled scripts).
    let user_before = cyrus.folder_state("u000", &["INBOX"], true).unwrap();
    assert!(!user_before.subscriptions.is_empty());
    assert!(!user_before.sieve.as_ref().unwrap().scripts.is_empty());
    let inbox = user_before.folders["INBOX"].clone();
    cyrus.delete_user("u000").unwrap();
    let copies = cyrus.deleted_copies("u000").unwrap();
    let mboxlist = cyrus.mboxlist().unwrap();
    for (prefix, original) in [
        ("DELETED.user.u000.", "user.u000"),
        ("DELETED.user.u000.#sieve.", "user.u000.#sieve"),
    ] {
        // The copy's name ends in the deletion time in hex.
        let name = copies
            .keys()
            .find(|n| {
                n.strip_prefix(prefix)
                    .is_some_and(|t| t.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .unwrap_or_else(|| panic!("{original} under DELETED: {copies:?}"));
        let uidvalidity = mboxlist[name.as_str()]["uidvalidity"].as_str().unwrap();
        let (_, answer) = sync.command(&format!(
            "APPLY RENAME %(OLDMBOXNAME {name} NEWMBOXNAME {original} PARTITION default \
             UIDVALIDITY {uidvalidity})"
        ));
        assert_eq!(answer, "OK success", "{name} -> {original}");
    }
    let user_after = cyrus.folder_state("u000", &["INBOX"], true).unwrap();
    let back = &user_after.folders["INBOX"];
    assert_eq!(
        (&back.mailboxid, back.uidvalidity, &back.messages),
        (&inbox.mailboxid, inbox.uidvalidity, &inbox.messages)
    );
    assert!(user_after.subscriptions.is_empty(), "{user_after:?}");
    assert_eq!(
        user_after.sieve.as_ref().unwrap().scripts.len(),
        0,
        "{user_after:?}"
    );
    drop(cyrus);

    // delete_mode immediate: the old id may be used again at once.
    let cyrus = CyrusInstance::start_with(CyrusOptions {
        delete_mode: DeleteMode::Immediate,
        ..CyrusOptions::default()
    })
    .expect("starting Cyrus");
    cyrus
        .populate_with(&["--users", "1", "--large", "0", "--messages", "8"])
        .expect("populate.py");
    let work = cyrus
        .folder_state("u000", &["Work"], false)
        .unwrap()
        .folders["Work"]
        .clone();
    cyrus.delete_folder("u000", "Work", false).unwrap();
    let mut sync = Sync::connect(cyrus.sync_port());
    let (_, auth) = sync.command(&format!("AUTHENTICATE PLAIN {PLAIN_ADMIN}"));
    assert!(auth.starts_with("OK"), "{auth}");
    let answer = apply_empty_mailbox(
        &mut sync,
        &work.mailboxid,
        "user.u000.Work",
        work.uidvalidity,
    );
    assert_eq!(answer, "OK success");
    let now = cyrus.folder_state("u000", &["Work"], false).unwrap();
    let now = now.folder("Work").unwrap();
    assert_eq!(
        (now.mailboxid.as_str(), now.uidvalidity),
        (work.mailboxid.as_str(), work.uidvalidity)
    );
    assert!(now.messages.is_empty());
}
