//! The IMAP restore client's response reader and tokenizer (formats::imap) must never
//! panic on any bytes, never take more than it was given, keep every response inside the
//! bounds, and read the same response whether the bytes come whole or in two pieces.
#![no_main]

use formats::imap::{parse_response, tokenize, Limits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_line: 512,
        max_literal: 1024,
    };
    let mut rest = data;
    while let Ok(Some((r, used))) = parse_response(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        assert!(r.text.len() <= limits.max_line);
        let lits: u64 = r.literals.iter().map(|l| l.len() as u64).sum();
        assert!(lits <= limits.max_literal);
        // The bytes before the end are not a whole response.
        let cut = usize::from(split) % used;
        assert!(!matches!(parse_response(&rest[..cut], &limits), Ok(Some(_))));
        if let Ok(toks) = tokenize(&r) {
            assert!(toks.len() <= r.text.len());
        }
        rest = &rest[used..];
    }
});
