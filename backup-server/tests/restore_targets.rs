//! Restore into Maildir, mbox and .eml, read back with Python's `mailbox` module; point in
//! time; hostile folder names; a single-message restore inflates one chunk.

mod store_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use backup_server::restore::{restore, safe_component, Selection, Target};
use backup_server::store::{MessageInfo, RunEnd, Store};
use formats::{Guid, Timestamp};
use store_common::*;
use testkit::python::{read_maildir, read_mbox, Restored};

const USER: &str = "amy";
const T1: i64 = 1_800_000_000;

/// Hostile names: `..` levels, a control character (in a subfolder of Sub), empty levels,
/// a `.` inside a level.
const HOSTILE: [&str; 5] = ["..", "../../etc", "Sub/x\u{1}y", "/abs//x", "a.b/c"];

struct Built {
    /// guid -> bytes.
    msgs: BTreeMap<Guid, Vec<u8>>,
    inbox: Vec<Rec>,
    sub: Vec<Rec>,
}

fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut m = message(seed, len);
    // Lines an mbox must quote.
    m.extend_from_slice(b"\r\nFrom the start of a line\r\n>From quoted once\r\nend\r\n");
    m
}

/// Run 1 at T1: INBOX (uids 1-4, varied flags), Sub (2), hostile folders (1 each). Run 2 a
/// day later: INBOX UID 2 expunged (still in cyrus.index). Run 3: UID 2 gone.
fn build(root: &Path, chunk_cap: u64) -> Built {
    let clock = TestClock::at(T1);
    let mut o = opts(&clock);
    o.chunk_cap = chunk_cap;
    let mut store = Store::open(root, USER, o).unwrap();
    let mut msgs = BTreeMap::new();
    let mut run = store.begin_run().unwrap();
    let mut add = |run: &mut backup_server::store::RunWriter<'_>, seed: u64| {
        let m = body(seed, 3000 + 500 * seed as usize);
        let g = guid(&m);
        run.add_message(g, m.len() as u64, &m[..], MessageInfo::default())
            .unwrap();
        msgs.insert(g, m.clone());
        m
    };
    let inbox: Vec<Rec> = (1..=4u32)
        .map(|uid| {
            let m = add(&mut run, uid as u64);
            let r = Rec::new(uid, &m);
            match uid {
                1 => r.seen(),
                2 => r.flagged().keyword(),
                3 => r.seen().flagged(),
                _ => r,
            }
        })
        .collect();
    let sub: Vec<Rec> = (1..=2u32)
        .map(|uid| Rec::new(uid, &add(&mut run, 10 + uid as u64)).seen())
        .collect();
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &inbox, T1).as_snapshot())
        .unwrap();
    run.add_folder_snapshot(Snap::new("u-sub", "Sub", 8, &sub, T1).as_snapshot())
        .unwrap();
    for (i, name) in HOSTILE.iter().enumerate() {
        let m = add(&mut run, 20 + i as u64);
        let recs = [Rec::new(1, &m)];
        let mut snap = Snap::new(&format!("u-h{i}"), name, 9, &recs, T1);
        // The name the store records is the snapshot's; cyrus.header's own copy of it is
        // kept tame (formats' header writer cannot write a control character yet).
        snap.header = header_bytes(&snap.unique_id, "hostile");
        run.add_folder_snapshot(snap.as_snapshot()).unwrap();
    }
    run.commit(RunEnd::Complete).unwrap();

    clock.set(T1 + 86_400);
    let mut run = store.begin_run().unwrap();
    let mut r2 = inbox.clone();
    r2[1] = r2[1].clone().expunged();
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &r2, T1 + 86_400).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();

    clock.set(T1 + 2 * 86_400);
    let mut run = store.begin_run().unwrap();
    let r3: Vec<Rec> = inbox.iter().filter(|r| r.uid != 2).cloned().collect();
    run.add_folder_snapshot(Snap::new("u-inbox", "INBOX", 7, &r3, T1 + 2 * 86_400).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    drop(store);
    Built { msgs, inbox, sub }
}

fn sha(b: &[u8]) -> String {
    Guid::of(b).to_hex()
}

fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// A record as Python reads it back from a Maildir of `folder`.
fn maildir_row(folder: &str, r: &Rec) -> Restored {
    let mut flags = String::new();
    if r.flagged {
        flags.push('F');
    }
    if r.seen {
        flags.push('S');
    }
    Restored {
        folder: folder.to_owned(),
        flags,
        keywords: keywords(r),
        sha1: r.guid.to_hex(),
    }
}

/// A record as Python reads it back from an mbox, `data` the message's bytes.
fn mbox_row(r: &Rec, data: &[u8]) -> Restored {
    let mut flags = String::new();
    if r.flagged {
        flags.push('F');
    }
    if r.seen {
        flags.push('R');
    }
    Restored {
        folder: String::new(),
        flags,
        keywords: keywords(r),
        sha1: sha(&lf(data)),
    }
}

