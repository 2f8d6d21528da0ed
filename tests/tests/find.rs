//! `find` end to end: messages appended to a real Cyrus over IMAP (encoded-word and raw
//! 8-bit subjects, From as `Name <addr>`, a bare address, a quoted name with a comma, an
//! encoded name; a folder named in UTF-8), backed up through a real backupd; then one
//! expunged and one folder deleted, and backed up again. Each criterion of the library's
//! `find` picks exactly the messages it should, with their state (live, expunged, folder
//! deleted) and UTF-8 folder names; `backup-server find` prints them as a table and as
//! JSON; and the message of the deleted folder, found by its sender, is restored with
//! `restore --guid` byte for byte as it was appended.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use backup_server::find::{find, FindQuery, FoundMessage, FoundState};
use backup_server::store::StoreOptions;
use formats::{Guid, Timestamp};
use tests::rig::{backup, backup_server_bin, now, text, write_config, Backupd};
use tests::CyrusInstance;

const USER: &str = "finder";

/// The messages: (key, folder as the user names it, bytes).
fn messages() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let m = |headers: &str, body: &str| format!("{headers}\r\n\r\n{body}\r\n").into_bytes();
    vec![
        (
            "invoice",
            "INBOX",
            m(
                "From: Bob Smith <bob@example.com>\r\nTo: finder@example.org\r\n\
                 Cc: Dave <dave@example.net>\r\n\
                 Subject: =?UTF-8?B?RmFjdHVyZSBkw6ljZW1icmU=?=\r\n\
                 Date: Tue, 24 Nov 2026 09:30:00 +0100\r\nMessage-ID: <inv-1@example.com>",
                "Please pay.",
            ),
        ),
        (
            "greetings",
            "INBOX",
            m(
                "From: carol@example.org\r\nTo: finder@example.org\r\n\
                 Subject: Grüße aus Köln\r\nDate: Thu, 01 Oct 2026 12:00:00 +0000\r\n\
                 Message-ID: <gr-2@example.org>\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit",
                "Schöne Grüße.",
            ),
        ),
        (
            "meeting",
            "Données",
            m(
                "From: \"Dupont, Renée\" <renee@example.fr>\r\nTo: finder@example.org\r\n\
                 Subject: =?ISO-8859-1?Q?R=E9union_lundi?=\r\n\
                 Date: Tue, 15 Sep 2026 08:00:00 +0200\r\nMessage-ID: <re-3@example.fr>\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit",
                "Salle 3.",
            ),
        ),
        (
            "plan",
            "Old",
            m(
                "From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>\r\n\
                 To: finder@example.org\r\nSubject: Projektplan Q3\r\n\
                 Date: Mon, 06 Jul 2026 07:00:00 +0000\r\nMessage-ID: <pp-4@example.de>",
                "Anbei der Plan.",
            ),
        ),
        (
            "overdue",
            "INBOX",
            m(
                "From: Eve <eve@example.net>\r\nTo: finder@example.org\r\n\
                 Subject: Invoice 42 overdue\r\nDate: Sat, 21 Nov 2026 18:00:00 +0000\r\n\
                 Message-ID: <od-5@example.net>",
                "Second reminder.",
            ),
        ),
    ]
}

