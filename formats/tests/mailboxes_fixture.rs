//! The mailbox list of the Cyrus 3.6 fixture, decoded, against what `ctl_mboxlist -d` printed
//! for it (mboxlist.json), and the directories against the spool on disk.

use formats::cyrus::mailboxes::{
    mailboxes, KeyLayout, MailboxEntry, MailboxKind, MailboxName, SpoolHashing,
    DEFAULT_DELETED_PREFIX,
};
use std::path::Path;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");

fn entries() -> Vec<MailboxEntry> {
    let data = std::fs::read(Path::new(FIXTURE).join("conf/mailboxes.db")).unwrap();
    let list = mailboxes(&data, DEFAULT_DELETED_PREFIX).unwrap();
    assert_eq!(list.layout(), KeyLayout::ByName);
    list.collect::<Result<_, _>>().unwrap()
}

#[test]
fn entries_equal_ctl_mboxlist_dump() {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(FIXTURE).join("mboxlist.json")).unwrap())
            .unwrap();
    let dump = json.as_object().unwrap();
    let got = entries();
    assert_eq!(got.len(), dump.len());
    for e in &got {
        let name = e.name.intname();
        let want = &dump[&name];
        let s = |k: &str| want[k].as_str().unwrap().to_owned();
        assert_eq!(name, s("name"));
        assert_eq!(e.uniqueid, s("uniqueid"), "{name}");
        assert_eq!(e.partition, s("partition"), "{name}");
        assert_eq!(e.mtime.to_string(), s("mtime"), "{name}");
        assert_eq!(e.uidvalidity.to_string(), s("uidvalidity"), "{name}");
        assert_eq!(e.createdmodseq.to_string(), s("createdmodseq"), "{name}");
        assert_eq!(e.foldermodseq.to_string(), s("foldermodseq"), "{name}");
        assert_eq!(e.mbtype.to_string(), s("mbtype"));
        assert_eq!(e.mbtype.kind, MailboxKind::Email);
        assert!(e.mbtype.has_spool_dir() && !e.mbtype.legacy_dirs);
        assert_eq!(e.server, None);
        let acl: Vec<(String, String)> = want["acl"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let mut got_acl = e.acl.clone();
        got_acl.sort();
        let mut want_acl = acl;
        want_acl.sort();
        assert_eq!(got_acl, want_acl, "{name}");
    }
}

#[test]
fn users_and_folders() {
    let got: Vec<(Option<String>, String)> = entries()
        .iter()
        .map(|e| (e.name.userid(), e.name.folder()))
        .collect();
    let u = Some("fx0".to_string());
    assert_eq!(
        got,
        [
            (u.clone(), "INBOX".into()),
            (u.clone(), "Archive".into()),
            (u.clone(), "Archive/2025".into()),
            (u.clone(), "Lists".into()),
            (u, "Work".into()),
        ]
    );
}

#[test]
fn directories_exist_on_the_fixture_spool() {
    let roots = [("default", "spool/p1"), ("p2", "spool/p2")];
    for e in entries() {
        let dir = e.spool_dir(SpoolHashing::default()).unwrap();
        let u = &e.uniqueid;
        assert_eq!(dir, format!("uuid/{}/{}/{u}", &u[..1], &u[1..2]));
        let root = roots.iter().find(|(p, _)| *p == e.partition).unwrap().1;
        let header = Path::new(FIXTURE)
            .join(root)
            .join(&dir)
            .join("cyrus.header");
        assert!(header.is_file(), "{}", header.display());
    }
}

#[test]
fn names_in_both_notations() {
    let cases = [
        ("user\x1falice", "user.alice", Some("alice"), "INBOX"),
        (
            "user\x1fjohn.doe\x1fWork\x1fa.b",
            "user.john^doe.Work.a^b",
            Some("john.doe"),
            "Work/a.b",
        ),
        (
            "example.com\x1duser\x1falice\x1fSent",
            "example.com!user.alice.Sent",
            Some("alice@example.com"),
            "Sent",
        ),
        ("shared\x1fnews", "shared.news", None, "shared/news"),
        ("user", "user", None, "user"),
        (
            "DELETED\x1fuser\x1falice\x1fOld\x1f65A0B1C2",
            "DELETED.user.alice.Old.65A0B1C2",
            Some("alice"),
            "Old",
        ),
    ];
    for (dbname, intname, user, folder) in cases {
        let a = MailboxName::from_dbname(dbname, "DELETED");
        let b = MailboxName::from_intname(intname, "DELETED");
        assert_eq!(a, b, "{intname}");
        assert_eq!(a.intname(), intname);
        assert_eq!(a.userid().as_deref(), user, "{intname}");
        assert_eq!(a.folder(), folder, "{intname}");
    }
    let d = MailboxName::from_intname("DELETED.user.alice.Old.65A0B1C2", "DELETED");
    assert_eq!(d.deleted.unwrap().at, 0x65A0_B1C2);
}

/// A mailboxes.db written by Cyrus 3.6 (`ctl_mboxlist -u`) with mailboxes flagged `l`
/// (stored by name), one in a virtual domain; the directories are what Cyrus's `mbpath`
/// printed with `hashimapspool: yes` and `fulldirhash` on, then off (the plain ones follow
/// from mboxname_hash without hashing).
#[test]
fn legacy_directories_match_mbpath() {
    let data = include_bytes!("data/mailboxes_legacy_dirs.db");
    let full = SpoolHashing {
        hashimapspool: true,
        fulldirhash: true,
    };
    let first = SpoolHashing {
        hashimapspool: true,
        fulldirhash: false,
    };
    let want = [
        (
            "example.com!user.alice",
            "domain/O/example.com/L/user/alice",
            "domain/e/example.com/a/user/alice",
            "domain/example.com/user/alice",
        ),
        ("shared", "T/shared", "s/shared", "shared"),
        (
            "user.john^doe.Work",
            "K/user/john^doe/Work",
            "j/user/john^doe/Work",
            "user/john^doe/Work",
        ),
        ("user.zed", "M/user/zed", "z/user/zed", "user/zed"),
    ];
    let got: Vec<MailboxEntry> = mailboxes(data, "DELETED")
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), want.len());
    for (e, (name, full_dir, first_dir, plain_dir)) in got.iter().zip(want) {
        assert_eq!(e.name.intname(), name);
        assert!(e.mbtype.legacy_dirs);
        assert_eq!(e.spool_dir(full).unwrap(), full_dir);
        assert_eq!(e.spool_dir(first).unwrap(), first_dir);
        assert_eq!(e.spool_dir(SpoolHashing::default()).unwrap(), plain_dir);
    }
    assert_eq!(got[0].name.userid().as_deref(), Some("alice@example.com"));
}
