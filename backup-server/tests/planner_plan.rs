//! The planner's decisions, from a listing and a store built with the run writer: which
//! folders are unchanged, renamed (a link only), copied (new, changed, revived), which
//! are tombstoned, which messages are fetched and which user files.

mod store_common;

use backup_server::backup::plan::{
    messages_to_fetch, plan_for, unanswered_live, CopyReason, FolderAction, FolderStep, Plan,
    Wanted,
};
use backup_server::store::{RunEnd, Store};
use formats::protocol::{FolderStat, UserFileId, UserFileStat, UserListing};
use formats::Guid;
use store_common::*;

fn action_of<'p>(p: &'p Plan, l: &UserListing, uniqueid: &str) -> &'p FolderAction {
    let FolderStep { action, .. } = p
        .folders
        .iter()
        .find(|s| l.folders[s.index].uniqueid == uniqueid)
        .expect("folder planned");
    action
}

struct Fixture {
    _root: tempfile::TempDir,
    store: Store,
    inbox: Snap,
    work: Snap,
    old: Snap,
}

/// A store after one complete run holding INBOX, Work and Old (two messages shared).
fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let mut store = Store::open(root.path(), "alice", opts(&clock)).unwrap();
    let m: Vec<Vec<u8>> = (0..4).map(|i| message(i, 500)).collect();
    let inbox = Snap::new(
        "uid-inbox",
        "INBOX",
        7,
        &[Rec::new(1, &m[0]), Rec::new(2, &m[1])],
        100,
    );
    let work = Snap::new(
        "uid-work",
        "Work",
        7,
        &[Rec::new(1, &m[1]), Rec::new(2, &m[2])],
        200,
    );
    let old = Snap::new("uid-old", "Old", 7, &[Rec::new(1, &m[3])], 300);
    commit_run(&mut store, &m[..4], &[&inbox, &work, &old]);
    clock.advance(10);
    Fixture {
        _root: root,
        store,
        inbox,
        work,
        old,
    }
}

#[test]
fn empty_store_copies_everything() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let store = Store::open(root.path(), "bob", opts(&clock)).unwrap();
    let s = Snap::new("u1", "INBOX", 7, &[], 10);
    let listing = UserListing {
        folders: vec![listed(&s)],
        user_files: vec![UserFileStat {
            id: UserFileId::Seen,
            stat: stat(1, 1, 1),
        }],
    };
    let p = plan_for(store.catalog(), &listing).unwrap();
    assert_eq!(
        action_of(&p, &listing, "u1"),
        &FolderAction::Copy {
            reason: CopyReason::New,
            renamed_from: None
        }
    );
    assert!(p.tombstones.is_empty());
    assert_eq!(p.user_files, vec![UserFileId::Seen]);
}

#[test]
fn unchanged_renamed_changed_new_and_vanished() {
    let f = fixture();
    let mut work = listed(&f.work);
    work.name = "Projects".into();
    let mut inbox = listed(&f.inbox);
    inbox.index.mtime = formats::Timestamp::from_secs(101);
    let fresh = Snap::new("uid-new", "Fresh", 7, &[], 400);
    let listing = UserListing {
        folders: vec![inbox, work, listed(&fresh)],
        user_files: vec![UserFileStat {
            id: UserFileId::Subscriptions,
            stat: stat(10, 50, 99),
        }],
    };
    let p = plan_for(f.store.catalog(), &listing).unwrap();
    assert_eq!(
        action_of(&p, &listing, "uid-inbox"),
        &FolderAction::Copy {
            reason: CopyReason::Changed,
            renamed_from: None
        }
    );
    assert_eq!(
        action_of(&p, &listing, "uid-work"),
        &FolderAction::Rename {
            from: "Work".into()
        }
    );
    assert_eq!(
        action_of(&p, &listing, "uid-new"),
        &FolderAction::Copy {
            reason: CopyReason::New,
            renamed_from: None
        }
    );
    assert_eq!(p.tombstones, vec!["uid-old".to_owned()]);
    // Subscriptions unchanged: not fetched.
    assert!(p.user_files.is_empty());
    assert_eq!(p.copies().count(), 2);
}

#[test]
fn every_stat_field_and_the_partition_count() {
    let f = fixture();
    let base = listed(&f.inbox);
    type Change = Box<dyn Fn(&mut FolderStat)>;
    let changes: Vec<(&str, Change)> = vec![
        ("header size", Box::new(|s| s.header.size += 1)),
        ("header inode", Box::new(|s| s.header.inode += 1)),
        (
            "index mtime nanos",
            Box::new(|s| s.index.mtime = formats::Timestamp::new(s.index.mtime.secs, 1).unwrap()),
        ),
        ("index size", Box::new(|s| s.index.size += 1)),
        (
            "annotations appear",
            Box::new(|s| s.annotations = Some(stat(1, 1, 1))),
        ),
        ("partition", Box::new(|s| s.partition = "p2".into())),
    ];
    for (what, change) in changes {
        let mut s = base.clone();
        change(&mut s);
        let listing = UserListing {
            folders: vec![s, listed(&f.work), listed(&f.old)],
            user_files: vec![],
        };
        let p = plan_for(f.store.catalog(), &listing).unwrap();
        assert!(
            matches!(
                action_of(&p, &listing, "uid-inbox"),
                FolderAction::Copy {
                    reason: CopyReason::Changed,
                    ..
                }
            ),
            "{what}"
        );
        assert_eq!(
            action_of(&p, &listing, "uid-work"),
            &FolderAction::Unchanged
        );
        assert!(p.tombstones.is_empty());
    }
}

