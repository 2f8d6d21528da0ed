//! Restore back into Cyrus as it was (`cyrus://`, through Cyrus's own sync_server), end to
//! end against the real Cyrus 3.6: a folder deleted and restored keeps its UIDVALIDITY, its
//! UIDs with their messages, flags, keywords and internal dates, and a QRESYNC client that
//! had it cached is told of nothing it did not expect; a second run sends nothing; a whole
//! user deleted comes back with subscriptions and sieve scripts; a Trash emptied and expired
//! comes back from the night before, into the folder that still exists.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use backup_server::restore::cyrus::CyrusTarget;
use backup_server::restore::imap::IntoFolder;
use backup_server::restore::{restore, Note, RestoreReport, Selection, Target};
use backup_server::store::StoreOptions;
use tests::cyrus::{CyrusOptions, DeleteMode};
use tests::rig::{backup, Backupd};
use tests::CyrusInstance;

/// The admin's password in a file only its owner reads (any password works here).
fn password_file(dir: &Path) -> PathBuf {
    let p = dir.join("admin.pw");
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "secret").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn target(cyrus: &CyrusInstance, pw: &Path) -> Target {
    let mut t =
        CyrusTarget::parse(&format!("cyrus://admin@127.0.0.1:{}", cyrus.sync_port())).unwrap();
    t.password_file = Some(pw.to_path_buf());
    t.into = IntoFolder::Original;
    Target::Cyrus(t)
}

fn filed(rep: &RestoreReport) -> (u64, u64) {
    rep.notes
        .iter()
        .find_map(|n| match n {
            Note::Filed {
                appended,
                already_there,
            } => Some((*appended, *already_there)),
            _ => None,
        })
        .expect("a Filed note")
}

/// A folder of the user with at least `min` messages, flags among them if possible.
fn pick_folder(state: &tests::folder_state::UserState, min: usize) -> String {
    state
        .folders
        .iter()
        .filter(|(n, f)| *n != "INBOX" && f.messages.len() >= min)
        .max_by_key(|(_, f)| {
            (
                f.messages.iter().filter(|m| !m.flags.is_empty()).count(),
                f.messages.len(),
            )
        })
        .map(|(n, _)| n.clone())
        .expect("a folder with messages")
}

#[test]
fn deleted_folder_comes_back_with_its_uids_and_a_rerun_sends_nothing() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let user = "u000";
    let backupd = Backupd::start(&cyrus, "restore-cyrus-secret-0123");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    let o = backup(&mut c, root.path(), &StoreOptions::default(), user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    backupd.shutdown();

    let before = cyrus.folder_state(user, &[], false).unwrap();
    let folder = pick_folder(&before, 2);
    let was = before.folder(&folder).unwrap().clone();

    cyrus.delete_folder(user, &folder, false).unwrap();
    let gone = cyrus.folder_state(user, &[], false).unwrap();
    assert!(gone.folder(&folder).is_none(), "{folder} still there");

    let pw = password_file(root.path());
    let sel = Selection {
        folder: Some(folder.clone()),
        ..Selection::default()
    };
    // --dry-run says what it would do, and does nothing.
    let mut dry = target(&cyrus, &pw);
    if let Target::Cyrus(t) = &mut dry {
        t.dry_run = true;
    }
    let rep = restore(root.path(), user, &sel, &dry).unwrap();
    let would: Vec<String> = rep
        .notes
        .iter()
        .filter(|n| matches!(n, Note::WouldWrite { .. }))
        .map(|n| n.to_string())
        .collect();
    assert!(
        would.iter().any(|w| w.contains(&format!(
            "would create user.{user}.{} on partition",
            folder.replace('/', ".")
        )) && w.contains(&format!("UIDVALIDITY {}", was.uidvalidity))),
        "{would:?}"
    );
    let still_gone = cyrus.folder_state(user, &[], false).unwrap();
    assert_eq!(still_gone, gone, "a dry run wrote something");

    let rep = restore(root.path(), user, &sel, &target(&cyrus, &pw)).unwrap();
    assert_eq!(filed(&rep), (was.messages.len() as u64, 0), "{rep:?}");
    assert_eq!(rep.damaged, 0);

    let after = cyrus.folder_state(user, &[], false).unwrap();
    let now = after.folder(&folder).expect("restored folder");
    assert_eq!(was.differences(now), Vec::<String>::new(), "{folder}");
    assert_eq!(now.uidvalidity, was.uidvalidity);
    assert_eq!(now.uid_set(), was.uid_set());
    // The deleted folder still waits under DELETED.* with its unique id (delete_mode:
    // delayed): the restored one must not share it (nor its spool directory).
    assert_ne!(now.mailboxid, was.mailboxid, "{rep:?}");
    assert!(
        rep.notes
            .iter()
            .any(|n| matches!(n, Note::NewMailboxId { folder: f, .. } if *f == folder)),
        "{:?}",
        rep.notes
    );
    // A client that cached the folder comes back and is told of nothing it did not know.
    let q = cyrus
        .qresync_check(
            user,
            &folder,
            was.uidvalidity,
            was.highestmodseq,
            Some(&was.uid_set()),
        )
        .unwrap();
    assert!(!q.uidvalidity_changed, "{q:?}");
    assert_eq!(q.vanished, Vec::<u32>::new(), "{q:?}");

    // Again: nothing sent, nothing doubled.
    let rep2 = restore(root.path(), user, &sel, &target(&cyrus, &pw)).unwrap();
    assert_eq!(filed(&rep2), (0, was.messages.len() as u64), "{rep2:?}");
    let again = cyrus.folder_state(user, &[], false).unwrap();
    assert_eq!(again.folder(&folder), Some(now));
}

