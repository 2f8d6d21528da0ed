//! Restore end to end: a real Cyrus (populate.py), a real backupd, a backup of one user,
//! then the whole user restored into a Maildir and INBOX into an mbox, read back with
//! Python's `mailbox` module and compared with what IMAP said (folders, message SHA-1s,
//! flags and keywords). Then an expunge (backup_changes.py), a second backup, and the
//! expunged message restored with `--at` the first backup's time and with
//! `--include-expunged`, and not without them; restored on purpose it has no `\Deleted`
//! (with `keep_deleted_flag` it has), while Trash's messages, marked and never expunged,
//! keep theirs.

use std::collections::BTreeSet;

use backup_server::restore::{folder_levels, restore, Selection, Target};
use backup_server::store::StoreOptions;
use formats::{Guid, Timestamp};
use testkit::python::{read_maildir, read_mbox, Restored};
use tests::rig::{backup, backup_changes, now, Backupd};
use tests::{CyrusInstance, MessageTruth};

/// A message as Python reads it back from a Maildir folder `flat`: IMAP's flags as Maildir
/// letters, its keywords.
fn maildir_row(flat: &str, m: &MessageTruth) -> Restored {
    let mut up: Vec<char> = Vec::new();
    let mut keywords: Vec<String> = Vec::new();
    for f in &m.flags {
        match f.as_str() {
            "\\Draft" => up.push('D'),
            "\\Flagged" => up.push('F'),
            "\\Answered" => up.push('R'),
            "\\Seen" => up.push('S'),
            "\\Deleted" => up.push('T'),
            f if f.starts_with('\\') => {}
            f => keywords.push(f.to_owned()),
        }
    }
    up.sort();
    keywords.sort();
    Restored {
        folder: flat.to_owned(),
        flags: up.into_iter().collect(),
        keywords,
        sha1: m.sha1.clone(),
    }
}

/// The same from an mbox: Status/X-Status letters (docs/restore.md), `lf` the message's
/// bytes with LF line ends.
fn mbox_row(m: &MessageTruth, lf: &[u8]) -> Restored {
    let mut row = maildir_row("", m);
    let mut letters: Vec<char> = Vec::new();
    for f in &m.flags {
        match f.as_str() {
            "\\Seen" => letters.push('R'),
            "\\Answered" => letters.push('A'),
            "\\Flagged" => letters.push('F'),
            "\\Draft" => letters.push('T'),
            "\\Deleted" => letters.push('D'),
            _ => {}
        }
    }
    letters.sort();
    row.flags = letters.into_iter().collect();
    row.sha1 = Guid::of(lf).to_hex();
    row
}

/// (SHA-1, system flag letters) of each message in a Maildir folder's `cur` (a folder restored
/// alone: Python's reader wants the root's own `cur`, which is INBOX's).
fn maildir_letters(folder: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_dir(folder.join("cur"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            // Upper case: the system flags (lower-case letters are keywords).
            let letters: String = name
                .rsplit(":2,")
                .next()
                .unwrap()
                .chars()
                .filter(char::is_ascii_uppercase)
                .collect();
            (Guid::of(&std::fs::read(&p).unwrap()).to_hex(), letters)
        })
        .collect()
}

