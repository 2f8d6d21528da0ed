//! The Cyrus restore client's reply reading (formats::cyrus::sync over formats::imap's
//! framing): any bytes a sync_server (or something posing as one) sends must never panic,
//! and what parses as a MAILBOX must keep its records within what was sent. A seen database
//! record is read from the same bytes split in two.
#![no_main]

use formats::cyrus::sync::{parse_reply, MailboxState, Reply, SeenState};
use formats::imap::{parse_response, Limits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_line: 4096,
        max_literal: 4096,
    };
    let mut rest = data;
    while let Ok(Some((_, used))) = parse_response(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        if let Ok(Reply::Data { name, value }) = parse_reply(&rest[..used]) {
            assert!(!name.is_empty());
            if let Ok(st) = MailboxState::from_dlist(&value) {
                // Each record took at least a few bytes of the input.
                assert!(st.records.len() <= used);
            }
        }
        rest = &rest[used..];
    }
    if let Some(cut) = data.iter().position(|&b| b == 0) {
        if let Some(s) = SeenState::from_db_record("u", &data[..cut], &data[cut + 1..]) {
            assert!(!s.unique_id.is_empty());
        }
    }
});
