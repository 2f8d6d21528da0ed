//! Restore over IMAP end to end: a real Cyrus (populate.py), a real backupd, a backup of one
//! user; the user's folders deleted (as the user: every folder but INBOX deleted, INBOX
//! emptied); the whole user restored over IMAP into the original names, as the admin
//! authenticating as the user; every folder, message SHA-1, flags, keywords and internal
//! date compared over IMAP with the state recorded before the deletion. A second restore
//! appends nothing; a restore into the default `Restored/<date>/` puts INBOX's messages
//! there; a world-readable password file is refused. The backup after the loss records the
//! deleted folders and INBOX's expunged messages; the restores are as of before it. INBOX's
//! expunged messages restored with `--include-expunged` come back without `\Deleted`, and
//! with it under `keep_deleted_flag`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use backup_server::restore::imap::{ImapTarget, IntoFolder};
use backup_server::restore::{restore, Note, Selection, Target};
use backup_server::store::StoreOptions;
use tests::rig::{backup, now, Backupd};
use tests::truth::Truth;
use tests::CyrusInstance;

/// Deletes every folder of the user but INBOX (deepest first) and empties INBOX.
const WIPE: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
from cyrlib import Imap, quote
im = Imap('127.0.0.1', int(sys.argv[2]))
im.login(sys.argv[3])
names = [n for _, _, n in im.list('', '*') if n.upper() != 'INBOX']
for n in sorted(names, key=lambda n: -n.count('/')):
    im.command('DELETE %s' % quote(n))
im.command('SELECT INBOX')
im.command('STORE 1:* +FLAGS.SILENT (\\Deleted)', check=False)
im.command('EXPUNGE')
im.logout()
print(len(names))
"#;

/// A user's folders as comparable rows: folder -> sorted (sha1, flags, internal date secs).
fn state(truth: &Truth, user: &str) -> BTreeMap<String, Vec<(String, Vec<String>, i64)>> {
    let mut out = BTreeMap::new();
    for (f, ft) in truth.folders_of(user) {
        let mut v: Vec<_> = ft
            .messages
            .iter()
            .map(|m| {
                (
                    m.sha1.clone(),
                    m.flags.clone(),
                    tests::readers::imap_date(&m.internaldate).unwrap(),
                )
            })
            .collect();
        v.sort();
        out.insert(f.to_owned(), v);
    }
    out
}

