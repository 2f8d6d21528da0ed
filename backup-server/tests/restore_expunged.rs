//! Expunged mail restored on purpose comes back without `\Deleted` (unless
//! `keep_deleted_flag`); a message the user marked `\Deleted` and never expunged keeps it.
//! Checked through Maildir's `T` letter and mbox's `X-Status: D`, which follow the flags.

mod store_common;

use std::collections::BTreeMap;
use std::path::Path;

use backup_server::restore::{restore, Selection, Target};
use backup_server::store::{MessageInfo, RunEnd, Store, StoreReader};
use formats::Timestamp;
use store_common::*;

const USER: &str = "eve";
const T1: i64 = 1_800_000_000;
const T2: i64 = T1 + 86_400;
const T3: i64 = T1 + 2 * 86_400;

/// Run 1 at T1: INBOX UIDs 1-4: 1 `\Deleted \Seen`, 2 `\Deleted`, 3 `\Deleted`, 4 `\Seen`;
/// Old UID 1 `\Deleted \Flagged`. Run 2 at T2: UID 1 expunged (delayed: still in
/// cyrus.index), UID 3 gone at once (immediate expunge), UID 2 still marked, not expunged;
/// Old deleted. Run 3 at T3: UID 1 gone from cyrus.index too.
fn build(root: &Path) {
    let clock = TestClock::at(T1);
    let mut store = Store::open(root, USER, opts(&clock)).unwrap();
    let mut run = store.begin_run().unwrap();
    let msgs: Vec<Vec<u8>> = (1..=5u64).map(|s| message(s, 2000)).collect();
    for m in &msgs {
        run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
    }
    let inbox = vec![
        Rec::new(1, &msgs[0]).deleted().seen(),
        Rec::new(2, &msgs[1]).deleted(),
        Rec::new(3, &msgs[2]).deleted(),
        Rec::new(4, &msgs[3]).seen(),
    ];
    let old = [Rec::new(1, &msgs[4]).deleted().flagged()];
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &inbox, T1).as_snapshot())
        .unwrap();
    run.add_folder_snapshot(Snap::new("u-old", "Old", 8, &old, T1).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    clock.set(T2);
    let mut run = store.begin_run().unwrap();
    let r2 = vec![
        inbox[0].clone().expunged(),
        inbox[1].clone(),
        inbox[3].clone(),
    ];
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &r2, T2).as_snapshot())
        .unwrap();
    assert!(run.tombstone("u-old").unwrap());
    run.commit(RunEnd::Complete).unwrap();

    clock.set(T3);
    let mut run = store.begin_run().unwrap();
    let r3 = vec![inbox[1].clone(), inbox[3].clone()];
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &r3, T3).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();
}

/// UID -> Maildir flag letters of the messages restored into `dir` (one folder's `cur`).
fn maildir_flags(cur: &Path) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(cur).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let uid: u32 = name
            .split(".R")
            .nth(1)
            .unwrap()
            .split('G')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let flags = name.rsplit(":2,").next().unwrap().to_owned();
        out.insert(uid, flags);
    }
    out
}

fn to_maildir(root: &Path, name: &str, s: &Selection) -> (std::path::PathBuf, u64) {
    let out = root.join(name);
    let rep = restore(root, USER, s, &Target::Maildir(out.clone())).unwrap();
    (out, rep.messages)
}

/// A minute after `t`: after that run's entries (a run's times grow by a nanosecond an
/// entry from its start).
fn at(t: i64) -> Option<Timestamp> {
    Some(Timestamp::from_secs(t + 60))
}

#[test]
fn the_store_knows_which_uids_were_expunged() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let r = StoreReader::open(root.path(), USER).unwrap();
    let c = r.catalog();
    // Delayed expunge, immediate expunge: expunged. Still marked: not. Gone with its
    // folder's deletion: not.
    assert!(c.was_expunged("u-inbox", 1).unwrap());
    assert!(!c.was_expunged("u-inbox", 2).unwrap());
    assert!(c.was_expunged("u-inbox", 3).unwrap());
    assert!(!c.was_expunged("u-inbox", 4).unwrap());
    assert!(!c.was_expunged("u-old", 1).unwrap());
    assert!(!c.was_expunged("u-inbox", 99).unwrap());
}

