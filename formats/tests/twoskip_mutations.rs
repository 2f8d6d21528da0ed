//! Damaged copies of a real mailboxes.db never make the reader panic or loop: every byte
//! flip, overwrite or truncation ends in entries or an error. (The fuzz target `twoskip`
//! does the same with coverage guidance.)

use formats::cyrus::mailboxes::{mailboxes, SpoolHashing};
use formats::cyrus::twoskip::{Twoskip, TwoskipReader};
use proptest::prelude::*;

const UNCOMMITTED: &[u8] = include_bytes!("data/twoskip_uncommitted.db");

fn read_all(data: &[u8]) {
    if let Ok(mut r) = TwoskipReader::with_window(data, 64) {
        while let Ok(Some(_)) = r.next_entry() {}
        r.seek(b"Nuser\x1fu3x0\x1fL");
        while let Ok(Some(_)) = r.next_entry() {}
    }
    let Ok(db) = Twoskip::open(data) else { return };
    for e in db.iter_from(b"Nuser\x1fu3x0") {
        if e.is_err() {
            break;
        }
    }
    assert!(db.iter().count() <= data.len() / 24 + 1);
    if let Ok(list) = mailboxes(data, "DELETED") {
        for m in list.flatten() {
            let _ = m.spool_dir(SpoolHashing::default());
            let _ = (m.name.intname(), m.name.userid(), m.name.folder());
        }
    }
}

/// Rewrites the header CRC so that damage past the header is reached.
fn fix_header_crc(data: &mut [u8]) {
    if data.len() >= 64 {
        let crc = crc32fast::hash(&data[..60]);
        data[60..64].copy_from_slice(&crc.to_be_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn flipped_bytes(edits in prop::collection::vec((0..UNCOMMITTED.len(), any::<u8>()), 1..8),
                     truncate in 0..UNCOMMITTED.len() + 1, fix_crc in any::<bool>()) {
        let mut data = UNCOMMITTED.to_vec();
        for (at, byte) in edits {
            data[at] = byte;
        }
        data.truncate(truncate.max(64));
        if fix_crc {
            fix_header_crc(&mut data);
        }
        read_all(&data);
    }

    #[test]
    fn pointers_anywhere(at in (64usize..UNCOMMITTED.len() - 8).prop_map(|a| a & !7),
                         target in any::<u64>(), small in 0u64..4096) {
        // Overwrite an aligned word with a pointer-like value, then let the CRCs be "right":
        // the reader must still terminate (loops, self-references, wild offsets).
        let mut data = UNCOMMITTED.to_vec();
        let value = if target % 2 == 0 { small & !7 } else { target };
        data[at..at + 8].copy_from_slice(&value.to_be_bytes());
        fix_header_crc(&mut data);
        read_all(&data);
    }
}

#[test]
fn a_pointer_loop_ends_in_an_error() {
    // Point the first record's level-0 pointers at itself, with valid CRCs.
    let mut data = UNCOMMITTED.to_vec();
    let first = Twoskip::open(&data)
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .unwrap()
        .offset as usize;
    let level = usize::from(data[first + 1]);
    data[first + 8..first + 16].copy_from_slice(&(first as u64).to_be_bytes());
    data[first + 16..first + 24].copy_from_slice(&(first as u64).to_be_bytes());
    let head_end = first + 8 + 8 * (level + 1);
    let crc = crc32fast::hash(&data[first..head_end]);
    data[head_end..head_end + 4].copy_from_slice(&crc.to_be_bytes());
    let db = Twoskip::open(&data).unwrap();
    let all: Vec<_> = db.iter().collect();
    assert!(all.len() < 200, "bounded");
    let err = all.last().unwrap().clone().unwrap_err();
    assert!(err.to_string().contains("loop"), "{err}");
}
