//! `folder_at` (ls and restore by folder name) agrees with `folders_at` after a partial
//! run. Found by the store model (fuzz/fuzz_targets/store_model.rs): a folder deleted
//! and a new one given its name in a night whose run ended partial (the tombstone did not
//! take effect, the new folder's link did), then the deleted folder tombstoned again by the
//! next complete run. The newest `names` row named `A` was then the old folder's
//! tombstone, so `folder_at("A")` answered "no such folder" while `folders_at` listed the
//! new folder as `A`.
mod store_common;

use backup_server::store::{RunEnd, Store};
use formats::Timestamp;
use store_common::{opts, Snap, TestClock};

/// Which folder is named `A` at `at`, by both queries.
fn named_a(store: &Store, at: Option<Timestamp>) -> (Vec<String>, Option<String>) {
    let cat = store.catalog();
    let listed = cat
        .folders_at(at)
        .unwrap()
        .into_iter()
        .filter(|f| f.name == "A")
        .map(|f| f.unique_id)
        .collect();
    (listed, cat.folder_at("A", at).unwrap().map(|f| f.unique_id))
}

#[test]
fn a_name_taken_over_in_a_partial_run_is_found_after_the_old_folders_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_000_000);
    let mut store = Store::open(dir.path(), "alice", opts(&clock)).unwrap();
    let old = Snap::new("F0", "A", 7, &[], 10);
    let new = Snap::new("F1", "A", 8, &[], 20);

    // Night 1: folder F0 named A.
    let mut run = store.begin_run().unwrap();
    run.add_folder_snapshot(old.as_snapshot()).unwrap();
    run.commit(RunEnd::Complete).unwrap();
    // Night 2: F0 deleted, F1 created as A; the run ends partial (another folder failed).
    clock.advance(60);
    let mut run = store.begin_run().unwrap();
    assert!(run.tombstone("F0").unwrap());
    run.add_folder_snapshot(new.as_snapshot()).unwrap();
    run.commit(RunEnd::Partial).unwrap();
    // Entries of a second are 1 ns apart: the end of the second follows them all.
    let night2 = Timestamp::new(clock.secs(), 999_999_999);
    // Both are live now (F0's tombstone is not trusted); the newest link of A is F1's.
    assert_eq!(
        named_a(&store, night2),
        (
            vec!["F0".to_owned(), "F1".to_owned()],
            Some("F1".to_owned())
        )
    );
    // Night 3: complete; F0 is tombstoned again and F1, unchanged, is not linked again.
    clock.advance(60);
    let mut run = store.begin_run().unwrap();
    assert!(run.tombstone("F0").unwrap());
    run.commit(RunEnd::Complete).unwrap();

    let want = (vec!["F1".to_owned()], Some("F1".to_owned()));
    assert_eq!(named_a(&store, None), want);
    assert_eq!(
        named_a(&store, Timestamp::new(clock.secs(), 999_999_999)),
        want
    );
    // As of night 2 nothing changed.
    assert_eq!(named_a(&store, night2).1, Some("F1".to_owned()));
}