fn keywords(r: &Rec) -> Vec<String> {
    if r.keyword0 {
        vec!["$Label1".to_owned()]
    } else {
        Vec::new()
    }
}

fn sel() -> Selection {
    Selection::default()
}

#[test]
fn whole_user_to_maildir_reads_back_with_python() {
    let root = tempfile::tempdir().unwrap();
    let b = build(root.path(), 64 * 1024);
    let out = root.path().join("md");
    let rep = restore(root.path(), USER, &sel(), &Target::Maildir(out.clone())).unwrap();
    assert_eq!(rep.not_stored, 0);
    // INBOX has 3 now (UID 2 gone), Sub 2, one per hostile folder.
    assert_eq!(rep.messages, 3 + 2 + HOSTILE.len() as u64);
    let got = read_maildir(&out);
    let mut want = Vec::new();
    for r in b.inbox.iter().filter(|r| r.uid != 2) {
        want.push(maildir_row("INBOX", r));
    }
    for r in &b.sub {
        want.push(maildir_row("Sub", r));
    }
    for (i, name) in HOSTILE.iter().enumerate() {
        let f = backup_server::restore::folder_levels(USER, name).flat();
        let m = &b.msgs[&guid(&body(20 + i as u64, 3000 + 500 * (20 + i)))];
        want.push(Restored {
            folder: f,
            flags: String::new(),
            keywords: Vec::new(),
            sha1: sha(m),
        });
    }
    want.sort();
    assert_eq!(got, want);
    // Nothing was written outside the target, and every name in it is tame.
    for e in walk(&out) {
        let rel = e.strip_prefix(&out).unwrap().to_str().unwrap().to_owned();
        assert!(!rel.split('/').any(|c| c == ".." || c.is_empty()), "{rel}");
        assert!(!rel.chars().any(|c| c.is_control()), "{rel:?}");
    }
    assert!(!root.path().join("etc").exists());
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        }
        out.push(e);
    }
    out
}

#[test]
fn hostile_folder_names_become_safe_components() {
    assert_eq!(safe_component(".."), "%2E%2E");
    assert_eq!(safe_component("a/b"), "a%2Fb");
    assert_eq!(safe_component("x\u{1}y"), "x%01y");
    assert_eq!(safe_component("nul\0"), "nul%00");
    assert_eq!(safe_component(""), "%");
    assert_eq!(safe_component("Entwürfe"), "Entwürfe");
    let long = safe_component(&"é".repeat(300));
    assert!(long.len() <= 220 && long.contains('~'), "{long}");
    let f = backup_server::restore::folder_levels(USER, "..");
    assert_eq!(f.levels, vec!["%2E%2E".to_owned()]);
    let f = backup_server::restore::folder_levels(USER, "/abs//x");
    assert_eq!(f.flat(), "%.abs.%.x");
    assert_eq!(
        backup_server::restore::folder_levels(USER, "a.b/c").flat(),
        "a%2Eb.c"
    );
    assert!(backup_server::restore::folder_levels(USER, "inbox")
        .levels
        .is_empty());
    let f = backup_server::restore::folder_levels(USER, "../../etc");
    assert!(f
        .levels
        .iter()
        .all(|l| !l.contains('/') && !l.starts_with('.')));
}

#[test]
fn a_folder_to_mbox_reads_back_with_python() {
    let root = tempfile::tempdir().unwrap();
    let b = build(root.path(), 64 * 1024);
    let out = root.path().join("inbox.mbox");
    let s = Selection {
        folder: Some("INBOX".into()),
        ..sel()
    };
    let rep = restore(root.path(), USER, &s, &Target::Mbox(out.clone())).unwrap();
    assert_eq!(rep.messages, 3);
    let got = read_mbox(&out);
    let mut want: Vec<Restored> = b
        .inbox
        .iter()
        .filter(|r| r.uid != 2)
        .map(|r| mbox_row(r, &b.msgs[&r.guid]))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("\n>From the start of a line\n"));
    assert!(text.contains("\n>>From quoted once\n"));
}

#[test]
fn a_folder_with_subfolders_to_eml() {
    let root = tempfile::tempdir().unwrap();
    let b = build(root.path(), 64 * 1024);
    let out = root.path().join("eml");
    let s = Selection {
        folder: Some("Sub".into()),
        subfolders: true,
        ..sel()
    };
    let rep = restore(root.path(), USER, &s, &Target::Eml(out.clone())).unwrap();
    // Sub and its hostile subfolder.
    assert_eq!((rep.folders, rep.messages), (2, 3));
    for r in &b.sub {
        let got = std::fs::read(out.join("Sub").join(format!("{}.eml", r.uid))).unwrap();
        assert_eq!(got, b.msgs[&r.guid]);
    }
    assert!(out.join("Sub.x%01y/1.eml").exists());
    let out = root.path().join("eml-inbox");
    let s = Selection {
        folder: Some("INBOX".into()),
        ..sel()
    };
    restore(root.path(), USER, &s, &Target::Eml(out.clone())).unwrap();
    let got = std::fs::read(out.join("INBOX/1.eml")).unwrap();
    assert_eq!(got, b.msgs[&b.inbox[0].guid]);
    // Python's email parser reads it.
    let out2 = Command::new("python3")
        .arg("-c")
        .arg("import email,sys; m=email.message_from_binary_file(open(sys.argv[1],'rb')); print(m['Subject'])")
        .arg(out.join("INBOX/1.eml"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out2.stdout).trim(), "message 1");
}

