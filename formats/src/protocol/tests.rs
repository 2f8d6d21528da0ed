//! Byte-exact examples (the same ones docs/protocol.md shows) and error texts.

use super::*;
use crate::{FileStat, Timestamp};

fn one(buf: &[u8]) -> Frame<'_> {
    let (f, used) = parse(buf).unwrap().unwrap();
    assert_eq!(used, buf.len(), "one frame exactly");
    f
}

#[test]
fn list_folders_request_bytes() {
    let mut out = Vec::new();
    Request::ListFolders {
        user: "alice".into(),
    }
    .encode(7, &mut out)
    .unwrap();
    assert_eq!(
        out,
        [0, 0, 0, 7, 0x12, 0, 0, 0, 7, 0, 5, b'a', b'l', b'i', b'c', b'e']
    );
    assert_eq!(
        Request::decode(&one(&out)).unwrap(),
        Request::ListFolders {
            user: "alice".into()
        }
    );
}

#[test]
fn error_reply_bytes() {
    let mut out = Vec::new();
    ErrorReply::new(ErrorCode::UnknownUser, "unknown user \"bob\"").encode(3, &mut out);
    let mut want = vec![0, 0, 0, 22, 0x81, 0, 0, 0, 3, 0, 7, 0, 18];
    want.extend_from_slice(b"unknown user \"bob\"");
    assert_eq!(out, want);
    let reply = Reply::decode(&one(&out)).unwrap();
    assert!(reply.is_final());
    let Reply::Error(e) = reply else { panic!() };
    assert_eq!(e.to_string(), "unknown user (code 7): unknown user \"bob\"");
}

#[test]
fn greeting_bytes_and_magic() {
    let g = Greeting {
        min_version: 1,
        max_version: 1,
        nonce: [0xab; 32],
        server: "x".into(),
    };
    let mut out = Vec::new();
    g.encode(&mut out).unwrap();
    assert_eq!(&out[..9], &[0, 0, 0, 47, 0x01, 0, 0, 0, 0]);
    assert_eq!(&out[9..17], b"MBACKUPD");
    assert_eq!(&out[17..21], &[0, 1, 0, 1]);
    assert_eq!(Greeting::decode(&one(&out)).unwrap(), g);
    // An IMAP server's banner is not a greeting: the "length" is far too large.
    let err = check(b"* OK [CAPABILITY IMAP4rev1] ready\r\n").unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }));
    let mut bad = out.clone();
    bad[9] = b'X';
    let e = Greeting::decode(&one(&bad)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "greeting body: expected the magic \"MBACKUPD\" at byte 0, found \"XBACKUPD\""
    );
}

#[test]
fn decode_errors_name_offset_and_field() {
    // A user name claiming 9 bytes with 2 present.
    let mut out = Vec::new();
    frame::write_frame(kind::LIST_FOLDERS, 1, &[0, 9, b'a', b'b'], &mut out).unwrap();
    let e = Request::decode(&one(&out)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "list folders body: expected user at byte 2, found the end of the body (2 of 9 bytes left)"
    );
    // A UID count of a billion in a 10-byte body allocates nothing.
    out.clear();
    frame::write_frame(
        kind::FETCH_MESSAGES,
        1,
        &[0, 1, b'u', 0, 1, b'f', 0x3b, 0x9a, 0xca, 0x00],
        &mut out,
    )
    .unwrap();
    let e = Request::decode(&one(&out)).unwrap_err();
    assert_eq!(e.offset, 6);
    assert!(e.to_string().contains("a count of 1000000000 items"), "{e}");
    // Trailing bytes.
    out.clear();
    frame::write_frame(kind::PING, 1, &[0], &mut out).unwrap();
    let e = Request::decode(&one(&out)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ping body: expected the end of the body at byte 0, found 1 more bytes"
    );
    // Not UTF-8.
    out.clear();
    frame::write_frame(kind::LIST_FOLDERS, 1, &[0, 2, b'a', 0xff], &mut out).unwrap();
    let e = Request::decode(&one(&out)).unwrap_err();
    assert_eq!(e.offset, 3);
    // A reply kind sent as a request.
    out.clear();
    Reply::End { items: 0 }.encode(1, &mut out).unwrap();
    let e = Request::decode(&one(&out)).unwrap_err();
    assert_eq!(e.expected, message::REQUEST);
    // Bad nanoseconds in a stat.
    out.clear();
    let mut body = vec![1];
    body.extend_from_slice(&[0; 8]); // size
    body.extend_from_slice(&[0; 8]); // secs
    body.extend_from_slice(&1_000_000_000u32.to_be_bytes());
    body.extend_from_slice(&[0; 8]); // inode
    body.extend_from_slice(&[0; 8]); // size
    frame::write_frame(kind::META_FILE, 1, &body, &mut out).unwrap();
    let e = Reply::decode(&one(&out)).unwrap_err();
    assert_eq!(e.offset, 17);
}

