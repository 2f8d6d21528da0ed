#![no_main]
//! cyrus.header: any bytes give a header or an error, never a panic. Whatever parses is
//! written back and must read back the same.

use formats::cyrus::header::{self, MAGIC};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = header::file_crc(data);
    if let Ok(h) = header::parse(data) {
        let out = h.to_bytes();
        // Non-ASCII values need dlist literals, which span lines: no reader takes those back.
        if out[MAGIC.len()..out.len() - 1].contains(&b'\n')
            && h.format == header::HeaderFormat::Dlist
        {
            return;
        }
        let again = header::parse(&out).expect("what was written can be read");
        assert_eq!(again, h);
    }
});
