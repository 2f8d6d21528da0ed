//! The cyrus.index and cyrus.header readers against the real Cyrus 3.6 spool of the repository's
//! fixture (tests/fixtures/cyrus-3.6), checked against what the IMAP server itself said
//! (truth.json).

use formats::cyrus::{header, index};
use formats::{Guid, Timestamp};
use serde_json::Value;
use std::path::PathBuf;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURE}/{name}")).expect("fixture json");
    serde_json::from_str(&text).expect("valid json")
}

/// One folder of truth.json with its mailbox directory.
struct Folder {
    truth_name: String,
    truth: Value,
    uniqueid: String,
    dir: PathBuf,
}

/// `user.fx0.Archive.2025` -> `fx0/Archive/2025`, `user.fx0` -> `fx0/INBOX`.
fn truth_name(internal: &str) -> String {
    let rest = internal.strip_prefix("user.").expect("user mailbox");
    match rest.split_once('.') {
        None => format!("{rest}/INBOX"),
        Some((user, folder)) => format!("{user}/{}", folder.replace('.', "/")),
    }
}

fn folders() -> Vec<Folder> {
    let truth = json("truth.json");
    let mboxlist = json("mboxlist.json");
    let mut out = Vec::new();
    for (name, entry) in mboxlist.as_object().unwrap() {
        let uniqueid = entry["uniqueid"].as_str().unwrap().to_string();
        let dir = ["p1", "p2"]
            .iter()
            .map(|p| {
                PathBuf::from(format!(
                    "{FIXTURE}/spool/{p}/uuid/{}/{}/{uniqueid}",
                    &uniqueid[..1],
                    &uniqueid[1..2]
                ))
            })
            .find(|d| d.is_dir())
            .expect("mailbox directory");
        let tn = truth_name(name);
        out.push(Folder {
            truth: truth[&tn].clone(),
            truth_name: tn,
            uniqueid,
            dir,
        });
    }
    assert_eq!(
        out.len(),
        truth.as_object().unwrap().len(),
        "every truth folder found"
    );
    out
}

