//! The twoskip reader against real files written by Cyrus 3.6: the fixture's mailboxes.db
//! (tests/fixtures/cyrus-3.6), and the mailboxes.db of an earlier capture of the same shape
//! (user `u3x0`) that `cyr_dbtool ... twoskip damage` left mid-transaction (Cyrus stored the
//! key `INVALID` and died before committing: header dirty, record past current_size, a level-0
//! pointer of the dummy rewritten to point at it).

use formats::cyrus::twoskip::{Twoskip, TwoskipError, TwoskipReader};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");
const UNCOMMITTED: &[u8] = include_bytes!("data/twoskip_uncommitted.db");

fn fixture() -> Vec<u8> {
    std::fs::read(format!("{FIXTURE}/conf/mailboxes.db")).expect("fixture mailboxes.db")
}

/// What `ctl_mboxlist -d` printed for the fixture's mailboxes.db.
fn mboxlist() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURE}/mboxlist.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn keys(db: &Twoskip<'_>) -> Vec<String> {
    db.iter()
        .map(|e| String::from_utf8_lossy(e.unwrap().key).replace('\x1f', "/"))
        .collect()
}

/// The keys the fixture's mailboxes.db must hold, in byte order, from Cyrus's own dump: per
/// mailbox `I` + unique id and `N` + name (levels separated by 0x1f, shown as `/`).
fn fixture_keys() -> Vec<String> {
    let list = mboxlist();
    let mut keys: Vec<String> = list
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(name, entry)| {
            [
                format!("I{}", entry["uniqueid"].as_str().unwrap()),
                format!("N{}", name.replace('.', "\x1f")),
            ]
        })
        .collect();
    keys.sort();
    keys.iter().map(|k| k.replace('\x1f', "/")).collect()
}

/// The committed keys of data/twoskip_uncommitted.db.
const UNCOMMITTED_KEYS: [&str; 10] = [
    "Ib5a3bhur2i9t0gibp1lvyaqr",
    "Ic7dgmz0w4jyahhmmepic2ujw",
    "Im7g18s67qg582r2r9vtju5hp",
    "Itr3g9qzoe6kapjm5i3coxngy",
    "Iwae1kisisjkq8u6ocidu3osu",
    "Nuser/u3x0",
    "Nuser/u3x0/Archive",
    "Nuser/u3x0/Archive/2025",
    "Nuser/u3x0/Lists",
    "Nuser/u3x0/Work",
];

#[test]
fn header_and_keys_in_order() {
    let data = fixture();
    let db = Twoskip::open(&data).unwrap();
    let h = db.header();
    assert_eq!(h.version, 1);
    assert!(!h.dirty);
    assert_eq!(h.current_size, data.len() as u64);
    let want = fixture_keys();
    assert_eq!(want.len(), 10, "five mailboxes, two keys each");
    assert_eq!(want[5], "Nuser/fx0");
    assert_eq!(keys(&db), want);
    assert_eq!(h.num_records, 10);
}

#[test]
fn replaced_values_are_not_seen() {
    // Cyrus created the INBOX as an intermediate ("T ei") entry first, then replaced it: the
    // file still holds that early value, the reader must return the later one.
    let data = fixture();
    let id = mboxlist()["user.fx0"]["uniqueid"]
        .as_str()
        .unwrap()
        .to_string();
    let early = format!("%(T ei I {id} ");
    assert!(
        data.windows(early.len()).any(|w| w == early.as_bytes()),
        "the fixture holds no replaced value for the INBOX"
    );
    let db = Twoskip::open(&data).unwrap();
    let inbox = db
        .iter()
        .map(Result::unwrap)
        .find(|e| e.key == b"Nuser\x1ffx0")
        .unwrap();
    assert!(
        inbox
            .value
            .starts_with(format!("%(T e I {id} P default").as_bytes()),
        "{}",
        String::from_utf8_lossy(inbox.value)
    );
}

#[test]
fn uncommitted_transaction_is_ignored() {
    let db = Twoskip::open(UNCOMMITTED).unwrap();
    assert!(db.header().dirty);
    assert!(db.header().current_size < UNCOMMITTED.len() as u64);
    assert_eq!(keys(&db), UNCOMMITTED_KEYS);
}

#[test]
fn the_same_bytes_committed_show_the_new_key() {
    // Pretend the commit had happened: current_size = file length, dirty cleared. The record
    // past the old current_size is now reachable through the rewritten pointer.
    let mut data = UNCOMMITTED.to_vec();
    let len = data.len() as u64;
    data[48..56].copy_from_slice(&len.to_be_bytes());
    data[56..60].copy_from_slice(&0u32.to_be_bytes());
    let crc = crc32(&data[..60]);
    data[60..64].copy_from_slice(&crc.to_be_bytes());
    let db = Twoskip::open(&data).unwrap();
    let keys = keys(&db);
    assert_eq!(keys[0], "INVALID");
    assert_eq!(keys[1..], UNCOMMITTED_KEYS);
}