#[test]
fn expunged_mail_comes_back_without_deleted_unless_asked() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let inbox = |at, include_expunged, keep_deleted_flag| Selection {
        folder: Some("INBOX".into()),
        at,
        include_expunged,
        keep_deleted_flag,
        ..Selection::default()
    };
    let want = |v: &[(u32, &str)]| {
        v.iter()
            .map(|(u, f)| (*u, f.to_string()))
            .collect::<BTreeMap<_, _>>()
    };

    // An older --at: UIDs 1 and 3 were visible then, expunged since: no T. UID 2 was
    // marked and never expunged: T kept.
    let (d, n) = to_maildir(root.path(), "older", &inbox(at(T1), false, false));
    assert_eq!(n, 4);
    assert_eq!(
        maildir_flags(&d.join("cur")),
        want(&[(1, "S"), (2, "T"), (3, ""), (4, "S")])
    );
    // The same with --keep-deleted-flag: every mark as it was.
    let (d, _) = to_maildir(root.path(), "older-kept", &inbox(at(T1), false, true));
    assert_eq!(
        maildir_flags(&d.join("cur")),
        want(&[(1, "ST"), (2, "T"), (3, "T"), (4, "S")])
    );
    // --include-expunged at T2: UID 1 expunged then (delayed), UID 3 gone.
    let (d, n) = to_maildir(root.path(), "t2", &inbox(at(T2), true, false));
    assert_eq!(n, 4);
    assert_eq!(
        maildir_flags(&d.join("cur")),
        want(&[(1, "S"), (2, "T"), (3, ""), (4, "S")])
    );
    // Newest state with --include-expunged: the same, UID 1 gone by now.
    let (d, _) = to_maildir(root.path(), "now", &inbox(None, true, false));
    assert_eq!(
        maildir_flags(&d.join("cur")),
        want(&[(1, "S"), (2, "T"), (3, ""), (4, "S")])
    );
    // A plain restore now: only what is visible, the mark of UID 2 kept.
    let (d, n) = to_maildir(root.path(), "plain", &inbox(None, false, false));
    assert_eq!(n, 2);
    assert_eq!(maildir_flags(&d.join("cur")), want(&[(2, "T"), (4, "S")]));

    // One message by UID, expunged by then: no T.
    let one = Selection {
        uid: Some(1),
        ..inbox(at(T2), true, false)
    };
    let (d, n) = to_maildir(root.path(), "one", &one);
    assert_eq!(n, 1);
    assert_eq!(maildir_flags(&d.join("cur")), want(&[(1, "S")]));

    // A folder deleted later, restored as of before: its message was never expunged, the
    // user's mark stays.
    let old = Selection {
        folder: Some("Old".into()),
        at: at(T1),
        ..Selection::default()
    };
    let (d, _) = to_maildir(root.path(), "old", &old);
    assert_eq!(maildir_flags(&d.join(".Old/cur")), want(&[(1, "FT")]));
}

#[test]
fn mbox_x_status_follows_the_flags() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let mbox = |name: &str, keep: bool| {
        let f = root.path().join(name);
        let s = Selection {
            folder: Some("INBOX".into()),
            at: at(T1),
            keep_deleted_flag: keep,
            ..Selection::default()
        };
        restore(root.path(), USER, &s, &Target::Mbox(f.clone())).unwrap();
        let text = String::from_utf8(std::fs::read(f).unwrap()).unwrap();
        // The X-Status line of each message, in UID order.
        text.split("From mailbackup ")
            .skip(1)
            .map(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("X-Status: "))
                    .unwrap_or("")
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(mbox("a.mbox", false), ["", "D", "", ""]);
    assert_eq!(mbox("b.mbox", true), ["D", "D", "D", ""]);
}
