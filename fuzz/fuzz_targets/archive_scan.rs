//! Scans arbitrary bytes as a data file, reading and hashing every entry, then reads one
//! entry by a location taken from the input. Neither may panic, whatever the bytes.
#![no_main]

use std::io::{Cursor, Read};

use formats::archive::{open_entry, EntryMeta, ScanEvent, Scanner};
use formats::{Guid, Timestamp};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut scanner = Scanner::new(data);
    let mut n = 0u64;
    loop {
        match scanner.next_event() {
            Ok(ScanEvent::Entry(mut e)) => {
                n += 1;
                // Whatever parsed writes back to the same text.
                if let Some(t) = e.header.meta.time() {
                    assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
                }
                if let EntryMeta::Message(m) = &e.header.meta {
                    assert_eq!(m.guid.to_string().parse::<Guid>(), Ok(m.guid));
                }
                if n % 2 == 0 {
                    let _: Result<Guid, _> = e.sha1();
                } else {
                    let mut buf = [0u8; 100];
                    let _ = e.read(&mut buf);
                }
            }
            Ok(ScanEvent::End(end)) => {
                assert!(end.valid_end <= end.file_len);
                assert!(end.file_len <= data.len() as u64);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }

    // A location from the first 8 bytes: chunk offset and entry offset.
    if data.len() >= 8 {
        let chunk = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            % (data.len() as u64 + 1);
        let entry = u64::from(u32::from_le_bytes([data[4], data[5], data[6], data[7]])) & !511;
        if let Ok(mut r) = open_entry(Cursor::new(data), chunk, entry) {
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            let _ = r.finish_chunk();
        }
    }
});
