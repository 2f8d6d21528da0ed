//! Entries as Cyrus 3.0 to 3.4 wrote them (imap/mboxlist.c of those versions: the internal
//! name as key, no `T` for plain mail folders, kind letters among the flags), and the layout
//! detection Cyrus 3.6 applies before upgrading such a database.

use formats::cyrus::mailboxes::{
    detect_layout, KeyLayout, MailboxEntry, MailboxKey, MailboxKind, MailboxType, SpoolHashing,
};

#[test]
fn a_3_4_entry() {
    let key = b"example.com!user.john^doe.Work";
    let value = b"%(A %(john.doe@example.com lrswipkxtecdan anyone p) I 0123456789abcdef \
        P default V 1500000001 C 4 F 9 M 1500000000)";
    let MailboxKey::Name(name) = MailboxKey::classify(key, KeyLayout::Legacy) else {
        panic!("a name key")
    };
    let e = MailboxEntry::decode(name, value, KeyLayout::Legacy, "DELETED").unwrap();
    assert_eq!(e.name.intname(), "example.com!user.john^doe.Work");
    assert_eq!(e.name.userid().as_deref(), Some("john.doe@example.com"));
    assert_eq!(e.name.folder(), "Work");
    assert_eq!(e.mbtype.kind, MailboxKind::Email);
    assert!(
        e.mbtype.legacy_dirs,
        "everything was stored by name before 3.5"
    );
    assert_eq!(
        (e.uidvalidity, e.createdmodseq, e.foldermodseq),
        (1500000001, 4, 9)
    );
    assert_eq!(e.acl[1], ("anyone".to_string(), "p".to_string()));
    assert_eq!(
        e.spool_dir(SpoolHashing::default()).unwrap(),
        "domain/example.com/user/john^doe/Work"
    );
}

#[test]
fn type_letters_old_and_new() {
    let t = MailboxType::parse("dc").unwrap(); // 3.4: deleted calendar, flags first
    assert!(t.tombstone && t.kind == MailboxKind::Calendar && !t.has_spool_dir());
    let t = MailboxType::parse("ei").unwrap();
    assert!(t.intermediate && t.kind == MailboxKind::Email && !t.has_spool_dir());
    let t = MailboxType::parse("el").unwrap();
    assert!(t.legacy_dirs && t.has_spool_dir());
    assert_eq!(MailboxType::parse("").unwrap(), MailboxType::default());
    assert_eq!(MailboxType::parse("ex"), Err('x'));
    assert_eq!(MailboxType::parse("ec"), Err('c'), "two kinds");
}

#[test]
fn which_layout() {
    let by_name = [
        (&b"AS\x1fanyone\x1fuser\x1fa"[..], &b""[..]),
        (b"Iabc", b"%(T e N user\x1fa P default)"),
    ];
    assert_eq!(detect_layout(by_name), KeyLayout::ByName);
    let legacy = [(&b"$RACL"[..], &b"2"[..]), (b"user.a", b"%(P default)")];
    assert_eq!(detect_layout(legacy), KeyLayout::Legacy);
    // An I key whose entry does not name the mailbox: a 3.0-3.4 mailbox called "I...".
    assert_eq!(
        detect_layout([(&b"Ifoo"[..], &b"%(P default)"[..])]),
        KeyLayout::Legacy
    );
    assert_eq!(
        detect_layout([(&b"user.a"[..], &b"%(P default)"[..])]),
        KeyLayout::Legacy
    );
    assert_eq!(
        detect_layout([(&b"Nuser\x1fa"[..], &b"%(T e P default)"[..])]),
        KeyLayout::ByName
    );
    assert_eq!(
        MailboxKey::classify(b"$RACL", KeyLayout::Legacy),
        MailboxKey::Other
    );
    assert_eq!(
        MailboxKey::classify(b"Iabc", KeyLayout::ByName),
        MailboxKey::Id(b"abc")
    );
    assert_eq!(
        MailboxKey::classify(b"AS\x1fx", KeyLayout::ByName),
        MailboxKey::Other
    );
}

#[test]
fn bad_values_name_the_key() {
    let err = MailboxEntry::decode(b"user\x1fa", b"%(T e V abc)", KeyLayout::ByName, "DELETED")
        .unwrap_err()
        .to_string();
    assert!(err.contains("user/a") && err.contains("decimal"), "{err}");
    let err = MailboxEntry::decode(b"user\x1fa", b"%(T e", KeyLayout::ByName, "DELETED")
        .unwrap_err()
        .to_string();
    assert!(err.contains("user/a") && err.contains("byte"), "{err}");
}

#[test]
fn type_letters_print_as_cyrus_3_6_writes_them() {
    for letters in ["e", "ei", "el", "cd", "ed", "edi", "fl", "erz", "em"] {
        assert_eq!(MailboxType::parse(letters).unwrap().to_string(), letters);
    }
    assert_eq!(MailboxType::parse("dc").unwrap().to_string(), "cd");
    assert_eq!(MailboxType::parse("").unwrap().to_string(), "e");
}