#[test]
fn restore_from_a_real_backup_to_files_and_as_of_before_an_expunge() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth1 = cyrus.truth().expect("imap_truth.py");
    let user = truth1.users().into_iter().next().unwrap().to_owned();

    let backupd = Backupd::start(&cyrus, "restore-e2e-secret-0123");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    let t1 = now();

    // ---- whole user into a Maildir.
    let md = root.path().join("restored-maildir");
    let rep = restore(
        root.path(),
        &user,
        &Selection::default(),
        &Target::Maildir(md.clone()),
    )
    .unwrap();
    assert_eq!(rep.not_stored, 0, "{rep:?}");
    let mut want = Vec::new();
    let mut folders = BTreeSet::new();
    for (f, ft) in truth1.folders_of(&user) {
        folders.insert(f.to_owned());
        let flat = folder_levels(&user, f).flat();
        for m in &ft.messages {
            want.push(maildir_row(&flat, m));
        }
    }
    want.sort();
    assert!(want.len() > 10, "{want:?}");
    assert_eq!(read_maildir(&md), want);
    assert_eq!(rep.folders as usize, folders.len());

    // ---- INBOX into an mbox.
    let mbox = root.path().join("inbox.mbox");
    let s = Selection {
        folder: Some("INBOX".into()),
        ..Selection::default()
    };
    let rep = restore(root.path(), &user, &s, &Target::Mbox(mbox.clone())).unwrap();
    let inbox = truth1.folder(&user, "INBOX").unwrap();
    assert_eq!(rep.messages as usize, inbox.messages.len());
    let mut want: Vec<Restored> = inbox
        .messages
        .iter()
        .map(|m| {
            // The Maildir copy holds the exact bytes: its LF form is the mbox's.
            let file = std::fs::read_dir(md.join("cur"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    std::fs::read(p)
                        .map(|b| Guid::of(&b).to_hex())
                        .ok()
                        .as_deref()
                        == Some(m.sha1.as_str())
                })
                .unwrap();
            let lf = String::from_utf8_lossy(&std::fs::read(file).unwrap())
                .replace("\r\n", "\n")
                .into_bytes();
            mbox_row(m, &lf)
        })
        .collect();
    want.sort();
    assert_eq!(read_mbox(&mbox), want);

    // ---- an expunge, a second backup.
    backup_changes(&cyrus, &user);
    let truth2 = cyrus.truth().expect("imap_truth.py");
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    let folder = "Archive/2024";
    let before = truth1.folder(&user, folder).unwrap();
    let after = truth2.folder(&user, folder).unwrap();
    let gone = before
        .messages
        .iter()
        .find(|m| after.message(m.uid).is_none())
        .expect("backup_changes.py expunges the lowest UID of Archive/2024");

    let one = |name: &str, at: Option<Timestamp>, include_expunged: bool| {
        let out = root.path().join(name);
        let s = Selection {
            folder: Some(folder.into()),
            uid: Some(gone.uid),
            at,
            include_expunged,
            ..Selection::default()
        };
        restore(root.path(), &user, &s, &Target::Eml(out.clone())).map(|r| {
            assert_eq!(r.chunks_inflated, 1);
            let flat = folder_levels(&user, folder).flat();
            Guid::of(&std::fs::read(out.join(flat).join(format!("{}.eml", gone.uid))).unwrap())
                .to_hex()
        })
    };
    assert!(one("plain", None, false).is_err());
    assert_eq!(one("at-t1", Some(t1), false).unwrap(), gone.sha1);
    assert_eq!(one("expunged", None, true).unwrap(), gone.sha1);

    // ---- expunged mail restored on purpose: the store's last state of the message has the
    // \Deleted it was expunged with; restored, it does not (Maildir's T letter), unless
    // --keep-deleted-flag.
    let flat = folder_levels(&user, folder).flat();
    let letters = |name: &str, at: Option<Timestamp>, include_expunged, keep_deleted_flag| {
        let out = root.path().join(name);
        let s = Selection {
            folder: Some(folder.into()),
            uid: Some(gone.uid),
            at,
            include_expunged,
            keep_deleted_flag,
            ..Selection::default()
        };
        let rep = restore(root.path(), &user, &s, &Target::Maildir(out.clone())).unwrap();
        assert_eq!(rep.messages, 1, "{rep:?}");
        let rows = maildir_letters(&out.join(format!(".{flat}")));
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].0, gone.sha1);
        rows[0].1.clone()
    };
    let was = maildir_row(&flat, gone).flags;
    assert!(!was.contains('T'), "{was}");
    let mut with_t: Vec<char> = format!("{was}T").chars().collect();
    with_t.sort();
    let with_t: String = with_t.into_iter().collect();
    assert_eq!(letters("md-expunged", None, true, false), was);
    assert_eq!(letters("md-kept", None, true, true), with_t);
    // As of before the expunge it had no \Deleted: nothing to take off or keep.
    assert_eq!(letters("md-at-t1", Some(t1), false, false), was);
    // A message marked \Deleted and never expunged (populate.py's Trash) keeps its mark.
    let trash = truth2.folder(&user, "Trash").unwrap();
    assert!(
        trash
            .messages
            .iter()
            .all(|m| m.flags.iter().any(|f| f == "\\Deleted")),
        "{:?}",
        trash.messages
    );
    let md = root.path().join("md-trash");
    let s = Selection {
        folder: Some("Trash".into()),
        ..Selection::default()
    };
    restore(root.path(), &user, &s, &Target::Maildir(md.clone())).unwrap();
    let rows = maildir_letters(&md.join(".Trash"));
    assert_eq!(rows.len(), trash.messages.len());
    assert!(rows.iter().all(|(_, f)| f.contains('T')), "{rows:?}");
    backupd.shutdown();
}
