//! A restore (and `ls`) reaching back past what the store kept says so: an `--at` before the
//! first backup, a folder whose state then was compacted away, a record whose message was;
//! the binary exits 2 for such a restore, never 0 with a silent partial restore.

mod compact_common;
mod store_common;

use std::path::Path;
use std::process::Command;

use backup_server::compact::{compact_store, Decision};
use backup_server::ls::{ls, Listing, LsError};
use backup_server::point_in_time::rfc3339;
use backup_server::restore::{restore, Note, RestoreReport, Selection, Target};
use backup_server::store::{MessageInfo, RunEnd, Store, StoreReader};
use compact_common::*;
use formats::{Guid, Timestamp};
use store_common::*;

const USER: &str = "kim";
const T0: i64 = 1_700_000_000;
/// Compaction time: the cutoff (14 days of retention) is well after every change below.
const NOW: i64 = T0 + 30 * DAY;

struct Built {
    /// INBOX UID 2: expunged on day 1, still in cyrus.index (delayed expunge) since.
    expunged: Guid,
}

/// Day 0: INBOX UIDs 1-3, Old UID 1. Day 1: INBOX UID 2 expunged (delayed), UID 4 new;
/// Old's UID 1 flagged. Day 2: INBOX UID 3 gone. Then, with `compact`, a compaction at
/// NOW: the snapshots of day 0 (both folders) and day 1 (INBOX) are dropped, and the
/// message of UID 2 (expunged 29 days before) with them.
fn build(root: &Path, compact: bool) -> Built {
    let clock = TestClock::at(T0);
    let mut store = Store::open(root, USER, opts(&clock)).unwrap();
    let m: Vec<Vec<u8>> = (1..=5u64).map(|s| message(s, 30_000)).collect();
    let add = |run: &mut backup_server::store::RunWriter<'_>, x: &[u8]| {
        run.add_message(guid(x), x.len() as u64, x, MessageInfo::default())
            .unwrap()
    };
    let mut run = store.begin_run().unwrap();
    for x in &m[..4] {
        add(&mut run, x);
    }
    let inbox = vec![Rec::new(1, &m[0]), Rec::new(2, &m[1]), Rec::new(3, &m[2])];
    let old = vec![Rec::new(1, &m[3])];
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &inbox, T0).as_snapshot())
        .unwrap();
    run.add_folder_snapshot(Snap::new("u-old", "Old", 8, &old, T0).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    clock.set(T0 + DAY);
    let mut run = store.begin_run().unwrap();
    add(&mut run, &m[4]);
    let inbox1 = vec![
        inbox[0].clone(),
        inbox[1].clone().expunged(),
        inbox[2].clone(),
        Rec::new(4, &m[4]),
    ];
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &inbox1, T0 + DAY).as_snapshot())
        .unwrap();
    let old1 = vec![old[0].clone().flagged()];
    run.add_folder_snapshot(Snap::new("u-old", "Old", 8, &old1, T0 + DAY).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    clock.set(T0 + 2 * DAY);
    let mut run = store.begin_run().unwrap();
    let inbox2 = vec![inbox1[0].clone(), inbox1[1].clone(), inbox1[3].clone()];
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &inbox2, T0 + 2 * DAY).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    if compact {
        let (s, r) = compact_store(store, &copts(NOW, 0.0, 0)).unwrap();
        assert_eq!(r.decision, Decision::Compact);
        store = s;
    }
    drop(store);
    Built {
        expunged: guid(&m[1]),
    }
}

fn at(t: i64) -> Option<Timestamp> {
    Some(Timestamp::from_secs(t))
}

/// Whole seconds (a run's times grow by a nanosecond an entry from its start).
fn secs(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.secs)
}

fn sel(folder: Option<&str>, t: Option<Timestamp>, include_expunged: bool) -> Selection {
    Selection {
        folder: folder.map(str::to_owned),
        at: t,
        include_expunged,
        ..Selection::default()
    }
}

