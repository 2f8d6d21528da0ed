//! The planner end to end: a real Cyrus (populate.py), a real backupd, `backup_user` for
//! every user, and `ls` compared with what IMAP said. Then changes over LMTP and IMAP
//! (tests/cyrus/backup_changes.py: new mail, an expunge, a flag change, a rename, a folder
//! deleted and one created, a message copied), a second backup that copies the meta of the
//! changed folders only and fetches the new messages only, and `ls --at` the first backup's
//! time still showing the first state exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use backup_server::backup::{plan_for, BackupError, FolderAction, Missing, UserOutcome};
use backup_server::ls::ls;
use backup_server::store::{StoreOptions, StoreReader, UserDir};
use formats::archive::UserFileKind;
use formats::{Guid, Timestamp};
use tests::readers::imap_date;
use tests::rig::{backup, backup_all, backup_changes, now, Backupd};
use tests::{CyrusInstance, Truth};

/// ls's folder list: unique id -> name.
fn ls_folders(root: &Path, user: &str, at: Option<Timestamp>) -> BTreeMap<String, String> {
    match ls(root, user, None, at).unwrap_or_else(|e| panic!("ls {user}: {e}")) {
        backup_server::ls::Listing::Folders { folders, .. } => {
            folders.into_iter().map(|f| (f.unique_id, f.name)).collect()
        }
        other => panic!("ls {user}: expected folders, found {other:?}"),
    }
}

/// One message: UID, sorted flags, internal date (unix seconds), size, GUID hex.
type Line = (u32, Vec<String>, i64, u64, String);

/// ls's messages of `folder`.
fn ls_messages(root: &Path, user: &str, folder: &str, at: Option<Timestamp>) -> Vec<Line> {
    match ls(root, user, Some(folder), at).unwrap_or_else(|e| panic!("ls {user} {folder}: {e}")) {
        backup_server::ls::Listing::Messages { messages, .. } => messages
            .into_iter()
            .map(|m| {
                let mut flags = m.flags;
                flags.sort();
                (m.uid, flags, m.internal_date.secs, m.size, m.guid.to_hex())
            })
            .collect(),
        other => panic!("ls {user} {folder}: expected messages, found {other:?}"),
    }
}

/// Every mismatch between `ls` (at `at`) and what IMAP said, for every user of `truth`.
fn compare(root: &Path, truth: &Truth, at: Option<Timestamp>) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut messages = 0;
    for user in truth.users() {
        let folders = ls_folders(root, user, at);
        let want: BTreeSet<String> = truth
            .folders_of(user)
            .map(|(_, f)| f.uniqueid.clone().unwrap())
            .collect();
        let have: BTreeSet<String> = folders.keys().cloned().collect();
        if want != have {
            bad.push(format!("{user}: folders {have:?}, IMAP had {want:?}"));
        }
        for (imap_name, ft) in truth.folders_of(user) {
            let id = ft.uniqueid.as_deref().unwrap();
            let Some(name) = folders.get(id) else {
                continue;
            };
            let got = ls_messages(root, user, name, at);
            let want: Vec<Line> = ft
                .messages
                .iter()
                .map(|m| {
                    let mut flags = m.flags.clone();
                    flags.sort();
                    (
                        m.uid,
                        flags,
                        imap_date(&m.internaldate).unwrap(),
                        m.size,
                        m.sha1.clone(),
                    )
                })
                .collect();
            messages += want.len();
            if got != want {
                bad.push(format!(
                    "{user}/{imap_name} (ls {name}): ls\n{got:?}\nIMAP\n{want:?}"
                ));
            }
        }
    }
    (bad, messages)
}

/// Distinct GUIDs of every record (expunged included) of every folder the store holds now.
fn distinct_guids(root: &Path, user: &str) -> BTreeSet<Guid> {
    let r = StoreReader::open(root, user).unwrap();
    let mut all = BTreeSet::new();
    for f in r.catalog().folders_at(None).unwrap() {
        r.catalog()
            .messages_at(&f.unique_id, None, true, |m| {
                all.insert(m.guid);
                Ok(())
            })
            .unwrap();
    }
    all
}

