//! The client's reply assembly (`formats::protocol::assemble`) over any frames a server could
//! send: it must never panic, never hand out more data than announced, and, once it has
//! completed or refused a reply, accept no further frame.
#![no_main]

use formats::protocol::assemble::{
    Assemble, Assembler, EndOnly, Listing, Meta, MessageStream, UserFiles, Users,
};
use formats::protocol::{parse, ReplyError};

/// Feeds every whole frame of `data` to a fresh assembler of the kind `A` answering request
/// `id`, until it completes or refuses.
fn drive<A: Assemble>(data: &[u8], id: u32, asm: A) {
    let mut asm = Assembler::new(id, asm);
    let mut rest = data;
    let mut ended = false;
    while let Ok(Some((frame, used))) = parse(rest) {
        let r = asm.push(&frame);
        if ended {
            assert!(
                matches!(r, Err(ReplyError::Protocol(_))),
                "a frame after the end was taken"
            );
            return;
        }
        ended = !matches!(r, Ok(None));
        rest = &rest[used..];
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let id = 1 + u32::from(which >> 3);
    match which & 7 {
        0 => drive(data, id, EndOnly),
        1 => drive(data, id, Users::default()),
        2 => drive(data, id, Listing::default()),
        3 => drive(data, id, Meta::new("uid")),
        4 => drive(data, id, UserFiles::new(usize::from(which >> 4))),
        _ => {
            let mut s = MessageStream::new(id);
            let mut rest = data;
            let mut announced = 0u64;
            let mut received = 0u64;
            while let Ok(Some((frame, used))) = parse(rest) {
                let len = frame.body.len() as u32;
                match s.push(&frame, len) {
                    Ok(formats::protocol::assemble::StreamEvent::Message { size, .. }) => {
                        announced = announced.saturating_add(size)
                    }
                    Ok(formats::protocol::assemble::StreamEvent::Data { len }) => {
                        received += u64::from(len);
                        assert!(received <= announced, "more bytes than announced");
                    }
                    Ok(_) => {}
                    Err(_) => {
                        assert!(s.is_done());
                        return;
                    }
                }
                rest = &rest[used..];
            }
        }
    }
});