#[test]
fn an_expunged_message_comes_back_with_at_or_include_expunged_only() {
    let root = tempfile::tempdir().unwrap();
    let b = build(root.path(), 64 * 1024);
    let expunged = b.inbox[1].guid;
    let one = |name: &str, at: Option<Timestamp>, inc: bool| {
        let out = root.path().join(name);
        let s = Selection {
            folder: Some("INBOX".into()),
            uid: Some(2),
            at,
            include_expunged: inc,
            ..sel()
        };
        restore(root.path(), USER, &s, &Target::Eml(out.clone()))
            .map(|_| std::fs::read(out.join("INBOX/2.eml")).unwrap())
    };
    let e = one("now", None, false).unwrap_err();
    assert!(format!("{e:#}").contains("gone"), "{e:#}");
    let at_first = one("at", Some(Timestamp::from_secs(T1 + 3600)), false).unwrap();
    assert_eq!(Guid::of(&at_first), expunged);
    let inc = one("inc", None, true).unwrap();
    assert_eq!(Guid::of(&inc), expunged);
    // The same for the whole folder.
    let folder = |name: &str, at: Option<Timestamp>, inc: bool| {
        let out = root.path().join(name);
        let s = Selection {
            folder: Some("INBOX".into()),
            at,
            include_expunged: inc,
            ..sel()
        };
        restore(root.path(), USER, &s, &Target::Eml(out.clone())).unwrap();
        out.join("INBOX/2.eml").exists()
    };
    assert!(!folder("f-now", None, false));
    assert!(folder("f-at", Some(Timestamp::from_secs(T1 + 3600)), false));
    // On day 2 it was expunged already: not visible then.
    assert!(!folder(
        "f-day2",
        Some(Timestamp::from_secs(T1 + 86_400 + 3600)),
        false
    ));
    assert!(folder("f-inc", None, true));
}

#[test]
fn a_folder_restore_inflates_each_chunk_once_not_once_per_message() {
    let root = tempfile::tempdir().unwrap();
    // One large chunk holds every message: per message, the restore would inflate it from
    // its start each time.
    build(root.path(), 1 << 20);
    let rep = restore(
        root.path(),
        USER,
        &sel(),
        &Target::Eml(root.path().join("all")),
    )
    .unwrap();
    assert!(rep.messages > rep.folders, "{rep:?}");
    assert!(rep.chunks_inflated <= rep.folders, "{rep:?}");
    // The chunks' uncompressed lengths, as the index records them.
    let index = backup_server::store::StoreReader::open(root.path(), USER)
        .unwrap()
        .catalog()
        .index_path()
        .to_path_buf();
    let data_len: u64 = rusqlite::Connection::open(index)
        .unwrap()
        .query_row("SELECT sum(uncompressed_len) FROM chunks", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64;
    assert!(
        rep.inflated <= rep.folders * data_len,
        "{} inflated for {} folders of a {data_len}-byte data file",
        rep.inflated,
        rep.folders
    );
}

#[test]
fn a_single_message_restore_inflates_one_chunk() {
    let root = tempfile::tempdir().unwrap();
    // Small chunks: the store has many, the restore must touch one.
    let cap = 8 * 1024;
    let b = build(root.path(), cap);
    let r = &b.inbox[2];
    let s = Selection {
        folder: Some("INBOX".into()),
        uid: Some(3),
        ..sel()
    };
    let rep = restore(root.path(), USER, &s, &Target::Eml(root.path().join("one"))).unwrap();
    assert_eq!(rep.messages, 1);
    assert_eq!(rep.chunks_inflated, 1);
    let len = b.msgs[&r.guid].len() as u64;
    assert!(
        rep.inflated <= cap + len + 2048,
        "{} inflated",
        rep.inflated
    );
    // By GUID alone, to mbox.
    let s = Selection {
        guid: Some(r.guid),
        ..sel()
    };
    let out = root.path().join("one.mbox");
    let rep = restore(root.path(), USER, &s, &Target::Mbox(out.clone())).unwrap();
    assert_eq!((rep.messages, rep.chunks_inflated), (1, 1));
    // No folder, so no flags: the message alone.
    assert_eq!(
        read_mbox(&out),
        vec![Restored {
            folder: String::new(),
            flags: String::new(),
            keywords: Vec::new(),
            sha1: sha(&lf(&b.msgs[&r.guid])),
        }]
    );
}
