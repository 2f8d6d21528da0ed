//! Every protocol message survives encode then decode; arbitrary bytes never panic the
//! frame decoder or the message decoders; a stream cut anywhere decodes to the same frames.

use formats::protocol::*;
use formats::{FileStat, Timestamp};
use proptest::prelude::*;

fn stat() -> impl Strategy<Value = FileStat> {
    (
        any::<u64>(),
        any::<i64>(),
        0u32..1_000_000_000,
        any::<u64>(),
    )
        .prop_map(|(size, secs, nanos, inode)| FileStat {
            size,
            mtime: Timestamp::new(secs, nanos).unwrap(),
            inode,
        })
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, NUL and control characters included: the codec carries them all.
    ".{0,40}"
}

fn user_file_id() -> impl Strategy<Value = UserFileId> {
    prop_oneof![
        Just(UserFileId::Seen),
        Just(UserFileId::Subscriptions),
        text().prop_map(UserFileId::SieveScript),
        Just(UserFileId::SieveActive),
    ]
}

fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (any::<u16>(), text()).prop_map(|(c, t)| ErrorReply::new(ErrorCode::from_code(c), t))
}

fn folder() -> impl Strategy<Value = FolderStat> {
    (
        text(),
        text(),
        text(),
        any::<u32>(),
        stat(),
        stat(),
        proptest::option::of(stat()),
    )
        .prop_map(
            |(name, uniqueid, partition, uidvalidity, header, index, annotations)| FolderStat {
                name,
                uniqueid,
                partition,
                uidvalidity,
                header,
                index,
                annotations,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::ListUsers),
        text().prop_map(|user| Request::ListFolders { user }),
        (text(), text()).prop_map(|(user, uniqueid)| Request::CopyMeta { user, uniqueid }),
        (
            text(),
            text(),
            proptest::collection::vec(any::<u32>(), 0..50)
        )
            .prop_map(|(user, uniqueid, uids)| Request::FetchMessages {
                user,
                uniqueid,
                uids
            }),
        (text(), proptest::collection::vec(user_file_id(), 0..10))
            .prop_map(|(user, ids)| Request::FetchUserFiles { user, ids }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let meta_kind = prop_oneof![
        Just(MetaFile::Header),
        Just(MetaFile::Index),
        Just(MetaFile::Annotations)
    ];
    prop_oneof![
        any::<u64>().prop_map(|items| Reply::End { items }),
        error_reply().prop_map(Reply::Error),
        error_reply().prop_map(Reply::ItemError),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Reply::Data),
        proptest::collection::vec(
            (text(), text()).prop_map(|(user, partition)| UserEntry { user, partition }),
            0..20
        )
        .prop_map(Reply::Users),
        proptest::collection::vec(folder(), 0..8).prop_map(Reply::Folders),
        proptest::collection::vec(
            (user_file_id(), stat()).prop_map(|(id, stat)| UserFileStat { id, stat }),
            0..8
        )
        .prop_map(Reply::UserFiles),
        (meta_kind, stat(), any::<u64>()).prop_map(|(kind, stat, size)| Reply::MetaFile {
            kind,
            stat,
            size
        }),
        (any::<u32>(), any::<u64>()).prop_map(|(uid, size)| Reply::Message { uid, size }),
        any::<u32>().prop_map(|uid| Reply::Gone { uid }),
        (user_file_id(), stat(), any::<u64>()).prop_map(|(id, stat, size)| Reply::UserFile {
            id,
            stat,
            size
        }),
        user_file_id().prop_map(|id| Reply::Absent { id }),
    ]
}

/// Every frame in `buf`, decoded as far as the frame layer goes.
fn frames(buf: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some((f, used)) = parse(rest).unwrap() {
        out.push((f.kind, f.id, f.body.to_vec()));
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "{} bytes left over", rest.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_roundtrip(req in request(), id in any::<u32>()) {
        let mut buf = Vec::new();
        req.encode(id, &mut buf).unwrap();
        let (f, used) = parse(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(f.id, id);
        prop_assert_eq!(f.kind, req.kind());
        prop_assert_eq!(Request::decode(&f).unwrap(), req);
    }

    #[test]
    fn replies_roundtrip(reply in reply(), id in any::<u32>()) {
        let mut buf = Vec::new();
        reply.encode(id, &mut buf).unwrap();
        let (f, used) = parse(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(f.id, id);
        prop_assert_eq!(f.kind, reply.kind());
        prop_assert_eq!(Reply::decode(&f).unwrap(), reply);
    }

    #[test]
    fn handshake_roundtrips(
        lo in any::<u16>(), hi in any::<u16>(), n1 in any::<[u8; 32]>(), n2 in any::<[u8; 32]>(),
        server in text(),
    ) {
        let g = Greeting { min_version: lo, max_version: hi, nonce: n1, server };
        let a = Auth { version: lo, nonce: n1, proof: n2 };
        let ok = AuthOk { proof: n2 };
        let mut buf = Vec::new();
        g.encode(&mut buf).unwrap();
        a.encode(&mut buf).unwrap();
        ok.encode(&mut buf).unwrap();
        let (f, used) = parse(&buf).unwrap().unwrap();
        prop_assert_eq!(Greeting::decode(&f).unwrap(), g);
        let (f2, used2) = parse(&buf[used..]).unwrap().unwrap();
        prop_assert_eq!(Auth::decode(&f2).unwrap(), a);
        let (f3, _) = parse(&buf[used + used2..]).unwrap().unwrap();
        prop_assert_eq!(AuthOk::decode(&f3).unwrap(), ok);
    }

    /// Arbitrary bytes: the frame layer and every decoder answer, never panic, and a frame
    /// that parses never claims more bytes than the buffer holds.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut rest = &bytes[..];
        while let Ok(Some((f, used))) = parse(rest) {
            prop_assert!(used <= rest.len() && used >= HEADER_LEN);
            let _ = Request::decode(&f);
            let _ = Reply::decode(&f);
            let _ = Greeting::decode(&f);
            let _ = Auth::decode(&f);
            let _ = AuthOk::decode(&f);
            rest = &rest[used..];
        }
    }

    /// A random body under a valid header of every known kind: decoders only say yes or no.
    #[test]
    fn arbitrary_bodies_never_panic(k in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let f = Frame { kind: k, id: 1, body: &body };
        if let Ok(req) = Request::decode(&f) {
            // What decodes re-encodes to the same body.
            let mut buf = Vec::new();
            req.encode(1, &mut buf).unwrap();
            prop_assert_eq!(&buf[HEADER_LEN..], &body[..]);
        }
        if let Ok(reply) = Reply::decode(&f) {
            let mut buf = Vec::new();
            reply.encode(1, &mut buf).unwrap();
            prop_assert_eq!(&buf[HEADER_LEN..], &body[..]);
        }
    }

    /// A stream of frames fed in arbitrary pieces decodes to the frames of the whole.
    #[test]
    fn cut_anywhere(reqs in proptest::collection::vec(request(), 1..6), cuts in proptest::collection::vec(1usize..40, 1..30)) {
        let mut whole = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            r.encode(i as u32, &mut whole).unwrap();
        }
        let want = frames(&whole);
        let mut got = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < whole.len() {
            let n = (*cut.next().unwrap()).min(whole.len() - pos);
            buf.extend_from_slice(&whole[pos..pos + n]);
            pos += n;
            while let Some((f, used)) = parse(&buf).unwrap() {
                got.push((f.kind, f.id, f.body.to_vec()));
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, want);
    }
}