#[test]
fn deleted_users_come_back_whole_with_subscriptions_sieve_and_seen_state() {
    deleted_users_come_back(DeleteMode::Immediate);
}

/// With `delete_mode: delayed` the deleted users' folders wait under `DELETED.user.*` with
/// their unique ids: the restored folders get new ones, and keep everything else.
#[test]
fn deleted_users_come_back_whole_while_cyrus_keeps_their_deleted_copies() {
    deleted_users_come_back(DeleteMode::Delayed);
}

fn deleted_users_come_back(mode: DeleteMode) {
    let cyrus = CyrusInstance::start_with(CyrusOptions {
        delete_mode: mode,
        ..CyrusOptions::default()
    })
    .expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    // u001 reads u000's Work: its \Seen there lives in u001's own seen database.
    let shared = "Other Users/u000/Work";
    cyrus.share_seen("u000", "Work", "u001", "1:*").unwrap();
    let backupd = Backupd::start(&cyrus, "restore-cyrus-secret-4567");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    for user in ["u000", "u001"] {
        let o = backup(&mut c, root.path(), &StoreOptions::default(), user).unwrap();
        assert!(o.incomplete.is_empty(), "{o:?}");
    }
    backupd.shutdown();
    let before = cyrus.folder_state("u000", &[], true).unwrap();
    assert!(before.sieve.as_ref().is_some_and(|s| !s.scripts.is_empty()));
    let reader_before = cyrus.folder_state("u001", &[shared], false).unwrap();
    let seen_before = reader_before.folder(shared).unwrap().clone();
    assert!(seen_before
        .messages
        .iter()
        .all(|m| m.flags.contains(&"\\Seen".to_string())));

    cyrus.delete_user("u000").unwrap();
    cyrus.delete_user("u001").unwrap();
    let pw = password_file(root.path());
    for user in ["u000", "u001"] {
        let rep = restore(
            root.path(),
            user,
            &Selection::default(),
            &target(&cyrus, &pw),
        )
        .unwrap();
        assert_eq!(rep.damaged, 0, "{rep:?}");
    }

    let after = cyrus.folder_state("u000", &[], true).unwrap();
    assert_eq!(before.differences(&after), Vec::<String>::new());
    for (name, was) in &before.folders {
        let now = after.folder(name).unwrap();
        assert_eq!(
            (now.uidvalidity, now.uid_set()),
            (was.uidvalidity, was.uid_set()),
            "{name}"
        );
        // Ids are kept where Cyrus no longer holds them.
        assert_eq!(
            now.mailboxid == was.mailboxid,
            mode == DeleteMode::Immediate,
            "{name}"
        );
    }
    if mode == DeleteMode::Delayed {
        // The reader's \\Seen is keyed by the folder's unique id: with a new one it is
        // not the reader's any more (the owner's flags came back; see docs/restore.md).
        return;
    }
    // The reader's own \Seen in the owner's folder came back with the reader.
    let reader_after = cyrus.folder_state("u001", &[shared], false).unwrap();
    let seen_after = reader_after.folder(shared).expect("the shared folder");
    assert_eq!(
        seen_before.differences(seen_after),
        Vec::<String>::new(),
        "{shared}"
    );
}

