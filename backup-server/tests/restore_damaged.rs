//! A message whose stored bytes no longer hash to its GUID never reaches a restore
//! target: the restore goes on with the rest and names it (a `Damaged` note, counted in
//! `damaged`), and the target holds only the messages that checked out (no damaged file in
//! a Maildir's cur/ or an .eml directory, no damaged message left in an mbox file). The
//! damage is marked in the index for the next run to fetch the message again.

mod store_common;

use std::path::Path;

use backup_server::restore::{restore, Note, RestoreReport, Selection, Target};
use backup_server::store::DamageRecording;
use backup_server::store::{MessageInfo, RunEnd, Store};
use store_common::*;

const USER: &str = "dora";
const T1: i64 = 1_800_000_000;

fn body(i: u32) -> Vec<u8> {
    let mut m = message(u64::from(i), 2000);
    m.extend_from_slice(format!("\r\nMARKER-{i}-END\r\n").as_bytes());
    m
}

/// INBOX with UIDs 1 and 2, written uncompressed (gzip level 0, stored blocks) so that a
/// byte of UID 2 can be flipped in the data file without breaking the inflate.
fn build_damaged(root: &Path) {
    let clock = TestClock::at(T1);
    let mut o = opts(&clock);
    o.gzip_level = 0;
    let mut store = Store::open(root, USER, o).unwrap();
    let mut run = store.begin_run().unwrap();
    let mut recs = Vec::new();
    for uid in 1..=2 {
        let m = body(uid);
        run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
        recs.push(Rec::new(uid, &m));
    }
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &recs, T1).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    let data = root.join(store.catalog().data_path());
    drop(store);
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"MARKER-2-")
        .expect("stored uncompressed");
    bytes[at] = b'm';
    std::fs::write(&data, bytes).unwrap();
}

/// Message 1 restored; message 2 skipped, named, and marked damaged.
fn assert_skipped(rep: &RestoreReport) {
    assert_eq!((rep.messages, rep.damaged), (1, 1), "{rep:?}");
    assert!(
        rep.notes.iter().any(|n| matches!(
            n,
            Note::Damaged { folder, uid: 2, guid: g, why } if folder == "INBOX"
                && *g == guid(&body(2)) && why.contains("hash")
        )),
        "{:?}",
        rep.notes
    );
    assert_eq!(
        rep.damage_recorded,
        Some(DamageRecording::Recorded { marked: 1 })
    );
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn inbox() -> Selection {
    Selection {
        folder: Some("INBOX".into()),
        ..Selection::default()
    }
}

#[test]
fn maildir_gets_no_damaged_message() {
    let root = tempfile::tempdir().unwrap();
    build_damaged(root.path());
    let out = root.path().join("md");
    let rep = restore(root.path(), USER, &inbox(), &Target::Maildir(out.clone())).unwrap();
    assert_skipped(&rep);
    let cur = files(&out.join("cur"));
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].contains(".R1G"), "{cur:?}");
    assert!(files(&out.join("tmp")).is_empty());
}

#[test]
fn eml_gets_no_damaged_message() {
    let root = tempfile::tempdir().unwrap();
    build_damaged(root.path());
    let out = root.path().join("eml");
    assert_skipped(&restore(root.path(), USER, &inbox(), &Target::Eml(out.clone())).unwrap());
    assert_eq!(files(&out.join("INBOX")), vec!["1.eml".to_owned()]);
    assert_eq!(
        std::fs::read(out.join("INBOX/1.eml")).unwrap(),
        body(1),
        "the good message is whole"
    );
}

#[test]
fn mbox_keeps_no_damaged_message() {
    let root = tempfile::tempdir().unwrap();
    build_damaged(root.path());
    let out = root.path().join("inbox.mbox");
    assert_skipped(&restore(root.path(), USER, &inbox(), &Target::Mbox(out.clone())).unwrap());
    let text = std::fs::read(&out).unwrap();
    let has = |s: &[u8]| text.windows(s.len()).any(|w| w == s);
    assert!(has(b"MARKER-1-END"));
    assert!(
        !has(b"ARKER-2-END"),
        "the damaged message was left in the mbox"
    );
    let froms = text
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From mailbackup "))
        .count();
    assert_eq!(froms, 1, "exactly message 1 remains");
    assert!(text.ends_with(b"MARKER-1-END\n\n"), "message 1 is whole");
}
