//! Helpers of the compaction tests: what a store can restore at given times.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeSet;
use std::io::Read;

use backup_server::compact::CompactOptions;
use backup_server::store::{Catalog, MessageState, StoreOptions};
use formats::{Guid, Timestamp};

pub const DAY: i64 = 86_400;
pub const RETENTION: i64 = 14 * DAY;

/// Compaction options at `now` with the default 14 days of retention.
pub fn copts(now: i64, threshold: f64, min_bytes: u64) -> CompactOptions {
    CompactOptions {
        threshold,
        min_bytes,
        dry_run: false,
        now: Timestamp::from_secs(now),
        retention_secs: RETENTION,
        store: StoreOptions {
            chunk_cap: 64 * 1024,
            ..StoreOptions::default()
        },
    }
}

/// Every (time, folder, uid, guid) a restore at one of `times` can bring back (stored
/// messages in the folder then, expunged-but-kept ones included; not records already gone
/// from cyrus.index), each message's bytes checked against its GUID.
pub fn restorable(cat: &Catalog, times: &[i64]) -> BTreeSet<(i64, String, u32, Guid)> {
    let mut out = BTreeSet::new();
    let mut read = BTreeSet::new();
    for &t in times {
        let at = Some(Timestamp::from_secs(t));
        for f in cat.folders_at(at).unwrap() {
            cat.messages_at(&f.unique_id, at, true, |m| {
                if m.stored && m.state != MessageState::Gone {
                    out.insert((t, f.name.clone(), m.uid, m.guid));
                    read.insert(m.guid);
                }
                Ok(())
            })
            .unwrap();
        }
    }
    for g in read {
        let mut r = cat
            .open_message(&g)
            .unwrap()
            .expect("a stored message opens");
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(Guid::of(&data), g, "message {g} reads back whole");
    }
    out
}