#[test]
fn long_lists_split_into_frames() {
    let users: Vec<UserEntry> = (0..50_000)
        .map(|i| UserEntry {
            user: format!("user{i:06}@example.com"),
            partition: "default".into(),
        })
        .collect();
    let mut out = Vec::new();
    let frames = encode_users(9, &users, &mut out).unwrap();
    assert!(frames > 1, "{frames}");
    let mut back = Vec::new();
    let mut rest = &out[..];
    let mut seen = 0;
    while let Some((f, used)) = parse(rest).unwrap() {
        assert!(f.body.len() <= LIST_FRAME_TARGET + 200);
        assert_eq!(f.id, 9);
        let Reply::Users(u) = Reply::decode(&f).unwrap() else {
            panic!()
        };
        back.extend(u);
        rest = &rest[used..];
        seen += 1;
    }
    assert_eq!(seen, frames);
    assert_eq!(back, users);
    // An empty list is still one frame.
    out.clear();
    assert_eq!(encode_folders(1, &[], &mut out).unwrap(), 1);
    assert_eq!(
        Reply::decode(&one(&out)).unwrap(),
        Reply::Folders(Vec::new())
    );
}

#[test]
fn encode_refuses_what_cannot_travel() {
    let mut out = vec![1, 2, 3];
    let long = "x".repeat(70_000);
    let e = Request::ListFolders { user: long.clone() }
        .encode(1, &mut out)
        .unwrap_err();
    assert_eq!(
        e,
        EncodeError::StringTooLong {
            what: "user",
            len: 70_000
        }
    );
    assert_eq!(out, [1, 2, 3], "nothing half-written");
    assert_eq!(
        Reply::Data(Vec::new()).encode(1, &mut out),
        Err(EncodeError::EmptyData)
    );
    let bad_time = FileStat {
        size: 1,
        mtime: Timestamp {
            secs: 0,
            nanos: 1_000_000_000,
        },
        inode: 1,
    };
    assert!(Reply::MetaFile {
        kind: MetaFile::Index,
        stat: bad_time,
        size: 1
    }
    .encode(1, &mut out)
    .is_err());
    assert_eq!(out, [1, 2, 3]);
    // Error texts are cut, never refused.
    ErrorReply::new(ErrorCode::Io, "é".repeat(40_000)).encode(1, &mut out);
    let f = one(&out[3..]);
    let Reply::Error(e) = Reply::decode(&f).unwrap() else {
        panic!()
    };
    assert_eq!(e.text.len(), 65_534);
}

#[test]
fn unknown_error_codes_keep_their_number() {
    for n in 0..=20u16 {
        assert_eq!(ErrorCode::from_code(n).code(), n);
    }
    assert_eq!(ErrorCode::from_code(999), ErrorCode::Other(999));
}

#[test]
fn user_file_lists_are_bounded_both_ways() {
    // A 16 MiB body of one-byte ids would decode into some 400 MB of ids: refused from the
    // count alone, before anything is allocated.
    let n = MAX_BODY as usize - 6;
    let mut body = vec![0, 0];
    body.extend_from_slice(&(n as u32).to_be_bytes());
    body.resize(MAX_BODY as usize, 1);
    let mut out = Vec::new();
    frame::write_frame(kind::FETCH_USER_FILES, 1, &body, &mut out).unwrap();
    let e = Request::decode(&one(&out)).unwrap_err();
    assert_eq!(e.offset, 2);
    assert_eq!(
        e.to_string(),
        format!(
            "fetch user files body: expected a user file list of at most {MAX_USER_FILE_IDS} \
             ids at byte 2, found a count of {n}"
        )
    );
    // The bound itself is accepted, one more is refused by the encoder too.
    let ids = |n| Request::FetchUserFiles {
        user: "u".into(),
        ids: vec![UserFileId::Seen; n],
    };
    out.clear();
    ids(MAX_USER_FILE_IDS).encode(1, &mut out).unwrap();
    assert_eq!(Request::decode(&one(&out)).unwrap(), ids(MAX_USER_FILE_IDS));
    out.clear();
    assert_eq!(
        ids(MAX_USER_FILE_IDS + 1).encode(1, &mut out),
        Err(EncodeError::ListTooLong {
            what: "user file list",
            len: MAX_USER_FILE_IDS + 1,
            max: MAX_USER_FILE_IDS
        })
    );
    assert!(out.is_empty(), "nothing half-written");
}
