//! Point-in-time queries over a synthetic history: new mail, flag changes, expunges, a
//! rename, a new folder and a deleted one; ls at each moment; the planner's view; and
//! compaction's dirty-byte accounting.

mod store_common;

use std::collections::BTreeMap;

use backup_server::store::{MessageAt, MessageInfo, MessageState, RunEnd, Store};
use formats::{Guid, Timestamp};
use store_common::*;

struct History {
    _root: tempfile::TempDir,
    store: Store,
    m: Vec<Vec<u8>>,
}

fn t(secs: i64) -> Option<Timestamp> {
    Some(Timestamp::from_secs(secs))
}

fn add(run: &mut backup_server::store::RunWriter<'_>, m: &[u8]) {
    run.add_message(guid(m), m.len() as u64, m, MessageInfo::default())
        .unwrap();
}

/// Runs at 1000, 2000, 3000 (complete) and 4000 (partial).
fn history() -> History {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1000);
    let m: Vec<Vec<u8>> = (0..8).map(|i| message(i, 800 + i as usize * 10)).collect();
    let mut store = Store::open(root.path(), "kim", opts(&clock)).unwrap();

    // Run 1: INBOX holds m1 m2 m3; Work holds m4 and a copy of m1.
    let mut run = store.begin_run().unwrap();
    for i in [1, 2, 3, 4] {
        add(&mut run, &m[i]);
    }
    let inbox1 = [
        Rec::new(1, &m[1]).seen(),
        Rec::new(2, &m[2]),
        Rec::new(3, &m[3]),
    ];
    run.add_folder_snapshot(Snap::new("u-inbox", "user.kim", 10, &inbox1, 990).as_snapshot())
        .unwrap();
    let work = [Rec::new(1, &m[4]).keyword(), Rec::new(2, &m[1])];
    run.add_folder_snapshot(Snap::new("u-work", "user.kim.Work", 20, &work, 990).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    // Run 2: m2 flagged, m3 expunged (Cyrus keeps the record), m5 new; Work renamed to
    // Job (no data); Temp created with m6.
    clock.set(2000);
    let mut run = store.begin_run().unwrap();
    add(&mut run, &m[5]);
    add(&mut run, &m[6]);
    let inbox2 = [
        Rec::new(1, &m[1]).seen(),
        Rec::new(2, &m[2]).flagged(),
        Rec::new(3, &m[3]).expunged(),
        Rec::new(4, &m[5]),
    ];
    run.add_folder_snapshot(Snap::new("u-inbox", "user.kim", 10, &inbox2, 1990).as_snapshot())
        .unwrap();
    assert!(run.link_name("u-work", "user.kim.Job").unwrap());
    assert!(!run.link_name("u-work", "user.kim.Job").unwrap());
    run.add_folder_snapshot(
        Snap::new("u-temp", "user.kim.Temp", 30, &[Rec::new(1, &m[6])], 1990).as_snapshot(),
    )
    .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    // Run 3: m3's record is gone from cyrus.index; Temp deleted.
    clock.set(3000);
    let mut run = store.begin_run().unwrap();
    let inbox3 = [
        Rec::new(1, &m[1]).seen(),
        Rec::new(2, &m[2]).flagged(),
        Rec::new(4, &m[5]),
    ];
    run.add_folder_snapshot(Snap::new("u-inbox", "user.kim", 10, &inbox3, 2990).as_snapshot())
        .unwrap();
    assert!(run.tombstone("u-temp").unwrap());
    run.commit(RunEnd::Complete).unwrap();

    // Run 4 fails part-way: its tombstone of Job must not be trusted.
    clock.set(4000);
    let mut run = store.begin_run().unwrap();
    assert!(run.tombstone("u-work").unwrap());
    run.commit(RunEnd::Partial).unwrap();
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<backup_server::store::IndexFault>::new()
    );
    History {
        _root: root,
        store,
        m,
    }
}

fn names_at(s: &Store, at: Option<Timestamp>) -> Vec<(String, String)> {
    s.catalog()
        .folders_at(at)
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.unique_id))
        .collect()
}

fn msgs(s: &Store, u: &str, at: Option<Timestamp>, expunged: bool) -> Vec<MessageAt> {
    let mut out = Vec::new();
    s.catalog()
        .messages_at(u, at, expunged, |m| {
            out.push(m);
            Ok(())
        })
        .unwrap();
    out
}