#[test]
fn renamed_and_changed_is_one_copy() {
    let f = fixture();
    let mut work = listed(&f.work);
    work.name = "Projects".into();
    work.index.size += 96;
    let listing = UserListing {
        folders: vec![listed(&f.inbox), work, listed(&f.old)],
        user_files: vec![],
    };
    let p = plan_for(f.store.catalog(), &listing).unwrap();
    assert_eq!(
        action_of(&p, &listing, "uid-work"),
        &FolderAction::Copy {
            reason: CopyReason::Changed,
            renamed_from: Some("Work".into())
        }
    );
}

#[test]
fn a_deleted_folder_that_returns_is_revived() {
    let mut f = fixture();
    let mut run = f.store.begin_run().unwrap();
    assert!(run.tombstone("uid-old").unwrap());
    run.commit(RunEnd::Complete).unwrap();
    let listing = UserListing {
        folders: vec![listed(&f.inbox), listed(&f.work), listed(&f.old)],
        user_files: vec![],
    };
    let p = plan_for(f.store.catalog(), &listing).unwrap();
    assert!(matches!(
        action_of(&p, &listing, "uid-old"),
        FolderAction::Copy {
            reason: CopyReason::Revived,
            ..
        }
    ));
    // And gone again: no second tombstone for a folder already deleted.
    let listing = UserListing {
        folders: vec![listed(&f.inbox), listed(&f.work)],
        user_files: vec![],
    };
    let p = plan_for(f.store.catalog(), &listing).unwrap();
    assert!(p.tombstones.is_empty());
}

#[test]
fn user_files_by_stat() {
    let f = fixture();
    let listing = UserListing {
        folders: vec![listed(&f.inbox), listed(&f.work), listed(&f.old)],
        user_files: vec![
            UserFileStat {
                id: UserFileId::Subscriptions,
                stat: stat(10, 51, 99),
            },
            UserFileStat {
                id: UserFileId::SieveScript("main".into()),
                stat: stat(10, 51, 7),
            },
            UserFileStat {
                id: UserFileId::SieveActive,
                stat: stat(4, 51, 8),
            },
        ],
    };
    let p = plan_for(f.store.catalog(), &listing).unwrap();
    assert_eq!(
        p.user_files,
        vec![
            UserFileId::Subscriptions,
            UserFileId::SieveScript("main".into()),
            UserFileId::SieveActive
        ]
    );
}

#[test]
fn fetch_only_what_the_store_lacks_once_per_guid() {
    let f = fixture();
    let held = message(1, 500);
    let new_a = message(10, 500);
    let new_b = message(11, 500);
    let recs = [
        Rec::new(1, &held),
        Rec::new(2, &new_a).expunged(),
        Rec::new(3, &new_a),
        Rec::new(4, &new_b),
        Rec::new(5, &new_b),
        Rec::new(6, &message(12, 300)).expunged(),
    ];
    let index = index_bytes(7, &recs);
    let mut asked = 0;
    let (wanted, no_guid) = messages_to_fetch(&index, &[], |g| {
        asked += 1;
        f.store.catalog().has_message(g)
    })
    .unwrap();
    assert!(no_guid.is_empty());
    let uids: Vec<(u32, bool)> = wanted.iter().map(|w| (w.uid, w.expunged)).collect();
    // new_a by its live UID 3, new_b once (UID 4), the expunged-only one too (UID 6).
    assert_eq!(uids, vec![(3, false), (4, false), (6, true)]);
    assert_eq!(wanted[0].guid, Guid::of(&new_a));
    // One store lookup per distinct GUID.
    assert_eq!(asked, 4);
    // Diffed against the folder's stored records: a record with the same UID and GUID is
    // held without a lookup; one whose UID the store has with another GUID is looked up.
    let stored = [
        (1, Guid::of(&held)),
        (3, Guid::of(&message(99, 10))),
        (9, Guid::of(&new_b)),
    ];
    let mut asked_for = Vec::new();
    let (again, _) = messages_to_fetch(&index, &stored, |g| {
        asked_for.push(*g);
        f.store.catalog().has_message(g)
    })
    .unwrap();
    assert_eq!(again, wanted);
    assert!(!asked_for.contains(&Guid::of(&held)), "UID 1 was looked up");
    assert_eq!(asked_for.len(), 3);
    // A damaged index is refused with its offset.
    let err = messages_to_fetch(&index[..index.len() - 10], &[], |_| Ok(false)).unwrap_err();
    assert!(err.to_string().contains("cyrus.index"), "{err}");
}

#[test]
fn a_reply_that_skips_a_live_uid_is_caught() {
    // backupd must answer every UID asked for, with bytes or "gone"; a live one it skips would
    // otherwise leave the snapshot naming a message the store lacks.
    let w = |uid, expunged| Wanted {
        uid,
        guid: Guid::of(&uid.to_be_bytes()),
        internal_date: formats::Timestamp::from_secs(0),
        expunged,
    };
    let wanted = [w(1, false), w(2, true), w(3, false), w(4, false)];
    let answered: std::collections::HashSet<u32> = [1, 4].into_iter().collect();
    assert_eq!(
        unanswered_live(&wanted, &answered),
        vec![3],
        "UID 2 is expunged: gone is fine"
    );
    let all: std::collections::HashSet<u32> = [1, 3, 4].into_iter().collect();
    assert!(unanswered_live(&wanted, &all).is_empty());
}
