//! The protocol's frame decoder and message decoders must never panic on any bytes, and
//! whatever decodes must encode back to the same frame bytes.
#![no_main]

use formats::protocol::{parse, Auth, AuthOk, Greeting, Reply, Request, HEADER_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = parse(rest) {
        assert!(used >= HEADER_LEN && used <= rest.len());
        let whole = &rest[..used];
        let mut again = Vec::new();
        if let Ok(req) = Request::decode(&frame) {
            req.encode(frame.id, &mut again)
                .expect("a decoded request encodes");
            assert_eq!(again, whole);
        } else if let Ok(reply) = Reply::decode(&frame) {
            reply
                .encode(frame.id, &mut again)
                .expect("a decoded reply encodes");
            assert_eq!(again, whole);
        } else if let Ok(g) = Greeting::decode(&frame) {
            g.encode(&mut again).expect("a decoded greeting encodes");
            assert_eq!(&again[HEADER_LEN..], frame.body);
        } else if let Ok(a) = Auth::decode(&frame) {
            a.encode(&mut again).expect("a decoded auth encodes");
            assert_eq!(&again[HEADER_LEN..], frame.body);
        } else if let Ok(ok) = AuthOk::decode(&frame) {
            ok.encode(&mut again).expect("a decoded auth-ok encodes");
            assert_eq!(&again[HEADER_LEN..], frame.body);
        }
        rest = &rest[used..];
    }
});
