//! The dlist parser must never panic, and what it parses must survive a write and re-read.
#![no_main]

use formats::cyrus::dlist;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((value, used)) = dlist::parse(data) {
        assert!(used <= data.len());
        let again = value.to_bytes();
        let (reparsed, _) = dlist::parse(&again).expect("a written dlist parses");
        assert_eq!(reparsed, value);
    }
});
