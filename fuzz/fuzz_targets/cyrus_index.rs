#![no_main]
//! cyrus.index: any bytes give a header, records or an error, never a panic. Whatever parses
//! is written back and must read back the same.

use formats::cyrus::index::{parse_all, write_index, Index};
use formats::{Guid, Timestamp};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(index) = Index::parse(data) else {
        return;
    };
    let records: Vec<_> = index.records().filter_map(Result::ok).collect();
    for r in &records {
        let _ = r.flag_names::<&str>(&[Some("$Work"), None]);
        // Every stored time and GUID converts, and their text forms read back.
        for t in [r.internaldate, r.sentdate, r.gmtime, r.last_updated] {
            assert!(t.is_valid() && t.secs >= 0);
            assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        }
        if let Some(g) = r.guid {
            assert_eq!(g.to_string().parse::<Guid>(), Ok(g));
        }
    }
    // Only files without damaged records can round-trip through the writer.
    if records.len() == index.len() as usize {
        let mut out = Vec::new();
        write_index(&mut out, index.header(), &records).expect("what was read can be written");
        let (h, again) = parse_all(&out).expect("what was written can be read");
        assert_eq!(&h, index.header());
        assert_eq!(again, records);
    }
});
