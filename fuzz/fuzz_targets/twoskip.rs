#![no_main]
//! Any bytes through the twoskip readers (whole-slice and windowed, walking and seeking) and
//! the mailbox list decoder: errors are fine, panics and endless loops are not. Seed the
//! corpus with tests/fixtures/cyrus-3.6/conf/mailboxes.db and formats/tests/data/*.db.

use formats::cyrus::mailboxes::{mailboxes, SpoolHashing};
use formats::cyrus::twoskip::{Twoskip, TwoskipReader};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(db) = Twoskip::open(data) {
        for entry in db.iter().chain(db.iter_from(b"N")) {
            if entry.is_err() {
                break;
            }
        }
        if let Ok(list) = mailboxes(data, "DELETED") {
            for mailbox in list.flatten() {
                let hashing = SpoolHashing {
                    hashimapspool: true,
                    fulldirhash: true,
                };
                let _ = mailbox.spool_dir(hashing);
                let _ = (
                    mailbox.name.intname(),
                    mailbox.name.userid(),
                    mailbox.name.folder(),
                );
            }
        }
    }
    if let Ok(mut reader) = TwoskipReader::with_window(data, 40) {
        while let Ok(Some(_)) = reader.next_entry() {}
        reader.seek(b"Nuser\x1f");
        while let Ok(Some(_)) = reader.next_entry() {}
    }
});
