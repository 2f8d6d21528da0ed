//! backupd end to end against a real Cyrus: the daemon serves the harness's spool on
//! 127.0.0.1:0 and the client library reads everything back: users, folders, meta copies,
//! every message (SHA-1 = the GUID in cyrus.index = what IMAP returned), user files, and
//! the errors for unknown and path-like names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::Instant;

use backup_server::client::Fetched;
use formats::cyrus::index::Index;
use formats::protocol::ErrorCode;
use formats::protocol::UserFile;
use formats::protocol::UserFileId;
use formats::Guid;
use tests::rig::Backupd;
use tests::CyrusInstance;

#[test]
fn backupd_serves_a_real_cyrus() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth = cyrus.truth().expect("imap_truth.py");

    let backupd = Backupd::start(&cyrus, "e2e-secret-0123456789");
    let mut c = backupd.connect();

    // Users, with the partition of their INBOX.
    let users = c.list_users().expect("list users");
    let names: BTreeSet<&str> = users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(names, truth.users());
    for u in &users {
        let inbox = truth.folder(&u.user, "INBOX").expect("an INBOX in truth");
        assert_eq!(
            Some(u.partition.as_str()),
            inbox.partition.as_deref(),
            "{}",
            u.user
        );
    }

    // Every user's listing, pipelined: one round trip for all of them.
    let pending: Vec<_> = users
        .iter()
        .map(|u| c.send_list_folders(&u.user).unwrap())
        .collect();
    let mut listings = BTreeMap::new();
    for (u, p) in users.iter().zip(pending) {
        listings.insert(u.user.clone(), c.recv(p).expect("list folders"));
    }

    let t = Instant::now();
    let (mut folders, mut messages, mut bytes, mut user_files) = (0, 0, 0u64, 0);
    for (user, listing) in &listings {
        let by_id: BTreeMap<&str, _> = listing
            .folders
            .iter()
            .map(|f| (f.uniqueid.as_str(), f))
            .collect();
        let truth_folders: Vec<_> = truth.folders_of(user).collect();
        assert_eq!(
            listing.folders.len(),
            truth_folders.len(),
            "{user}: {:?}",
            listing.folders.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        for (name, ft) in truth_folders {
            let id = ft.uniqueid.as_deref().expect("unique id in truth");
            let f = by_id
                .get(id)
                .unwrap_or_else(|| panic!("{user}/{name}: unique id {id} not listed"));
            assert_eq!(f.uidvalidity, ft.uidvalidity, "{user}/{name}");
            assert_eq!(Some(f.partition.as_str()), ft.partition.as_deref());

            // Meta copy: the index parses and holds the live UIDs IMAP reported.
            let meta = c.copy_meta(user, id).expect("copy meta");
            assert_eq!(meta.header.0.len() as u64, meta.header.1.size);
            assert_eq!(meta.index.0.len() as u64, meta.index.1.size);
            let index = Index::parse(&meta.index.0).expect("cyrus.index parses");
            let mut live: BTreeMap<u32, Guid> = BTreeMap::new();
            for rec in index.records() {
                let rec = rec.expect("record");
                if !rec.is_expunged() {
                    live.insert(rec.uid, rec.guid.expect("GUID (index 10+)"));
                }
            }
            let imap_uids: Vec<u32> = ft.messages.iter().map(|m| m.uid).collect();
            assert_eq!(
                live.keys().copied().collect::<Vec<_>>(),
                imap_uids,
                "{user}/{name}"
            );

            // Every message streamed: SHA-1 of the bytes = GUID = IMAP's SHA-1.
            let uids: Vec<u32> = live.keys().copied().collect();
            let mut stream = c.fetch_messages(user, id, &uids).expect("fetch");
            let mut i = 0;
            while let Some(item) = stream.next_message().expect("next message") {
                let Fetched::Message {
                    uid,
                    size,
                    mut body,
                } = item
                else {
                    panic!("{user}/{name}: {item:?}")
                };
                assert_eq!(uid, uids[i]);
                let mut data = Vec::new();
                body.read_to_end(&mut data).expect("message bytes");
                assert_eq!(data.len() as u64, size);
                let guid = Guid::of(&data);
                assert_eq!(guid, live[&uid], "{user}/{name} UID {uid}");
                assert_eq!(
                    guid.to_hex(),
                    ft.messages[i].sha1,
                    "{user}/{name} UID {uid}"
                );
                bytes += size;
                messages += 1;
                i += 1;
            }
            drop(stream);
            assert_eq!(i, uids.len());
            folders += 1;
        }

        // User files: what the listing announced can be fetched, size for size.
        let ids: Vec<_> = listing.user_files.iter().map(|f| f.id.clone()).collect();
        for ((id, file), announced) in c
            .fetch_user_files(user, &ids)
            .expect("user files")
            .into_iter()
            .zip(&listing.user_files)
        {
            match file {
                UserFile::Found { bytes: b, stat } => {
                    // A sieve script's stat data are its #sieve message file's (change
                    // detection); its bytes are the script source inside that message.
                    if matches!(id, UserFileId::Seen | UserFileId::Subscriptions) {
                        assert_eq!(b.len() as u64, stat.size, "{user} {id:?}");
                    }
                    assert_eq!(stat.inode, announced.stat.inode, "{user} {id:?}");
                    user_files += 1;
                }
                other => panic!("{user} {id:?}: {other:?}"),
            }
        }
    }
    eprintln!(
        "backupd e2e: {} users, {folders} folders, {messages} messages ({bytes} bytes), \
         {user_files} user files in {:?}",
        users.len(),
        t.elapsed()
    );
    assert!(messages > 0 && user_files > 0);

    // Errors name what failed; the connection stays usable after each.
    let (user, listing) = listings.iter().next().unwrap();
    let e = c.list_folders("nosuchuser").unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::UnknownUser, "{e}");
    assert!(e.to_string().contains("\"nosuchuser\""), "{e}");
    for bad in ["../etc", "u000/../u001", "a\0b", ".."] {
        let e = c.list_folders(bad).unwrap_err();
        assert_eq!(e.remote().unwrap().code, ErrorCode::BadName, "{bad:?}: {e}");
    }
    let e = c.copy_meta(user, "nosuchid0000").unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::UnknownFolder, "{e}");
    let e = c.copy_meta(user, "../../../etc").unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::BadName, "{e}");
    let inbox = listing.folders.iter().find(|f| f.name == "INBOX").unwrap();
    let got = c
        .fetch_messages(user, &inbox.uniqueid, &[999_999])
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(got, vec![Err(None)], "a UID with no file is gone");
    c.ping().expect("still usable");
    backupd.shutdown();
}