#[test]
fn whole_user_round_trip_over_imap_and_rerun_appends_nothing() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth1 = cyrus.truth().expect("imap_truth.py");
    let user = truth1.users().into_iter().next().unwrap().to_owned();
    let before = state(&truth1, &user);
    let nmsg: usize = before.values().map(Vec::len).sum();
    assert!(before.len() > 3 && nmsg > 10, "{before:?}");

    let backupd = Backupd::start(&cyrus, "restore-imap-secret-0123");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    let t1 = now();

    // ---- the loss.
    let out = Command::new("python3")
        .arg("-c")
        .arg(WIPE)
        .arg(tests::cyrus::scripts_dir())
        .arg(cyrus.imap_port().to_string())
        .arg(&user)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wiped = cyrus.truth_for(&[&user]).unwrap();
    let after_loss = state(&wiped, &user);
    assert_eq!(after_loss.len(), 1, "{after_loss:?}");
    assert!(after_loss["INBOX"].is_empty());
    // The backup after the loss: the folders deleted, INBOX's messages expunged (Cyrus's
    // delayed expunge keeps their records, with the \Deleted they were expunged with).
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    backupd.shutdown();
    // Everything from here is restored as of before the loss.
    let as_of_t1 = Selection {
        at: Some(t1),
        ..Selection::default()
    };

    // ---- the password file: refused while anyone can read it.
    let pw = root.path().join("imap-password");
    std::fs::File::create(&pw)
        .unwrap()
        .write_all(b"secret\n")
        .unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut t =
        ImapTarget::parse(&format!("imap://admin@127.0.0.1:{}/", cyrus.imap_port())).unwrap();
    t.password_file = Some(pw.clone());
    t.into = IntoFolder::Original;
    let err = restore(root.path(), &user, &as_of_t1, &Target::Imap(t.clone())).unwrap_err();
    assert!(
        format!("{err:#}").contains("readable by everyone"),
        "{err:#}"
    );
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    // ---- the whole user into the original names.
    let t0 = std::time::Instant::now();
    let rep = restore(root.path(), &user, &as_of_t1, &Target::Imap(t.clone())).unwrap();
    let took = t0.elapsed();
    assert_eq!(rep.not_stored, 0, "{rep:?}");
    assert_eq!(rep.messages as usize, nmsg, "{rep:?}");
    assert!(
        rep.notes.contains(&Note::Appended {
            appended: nmsg as u64,
            already_there: 0
        }),
        "{rep:?}"
    );
    let restored = cyrus.truth_for(&[&user]).unwrap();
    assert_eq!(state(&restored, &user), before);
    eprintln!(
        "restore over IMAP: {} folders, {} messages, {} bytes in {:?}",
        rep.folders, rep.messages, rep.bytes, took
    );

    // ---- again: nothing appended.
    let rep2 = restore(root.path(), &user, &as_of_t1, &Target::Imap(t.clone())).unwrap();
    assert!(
        rep2.notes.contains(&Note::Appended {
            appended: 0,
            already_there: nmsg as u64
        }),
        "{rep2:?}"
    );
    let again = cyrus.truth_for(&[&user]).unwrap();
    assert_eq!(state(&again, &user), before);
    // Without DIGEST.SHA1: sizes first, then only same-size messages hashed.
    let mut slow = t.clone();
    slow.use_digest = false;
    let rep3 = restore(root.path(), &user, &as_of_t1, &Target::Imap(slow)).unwrap();
    assert!(
        rep3.notes.contains(&Note::Appended {
            appended: 0,
            already_there: nmsg as u64
        }),
        "{rep3:?}"
    );

    // ---- INBOX into the default Restored/<date>/INBOX.
    t.into = IntoFolder::Dated;
    let s = Selection {
        folder: Some("INBOX".into()),
        ..as_of_t1.clone()
    };
    restore(root.path(), &user, &s, &Target::Imap(t.clone())).unwrap();
    let dated = state(&cyrus.truth_for(&[&user]).unwrap(), &user);
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    assert_eq!(
        dated.get(&format!("Restored/{date}/INBOX")),
        Some(&before["INBOX"]),
        "{:?}",
        dated.keys().collect::<Vec<_>>()
    );

    // ---- expunged mail restored on purpose: INBOX's messages as they were when expunged
    // (by the wipe, or by populate.py before the first backup), all with \Deleted in the
    // store; restored without it, so the next EXPUNGE does not take them again.
    let expunged = |into: &str, keep_deleted_flag: bool| {
        let mut t = t.clone();
        t.into = IntoFolder::Named(into.into());
        let s = Selection {
            folder: Some("INBOX".into()),
            include_expunged: true,
            keep_deleted_flag,
            ..Selection::default()
        };
        let rep = restore(root.path(), &user, &s, &Target::Imap(t)).unwrap();
        let got = state(&cyrus.truth_for(&[&user]).unwrap(), &user)
            .remove(&format!("{into}/INBOX"))
            .unwrap();
        assert_eq!(got.len() as u64, rep.messages, "{rep:?}");
        // More than the wipe's: populate.py's expunges too.
        assert!(got.len() > before["INBOX"].len(), "{got:?}");
        sorted_flags(got)
    };
    let deleted = |v: &[String]| v.iter().any(|f| f == "\\Deleted");
    let undeleted = expunged("Undeleted", false);
    assert!(
        undeleted.iter().all(|(_, f, _)| !deleted(f)),
        "{undeleted:?}"
    );
    // The wipe's messages come back exactly as they were before it.
    for m in sorted_flags(before["INBOX"].clone()) {
        assert!(undeleted.contains(&m), "{m:?} not in {undeleted:?}");
    }
    let kept = expunged("Kept", true);
    assert!(kept.iter().all(|(_, f, _)| deleted(f)), "{kept:?}");
}

/// `rows` with each message's flags sorted (the server's order is its own).
fn sorted_flags(mut rows: Vec<(String, Vec<String>, i64)>) -> Vec<(String, Vec<String>, i64)> {
    for r in &mut rows {
        r.1.sort();
    }
    rows
}
