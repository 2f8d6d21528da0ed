//! `ls` over a store built with the run writer: the folder list and a folder's messages as
//! of two times, a rename, and the errors for a missing store and folder.

mod store_common;

use backup_server::ls::ls;
use backup_server::store::{MessageInfo, RunEnd, Store};
use formats::{Guid, Timestamp};
use store_common::*;

fn text(root: &std::path::Path, folder: Option<&str>, at: Option<i64>) -> String {
    let mut out = Vec::new();
    ls(
        root,
        "alice",
        folder,
        at.map(Timestamp::from_secs),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
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

    let now = text(root.path(), None, None);
    let lines: Vec<&str> = now.lines().collect();
    assert!(
        lines[0].starts_with("# user alice, as of now: 1 folders"),
        "{now}"
    );
    assert_eq!(
        lines[1],
        "FOLDER\tMESSAGES\tUIDVALIDITY\tLAST-UID\tSNAPSHOT\tUNIQUEID"
    );
    assert!(lines[2].starts_with("Renamed\t2\t9\t3\t"), "{now}");
    assert!(lines[2].ends_with("\tuid-inbox"), "{now}");

    let then = text(root.path(), None, Some(t1));
    assert!(
        then.lines().nth(2).unwrap().starts_with("INBOX\t2\t9\t2\t"),
        "{then}"
    );

    let msgs = text(root.path(), Some("INBOX"), Some(t1));
    let rows: Vec<&str> = msgs.lines().skip(1).collect();
    assert_eq!(rows[0], "UID\tFLAGS\tINTERNALDATE\tSIZE\tGUID");
    assert_eq!(
        rows[1],
        format!(
            "1\t\\Seen\t14-Nov-2023 22:13:21 +0000\t{}\t{}",
            m[0].len(),
            Guid::of(&m[0]).to_hex()
        )
    );
    assert!(rows[2].starts_with("2\t$Label1\t"), "{msgs}");
    assert_eq!(rows.len(), 3);

    let msgs = text(root.path(), Some("Renamed"), None);
    let uids: Vec<&str> = msgs
        .lines()
        .skip(2)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(uids, ["1", "3"], "expunged left out: {msgs}");
    assert!(msgs
        .lines()
        .nth(2)
        .unwrap()
        .starts_with("1\t\\Flagged \\Seen\t"));

    // The old name is gone now, the new one did not exist then.
    let mut out = Vec::new();
    let e = ls(root.path(), "alice", Some("INBOX"), None, &mut out).unwrap_err();
    assert!(e.to_string().contains("no folder \"INBOX\""), "{e}");
    let e = ls(
        root.path(),
        "alice",
        Some("Renamed"),
        Some(Timestamp::from_secs(t1)),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no folder"), "{e}");
    let e = ls(root.path(), "bob", None, None, &mut out).unwrap_err();
    assert!(e.to_string().contains("user bob: no backup"), "{e}");
}
