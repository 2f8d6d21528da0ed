use super::*;
use crate::protocol::message::{ErrorCode, UserFileId};
use crate::Timestamp;

fn stat(size: u64) -> FileStat {
    FileStat {
        size,
        mtime: Timestamp::from_secs(1_700_000_000),
        inode: 7,
    }
}

/// Encodes replies as frames for request `id`, then feeds them one by one.
fn feed<A: Assemble>(
    asm: &mut Assembler<A>,
    id: u32,
    replies: &[Reply],
) -> Result<Option<A::Output>, ReplyError> {
    let mut out = None;
    for r in replies {
        let mut buf = Vec::new();
        r.encode(id, &mut buf).unwrap();
        let (frame, _) = crate::protocol::parse(&buf).unwrap().unwrap();
        assert!(out.is_none(), "a frame after the reply completed");
        out = asm.push(&frame)?;
    }
    Ok(out)
}

fn user(name: &str) -> UserEntry {
    UserEntry {
        user: name.into(),
        partition: "default".into(),
    }
}

#[test]
fn users_across_frames_and_the_count_checked() {
    let mut a = Assembler::new(3, Users::default());
    let got = feed(
        &mut a,
        3,
        &[
            Reply::Users(vec![user("a")]),
            Reply::Users(vec![user("b"), user("c")]),
            Reply::End { items: 3 },
        ],
    )
    .unwrap();
    assert_eq!(got.unwrap().len(), 3);
    let mut a = Assembler::new(3, Users::default());
    let e = feed(
        &mut a,
        3,
        &[Reply::Users(vec![user("a")]), Reply::End { items: 2 }],
    );
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("2 users announced")));
}

#[test]
fn an_error_frame_fails_the_request_and_id_zero_closes() {
    let err = ErrorReply::new(ErrorCode::UnknownUser, "unknown user \"x\"");
    let mut a = Assembler::new(5, Listing::default());
    assert_eq!(
        feed(&mut a, 5, &[Reply::Error(err.clone())]),
        Err(ReplyError::Remote(err.clone()))
    );
    let mut a = Assembler::new(5, Listing::default());
    assert_eq!(
        feed(&mut a, 0, &[Reply::Error(err.clone())]),
        Err(ReplyError::Closing(err))
    );
    let mut a = Assembler::new(5, Listing::default());
    let e = feed(&mut a, 6, &[Reply::End { items: 0 }]);
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("found one of reply 6")));
}

#[test]
fn a_listing_needs_its_user_files_frame_then_the_end() {
    let mut a = Assembler::new(1, Listing::default());
    let e = feed(&mut a, 1, &[Reply::End { items: 0 }]);
    assert!(matches!(e, Err(ReplyError::Protocol(_))), "{e:?}");
    let mut a = Assembler::new(1, Listing::default());
    let got = feed(
        &mut a,
        1,
        &[Reply::UserFiles(vec![]), Reply::End { items: 0 }],
    );
    assert_eq!(got.unwrap(), Some(UserListing::default()));
    let mut a = Assembler::new(1, Listing::default());
    let e = feed(
        &mut a,
        1,
        &[
            Reply::UserFiles(vec![]),
            Reply::UserFiles(vec![]),
            Reply::End { items: 0 },
        ],
    );
    assert!(
        matches!(e, Err(ReplyError::Protocol(_))),
        "a second user-files frame"
    );
}

#[test]
fn a_meta_copy_joins_data_frames_and_refuses_too_many_bytes() {
    let mut a = Assembler::new(2, Meta::new("uid1"));
    let got = feed(
        &mut a,
        2,
        &[
            Reply::MetaFile {
                kind: MetaFile::Header,
                stat: stat(3),
                size: 3,
            },
            Reply::Data(b"ab".to_vec()),
            Reply::Data(b"c".to_vec()),
            Reply::MetaFile {
                kind: MetaFile::Index,
                stat: stat(0),
                size: 0,
            },
            Reply::End { items: 2 },
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(got.uniqueid, "uid1");
    assert_eq!(got.header.0, b"abc");
    assert_eq!(got.index.0, b"");
    assert_eq!(got.annotations, None);
    assert_eq!(got.files().count(), 2);

    let mut a = Assembler::new(2, Meta::new("uid1"));
    let e = feed(
        &mut a,
        2,
        &[
            Reply::MetaFile {
                kind: MetaFile::Header,
                stat: stat(3),
                size: 2,
            },
            Reply::Data(b"abc".to_vec()),
        ],
    );
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("3 bytes where 2 remain")));

    let mut a = Assembler::new(2, Meta::new("uid1"));
    let e = feed(&mut a, 2, &[Reply::End { items: 0 }]);
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("without cyrus.header")));
}