#[test]
fn trash_emptied_and_expired_comes_back_from_the_night_before() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let user = "u001";
    let backupd = Backupd::start(&cyrus, "restore-cyrus-secret-89ab");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();
    backup(&mut c, root.path(), &opts, user).unwrap();
    let night1 = tests::rig::now();
    let before = cyrus.folder_state(user, &[], false).unwrap();
    let folder = pick_folder(&before, 3);
    let was = before.folder(&folder).unwrap().clone();

    // "I emptied my Trash yesterday": two messages expunged, and Cyrus's expiry ran.
    let gone_uids: Vec<u32> = was.messages.iter().take(2).map(|m| m.uid).collect();
    let set = gone_uids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(cyrus.expunge(user, &folder, &set).unwrap(), gone_uids);
    cyrus.expire_now().unwrap();
    backup(&mut c, root.path(), &opts, user).unwrap();
    backupd.shutdown();
    let emptied = cyrus.folder_state(user, &[], false).unwrap();
    let left = emptied.folder(&folder).unwrap().clone();
    assert_eq!(left.messages.len(), was.messages.len() - 2);

    let pw = password_file(root.path());
    let sel = Selection {
        folder: Some(folder.clone()),
        at: Some(night1),
        ..Selection::default()
    };
    let rep = restore(root.path(), user, &sel, &target(&cyrus, &pw)).unwrap();
    assert_eq!(filed(&rep), (2, left.messages.len() as u64), "{rep:?}");
    assert!(
        rep.notes
            .iter()
            .any(|n| matches!(n, Note::UidsNotKept { folder: f, .. } if *f == folder)),
        "{:?}",
        rep.notes
    );

    let after = cyrus.folder_state(user, &[], false).unwrap();
    let now = after.folder(&folder).unwrap();
    assert_eq!(now.uidvalidity, was.uidvalidity);
    // What was left is untouched; the two come back above every UID the folder gave.
    for m in &left.messages {
        assert_eq!(now.message(m.uid), Some(m), "UID {} changed", m.uid);
    }
    let back: Vec<_> = now
        .messages
        .iter()
        .filter(|m| left.message(m.uid).is_none())
        .collect();
    assert_eq!(back.len(), 2, "{now:?}");
    for (m, old) in back
        .iter()
        .zip(gone_uids.iter().map(|u| was.message(*u).unwrap()))
    {
        assert!(m.uid >= left.uidnext, "UID {} reused", m.uid);
        assert_eq!((&m.sha1, &m.internaldate), (&old.sha1, &old.internaldate));
        assert!(!m.flags.iter().any(|f| f == "\\Deleted"), "{m:?}");
        assert_eq!(m.flags, old.flags, "flags as the night before");
    }
    // Again: nothing doubled.
    let rep2 = restore(root.path(), user, &sel, &target(&cyrus, &pw)).unwrap();
    assert_eq!(filed(&rep2), (0, was.messages.len() as u64), "{rep2:?}");
}

