//! Quiet users (docs/store.md, "Quiet users"): the unchanged key a backup records when the
//! store has nothing to do for a listing, and when a later listing and store still match it
//! (the run may then skip the store) or not (the whole backup must run).

mod compact_common;
mod store_common;

use backup_server::backup::{plan_for, QuietKey};
use backup_server::compact::compact_store;
use backup_server::store::{MessageInfo, RunEnd, Store, StoreReader, UserDir};
use formats::protocol::{UserFileId, UserFileStat, UserListing};
use formats::Guid;
use std::path::Path;
use std::time::{Duration, SystemTime};
use store_common::*;
use testkit::Rng;

const USER: &str = "alice";

/// A store after one complete run holding INBOX and Work and the subscriptions, and the
/// listing backupd would send for exactly that state.
fn fixture(root: &Path, clock: &std::sync::Arc<TestClock>) -> (Store, UserListing) {
    let mut store = Store::open(root, USER, opts(clock)).unwrap();
    let m: Vec<Vec<u8>> = (0..3).map(|i| message(i, 700)).collect();
    let inbox = Snap::new(
        "uid-inbox",
        "INBOX",
        7,
        &[Rec::new(1, &m[0]), Rec::new(2, &m[1])],
        100,
    );
    let work = Snap::new("uid-work", "Work", 7, &[Rec::new(1, &m[2])], 200);
    commit_run(&mut store, &m, &[&inbox, &work]);
    clock.advance(10);
    let listing = UserListing {
        folders: vec![listed(&inbox), listed(&work)],
        user_files: vec![UserFileStat {
            id: UserFileId::Subscriptions,
            stat: stat(10, 50, 99),
        }],
    };
    (store, listing)
}

fn dir(root: &Path) -> UserDir {
    UserDir::new(root, USER).unwrap()
}

/// The key the backup records: only when its plan is empty. The data file's modification
/// time is set an hour back first: file times tick coarsely (a jiffy on many kernels), so a
/// write or a cut that came within the same tick as the key would otherwise leave them as
/// the key saw them; now any later change of the file shows in them, however soon.
fn key_of(store: &Store, listing: &UserListing) -> String {
    let plan = plan_for(store.catalog(), listing).unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    let data = store.catalog().data_path();
    std::fs::File::options()
        .write(true)
        .open(data)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
        .unwrap();
    QuietKey::of(USER, listing, data)
        .unwrap()
        .as_str()
        .to_owned()
}

#[test]
fn the_key_holds_while_listing_and_store_stay_as_they_were() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let (store, listing) = fixture(root.path(), &clock);
    let len = std::fs::metadata(store.catalog().data_path())
        .unwrap()
        .len();
    let key = key_of(&store, &listing);
    assert!(holds(&key, USER, &listing, &dir(root.path())));
    // What the skip is worth: the store, opened again with nothing to do, is untouched.
    drop(store);
    let store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    assert!(plan_for(store.catalog(), &listing).unwrap().is_empty());
    drop(store);
    // Readers (ls, restore) do not disturb it either.
    let r = StoreReader::open(root.path(), USER).unwrap();
    assert_eq!(r.catalog().folders_at(None).unwrap().len(), 2);
    drop(r);
    assert!(holds(&key, USER, &listing, &dir(root.path())));
    let store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    assert_eq!(
        std::fs::metadata(store.catalog().data_path())
            .unwrap()
            .len(),
        len
    );
    // Another user's name, or a key of another form, never matches.
    assert!(!holds(&key, "bob", &listing, &dir(root.path())));
    assert!(!holds(
        &key.replacen("k1", "k0", 1),
        USER,
        &listing,
        &dir(root.path())
    ));
    assert!(!holds("", USER, &listing, &dir(root.path())));
    assert!(!holds(
        &format!("{key} extra"),
        USER,
        &listing,
        &dir(root.path())
    ));
}

/// One way a listing can differ.
type Change = Box<dyn Fn(&mut UserListing)>;

