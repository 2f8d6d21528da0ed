//! `ls` over a store built with the run writer: the folder list and a folder's messages as
//! of two times, a rename, and the errors for a missing store and folder; the same listings
//! as the binary prints them.

mod store_common;

use backup_server::ls::{ls, Listing, LsError};
use backup_server::store::{FolderAt, MessageInfo, RunEnd, SnapshotInfo, Store};
use formats::{Guid, Timestamp};
use store_common::*;

fn listing(root: &std::path::Path, folder: Option<&str>, at: Option<i64>) -> Listing {
    ls(root, "alice", folder, at.map(Timestamp::from_secs)).unwrap()
}

fn folders(l: Listing) -> Vec<FolderAt> {
    match l {
        Listing::Folders { folders, .. } => folders,
        other => panic!("expected folders, found {other:#?}"),
    }
}

/// (uid, flags) of each message, and the folder's snapshot.
fn messages(l: Listing) -> (Vec<(u32, Vec<String>)>, SnapshotInfo) {
    match l {
        Listing::Messages {
            messages, snapshot, ..
        } => (
            messages.into_iter().map(|m| (m.uid, m.flags)).collect(),
            *snapshot,
        ),
        other => panic!("expected messages, found {other:#?}"),
    }
}

/// `backup-server ls` over the store root `root`: its stdout.
fn binary(root: &std::path::Path, args: &[&str]) -> String {
    let dir = root.parent().unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "ls-test-secret-0123456789\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = dir.join("b.toml");
    std::fs::write(
        &config,
        format!(
            "store_root = {:?}\n[[server]]\nname = \"m\"\naddress = \"127.0.0.1:1\"\n\
             secret_file = \"secret\"\n[[raidset]]\nname = \"a\"\nserver = \"m\"\n\
             partitions = [\"default\"]\n",
            root
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backup-server"))
        .arg("--config")
        .arg(&config)
        .arg("ls")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn folders_and_messages_at_two_times() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let mut store = Store::open(root.path(), "alice", opts(&clock)).unwrap();
    let m: Vec<Vec<u8>> = (0..3).map(|i| message(i, 300)).collect();
    let mut run = store.begin_run().unwrap();
    for d in &m {
        run.add_message(Guid::of(d), d.len() as u64, &d[..], MessageInfo::default())
            .unwrap();
    }
    let inbox = Snap::new(
        "uid-inbox",
        "INBOX",
        9,
        &[Rec::new(1, &m[0]).seen(), Rec::new(2, &m[1]).keyword()],
        10,
    );
    run.add_folder_snapshot(inbox.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
    // Entries of a run within one clock second get times 1 ns apart: look a bit later.
    clock.advance(50);
    let t1 = clock.secs();
    clock.advance(50);

    let mut run = store.begin_run().unwrap();
    let inbox2 = Snap::new(
        "uid-inbox",
        "Renamed",
        9,
        &[
            Rec::new(1, &m[0]).seen().flagged(),
            Rec::new(2, &m[1]).expunged(),
            Rec::new(3, &m[2]),
        ],
        20,
    );
    run.add_folder_snapshot(inbox2.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();

    let now = folders(listing(root.path(), None, None));
    assert_eq!(now.len(), 1, "{now:#?}");
    assert_eq!(
        (&now[0].name[..], &now[0].unique_id[..]),
        ("Renamed", "uid-inbox")
    );
    let snap = now[0].snapshot.as_ref().unwrap();
    assert_eq!((snap.exists, snap.uidvalidity, snap.last_uid), (2, 9, 3));

    let then = folders(listing(root.path(), None, Some(t1)));
    let snap = then[0].snapshot.as_ref().unwrap();
    assert_eq!(
        (
            &then[0].name[..],
            snap.exists,
            snap.uidvalidity,
            snap.last_uid
        ),
        ("INBOX", 2, 9, 2)
    );

    let (msgs, _) = messages(listing(root.path(), Some("INBOX"), Some(t1)));
    assert_eq!(
        msgs,
        [
            (1, vec!["\\Seen".to_owned()]),
            (2, vec!["$Label1".to_owned()])
        ]
    );

    let (msgs, _) = messages(listing(root.path(), Some("Renamed"), None));
    assert_eq!(
        msgs,
        [
            (1, vec!["\\Flagged".to_owned(), "\\Seen".to_owned()]),
            (3, vec![])
        ],
        "expunged left out"
    );

    // The binary's text of the same listings.
    let text = binary(root.path(), &["--user", "alice"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# user alice, as of now: 1 folders", "{text}");
    assert_eq!(
        lines[1],
        "FOLDER\tMESSAGES\tUIDVALIDITY\tLAST-UID\tSNAPSHOT\tUNIQUEID"
    );
    assert!(lines[2].starts_with("Renamed\t2\t9\t3\t"), "{text}");
    assert!(lines[2].ends_with("\tuid-inbox"), "{text}");
    let text = binary(
        root.path(),
        &[
            "--user",
            "alice",
            "--folder",
            "INBOX",
            "--at",
            &t1.to_string(),
        ],
    );
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows[0], "UID\tFLAGS\tINTERNALDATE\tSIZE\tGUID");
    assert_eq!(
        rows[1],
        format!(
            "1\t\\Seen\t14-Nov-2023 22:13:21 +0000\t{}\t{}",
            m[0].len(),
            Guid::of(&m[0]).to_hex()
        )
    );
    assert!(rows[2].starts_with("2\t$Label1\t"), "{text}");
    assert_eq!(rows.len(), 3);
    let text = binary(root.path(), &["--user", "alice", "--folder", "Renamed"]);
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .starts_with("1\t\\Flagged \\Seen\t"),
        "{text}"
    );

    // The old name is gone now, the new one did not exist then.
    let e = ls(root.path(), "alice", Some("INBOX"), None).unwrap_err();
    assert!(matches!(&e, LsError::NoFolder { folder, at: None, .. } if folder == "INBOX"));
    assert!(e.to_string().contains("no folder \"INBOX\""), "{e}");
    let e = ls(
        root.path(),
        "alice",
        Some("Renamed"),
        Some(Timestamp::from_secs(t1)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no folder"), "{e}");
    let e = ls(root.path(), "bob", None, None).unwrap_err();
    assert!(matches!(&e, LsError::NoBackup { user, .. } if user == "bob"));
    assert!(e.to_string().contains("user bob: no backup"), "{e}");
}