/// The sieve scripts the store holds as active now.
fn active_scripts(root: &Path, user: &str) -> Vec<String> {
    let r = StoreReader::open(root, user).unwrap();
    r.catalog()
        .user_files_at(None)
        .unwrap()
        .into_iter()
        .filter_map(|f| match f.kind {
            UserFileKind::Sieve { name, active: true } => Some(name),
            _ => None,
        })
        .collect()
}

fn data_len(root: &Path, user: &str) -> u64 {
    StoreReader::open(root, user)
        .unwrap()
        .catalog()
        .committed_len()
        .unwrap()
}

#[test]
fn planner_backs_up_changes_only_and_ls_shows_each_state() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth1 = cyrus.truth().expect("imap_truth.py");
    let users: BTreeSet<String> = truth1.users().into_iter().map(str::to_owned).collect();

    let backupd = Backupd::start(&cyrus, "planner-e2e-secret-0123");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();

    // ---- first backup: everything, each message once per user.
    let (first, t_first) = backup_all(&mut c, root.path(), &opts, &users);
    let t1 = now();
    let mut sum1 = UserOutcome::default();
    for (u, o) in &first {
        assert_eq!(o.meta_copies, o.folders, "{u}: {o:?}");
        assert_eq!(o.folders_changed, o.folders, "{u}");
        assert_eq!(o.messages_gone, 0, "{u}");
        assert_eq!(
            o.messages_fetched, o.messages_stored,
            "{u}: fetched twice? {o:?}"
        );
        let guids = distinct_guids(root.path(), u);
        assert_eq!(
            o.messages_stored,
            guids.len() as u64,
            "{u}: stored once per GUID"
        );
        assert!(o.user_files_stored >= 2, "{u}: {o:?}");
        let r = StoreReader::open(root.path(), u).unwrap();
        for (_, f, m) in truth1.messages().filter(|(uu, _, _)| uu == u) {
            let g: Guid = Guid(hex::decode(&m.sha1).unwrap().try_into().unwrap());
            assert!(
                r.catalog().has_message(&g).unwrap(),
                "{u}/{f} UID {}",
                m.uid
            );
        }
        assert_eq!(active_scripts(root.path(), u), ["main"], "{u}");
        sum1.messages_stored += o.messages_stored;
        sum1.bytes_stored += o.bytes_stored;
        sum1.folders += o.folders;
    }
    let (bad, n1) = compare(root.path(), &truth1, None);
    assert!(bad.is_empty(), "first backup vs IMAP:\n{}", bad.join("\n"));

    // ---- changes to the first user.
    let changed = users.iter().next().unwrap().clone();
    let stdout = backup_changes(&cyrus, &changed);
    let new: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("changes: "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("new=")))
        .and_then(|n| n.parse().ok())
        .expect("changes: ... new=N");
    let truth2 = cyrus.truth().expect("imap_truth.py");

    // What the planner will do for the changed user: copies exactly the touched folders.
    let listing = c.list_folders(&changed).unwrap();
    let plan = {
        let r = StoreReader::open(root.path(), &changed).unwrap();
        plan_for(r.catalog(), &listing).unwrap()
    };
    let name_of = |i: usize| listing.folders[i].name.clone();
    let copied: BTreeSet<String> = plan.copies().map(|s| name_of(s.index)).collect();
    let touched: BTreeSet<String> = [
        "INBOX",
        "Work",
        "Archive/2024",
        "Archive/2025",
        "Drafts",
        "Fresh",
        "Sent Items",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert!(copied.is_subset(&touched), "copied {copied:?}");
    let mut must: BTreeSet<String> = touched.clone();
    must.remove("Sent Items"); // a rename may leave every meta file as it was
    assert!(must.is_subset(&copied), "copied {copied:?}");
    let sent = plan
        .folders
        .iter()
        .find(|s| name_of(s.index) == "Sent Items")
        .unwrap();
    assert!(
        matches!(
            &sent.action,
            FolderAction::Rename { from } if from == "Sent"
        ) || matches!(
            &sent.action,
            FolderAction::Copy { renamed_from: Some(from), .. } if from == "Sent"
        ),
        "{:?}",
        sent.action
    );
    assert_eq!(plan.tombstones.len(), 1, "Lists/rust-users deleted");
    let len_before = data_len(root.path(), &changed);

    // ---- second backup.
    let served_before = backupd.served.counts();
    let (second, t_second) = backup_all(&mut c, root.path(), &opts, &users);
    // Counted at backupd itself: one listing per user, a meta copy for exactly the changed
    // folders (none for the unchanged users), and only the new messages' files opened.
    let served = backupd.served.counts();
    assert_eq!(
        (
            served.0 - served_before.0,
            served.1 - served_before.1,
            served.2 - served_before.2
        ),
        (users.len() as u64, copied.len() as u64, new),
        "listings, meta copies and message files served by backupd in the second backup"
    );
    let t2 = now();
    for (u, o) in &second {
        if *u == changed {
            assert_eq!(o.meta_copies, copied.len() as u64, "{o:?}");
            assert_eq!(o.folders_changed, copied.len() as u64, "{o:?}");
            // The renamed folder fetched nothing, the copied message was not fetched
            // again: the new messages are all that came.
            assert_eq!(o.messages_fetched, new, "{o:?}");
            assert_eq!(o.messages_stored, new, "{o:?}");
            assert_eq!(o.folders_renamed, 1, "{o:?}");
            assert_eq!(o.folders_deleted, 1, "{o:?}");
            // Activating another script changes no script file: still seen.
            assert_eq!(active_scripts(root.path(), u), ["vacation"], "{o:?}");
        } else {
            assert_eq!(o.meta_copies, 0, "{u}: {o:?}");
            assert_eq!(o.messages_fetched, 0, "{u}: {o:?}");
            assert_eq!(o.user_files_stored, 0, "{u}: {o:?}");
        }
    }
    let grown = data_len(root.path(), &changed) - len_before;
    let o2 = &second[&changed];

    let (bad, n2) = compare(root.path(), &truth2, None);
    assert!(bad.is_empty(), "second backup vs IMAP:\n{}", bad.join("\n"));
    let (bad, _) = compare(root.path(), &truth1, Some(t1));
    assert!(
        bad.is_empty(),
        "ls --at first vs IMAP then:\n{}",
        bad.join("\n")
    );
    let (bad, _) = compare(root.path(), &truth2, Some(t2));
    assert!(bad.is_empty(), "ls --at second:\n{}", bad.join("\n"));

    // A user whose store another run holds is skipped, and says so.
    let held = UserDir::new(root.path(), &changed).unwrap().lock().unwrap();
    let e = backup(&mut c, root.path(), &opts, &changed).unwrap_err();
    assert!(matches!(e, BackupError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("locked by another run"), "{e}");
    drop(held);

    // ---- third backup, nothing changed: nothing copied, nothing fetched, nothing written
    // (no run recorded), an unchanged key handed back for the state db.
    let before: Vec<(u64, u64)> = users
        .iter()
        .map(|u| {
            let r = StoreReader::open(root.path(), u).unwrap();
            let last = r.catalog().last_complete_run().unwrap().unwrap();
            (data_len(root.path(), u), last.run)
        })
        .collect();
    let (third, t_third) = backup_all(&mut c, root.path(), &opts, &users);
    for (u, o) in &third {
        assert_eq!(
            (o.meta_copies, o.messages_fetched, o.user_files_stored),
            (0, 0, 0),
            "{u}: {o:?}"
        );
        assert!(o.quiet_key.is_some(), "{u}: {o:?}");
    }
    for (u, (len, run)) in users.iter().zip(before) {
        assert_eq!(data_len(root.path(), u), len, "{u}: the data file grew");
        let r = StoreReader::open(root.path(), u).unwrap();
        let last = r.catalog().last_complete_run().unwrap().unwrap();
        assert_eq!(last.run, run, "{u}: a run was recorded");
        drop(r);
        let store = backup_server::store::Store::open(root.path(), u, opts.clone()).unwrap();
        assert_eq!(store.check(true).unwrap(), vec![], "{u}");
    }
    eprintln!(
        "planner e2e: {} users, {} folders, {n1} messages listed by IMAP; first backup {:?} \
         ({} messages, {} bytes stored); second {:?} ({} meta copies, {} fetched, data file +{} \
         bytes for {} message bytes; {n2} messages listed); third (nothing changed) {:?}",
        users.len(),
        sum1.folders,
        t_first,
        sum1.messages_stored,
        sum1.bytes_stored,
        t_second,
        o2.meta_copies,
        o2.messages_fetched,
        grown,
        o2.bytes_stored,
        t_third
    );
    backupd.shutdown();
}

/// Message files that vanish under the planner: an expunged record's file gone is not an
/// error; a live record's file gone (the index still lists it after two fresh meta copies)
/// leaves that folder out of the run, which is then partial, and the store stays
/// consistent (no record without its message).
#[test]
fn vanished_message_files() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate_with(&["--users", "1"]).expect("populate.py");
    let backupd = Backupd::start(&cyrus, "planner-e2e-secret-0123");
    let mut c = backupd.connect();
    let user = c.list_users().unwrap()[0].user.clone();
    let listing = c.list_folders(&user).unwrap();

    // Every record of every folder, to find GUIDs held by one record only.
    let mut records = Vec::new();
    for f in &listing.folders {
        let meta = c.copy_meta(&user, &f.uniqueid).unwrap();
        let (_, recs) = formats::cyrus::index::parse_all(&meta.index.0).unwrap();
        for r in recs {
            records.push((f.clone(), r));
        }
    }
    let mut count: BTreeMap<Guid, usize> = BTreeMap::new();
    for (_, r) in &records {
        *count.entry(r.guid.unwrap()).or_default() += 1;
    }
    let unique = |expunged: bool, not_in: Option<&str>| {
        records
            .iter()
            .find(|(f, r)| {
                r.is_expunged() == expunged
                    && !r.is_unlinked()
                    && count[&r.guid.unwrap()] == 1
                    && Some(f.uniqueid.as_str()) != not_in
            })
            .cloned()
    };
    // In two different folders, so that each case shows on its own.
    let gone_expunged = unique(true, None);
    let (live_f, live_r) = unique(
        false,
        gone_expunged.as_ref().map(|(f, _)| f.uniqueid.as_str()),
    )
    .expect("a live message held once");
    let mut removed = vec![(live_f.clone(), live_r.uid)];
    if let Some((f, r)) = &gone_expunged {
        removed.push((f.clone(), r.uid));
    }
    for (f, uid) in &removed {
        let path = cyrus
            .mailbox_dir(&f.partition, &f.uniqueid)
            .unwrap()
            .join(format!("{uid}."));
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert_eq!(o.incomplete.len(), 1, "{o:?}");
    assert!(
        matches!(&o.incomplete[0], Missing::KeptVanishing { folder, count: 1 } if folder.uniqueid == live_f.uniqueid),
        "{o:?}"
    );
    // Two fresh copies of the folder whose live message vanished.
    assert_eq!(o.meta_copies, o.folders + 2, "{o:?}");
    // The live one three times (first try and two retries); the expunged one once, or
    // three times when it is in the same folder.
    let expunged_gone = match &gone_expunged {
        None => 0,
        Some((f, _)) if f.uniqueid == live_f.uniqueid => 3,
        Some(_) => 1,
    };
    assert_eq!(o.messages_gone, 3 + expunged_gone, "{o:?}");
    let store = backup_server::store::Store::open(root.path(), &user, opts.clone()).unwrap();
    assert!(store.check(true).unwrap().is_empty());
    let cat = store.catalog();
    assert!(cat.last_complete_run().unwrap().is_none(), "a partial run");
    let held: BTreeSet<String> = cat
        .folders_at(None)
        .unwrap()
        .into_iter()
        .map(|f| f.unique_id)
        .collect();
    assert!(!held.contains(&live_f.uniqueid));
    assert_eq!(held.len() as u64, o.folders - 1);
    if let Some((f, _)) = &gone_expunged {
        if f.uniqueid != live_f.uniqueid {
            assert!(
                held.contains(&f.uniqueid),
                "an expunged message gone is no error"
            );
        }
    }
    eprintln!(
        "vanished: {o:?} (expunged file removed too: {})",
        gone_expunged.is_some()
    );
    backupd.shutdown();
}
