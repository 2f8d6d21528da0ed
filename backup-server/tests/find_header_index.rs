//! The header index over a store's life: filled by a run (messages checked in memory and
//! spooled alike), absent from a store made before it (read-only: `find` reads the header
//! blocks from the data file and says so; verify stays clean), added empty by the next
//! writer (covering only new messages: verify compares those), and completed by reindex.

mod store_common;

use std::path::Path;

use backup_server::find::{find, FindQuery, FoundState};
use backup_server::store::{Store, UserDir};
use backup_server::verify::{reindex_user, verify_user};
use store_common::*;

const USER: &str = "hilda";

fn mail(seed: u64, from: &str, subject: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: hilda@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <m{seed}@example.org>\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&message(seed, body_len));
    m
}

fn subjects(root: &Path, q: &FindQuery) -> (Vec<String>, Vec<String>) {
    let r = find(root, USER, q).unwrap();
    let mut s: Vec<String> = r.messages.iter().map(|m| m.subject.clone()).collect();
    s.sort();
    (s, r.notes)
}

#[test]
fn filled_by_runs_absent_before_added_by_a_writer_and_completed_by_reindex() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    // Messages over 4 KiB are spooled: the run's other path to the header block.
    o.verify_in_memory = 4096;
    let first = vec![
        mail(
            1,
            "Bob Smith <bob@example.com>",
            "=?UTF-8?Q?Facture_d=C3=A9cembre?=",
            500,
        ),
        mail(2, "carol@example.org", "Lunch", 100_000),
        mail(3, "\"Dupont, Renée\" <renee@example.fr>", "Réunion", 2000),
    ];
    let recs: Vec<Rec> = first
        .iter()
        .enumerate()
        .map(|(i, m)| Rec::new(i as u32 + 1, m))
        .collect();
    let mut store = Store::open(&root, USER, o.clone()).unwrap();
    commit_run(
        &mut store,
        &first,
        &[&Snap::new("u-d", "Donn&AOk-es", 9, &recs, clock.secs())],
    );
    drop(store);
    let all = FindQuery::default();
    let (s, notes) = subjects(&root, &all);
    assert_eq!(s, ["Facture décembre", "Lunch", "Réunion"]);
    assert!(notes.is_empty(), "{notes:?}");
    let r = find(
        &root,
        USER,
        &FindQuery {
            from: Some("RENÉE".into()),
            ..all.clone()
        },
    )
    .unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].folder, "Données");
    assert_eq!(r.messages[0].state, FoundState::Live);
    assert!(verify_user(&root, USER).is_clean());

    // ---- as a store made before the header index: version 3, no table.
    let index = UserDir::new(&root, USER).unwrap().index_path();
    {
        let c = rusqlite::Connection::open(&index).unwrap();
        c.execute_batch("DROP TABLE headers; DROP TABLE headers_start; PRAGMA user_version = 3;")
            .unwrap();
    }
    let (s, notes) = subjects(&root, &all);
    assert_eq!(s, ["Facture décembre", "Lunch", "Réunion"]);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("3 messages' headers were read from the data file"),
        "{notes:?}"
    );
    let v = verify_user(&root, USER);
    assert!(v.is_clean(), "{v:#?}");

    // ---- the next writer adds the table; a run indexes its new message only.
    clock.advance(86_400);
    let mut store = Store::open(&root, USER, o.clone()).unwrap();
    let new = mail(4, "Eve <eve@example.net>", "Invoice 42", 300);
    let mut recs2 = recs.clone();
    recs2.push(Rec::new(4, &new));
    commit_run(
        &mut store,
        std::slice::from_ref(&new),
        &[&Snap::new("u-d", "Donn&AOk-es", 9, &recs2, clock.secs())],
    );
    drop(store);
    let (s, notes) = subjects(&root, &all);
    assert_eq!(s, ["Facture décembre", "Invoice 42", "Lunch", "Réunion"]);
    assert!(notes[0].starts_with("3 messages' headers"), "{notes:?}");
    let rows = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&index).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    assert_eq!(rows("SELECT count(*) FROM headers"), 1);
    assert!(rows("SELECT entry FROM headers_start") > 1);
    let v = verify_user(&root, USER);
    assert!(v.is_clean(), "{v:#?}");
    // A headers row that differs from the message is found.
    {
        let c = rusqlite::Connection::open(&index).unwrap();
        c.execute("UPDATE headers SET subject = 'forged'", [])
            .unwrap();
    }
    let v = verify_user(&root, USER);
    assert!(!v.is_clean());
    assert!(format!("{v:?}").contains("forged"), "{v:#?}");

    // ---- reindex covers every message.
    reindex_user(&root, USER).unwrap();
    assert_eq!(rows("SELECT count(*) FROM headers"), 4);
    assert_eq!(rows("SELECT entry FROM headers_start"), 1);
    let (s, notes) = subjects(&root, &all);
    assert_eq!(s, ["Facture décembre", "Invoice 42", "Lunch", "Réunion"]);
    assert!(notes.is_empty(), "{notes:?}");
    let v = verify_user(&root, USER);
    assert!(v.is_clean(), "{v:#?}");
}

#[test]
fn a_store_before_the_index_is_searched_in_one_pass_over_its_data_file() {
    // More unindexed messages than are read one at a time: one scan of the data file.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.chunk_cap = 8 * 1024;
    let msgs: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            mail(
                100 + i,
                &format!("S{i} <s{i}@example.com>"),
                &format!("Nummer {i}"),
                1500,
            )
        })
        .collect();
    let recs: Vec<Rec> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| Rec::new(i as u32 + 1, m))
        .collect();
    let mut store = Store::open(&root, USER, o).unwrap();
    commit_run(
        &mut store,
        &msgs,
        &[&Snap::new("u-i", "INBOX", 9, &recs, clock.secs())],
    );
    drop(store);
    let index = UserDir::new(&root, USER).unwrap().index_path();
    let c = rusqlite::Connection::open(&index).unwrap();
    c.execute_batch("DROP TABLE headers; DROP TABLE headers_start; PRAGMA user_version = 3;")
        .unwrap();
    drop(c);
    let r = find(&root, USER, &FindQuery::default()).unwrap();
    assert_eq!(r.messages.len(), 40);
    for m in &r.messages {
        let i = m.uid - 1;
        assert_eq!(m.subject, format!("Nummer {i}"));
        assert_eq!(m.from, format!("S{i} <s{i}@example.com>"));
    }
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].starts_with("40 messages' headers were read from the data file"));
    let q = FindQuery {
        subject: Some("NUMMER 17".into()),
        ..FindQuery::default()
    };
    assert_eq!(find(&root, USER, &q).unwrap().messages[0].uid, 18);
}