#[test]
fn user_files_answer_each_id_in_order() {
    let ids = [
        UserFileId::Seen,
        UserFileId::Subscriptions,
        UserFileId::SieveActive,
    ];
    let failed = ErrorReply::new(ErrorCode::Io, "reading sub.db: EIO");
    let mut a = Assembler::new(9, UserFiles::new(ids.len()));
    let got = feed(
        &mut a,
        9,
        &[
            Reply::Absent {
                id: UserFileId::Seen,
            },
            Reply::UserFile {
                id: UserFileId::Subscriptions,
                stat: stat(4),
                size: 4,
            },
            Reply::Data(b"ab".to_vec()),
            Reply::ItemError(failed.clone()),
            Reply::UserFile {
                id: UserFileId::SieveActive,
                stat: stat(1),
                size: 1,
            },
            Reply::Data(b"x".to_vec()),
            Reply::End { items: 3 },
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        got,
        vec![
            UserFile::Absent,
            UserFile::Failed(failed),
            UserFile::Found {
                bytes: b"x".to_vec(),
                stat: stat(1)
            }
        ]
    );
    let mut a = Assembler::new(9, UserFiles::new(1));
    let e = feed(
        &mut a,
        9,
        &[
            Reply::Absent {
                id: UserFileId::Seen,
            },
            Reply::Absent {
                id: UserFileId::Seen,
            },
        ],
    );
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("more answers")));
}

#[test]
fn nothing_after_the_end() {
    let mut a = Assembler::new(4, EndOnly);
    assert_eq!(feed(&mut a, 4, &[Reply::End { items: 0 }]), Ok(Some(0)));
    let e = feed(&mut a, 4, &[Reply::End { items: 0 }]);
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("after the reply ended")));
}

fn stream_push(s: &mut MessageStream, id: u32, r: &Reply) -> Result<StreamEvent, ReplyError> {
    let mut buf = Vec::new();
    r.encode(id, &mut buf).unwrap();
    let (frame, _) = crate::protocol::parse(&buf).unwrap().unwrap();
    let len = frame.body.len() as u32;
    s.push(&frame, len)
}

#[test]
fn a_message_stream_counts_items_and_bounds_data() {
    let mut s = MessageStream::new(8);
    let ev = |s: &mut MessageStream, r| stream_push(s, 8, &r).unwrap();
    assert_eq!(
        ev(&mut s, Reply::Message { uid: 1, size: 3 }),
        StreamEvent::Message { uid: 1, size: 3 }
    );
    assert_eq!(
        ev(&mut s, Reply::Data(b"ab".to_vec())),
        StreamEvent::Data { len: 2 }
    );
    assert_eq!(s.item_left(), 1);
    let failed = ErrorReply::new(ErrorCode::Io, "gone half way");
    assert_eq!(
        ev(&mut s, Reply::ItemError(failed.clone())),
        StreamEvent::Failed(failed)
    );
    assert_eq!(
        ev(&mut s, Reply::Gone { uid: 2 }),
        StreamEvent::Gone { uid: 2 }
    );
    assert_eq!(ev(&mut s, Reply::End { items: 2 }), StreamEvent::End);
    assert!(s.is_done());

    let mut s = MessageStream::new(8);
    ev(&mut s, Reply::Message { uid: 1, size: 1 });
    let e = stream_push(&mut s, 8, &Reply::Data(b"ab".to_vec()));
    assert!(
        matches!(e, Err(ReplyError::Protocol(m)) if m.contains("expected 1 more message bytes"))
    );
    assert!(s.is_done());

    let mut s = MessageStream::new(8);
    let e = stream_push(&mut s, 8, &Reply::End { items: 1 });
    assert!(matches!(e, Err(ReplyError::Protocol(m)) if m.contains("1 messages announced")));
}