fn uids(v: &[MessageAt]) -> Vec<(u32, MessageState)> {
    v.iter().map(|m| (m.uid, m.state)).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn ls_at_each_point_in_time() {
    let h = history();
    let st = &h.store;
    let p = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert!(names_at(st, t(999)).is_empty());
    assert_eq!(
        names_at(st, t(1500)),
        vec![p("user.kim", "u-inbox"), p("user.kim.Work", "u-work")]
    );
    assert_eq!(
        names_at(st, t(2500)),
        vec![
            p("user.kim", "u-inbox"),
            p("user.kim.Job", "u-work"),
            p("user.kim.Temp", "u-temp")
        ]
    );
    let now = vec![p("user.kim", "u-inbox"), p("user.kim.Job", "u-work")];
    assert_eq!(names_at(st, t(3500)), now);
    // The partial run's tombstone changed nothing.
    assert_eq!(names_at(st, None), now);

    let cat = st.catalog();
    assert_eq!(
        cat.folder_at("user.kim.Work", t(1500))
            .unwrap()
            .unwrap()
            .unique_id,
        "u-work"
    );
    assert!(cat.folder_at("user.kim.Work", t(2500)).unwrap().is_none());
    assert!(cat.folder_at("user.kim.Job", t(1500)).unwrap().is_none());
    let job = cat.folder_at("user.kim.Job", None).unwrap().unwrap();
    // A rename moved a pointer: the snapshot is still run 1's.
    assert_eq!(job.snapshot.as_ref().unwrap().run, 1);
    assert_eq!(job.snapshot.as_ref().unwrap().uidvalidity, 20);
    assert!(cat.folder_at("user.kim.Temp", t(2500)).unwrap().is_some());
    assert!(cat.folder_at("user.kim.Temp", None).unwrap().is_none());

    // INBOX at each run.
    let v1 = msgs(st, "u-inbox", t(1500), false);
    assert_eq!(
        uids(&v1),
        vec![
            (1, MessageState::Visible),
            (2, MessageState::Visible),
            (3, MessageState::Visible)
        ]
    );
    assert_eq!(v1[0].flags, s(&["\\Seen"]));
    assert_eq!(v1[1].flags, Vec::<String>::new());
    assert_eq!(v1[2].guid, guid(&h.m[3]));
    assert_eq!(v1[0].size, h.m[1].len() as u64);
    assert_eq!(v1[0].internal_date, Timestamp::from_secs(1_700_000_001));
    assert!(v1.iter().all(|m| m.stored));

    let v2 = msgs(st, "u-inbox", t(2500), false);
    assert_eq!(
        uids(&v2),
        vec![
            (1, MessageState::Visible),
            (2, MessageState::Visible),
            (4, MessageState::Visible)
        ]
    );
    assert_eq!(v2[1].flags, s(&["\\Flagged"]));
    let v2x = msgs(st, "u-inbox", t(2500), true);
    assert_eq!(
        uids(&v2x),
        vec![
            (1, MessageState::Visible),
            (2, MessageState::Visible),
            (3, MessageState::Expunged),
            (4, MessageState::Visible)
        ]
    );
    let v3x = msgs(st, "u-inbox", None, true);
    assert_eq!(
        uids(&v3x),
        vec![
            (1, MessageState::Visible),
            (2, MessageState::Visible),
            (3, MessageState::Gone),
            (4, MessageState::Visible)
        ]
    );
    // The expunged message is still restorable by GUID.
    assert!(v3x[2].stored);
    assert_eq!(uids(&msgs(st, "u-inbox", None, false)), uids(&v2));

    // One message by UID at a time.
    let m2_1 = cat.message_at("u-inbox", 2, t(1500)).unwrap().unwrap();
    assert_eq!(m2_1.flags, Vec::<String>::new());
    assert_eq!(m2_1.valid_to.map(|t| t.secs), Some(2000));
    let m2_2 = cat.message_at("u-inbox", 2, None).unwrap().unwrap();
    assert_eq!(m2_2.flags, s(&["\\Flagged"]));
    assert_eq!(
        cat.message_at("u-inbox", 3, None).unwrap().unwrap().state,
        MessageState::Gone
    );
    assert!(cat.message_at("u-inbox", 4, t(1500)).unwrap().is_none());

    // Work (now Job): keyword named through its cyrus.header; the copy of m1.
    let w = msgs(st, "u-work", None, false);
    assert_eq!(w[0].flags, s(&["$Label1"]));
    assert_eq!(w[1].guid, guid(&h.m[1]));
    // Temp: gone after its tombstone, there before.
    assert!(msgs(st, "u-temp", None, false).is_empty());
    assert_eq!(
        uids(&msgs(st, "u-temp", t(2500), false)),
        vec![(1, MessageState::Visible)]
    );
    assert_eq!(
        uids(&msgs(st, "u-temp", None, true)),
        vec![(1, MessageState::Gone)]
    );

    // Snapshots and their stat data.
    let snap = cat.snapshot_at("u-inbox", t(2500)).unwrap().unwrap();
    assert_eq!((snap.run, snap.records, snap.exists), (2, 4, 3));
    assert_eq!(snap.time.secs, 2000);
    let runs = cat.runs().unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs[3].ended.is_none());
    assert_eq!(cat.last_complete_run().unwrap().unwrap().run, 3);
}

