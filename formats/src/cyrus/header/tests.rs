//! Unit tests of the cyrus.header reader and writer: each kind of damage names its offset,
//! and whatever is written reads back the same, in both forms.

use super::*;
use proptest::prelude::*;

fn with_magic(rest: &[u8]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(rest);
    v
}

#[test]
fn magic_is_115_bytes() {
    assert_eq!(MAGIC.len(), 115);
    assert!(MAGIC.ends_with(b"\n\t--Jim Morris on Andrew\n"));
}

#[test]
fn bad_magic_names_the_first_wrong_byte() {
    let mut b = with_magic(b"%(I x)\n");
    b[10] = b'X';
    let e = parse(&b).unwrap_err();
    assert_eq!(e.offset, 10);
    assert_eq!(e.expected, "the cyrus.header magic");
    assert!(e
        .to_string()
        .starts_with("at byte 10: expected the cyrus.header magic, found \"X"));
    assert_eq!(parse(b"").unwrap_err().offset, 0);
    assert_eq!(parse(b"\xa1\x02\x8b\x0d").unwrap_err().offset, 4);
    assert_eq!(
        parse(&MAGIC[..50]).unwrap_err().to_string(),
        "at byte 50: expected the cyrus.header magic, found end of file"
    );
}

#[test]
fn missing_line_end() {
    let e = parse(&with_magic(b"%(I x)")).unwrap_err();
    assert_eq!((e.offset, e.expected), (121, "a line ending in \\n"));
    assert_eq!(parse(MAGIC).unwrap_err().offset, 115);
    // Tab form: the ACL line is missing.
    let e = parse(&with_magic(b"\tid\nflag \n")).unwrap_err();
    assert_eq!(e.offset, 125);
}

#[test]
fn bad_dlist_names_the_offset_in_the_file() {
    let e = parse(&with_magic(b"%(I x N)\n")).unwrap_err();
    assert_eq!(e.offset, 115 + 7);
    let e = parse(&with_magic(b"%(I x) junk\n")).unwrap_err();
    assert_eq!(
        (e.offset, e.expected),
        (121, "the end of the line after the dlist")
    );
    let e = parse(&with_magic(b"%(A (x y))\n")).unwrap_err();
    assert_eq!(
        (e.offset, e.expected),
        (115, "a key-value list for the ACL A")
    );
    let e = parse(&with_magic(b"%(U %(a b))\n")).unwrap_err();
    assert_eq!(e.expected, "a list for the user flags U");
    let e = parse(&with_magic(b"%(N (a))\n")).unwrap_err();
    assert_eq!(e.expected, "an atom for the mailbox name N");
}

#[test]
fn not_utf8() {
    let e = parse(&with_magic(b"%(N ab\xff)\n")).unwrap_err();
    assert_eq!(e.found, "invalid UTF-8");
    let e = parse(&with_magic(b"\tabc\nok b\xffd \n\n")).unwrap_err();
    assert_eq!(
        (e.offset, e.expected),
        (120 + 3 + 1, "a UTF-8 user flag name")
    );
}

#[test]
fn tab_form_errors() {
    let e = parse(&with_magic(b"root\t\nf\nacl\tlr\t\n")).unwrap_err();
    assert_eq!((e.offset, e.expected), (120, "a unique id after the tab"));
    let e = parse(&with_magic(b"\tid\n\nalice\n")).unwrap_err();
    assert_eq!(e.expected, "a tab and rights after the ACL identifier");
    assert_eq!(e.offset, 115 + 4 + 1 + 5);
    // Before Cyrus 2.2: no unique id at all.
    let h = parse(&with_magic(b"user.bob\n\nbob\tlrs\t\n")).unwrap();
    assert_eq!(
        (h.quota_root.as_deref(), h.unique_id),
        (Some("user.bob"), None)
    );
}

#[test]
fn nil_and_free_slots() {
    let h = parse(&with_magic(b"%(U ($A NIL $B NIL NIL) X (1 2) Q NIL)\n")).unwrap();
    assert_eq!(
        h.user_flags,
        [Some("$A".to_string()), None, Some("$B".to_string())]
    );
    assert_eq!(h.quota_root, None);
    assert_eq!(h.other, [("X".to_string(), "(1 2)".to_string())]);
    assert_eq!(parse(&h.to_bytes()).unwrap(), h);
    // Repeated keys replace, as in Cyrus.
    let h = parse(&with_magic(b"%(U (a b) U (c) A %(x l) A %(y r))\n")).unwrap();
    assert_eq!(h.user_flags, [Some("c".to_string())]);
    assert_eq!(h.acl.len(), 1);
    assert_eq!(h.acl[0].identifier, "y");
}

#[test]
fn jmap_id_of_the_development_branch() {
    let b = with_magic(b"%(T e N user.a I u1 J j1 Q user.a A %(a lrs) U ($X))\n");
    let h = parse(&b).unwrap();
    assert_eq!(h.jmap_id.as_deref(), Some("j1"));
    assert_eq!(h.quota_root.as_deref(), Some("user.a"));
    assert_eq!(h.to_bytes(), b);
}

#[test]
fn file_crc_is_zlib_crc32() {
    assert_eq!(file_crc(b"123456789"), 0xcbf4_3926);
}

// ---------------------------------------------------------------------------------------------
// Property: parse(to_bytes(x)) == x in both forms.

/// Names as Cyrus writes them: printable ASCII, no space (flags), no tab (tab form).
fn name() -> impl Strategy<Value = String> {
    "[!-~]{1,12}"
}

fn acl() -> impl Strategy<Value = Vec<AclEntry>> {
    proptest::collection::vec(
        (name(), "[a-z]{0,14}").prop_map(|(identifier, rights)| AclEntry { identifier, rights }),
        0..4,
    )
}

fn flags() -> impl Strategy<Value = Vec<Option<String>>> {
    proptest::collection::vec(proptest::option::weighted(0.8, name()), 0..10).prop_map(|mut f| {
        while f.last().is_some_and(Option::is_none) {
            f.pop();
        }
        f
    })
}

proptest! {
    #[test]
    fn dlist_form_round_trips(
        mbtype in proptest::option::of("[a-z]{1,3}"),
        n in proptest::option::of(name()),
        i in proptest::option::of("[a-z0-9]{24}"),
        j in proptest::option::of(name()),
        q in proptest::option::of(name()),
        acl in acl(),
        user_flags in flags(),
    ) {
        let h = MailboxHeader {
            format: HeaderFormat::Dlist,
            mbtype, name: n, unique_id: i, jmap_id: j, quota_root: q, acl, user_flags,
            other: vec![],
        };
        let bytes = h.to_bytes();
        prop_assert_eq!(parse(&bytes).unwrap(), h);
    }

    #[test]
    fn tab_form_round_trips(
        q in proptest::option::of("[!-~&&[^%]][!-~]{0,10}"),
        i in proptest::option::of("[a-z0-9]{1,24}"),
        acl in acl(),
        user_flags in flags(),
    ) {
        let h = MailboxHeader {
            format: HeaderFormat::Tabs,
            quota_root: q, unique_id: i, acl, user_flags,
            ..Default::default()
        };
        prop_assert_eq!(parse(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&with_magic(&tail));
        let _ = parse(&tail);
    }
}
