//! The header index's extraction (backup_server::store::headers, mail-parser underneath)
//! over any bytes a message can hold: no panic; only the header block read (bytes after
//! its end change nothing); every field within its bound. And modified UTF-7 folder names
//! (formats::imap::mutf7): decoding any text never panics, and what decodes encodes back.
#![no_main]

use backup_server::store::headers::{extract, header_block, FIELD_MAX, HEADER_BLOCK_MAX};
use formats::imap::mutf7;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let block = header_block(data);
    assert!(block.len() <= HEADER_BLOCK_MAX && data.starts_with(block));
    let h = extract(data);
    // Only the header block counts: the same block with anything after it, the same fields.
    let mut longer = block.to_vec();
    longer.extend_from_slice(b"\r\n\r\nFrom: other@example.com\r\nSubject: other\r\n");
    if block.ends_with(b"\n\n") || block.ends_with(b"\r\n\r\n") {
        assert_eq!(extract(&longer), h);
    }
    for f in [&h.subject, &h.message_id] {
        assert!(f.len() <= FIELD_MAX);
    }
    assert!(h.from.len() <= FIELD_MAX && h.to.len() <= FIELD_MAX);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(name) = mutf7::decode(text) {
            assert_eq!(mutf7::decode(&mutf7::encode(&name)).unwrap(), name);
        }
    }
});