/// The notes but .eml's own (it keeps no flags).
fn kept_notes(rep: &RestoreReport) -> Vec<Note> {
    rep.notes
        .iter()
        .filter(|n| !matches!(n, Note::FlagsNotKept { .. }))
        .cloned()
        .collect()
}

fn eml(root: &Path, name: &str) -> Target {
    Target::Eml(root.join(name))
}

#[test]
fn the_store_tells_how_far_back_it_reaches() {
    let root = tempfile::tempdir().unwrap();
    build(root.path(), false);
    let r = StoreReader::open(root.path(), USER).unwrap();
    let c = r.catalog();
    // The first run's end marker: its start plus a nanosecond per entry.
    let first = c.first_backup().unwrap().unwrap();
    assert!(first > Timestamp::from_secs(T0) && first < Timestamp::from_secs(T0 + 1));
    assert_eq!(first, c.runs().unwrap()[0].ended.unwrap());
    assert_eq!(c.rewritten_on().unwrap(), None, "never compacted");
    assert_eq!(secs(c.oldest_snapshot("u-inbox").unwrap()), Some(T0));
    drop(r);

    let root = tempfile::tempdir().unwrap();
    build(root.path(), true);
    let r = StoreReader::open(root.path(), USER).unwrap();
    let c = r.catalog();
    // Run markers are kept: the first backup stays the first.
    assert_eq!(c.first_backup().unwrap(), Some(first));
    assert_eq!(c.rewritten_on().unwrap(), at(NOW));
    assert_eq!(
        secs(c.oldest_snapshot("u-inbox").unwrap()),
        Some(T0 + 2 * DAY)
    );
    assert_eq!(secs(c.oldest_snapshot("u-old").unwrap()), Some(T0 + DAY));
    assert_eq!(c.oldest_snapshot("u-none").unwrap(), None);
}