#[test]
fn header_crc_is_checked() {
    let mut data = fixture();
    data[33] ^= 1; // num_records
    let err = Twoskip::open(&data).unwrap_err();
    assert!(matches!(err, TwoskipError::HeaderCrc { .. }), "{err}");
    assert!(err.to_string().contains("at byte 60"), "{err}");
}

#[test]
fn record_crcs_are_checked_and_errors_name_the_record() {
    let data = fixture();
    let db = Twoskip::open(&data).unwrap();
    let victim = db.iter().nth(3).unwrap().unwrap();
    let key_at = victim.key.as_ptr() as usize - data.as_ptr() as usize;
    // A byte of the key (tail CRC), then the keylen field of the head (head CRC).
    for at in [key_at + 1, victim.offset as usize + 3] {
        let mut bad = data.clone();
        bad[at] ^= 0x20;
        let db = Twoskip::open(&bad).unwrap();
        let got: Vec<_> = db.iter().collect();
        assert_eq!(got.len(), 4, "three entries, then the error");
        let err = got[3].clone().unwrap_err();
        let TwoskipError::BadRecord { offset, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(offset, victim.offset, "{err}");
        assert!(err.to_string().contains("CRC"), "{err}");
    }
}

#[test]
fn truncated_or_foreign_files_are_refused() {
    let data = fixture();
    let err = Twoskip::open(&data[..data.len() - 8]).unwrap_err();
    assert!(matches!(err, TwoskipError::Truncated { .. }), "{err}");
    assert!(matches!(
        Twoskip::open(&data[..10]),
        Err(TwoskipError::TooShort { len: 10 })
    ));
    let mut skiplist = data.clone();
    skiplist[4..16].copy_from_slice(b"skiplist fil");
    assert!(matches!(
        Twoskip::open(&skiplist),
        Err(TwoskipError::BadMagic { .. })
    ));
}

/// Plain CRC-32 (zlib), bitwise, so the test does not lean on the crate under test.
fn crc32(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn owned(db: &Twoskip<'_>) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    db.iter()
        .map(|e| {
            e.map(|e| (e.key.to_vec(), e.value.to_vec(), e.offset))
                .unwrap()
        })
        .collect()
}

fn read_all<R: formats::cyrus::twoskip::ReadAt>(
    r: &mut TwoskipReader<R>,
) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        out.push((e.key.to_vec(), e.value.to_vec(), e.offset));
    }
    out
}

#[test]
fn reader_sees_what_the_slice_sees_whatever_the_window() {
    for data in [fixture(), UNCOMMITTED.to_vec()] {
        let want = owned(&Twoskip::open(&data).unwrap());
        for window in [1, 24, 100, 4096, 1 << 20] {
            let mut r = TwoskipReader::with_window(&data[..], window).unwrap();
            assert_eq!(read_all(&mut r), want, "window {window}");
            r.rewind();
            assert_eq!(read_all(&mut r).len(), want.len());
        }
    }
}

#[test]
fn reader_refuses_a_truncated_file() {
    let data = fixture();
    let err = TwoskipReader::open(&data[..data.len() - 100]).unwrap_err();
    assert!(matches!(err, TwoskipError::Truncated { .. }), "{err}");
}

#[test]
fn seek_lands_on_the_first_key_at_or_after_the_prefix() {
    for data in [fixture(), UNCOMMITTED.to_vec()] {
        let db = Twoskip::open(&data).unwrap();
        let all = owned(&db);
        // Every prefix of every key, and each with its last byte bumped up or down.
        let mut prefixes: Vec<Vec<u8>> = vec![vec![], b"A".to_vec(), b"Z".to_vec(), vec![0xff]];
        for (k, _, _) in &all {
            for n in 1..=k.len() {
                let p = k[..n].to_vec();
                let mut up = p.clone();
                *up.last_mut().unwrap() = up.last().unwrap().wrapping_add(1);
                let mut down = p.clone();
                *down.last_mut().unwrap() = down.last().unwrap().wrapping_sub(1);
                prefixes.extend([p, up, down]);
            }
        }
        for prefix in prefixes {
            let want: Vec<_> = all
                .iter()
                .filter(|(k, _, _)| *k >= prefix)
                .cloned()
                .collect();
            let got: Vec<_> = db
                .iter_from(&prefix)
                .map(|e| {
                    e.map(|e| (e.key.to_vec(), e.value.to_vec(), e.offset))
                        .unwrap()
                })
                .collect();
            assert_eq!(got, want, "prefix {:?}", String::from_utf8_lossy(&prefix));
            let mut r = TwoskipReader::with_window(&data[..], 64).unwrap();
            r.seek(&prefix);
            assert_eq!(read_all(&mut r), want);
        }
    }
}