/// `kill -9` of a whole-user restore at several moments, then the same restore again to
/// its end: each time the user is exactly as one uninterrupted run leaves it (nothing
/// twice, nothing missing).
#[test]
fn restore_killed_and_run_again_ends_as_one_run() {
    let cyrus = CyrusInstance::start_with(CyrusOptions {
        delete_mode: DeleteMode::Immediate,
        ..CyrusOptions::default()
    })
    .expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let user = "u000";
    let backupd = Backupd::start(&cyrus, "restore-cyrus-secret-cdef");
    let dir = tempfile::tempdir().unwrap();
    let config = tests::rig::write_config(
        dir.path(),
        backupd.addr(),
        "restore-cyrus-secret-cdef",
        1,
        1,
    );
    let store = dir.path().join("store");
    let mut c = backupd.connect();
    backup(&mut c, &store, &StoreOptions::default(), user).unwrap();
    backupd.shutdown();
    let before = cyrus.folder_state(user, &[], true).unwrap();
    let pw = password_file(dir.path());
    let to = format!("cyrus://admin@127.0.0.1:{}", cyrus.sync_port());
    let restore_cmd = || {
        let mut cmd = std::process::Command::new(tests::rig::backup_server_bin());
        cmd.arg("--config")
            .arg(&config)
            .args(["restore", "--user", user, "--to", &to, "--password-file"])
            .arg(&pw)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut rng = testkit::Rng::new(0x005e_ed15);
    for trial in 0..4 {
        cyrus.delete_user(user).unwrap();
        let mut child = restore_cmd().spawn().unwrap();
        // Any moment will do: the assertion below holds wherever the kill lands.
        let wait_ms = if trial == 0 { 0 } else { rng.below(600) };
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = restore_cmd().output().unwrap();
        assert!(
            out.status.success(),
            "trial {trial}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let after = cyrus.folder_state(user, &[], true).unwrap();
        assert_eq!(
            before.differences(&after),
            Vec::<String>::new(),
            "trial {trial} (killed after {wait_ms} ms): {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for (name, was) in &before.folders {
            let now = after.folder(name).unwrap();
            assert_eq!(
                now.messages.len(),
                was.messages.len(),
                "trial {trial}: {name}"
            );
        }
    }
}

/// Over STARTTLS with the server's certificate checked: the restore works; a certificate the
/// CA file does not vouch for stops it before the admin's password is sent.
#[test]
fn restore_over_starttls_checks_the_servers_certificate() {
    let cyrus = CyrusInstance::start_with(CyrusOptions {
        tls: true,
        ..CyrusOptions::default()
    })
    .expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let user = "u002.x";
    let backupd = Backupd::start(&cyrus, "restore-cyrus-secret-tls0");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    backup(&mut c, root.path(), &StoreOptions::default(), user).unwrap();
    backupd.shutdown();
    let before = cyrus.folder_state(user, &[], false).unwrap();
    let folder = pick_folder(&before, 1);
    cyrus.delete_folder(user, &folder, false).unwrap();

    let pw = password_file(root.path());
    let sel = Selection {
        folder: Some(folder.clone()),
        ..Selection::default()
    };
    let tls_target = |ca: &Path| {
        let mut t =
            CyrusTarget::parse(&format!("cyrus://admin@localhost:{}", cyrus.sync_port())).unwrap();
        t.password_file = Some(pw.clone());
        t.tls_ca_file = Some(ca.to_path_buf());
        Target::Cyrus(t)
    };
    // Someone else's certificate: refused in the handshake.
    let other = backupd::keygen::generate(&["localhost".into()]).unwrap();
    let other_ca = root.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    let e = restore(root.path(), user, &sel, &tls_target(&other_ca)).unwrap_err();
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    assert!(cyrus
        .folder_state(user, &[], false)
        .unwrap()
        .folder(&folder)
        .is_none());

    let rep = restore(root.path(), user, &sel, &tls_target(&cyrus.tls_ca_file())).unwrap();
    assert_eq!(rep.damaged, 0);
    let after = cyrus.folder_state(user, &[], false).unwrap();
    let was = before.folder(&folder).unwrap();
    assert_eq!(
        was.differences(after.folder(&folder).unwrap()),
        Vec::<String>::new()
    );
}