#[test]
fn before_the_first_backup_nothing_is_restored_and_it_says_so() {
    let root = tempfile::tempdir().unwrap();
    build(root.path(), false);
    let first = StoreReader::open(root.path(), USER)
        .unwrap()
        .catalog()
        .first_backup()
        .unwrap()
        .unwrap();
    // Before the first run, and during it (its start): nothing of then is held.
    for t in [Timestamp::from_secs(T0 - 1), Timestamp::from_secs(T0)] {
        for s in [sel(None, Some(t), false), sel(Some("INBOX"), Some(t), true)] {
            let rep = restore(root.path(), USER, &s, &eml(root.path(), "e")).unwrap();
            assert_eq!((rep.messages, rep.folders, rep.not_kept), (0, 0, 1));
            assert_eq!(
                rep.notes,
                [Note::BeforeOldestBackup {
                    at: t,
                    oldest: first
                }]
            );
        }
    }
    assert!(!root.path().join("e").exists(), "nothing written");
    let rep = restore(
        root.path(),
        USER,
        &sel(None, at(T0 - 1), false),
        &eml(root.path(), "e"),
    )
    .unwrap();
    assert_eq!(
        rep.notes[0].to_string(),
        format!(
            "nothing restored as of 2023-11-14T22:13:19Z: before the oldest backup kept \
             ({0}); --at {0} or later finds mail",
            rfc3339(first)
        )
    );
    // ls says so too, rather than list nothing.
    let e = ls(root.path(), USER, None, at(T0 - 1)).unwrap_err();
    assert!(matches!(e, LsError::BeforeOldestBackup { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("nothing as of 2023-11-14T22:13:19Z: before the oldest backup kept"),
        "{e}"
    );
    // From the first backup on, as before.
    match ls(root.path(), USER, None, Some(first)).unwrap() {
        Listing::Folders { folders, .. } => assert_eq!(folders.len(), 2),
        l => panic!("{l:?}"),
    }
    let rep = restore(
        root.path(),
        USER,
        &sel(None, Some(first), false),
        &eml(root.path(), "f"),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.not_kept), (4, 0));
}

#[test]
fn folders_and_messages_compacted_away_are_named() {
    let root = tempfile::tempdir().unwrap();
    let b = build(root.path(), true);
    let compacted = Timestamp::from_secs(NOW);
    let (inbox_kept, old_kept) = {
        let r = StoreReader::open(root.path(), USER).unwrap();
        let c = r.catalog();
        (
            c.oldest_snapshot("u-inbox").unwrap(),
            c.oldest_snapshot("u-old").unwrap(),
        )
    };

    // Day 0: both folders' state of then was compacted away; nothing written.
    let rep = restore(
        root.path(),
        USER,
        &sel(None, at(T0 + 60), false),
        &eml(root.path(), "a"),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.folders, rep.not_kept), (0, 0, 2));
    assert_eq!(
        rep.notes,
        [
            Note::FolderNotKept {
                folder: "INBOX".into(),
                at: at(T0 + 60),
                compacted_on: Some(compacted),
                oldest_kept: inbox_kept,
            },
            Note::FolderNotKept {
                folder: "Old".into(),
                at: at(T0 + 60),
                compacted_on: Some(compacted),
                oldest_kept: old_kept,
            },
        ]
    );
    assert_eq!(
        rep.notes[1].to_string(),
        format!(
            "folder \"Old\": its state as of 2023-11-14T22:14:20Z is not kept: compacted away \
             on 2023-12-14T22:13:20Z (its oldest state kept: --at {})",
            rfc3339(old_kept.unwrap())
        )
    );
    assert!(rfc3339(old_kept.unwrap()).starts_with("2023-11-15T22:13:20."));
    assert!(!root.path().join("a").join("INBOX").exists());
    let e = ls(root.path(), USER, Some("INBOX"), at(T0 + 60)).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "folder \"INBOX\": its state as of 2023-11-14T22:14:20Z is not kept (compacted \
             away); its oldest state kept: --at {}",
            rfc3339(inbox_kept.unwrap())
        )),
        "{e}"
    );

    // A folder the store does not know then: it may be one compaction dropped, and the
    // error says so; as of now, compaction is not the reason.
    let e = restore(
        root.path(),
        USER,
        &sel(Some("Gone"), at(T0 + 60), false),
        &eml(root.path(), "g"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no folder \"Gone\" as of 2023-11-14T22:14:20Z (the store was compacted on \
         2023-12-14T22:13:20Z: a folder deleted or renamed longer ago than the retention then \
         is no longer kept)"
    );
    let e = restore(
        root.path(),
        USER,
        &sel(Some("Gone"), None, false),
        &eml(root.path(), "g"),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "no folder \"Gone\" as of now");

    // Day 1: Old is kept, INBOX is not.
    let rep = restore(
        root.path(),
        USER,
        &sel(None, at(T0 + DAY + 60), false),
        &eml(root.path(), "b"),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.folders, rep.not_kept), (1, 1, 1));
    assert!(
        matches!(&kept_notes(&rep)[..], [Note::FolderNotKept { folder, .. }] if folder == "INBOX"),
        "{:?}",
        rep.notes
    );

    // Now, expunged mail too: UID 2's record is kept (still in cyrus.index) but its message
    // was compacted away with the history it belonged to; the rest comes back.
    let rep = restore(
        root.path(),
        USER,
        &sel(Some("INBOX"), None, true),
        &eml(root.path(), "c"),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.not_stored, rep.not_kept), (2, 0, 1));
    assert_eq!(
        rep.notes,
        [Note::MessageNotKept {
            folder: "INBOX".into(),
            uid: 2,
            guid: b.expunged,
            compacted_on: compacted,
        }]
    );
    assert_eq!(
        rep.notes[0].to_string(),
        format!(
            "folder \"INBOX\" UID 2: message {} is not kept: compacted away on \
             2023-12-14T22:13:20Z, not restored",
            b.expunged.to_hex()
        )
    );
    // A plain restore now is whole: nothing to say.
    let rep = restore(
        root.path(),
        USER,
        &sel(None, None, false),
        &eml(root.path(), "d"),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.not_kept), (3, 0));
    assert!(kept_notes(&rep).is_empty(), "{:?}", rep.notes);
}