fn cmd(bin: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn find_by_each_criterion_then_restore_what_was_found() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.create_user(USER).expect("create the user");
    let msgs = messages();
    let mut uid_of = std::collections::BTreeMap::new();
    for (key, folder, bytes) in &msgs {
        let uid = cyrus.append(USER, folder, bytes).expect("APPEND");
        uid_of.insert(*key, uid);
    }
    let guid_of = |key: &str| {
        let (_, _, b) = msgs.iter().find(|(k, _, _)| *k == key).unwrap();
        Guid::of(b).to_hex()
    };

    let backupd = Backupd::start(&cyrus, "find-e2e-secret-0123456789");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), backupd.addr(), &backupd.secret_text, 1, 4);
    let root = dir.path().join("store");
    let opts = StoreOptions::default();
    let mut c = backupd.connect();
    let o = backup(&mut c, &root, &opts, USER).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    // `find` takes whole seconds: a time after the first backup and before any change is
    // the next second, so wait for the clock to reach it before changing anything.
    let t1 = Timestamp::from_secs(now().secs + 1);
    while now() <= t1 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The overdue reminder expunged, the folder Old deleted; a second backup.
    assert_eq!(
        cyrus
            .expunge(USER, "INBOX", &uid_of["overdue"].to_string())
            .unwrap(),
        vec![uid_of["overdue"]]
    );
    cyrus.delete_folder(USER, "Old", false).unwrap();
    let o = backup(&mut c, &root, &opts, USER).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");

    let run = |q: FindQuery| -> Vec<FoundMessage> {
        let r = find(&root, USER, &q).unwrap();
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        r.messages
    };
    let keys = |found: &[FoundMessage]| -> BTreeSet<String> {
        found
            .iter()
            .map(|m| {
                msgs.iter()
                    .find(|(k, _, _)| guid_of(k) == m.guid)
                    .map(|(k, _, _)| k.to_string())
                    .unwrap_or_else(|| format!("unknown {}", m.guid))
            })
            .collect()
    };
    let set = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();

    // Everything, with where each is now.
    let all = run(FindQuery::default());
    assert_eq!(
        keys(&all),
        set(&["invoice", "greetings", "meeting", "plan", "overdue"])
    );
    let by = |key: &str| all.iter().find(|m| m.guid == guid_of(key)).unwrap().clone();
    let invoice = by("invoice");
    assert_eq!(invoice.folder, "INBOX");
    assert_eq!(invoice.uid, uid_of["invoice"]);
    assert_eq!(invoice.from, "Bob Smith <bob@example.com>");
    assert_eq!(invoice.to, "finder@example.org, Dave <dave@example.net>");
    assert_eq!(invoice.subject, "Facture décembre");
    assert_eq!(invoice.date, Some(1_795_509_000));
    assert_eq!(invoice.message_id, "inv-1@example.com");
    assert_eq!(invoice.state, FoundState::Live);
    assert_eq!(invoice.size, msgs[0].2.len() as u64);
    let meeting = by("meeting");
    assert_eq!(meeting.folder, "Données");
    assert_eq!(meeting.folder_stored, "Donn&AOk-es");
    assert_eq!(meeting.from, "Dupont, Renée <renee@example.fr>");
    assert_eq!(meeting.subject, "Réunion lundi");
    assert_eq!(by("greetings").subject, "Grüße aus Köln");
    assert_eq!(by("plan").from, "Jörg Müller <joerg@example.de>");
    assert!(
        matches!(by("plan").state, FoundState::FolderDeleted { at } if at >= t1.secs),
        "{:?}",
        by("plan").state
    );
    assert!(
        matches!(by("overdue").state, FoundState::Expunged { at } if at >= t1.secs),
        "{:?}",
        by("overdue").state
    );

    // Each criterion alone.
    let q = FindQuery::default;
    let from = |s: &str| {
        keys(&run(FindQuery {
            from: Some(s.into()),
            ..q()
        }))
    };
    assert_eq!(from("BOB"), set(&["invoice"]));
    assert_eq!(from("carol@example"), set(&["greetings"]));
    assert_eq!(from("renée"), set(&["meeting"]));
    assert_eq!(from("RENÉE"), set(&["meeting"]));
    assert_eq!(from("jörg"), set(&["plan"]));
    assert_eq!(from("example.net"), set(&["overdue"]));
    assert_eq!(from("nobody"), set(&[]));
    let to = keys(&run(FindQuery {
        to: Some("dave".into()),
        ..q()
    }));
    assert_eq!(to, set(&["invoice"]));
    let subject = |s: &str| {
        keys(&run(FindQuery {
            subject: Some(s.into()),
            ..q()
        }))
    };
    assert_eq!(subject("DÉCEMBRE"), set(&["invoice"]));
    assert_eq!(subject("köln"), set(&["greetings"]));
    assert_eq!(subject("réunion"), set(&["meeting"]));
    assert_eq!(subject("invoice"), set(&["overdue"]));
    // 2026-11-01 to 2026-11-22: the overdue reminder only (the invoice is the 24th).
    let dated = keys(&run(FindQuery {
        since: Some(1_793_491_200),
        before: Some(1_795_305_600),
        ..q()
    }));
    assert_eq!(dated, set(&["overdue"]));
    let folder = |f: &str| {
        keys(&run(FindQuery {
            folder: Some(f.into()),
            ..q()
        }))
    };
    assert_eq!(folder("Données"), set(&["meeting"]));
    assert_eq!(folder("Donn&AOk-es"), set(&["meeting"]));
    assert_eq!(folder("Old"), set(&["plan"]));
    assert!(find(
        &root,
        USER,
        &FindQuery {
            folder: Some("Nowhere".into()),
            ..q()
        }
    )
    .is_err());
    let deleted = keys(&run(FindQuery {
        deleted_only: true,
        ..q()
    }));
    assert_eq!(deleted, set(&["plan", "overdue"]));
    // As of the first backup, nothing was gone yet.
    let then = run(FindQuery {
        deleted_only: true,
        at: Some(t1.secs),
        ..q()
    });
    assert_eq!(keys(&then), set(&[]));
    let then = run(FindQuery {
        at: Some(t1.secs),
        ..q()
    });
    assert!(then.iter().all(|m| m.state == FoundState::Live), "{then:?}");
    assert_eq!(then.len(), 5);
    // Criteria together: and.
    let both = keys(&run(FindQuery {
        from: Some("example".into()),
        subject: Some("plan".into()),
        deleted_only: true,
        ..q()
    }));
    assert_eq!(both, set(&["plan"]));
    let limited = find(
        &root,
        USER,
        &FindQuery {
            limit: Some(2),
            ..q()
        },
    )
    .unwrap();
    assert_eq!(limited.messages.len(), 2);
    assert!(
        limited.notes[0].contains("more than 2"),
        "{:?}",
        limited.notes
    );

    // ---- the command: a table with UTF-8 folder names, JSON lines, exit 2 on no match.
    let bin = backup_server_bin();
    let o = cmd(
        &bin,
        &config,
        &["find", "--user", USER, "--folder", "Données"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[2],
        format!(
            "Données\t{}\t2026-09-15T06:00:00Z\tDupont, Renée <renee@example.fr>\tRéunion lundi\t{}\tlive\t{}",
            uid_of["meeting"],
            msgs[2].2.len(),
            guid_of("meeting")
        )
    );
    let o = cmd(
        &bin,
        &config,
        &[
            "find",
            "--user",
            USER,
            "--from",
            "jörg",
            "--deleted",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["folder"], "Old");
    assert_eq!(rows[0]["state"], "folder-deleted");
    assert_eq!(rows[0]["subject"], "Projektplan Q3");
    let guid = rows[0]["guid"].as_str().unwrap().to_owned();
    assert_eq!(guid, guid_of("plan"));
    let o = cmd(&bin, &config, &["find", "--user", USER, "--subject", "zzz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // ---- what was found, restored by its GUID, byte for byte.
    let eml = dir.path().join("restored");
    let o = cmd(
        &bin,
        &config,
        &[
            "restore",
            "--user",
            USER,
            "--guid",
            &guid,
            "--to",
            &format!("eml:{}", eml.display()),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let files: Vec<_> = walk(&eml);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), msgs[3].2);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