#[test]
fn any_change_in_the_listing_breaks_the_key() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let (store, listing) = fixture(root.path(), &clock);
    let key = key_of(&store, &listing);
    let d = dir(root.path());
    let changes: Vec<(&str, Change)> = vec![
        (
            "index mtime",
            Box::new(|l| l.folders[0].index.mtime.nanos += 1),
        ),
        ("index size", Box::new(|l| l.folders[1].index.size += 1)),
        ("header inode", Box::new(|l| l.folders[0].header.inode += 1)),
        (
            "annotations appear",
            Box::new(|l| l.folders[0].annotations = Some(stat(5, 5, 5))),
        ),
        ("rename", Box::new(|l| l.folders[1].name = "Work2".into())),
        (
            "partition",
            Box::new(|l| l.folders[1].partition = "p2".into()),
        ),
        ("uidvalidity", Box::new(|l| l.folders[0].uidvalidity += 1)),
        ("folder gone", Box::new(|l| drop(l.folders.pop()))),
        (
            "folder new",
            Box::new(|l| {
                let mut f = l.folders[1].clone();
                f.uniqueid = "uid-new".into();
                f.name = "New".into();
                l.folders.push(f);
            }),
        ),
        ("order", Box::new(|l| l.folders.swap(0, 1))),
        (
            "user file stat",
            Box::new(|l| l.user_files[0].stat.size += 1),
        ),
        (
            "user file new",
            Box::new(|l| {
                l.user_files.push(UserFileStat {
                    id: UserFileId::Seen,
                    stat: stat(1, 1, 1),
                })
            }),
        ),
        ("user file gone", Box::new(|l| l.user_files.clear())),
    ];
    for (what, change) in changes {
        let mut l = listing.clone();
        change(&mut l);
        assert!(!holds(&key, USER, &l, &d), "{what}");
    }
    assert!(holds(&key, USER, &listing, &d));
}

#[test]
fn any_write_to_the_store_breaks_the_key() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let (mut store, listing) = fixture(root.path(), &clock);
    let d = dir(root.path());

    // A run committed after the key (another process's run, a run without a state db row).
    let key = key_of(&store, &listing);
    store.begin_run().unwrap().commit(RunEnd::Complete).unwrap();
    assert!(!holds(&key, USER, &listing, &d), "a committed run");

    // A run that wrote bytes and was rolled back: the file is cut back to the same length,
    // but its times changed. Skipping would have been right; not skipping is safe.
    let key = key_of(&store, &listing);
    let len = std::fs::metadata(store.catalog().data_path())
        .unwrap()
        .len();
    // Incompressible, so that the archive writer's buffer overflows into the file.
    let big = Rng::new(0x9e37_79b9_7f4a_7c15).bytes(1_000_000);
    let mut run = store.begin_run().unwrap();
    run.add_message(
        Guid::of(&big),
        big.len() as u64,
        &big[..],
        MessageInfo::default(),
    )
    .unwrap();
    assert!(std::fs::metadata(run.catalog().data_path()).unwrap().len() > len);
    run.abort();
    assert_eq!(
        std::fs::metadata(store.catalog().data_path())
            .unwrap()
            .len(),
        len
    );
    assert!(!holds(&key, USER, &listing, &d), "a rolled back run");

    // A torn tail cut at the next open.
    let key = key_of(&store, &listing);
    let path = store.catalog().data_path().to_path_buf();
    drop(store);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"garbage"))
        .unwrap();
    assert!(!holds(&key, USER, &listing, &d), "a torn tail");
    let store = Store::open(root.path(), USER, opts(&clock)).unwrap();
    assert!(!holds(&key, USER, &listing, &d), "cut again");

    // The store removed (an operator forcing a fresh full backup).
    let key = key_of(&store, &listing);
    drop(store);
    std::fs::remove_dir_all(d.path()).unwrap();
    assert!(!holds(&key, USER, &listing, &d), "store removed");
}

#[test]
fn compaction_breaks_the_key_reindex_keeps_it() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_700_000_000);
    let (mut store, listing) = fixture(root.path(), &clock);
    let d = dir(root.path());
    // Something dirty to compact away: INBOX's first message expunged long ago.
    let m: Vec<Vec<u8>> = (0..2).map(|i| message(i, 700)).collect();
    let inbox = Snap::new("uid-inbox", "INBOX", 7, &[Rec::new(2, &m[1])], 150);
    let mut run = store.begin_run().unwrap();
    run.add_folder_snapshot(inbox.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
    let mut listing = listing;
    listing.folders[0] = listed(&inbox);

    let key = key_of(&store, &listing);
    // Reindex rebuilds the index from the same data file, row for row: the store still
    // has nothing to do for the listing, and the key may stand.
    drop(store);
    let (store, _) = dir(root.path())
        .lock()
        .unwrap()
        .reindex(opts(&clock))
        .unwrap();
    assert!(plan_for(store.catalog(), &listing).unwrap().is_empty());
    assert!(holds(&key, USER, &listing, &d), "after reindex");

    // Compaction writes a new data file: the key names the old one and no longer holds.
    let now = 1_700_000_000 + 60 * 86_400;
    let (store, report) = compact_store(store, &compact_common::copts(now, 0.0, 0)).unwrap();
    assert!(report.new_data_file.is_some(), "{report:?}");
    assert!(!holds(&key, USER, &listing, &d), "after compaction");
    // The next backup finds nothing to do and records a key for the new file.
    let key = key_of(&store, &listing);
    assert!(holds(&key, USER, &listing, &d));
}

/// Whether the quiet key `key` (as the state db holds it) still holds.
fn holds(key: &str, user: &str, listing: &UserListing, dir: &UserDir) -> bool {
    QuietKey::from_stored(key).holds(user, listing, dir)
}