#[test]
fn a_restore_before_the_cutoff_is_noted_with_the_retention_given() {
    let root = tempfile::tempdir().unwrap();
    build(root.path(), true);
    let mut rep = restore(
        root.path(),
        USER,
        &sel(None, at(T0 + 3 * DAY), false),
        &eml(root.path(), "a"),
    )
    .unwrap();
    assert_eq!((rep.messages, rep.not_kept), (3, 0));
    assert_eq!(rep.compacted_on, at(NOW));
    // A retention that reaches back past the time asked: nothing to say.
    rep.note_past_retention(at(T0 + 3 * DAY), 28 * DAY);
    assert_eq!(rep.not_kept, 0);
    rep.note_past_retention(at(T0 + 3 * DAY), RETENTION);
    assert_eq!(rep.not_kept, 1);
    assert_eq!(
        kept_notes(&rep),
        [Note::BeforeRetention {
            at: Timestamp::from_secs(T0 + 3 * DAY),
            compacted_on: Timestamp::from_secs(NOW),
            cutoff: Timestamp::from_secs(NOW - RETENTION),
        }]
    );
    // As of now, or after the compaction, the store is whole.
    let rep = restore(
        root.path(),
        USER,
        &sel(None, None, false),
        &eml(root.path(), "b"),
    )
    .unwrap();
    assert_eq!(rep.compacted_on, None);
    let rep = restore(
        root.path(),
        USER,
        &sel(None, at(NOW + 1), false),
        &eml(root.path(), "c"),
    )
    .unwrap();
    assert_eq!(rep.compacted_on, None);
}

#[test]
fn the_binary_exits_2_when_a_restore_reaches_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_common::binary_config(dir.path());
    build(&dir.path().join("store"), true);
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_backup-server"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let to = |n: &str| format!("eml:{}", dir.path().join(n).display());
    let day0 = (T0 + 60).to_string();
    let (code, out, _) = run(&["restore", "--user", USER, "--at", &day0, "--to", &to("a")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("note: folder \"INBOX\": its state as of"),
        "{out}"
    );
    // Both folders, and the retention note (14 days configured: cutoff 16 days after T0).
    assert!(
        out.contains("3 not kept as of 2023-11-14T22:14:20Z: compacted away, before the retention cutoff or before the oldest backup"),
        "{out}"
    );
    assert!(
        out.contains(
            "note: as of 2023-11-14T22:14:20Z is before the retention cutoff \
             (2023-11-30T22:13:20Z) of the store's compaction on 2023-12-14T22:13:20Z"
        ),
        "{out}"
    );
    // Day 3: every folder's state of then is kept, but a folder deleted, or a message
    // expunged, before the cutoff would have left no trace: said, and exit 2.
    let day3 = (T0 + 3 * DAY).to_string();
    let (code, out, _) = run(&["restore", "--user", USER, "--at", &day3, "--to", &to("d3")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("restored 3 messages"), "{out}");
    assert!(out.contains("1 not kept as of"), "{out}");
    // Inside the window (after the cutoff, before the compaction): whole, 0.
    let inside = (NOW - DAY).to_string();
    let (code, out, _) = run(&[
        "restore",
        "--user",
        USER,
        "--at",
        &inside,
        "--to",
        &to("in"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("not kept"), "{out}");
    let before = (T0 - 1).to_string();
    let (code, out, _) = run(&["restore", "--user", USER, "--at", &before, "--to", &to("b")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("before the oldest backup kept"), "{out}");
    let (code, _, err) = run(&["ls", "--user", USER, "--at", &before]);
    assert_eq!(code, Some(1));
    assert!(err.contains("before the oldest backup kept"), "{err}");
    // A restore the store covers whole: 0.
    let (code, out, _) = run(&["restore", "--user", USER, "--to", &to("c")]);
    assert_eq!(code, Some(0), "{out}");
}
