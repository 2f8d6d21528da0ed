//! Retention under compaction, with an injected clock: an expunged message stays
//! restorable for the whole retention window and the first compaction after it drops it;
//! a message still in any folder is never dropped; a folder renamed long ago keeps all its
//! messages.

mod compact_common;
mod store_common;

use backup_server::compact::{compact_store, Decision};
use backup_server::store::{MessageInfo, RunEnd, Store};
use compact_common::*;
use store_common::*;

const T0: i64 = 1_700_000_000;

fn add(run: &mut backup_server::store::RunWriter<'_>, m: &[u8]) {
    run.add_message(guid(m), m.len() as u64, m, MessageInfo::default())
        .unwrap();
}

#[test]
fn expunged_mail_lives_out_the_window_and_no_longer() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(T0);
    let m: Vec<Vec<u8>> = (0..8)
        .map(|i| message(i, 5_000 + i as usize * 100))
        .collect();
    let mut store = Store::open(root.path(), "kim", opts(&clock)).unwrap();

    // Day 0: INBOX holds m1 m2 m3; Old holds m4 m5 and a copy of m1.
    let mut run = store.begin_run().unwrap();
    for x in &m[1..=5] {
        add(&mut run, x);
    }
    let inbox = [Rec::new(1, &m[1]), Rec::new(2, &m[2]), Rec::new(3, &m[3])];
    run.add_folder_snapshot(Snap::new("u-inbox", "user.kim", 10, &inbox, T0 - 10).as_snapshot())
        .unwrap();
    let old = [Rec::new(1, &m[4]), Rec::new(2, &m[5]), Rec::new(3, &m[1])];
    run.add_folder_snapshot(Snap::new("u-old", "user.kim.Old", 20, &old, T0 - 10).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    // Day 1: Old renamed to Archive (no data change).
    clock.set(T0 + DAY);
    let mut run = store.begin_run().unwrap();
    assert!(run.link_name("u-old", "user.kim.Archive").unwrap());
    run.commit(RunEnd::Complete).unwrap();

    // Day 2: m3 and m1 leave INBOX (m1 stays in Archive); m6 arrives.
    let t_exp = T0 + 2 * DAY;
    clock.set(t_exp);
    let mut run = store.begin_run().unwrap();
    add(&mut run, &m[6]);
    let inbox2 = [Rec::new(2, &m[2]), Rec::new(4, &m[6])];
    run.add_folder_snapshot(
        Snap::new("u-inbox", "user.kim", 10, &inbox2, t_exp - 10).as_snapshot(),
    )
    .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    let g3 = guid(&m[3]);
    let window: Vec<i64> = vec![T0 + 1, T0 + DAY + 1, t_exp - 1];
    let before = restorable(store.catalog(), &window);
    assert!(before.iter().any(|(_, _, _, g)| *g == g3));

    // Compactions all through the window (threshold 0: whenever anything is dirty).
    for now in [
        t_exp + 1,
        t_exp + DAY,
        t_exp + 7 * DAY,
        t_exp + RETENTION - 1,
    ] {
        let (s, r) = compact_store(store, &copts(now, 0.0, 0)).unwrap();
        store = s;
        assert!(
            store.catalog().has_message(&g3).unwrap(),
            "m3 dropped at {now}"
        );
        // Every restore at a time still inside the window gives what it gave before.
        let inside: Vec<i64> = window
            .iter()
            .copied()
            .filter(|t| *t >= now - RETENTION)
            .collect();
        let want: std::collections::BTreeSet<_> = before
            .iter()
            .filter(|x| x.0 >= now - RETENTION)
            .cloned()
            .collect();
        assert_eq!(
            restorable(store.catalog(), &inside),
            want,
            "at {now}: {r:?}"
        );
        assert_eq!(
            store.check(true).unwrap(),
            Vec::<backup_server::store::IndexFault>::new()
        );
    }

    // The first compaction after the window drops m3, and only m3 of the messages.
    let now = t_exp + RETENTION + 1;
    let (s, r) = compact_store(store, &copts(now, 0.0, 0)).unwrap();
    store = s;
    assert_eq!(r.decision, Decision::Compact);
    assert!(
        !store.catalog().has_message(&g3).unwrap(),
        "m3 kept past the window"
    );
    for i in [1, 2, 4, 5, 6] {
        assert!(
            store.catalog().has_message(&guid(&m[i])).unwrap(),
            "m{i} (still in a folder) dropped"
        );
    }
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<backup_server::store::IndexFault>::new()
    );
    assert_eq!(store.dir().data_files().unwrap().len(), 1);

    // Today's view: INBOX m2 m6, Archive (renamed long ago) m4 m5 m1, all readable.
    let now_view = restorable(store.catalog(), &[now]);
    let mut got: Vec<(String, u32)> = now_view.iter().map(|x| (x.1.clone(), x.2)).collect();
    got.sort();
    let want: Vec<(String, u32)> = vec![
        ("user.kim".into(), 2),
        ("user.kim".into(), 4),
        ("user.kim.Archive".into(), 1),
        ("user.kim.Archive".into(), 2),
        ("user.kim.Archive".into(), 3),
    ];
    assert_eq!(got, want);

    // Much later still, nothing live is ever dropped.
    let later = now + 400 * DAY;
    let (store, _) = compact_store(store, &copts(later, 0.0, 0)).unwrap();
    let late_view: Vec<(String, u32)> = restorable(store.catalog(), &[later])
        .iter()
        .map(|x| (x.1.clone(), x.2))
        .collect();
    assert_eq!(late_view, want);
    // And a backup run appends to the compacted store as to any other.
    clock.set(later + 1);
    let mut store = store;
    let mut run = store.begin_run().unwrap();
    add(&mut run, &m[7]);
    run.commit(RunEnd::Complete).unwrap();
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<backup_server::store::IndexFault>::new()
    );
}