#[test]
fn the_planner_view() {
    let h = history();
    let cat = h.store.catalog();
    let held: BTreeMap<String, (String, bool, Option<u64>)> = cat
        .held_folders()
        .unwrap()
        .into_iter()
        .map(|f| (f.unique_id, (f.name, f.deleted, f.snapshot.map(|s| s.run))))
        .collect();
    assert_eq!(held["u-inbox"], ("user.kim".to_owned(), false, Some(3)));
    assert_eq!(held["u-work"], ("user.kim.Job".to_owned(), false, Some(1)));
    assert_eq!(held["u-temp"], ("user.kim.Temp".to_owned(), true, Some(2)));
    let inbox = cat.held_folder("u-inbox").unwrap().unwrap();
    let snap = inbox.snapshot.unwrap();
    let idx = index_bytes(
        10,
        &[
            Rec::new(1, &h.m[1]).seen(),
            Rec::new(2, &h.m[2]).flagged(),
            Rec::new(4, &h.m[5]),
        ],
    );
    assert_eq!(snap.index, Some(stat(idx.len(), 2990, 12)));
    assert_eq!(snap.partition.as_deref(), Some("default"));
    assert!(cat.held_folder("nope").unwrap().is_none());
}

fn dirty_guids(st: &Store, cutoff: i64) -> (Vec<Guid>, BTreeMap<String, u64>) {
    let cat = st.catalog();
    let mut dirty_ids = Vec::new();
    let mut kinds = BTreeMap::new();
    cat.entry_states(Timestamp::from_secs(cutoff), |e| {
        if e.dirty {
            dirty_ids.push(e.id);
            *kinds.entry(e.kind).or_default() += 1;
        }
        Ok(())
    })
    .unwrap();
    let mut out = Vec::new();
    for i in 0..8 {
        let g = guid(&message(i, 800 + i as usize * 10));
        if let Some(m) = cat.message(&g).unwrap() {
            if dirty_ids.contains(&m.entry.id) {
                out.push(g);
            }
        }
    }
    (out, kinds)
}

#[test]
fn dirty_bytes_follow_retention() {
    let h = history();
    let st = &h.store;
    // Inside every window: only the partial run's untrusted tombstone is dead weight.
    let (g, kinds) = dirty_guids(st, 1500);
    assert!(g.is_empty());
    assert_eq!(kinds, BTreeMap::from([("name".to_owned(), 1)]));
    // Cutoff between run 2 and 3: m3 left INBOX's visible set at 2000 (expunged), run 1's
    // INBOX snapshot and Work's old name were superseded at 2000.
    let (g, kinds) = dirty_guids(st, 2500);
    assert_eq!(g, vec![guid(&h.m[3])]);
    assert_eq!(kinds.get("folder-meta"), Some(&2));
    assert_eq!(kinds.get("name"), Some(&2));
    // After everything: m6 went with Temp at 3000; Temp's snapshot, link and tombstone too.
    let (g, kinds) = dirty_guids(st, 5000);
    assert_eq!(g, vec![guid(&h.m[3]), guid(&h.m[6])]);
    // INBOX runs 1 and 2, Temp run 2: header + index each.
    assert_eq!(kinds.get("folder-meta"), Some(&6));
    // Work's old name, Temp's link and tombstone, the untrusted tombstone.
    assert_eq!(kinds.get("name"), Some(&4));
    assert_eq!(kinds.get("run"), None);
    // Live messages never become dirty.
    for i in [1, 2, 4, 5] {
        assert!(!g.contains(&guid(&h.m[i])));
    }
    let u = st.catalog().usage(Timestamp::from_secs(5000)).unwrap();
    assert!(u.dirty_bytes > 0 && u.dirty_bytes < u.total_bytes);
    assert_eq!(u.dirty_by_kind.values().sum::<u64>(), u.dirty_bytes);
    let u0 = st.catalog().usage(Timestamp::from_secs(0)).unwrap();
    assert_eq!(u0.dirty_entries, 1);
    assert!(u0.dirty_ratio() < u.dirty_ratio());
    assert_eq!(u.file_len, st.committed_len());
}