/// `23-Nov-2026 06:30:24 +0000` as seconds since the epoch. A day below 10 is written with a
/// leading space (`date-day-fixed` of RFC 3501: ` 3-Dec-2026 ...`).
fn imap_date(s: &str) -> Timestamp {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, rest) = s.trim_start().split_once(' ').unwrap();
    let (time, zone) = rest.split_once(' ').unwrap();
    assert_eq!(zone, "+0000", "the fixture's server runs in UTC");
    let mut d = date.split('-');
    let day: i64 = d.next().unwrap().trim().parse().unwrap();
    let mon = d.next().unwrap();
    let month = months.iter().position(|m| *m == mon).unwrap() as i64 + 1;
    let year: i64 = d.next().unwrap().parse().unwrap();
    let hms: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Timestamp::from_secs(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

fn status_item(status: &str, item: &str) -> u64 {
    let words: Vec<&str> = status
        .split([' ', '(', ')'])
        .filter(|w| !w.is_empty())
        .collect();
    let i = words.iter().position(|w| *w == item).unwrap();
    words[i + 1].parse().unwrap()
}

#[test]
fn imap_date_converts() {
    assert_eq!(imap_date("01-Jan-1970 00:00:00 +0000"), Timestamp::EPOCH);
    assert_eq!(
        imap_date("29-Feb-2000 12:00:01 +0000"),
        Timestamp::from_secs(951_825_601)
    );
    assert_eq!(
        imap_date("31-Dec-1969 23:59:59 +0000"),
        Timestamp::from_secs(-1)
    );
    assert_eq!(
        imap_date(" 3-Dec-2026 09:23:02 +0000"),
        Timestamp::from_secs(1_796_289_782)
    );
}

#[test]
fn live_records_match_what_imap_said() {
    let mut live_total = 0;
    let mut expunged_total = 0;
    for f in folders() {
        let hdr_bytes = std::fs::read(f.dir.join("cyrus.header")).unwrap();
        let idx_bytes = std::fs::read(f.dir.join("cyrus.index")).unwrap();
        let mh = header::parse(&hdr_bytes).unwrap();
        let idx = index::Index::parse(&idx_bytes).unwrap();
        let h = idx.header();
        let status = f.truth["status"].as_str().unwrap();
        let ctx = &f.truth_name;

        assert_eq!(
            h.minor_version, 17,
            "{ctx}: Cyrus 3.6 writes minor version 17"
        );
        assert_eq!(
            u64::from(h.uidvalidity),
            status_item(status, "UIDVALIDITY"),
            "{ctx}"
        );
        assert_eq!(
            h.highestmodseq,
            Some(status_item(status, "HIGHESTMODSEQ")),
            "{ctx}"
        );
        assert_eq!(
            u64::from(h.last_uid) + 1,
            status_item(status, "UIDNEXT"),
            "{ctx}"
        );
        assert_eq!(
            h.header_file_crc,
            Some(header::file_crc(&hdr_bytes)),
            "{ctx}"
        );

        let records = idx.collect_records().unwrap();
        assert_eq!(records.len() as u32, h.num_records, "{ctx}");
        let (live, expunged): (Vec<_>, Vec<_>) = records.iter().partition(|r| !r.is_expunged());
        let truth = f.truth["messages"].as_array().unwrap();
        assert_eq!(live.len(), truth.len(), "{ctx}: live records");
        assert_eq!(h.exists, Some(truth.len() as u32), "{ctx}: EXISTS");

        for (r, t) in live.iter().zip(truth) {
            let uid = t["uid"].as_u64().unwrap();
            let ctx = format!("{ctx} UID {uid}");
            assert_eq!(u64::from(r.uid), uid, "{ctx}");
            assert_eq!(r.size, t["size"].as_u64().unwrap(), "{ctx}: RFC822.SIZE");
            assert_eq!(
                r.internaldate,
                imap_date(t["internaldate"].as_str().unwrap()),
                "{ctx}: INTERNALDATE"
            );
            let sha1: Guid = t["sha1"].as_str().unwrap().parse().unwrap();
            assert_eq!(r.guid, Some(sha1), "{ctx}: GUID");
            let mut flags = r.flag_names(&mh.user_flags);
            flags.sort();
            let mut want: Vec<String> = t["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            want.sort();
            assert_eq!(flags, want, "{ctx}: FLAGS");
            // The message file is the one whose SHA-1 is the GUID.
            let file = std::fs::read(f.dir.join(format!("{uid}."))).unwrap();
            assert_eq!(file.len() as u64, r.size, "{ctx}: file size");
            assert_eq!(Guid::of(&file), sha1, "{ctx}: SHA-1 of the file");
        }

        // The fixture expunged one message in each folder of 3 or more; its record stays,
        // flagged, and IMAP no longer lists its UID.
        let want_expunged = usize::from(h.num_records >= 3);
        assert_eq!(expunged.len(), want_expunged, "{ctx}: expunged records");
        for r in &expunged {
            assert!(
                r.system_flags.contains(index::SystemFlags::DELETED),
                "{ctx}"
            );
            assert!(!truth
                .iter()
                .any(|t| t["uid"].as_u64() == Some(u64::from(r.uid))));
        }
        live_total += live.len();
        expunged_total += expunged.len();

        // The header's unique id is the one mailboxes.db has, and the directory's name.
        assert_eq!(mh.unique_id.as_deref(), Some(f.uniqueid.as_str()), "{ctx}");
    }
    assert_eq!((live_total, expunged_total), (20, 3));
}

#[test]
fn rewriting_the_fixture_gives_the_same_bytes() {
    for f in folders() {
        let bytes = std::fs::read(f.dir.join("cyrus.index")).unwrap();
        let (h, records) = index::parse_all(&bytes).unwrap();
        let mut out = Vec::new();
        index::write_index(&mut out, &h, &records).unwrap();
        assert_eq!(out, bytes, "{}", f.truth_name);
    }
}

#[test]
fn lazy_iteration_matches_collect() {
    for f in folders() {
        let bytes = std::fs::read(f.dir.join("cyrus.index")).unwrap();
        let idx = index::Index::parse(&bytes).unwrap();
        let lazy: Vec<_> = idx.records().map(Result::unwrap).collect();
        assert_eq!(lazy, idx.collect_records().unwrap());
        assert_eq!(idx.records().size_hint().0, idx.len() as usize);
        if let Some(last) = idx.len().checked_sub(1) {
            assert_eq!(idx.get(last).unwrap().unwrap(), lazy[last as usize]);
        }
        assert!(idx.get(idx.len()).is_none());
    }
}

#[test]
fn json_output_names_flags_and_hex_guid() {
    let f = folders()
        .into_iter()
        .find(|f| f.truth_name == "fx0/INBOX")
        .unwrap();
    let bytes = std::fs::read(f.dir.join("cyrus.index")).unwrap();
    let (_, records) = index::parse_all(&bytes).unwrap();
    let v = serde_json::to_value(&records[0]).unwrap();
    let uid1 = &f.truth["messages"][0];
    assert_eq!(uid1["uid"], 1);
    assert_eq!(v["guid"], uid1["sha1"]);
    assert_eq!(v["guid"].as_str().map(str::len), Some(40));
    // Times as the inspect tool documents them: whole seconds and nanoseconds.
    let t = records[0].internaldate;
    assert_eq!(
        v["internaldate"],
        serde_json::json!({"secs": t.secs, "nanos": 0})
    );
    assert!(t.secs > 1_700_000_000);
    assert_eq!(v["system_flags"], serde_json::json!(["\\Flagged"]));
    assert_eq!(v["user_flags"], serde_json::json!([0]));
    let v = serde_json::to_value(&records[2]).unwrap();
    assert_eq!(v["internal_flags"], serde_json::json!(["expunged"]));
}
