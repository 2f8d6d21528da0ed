//! Unit tests of the cyrus.index reader and writer: one per kind of damage, the offsets of
//! the layout table against the `OFFSET_*` constants of Cyrus's mailbox.h, and a property test
//! that writes and reads back synthetic files of every supported version.

use super::*;
use proptest::prelude::*;

/// A header of `version` with the sizes Cyrus writes and `n` records.
fn header(version: u32, n: u32) -> IndexHeader {
    let l = IndexLayout::of(version).unwrap();
    let mut h = for_version(&IndexHeader::default(), version);
    h.minor_version = version;
    h.start_offset = l.header_size as u32;
    h.record_size = l.record_size as u32;
    h.num_records = n;
    h.uidvalidity = 1_795_415_425;
    h
}

fn record(uid: u32) -> IndexRecord {
    IndexRecord {
        uid,
        size: 508,
        internaldate: Timestamp::from_secs(1_795_415_424),
        ..Default::default()
    }
}

fn file(version: u32, n: u32) -> Vec<u8> {
    let h = header(version, n);
    let recs: Vec<_> = (1..=n)
        .map(|uid| for_version_rec(&record(uid), version))
        .collect();
    let mut out = Vec::new();
    write_index(&mut out, &h, &recs).unwrap();
    out
}

/// Keeps only what `version` stores of `x`, in the widths it stores it.
fn for_version(x: &IndexHeader, version: u32) -> IndexHeader {
    let mut out = IndexHeader::default();
    for r in rows(HEADER_FIELDS, version) {
        out.set(r.field, narrow(x.get(r.field), r.ty));
    }
    out
}

fn for_version_rec(x: &IndexRecord, version: u32) -> IndexRecord {
    let mut out = IndexRecord::default();
    for r in rows(RECORD_FIELDS, version) {
        out.set(r.field, narrow(x.get(r.field), r.ty));
    }
    out
}

fn narrow(v: Val, ty: Ty) -> Val {
    match (ty, v) {
        (U32, Val::N(n)) => Val::N(n & 0xffff_ffff),
        (Secs, Val::T(t)) => Val::T(Timestamp::from_secs(t.secs & 0xffff_ffff)),
        _ => v,
    }
}

#[test]
fn every_version_reads_back_what_was_written() {
    for v in SUPPORTED_VERSIONS {
        let bytes = file(v, 3);
        let l = IndexLayout::of(v).unwrap();
        assert_eq!(bytes.len(), l.header_size + 3 * l.record_size);
        let (h, recs) = parse_all(&bytes).unwrap();
        assert_eq!(h, header(v, 3), "version {v}");
        assert_eq!(recs.iter().map(|r| r.uid).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(recs[0].guid.is_some(), v >= 10, "version {v}");
    }
}

#[test]
fn short_file() {
    let bytes = file(17, 0);
    assert_eq!(
        parse_header(&bytes[..8]).unwrap_err(),
        IndexError::Short {
            offset: 0,
            what: "index header (up to the minor version)",
            expected: 12,
            found: 8
        }
    );
    let e = Index::parse(&bytes[..100]).unwrap_err();
    assert_eq!(
        e,
        IndexError::Short {
            offset: 0,
            what: "index header",
            expected: 160,
            found: 100
        }
    );
    assert_eq!(
        e.to_string(),
        "at byte 0: expected 160 bytes of index header, found 100"
    );
}

#[test]
fn truncated_record() {
    let bytes = file(17, 3);
    let e = Index::parse(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!(
        e,
        IndexError::TruncatedRecord {
            recno: 3,
            offset: 160 + 2 * 112,
            expected: 112,
            found: 111
        }
    );
    assert_eq!(
        e.to_string(),
        "at byte 384: expected 112 bytes of record 3, found 111"
    );
    // Only the header: every record is missing.
    let e = Index::parse(&bytes[..160]).unwrap_err();
    assert!(matches!(
        e,
        IndexError::TruncatedRecord {
            recno: 1,
            offset: 160,
            found: 0,
            ..
        }
    ));
    // Longer than needed is fine (Cyrus 3.6 reads such files too).
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 50]);
    assert_eq!(
        Index::parse(&longer)
            .unwrap()
            .collect_records()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn bad_header_crc() {
    let mut bytes = file(17, 1);
    bytes[44] ^= 1; // uidvalidity
    let e = parse_header(&bytes).unwrap_err();
    assert!(
        matches!(e, IndexError::BadHeaderCrc { offset: 156, .. }),
        "{e}"
    );
    assert!(e
        .to_string()
        .starts_with("at byte 156: expected header CRC 0x"));
}

#[test]
fn bad_record_crc_and_iteration_goes_on() {
    let mut bytes = file(17, 3);
    bytes[160 + 112] ^= 0x80; // uid of record 2
    let idx = Index::parse(&bytes).unwrap();
    let got: Vec<_> = idx.records().collect();
    assert_eq!(got[0].as_ref().unwrap().uid, 1);
    let e = got[1].as_ref().unwrap_err();
    assert!(
        matches!(
            e,
            IndexError::BadRecordCrc {
                recno: 2,
                offset: 380,
                ..
            }
        ),
        "{e}"
    );
    assert!(e
        .to_string()
        .starts_with("at byte 380 (record 2): expected record CRC"));
    assert_eq!(got[2].as_ref().unwrap().uid, 3);
    assert!(idx.collect_records().is_err());
}

#[test]
fn versions_without_crc_are_not_checked() {
    let mut bytes = file(10, 1);
    bytes[96] ^= 0x80;
    let (_, recs) = parse_all(&bytes).unwrap();
    assert_eq!(recs[0].uid, 0x8000_0001);
}

#[test]
fn unknown_versions() {
    for v in [0, 5, 11, 21, 0x1100_0000] {
        let mut bytes = file(17, 0);
        bytes[8..12].copy_from_slice(&u32::to_be_bytes(v));
        let e = parse_header(&bytes).unwrap_err();
        assert_eq!(e, IndexError::UnknownVersion { found: v });
        assert!(e.to_string().contains(&format!("found {v}")));
    }
}

#[test]
fn sizes_smaller_than_the_version_needs() {
    let mut h = header(17, 0);
    h.record_size = 104;
    // Bypass the writer's own check to get such a file.
    let mut bytes = header(17, 0).encode().unwrap();
    bytes[16..20].copy_from_slice(&104u32.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..156]);
    bytes[156..160].copy_from_slice(&crc.to_be_bytes());
    let e = parse_header(&bytes).unwrap_err();
    assert_eq!(
        e,
        IndexError::RecordSizeTooSmall {
            version: 17,
            expected: 112,
            found: 104
        }
    );
    assert!(e
        .to_string()
        .starts_with("at byte 16: expected a record size of at least 112"));
    assert!(matches!(h.encode(), Err(EncodeError::BadSizes { .. })));

    bytes[16..20].copy_from_slice(&112u32.to_be_bytes());
    bytes[12..16].copy_from_slice(&128u32.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..156]);
    bytes[156..160].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        parse_header(&bytes),
        Err(IndexError::StartOffsetTooSmall {
            expected: 160,
            found: 128,
            ..
        })
    ));
}

#[test]
fn larger_records_are_read_with_the_version_layout() {
    // Cyrus's development branch reads v19 files with 144-byte records this way.
    let mut h = header(19, 2);
    h.record_size = 144;
    h.start_offset = 168;
    let recs = [
        for_version_rec(&record(7), 19),
        for_version_rec(&record(8), 19),
    ];
    let mut bytes = Vec::new();
    write_index(&mut bytes, &h, &recs).unwrap();
    assert_eq!(bytes.len(), 168 + 2 * 144);
    let (h2, recs2) = parse_all(&bytes).unwrap();
    assert_eq!(h2, h);
    assert_eq!(recs2, recs);
}

#[test]
fn writer_refuses_what_does_not_fit() {
    let h = header(17, 1);
    let mut r = for_version_rec(&record(1), 17);
    r.size = 5 << 30;
    let e = h.encode_record(&r).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Size = 5368709120 does not fit minor version 17"
    );
    let mut r = for_version_rec(&record(1), 17);
    r.internaldate.nanos = 5;
    assert!(h.encode_record(&r).is_err());
    let mut r = for_version_rec(&record(1), 17);
    r.cache_offset = 1 << 48;
    assert!(h.encode_record(&r).is_err());
    let recs = [for_version_rec(&record(1), 17)];
    assert!(matches!(
        write_index(Vec::new(), &header(17, 2), &recs),
        Err(EncodeError::CountMismatch {
            expected: 2,
            found: 1
        })
    ));
    assert!(matches!(
        header(17, 0)
            .layout()
            .map(|_| ())
            .and(IndexHeader::default().encode().map(|_| ())),
        Err(EncodeError::UnknownVersion(0))
    ));
}

#[test]
fn writer_refuses_times_before_1970() {
    for version in [17, 20] {
        let h = header(version, 1);
        let mut r = for_version_rec(&record(1), version);
        r.sentdate = Timestamp::from_secs(-86_400); // a Date: header of 1969-12-31
        let e = h.encode_record(&r).unwrap_err();
        assert!(matches!(e, EncodeError::BeforeEpoch { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "Sentdate = -86400 is before 1970, which cyrus.index cannot store"
        );
        let mut h = header(version, 0);
        h.pop3_last_login = Timestamp::new(-1, 500_000_000).unwrap();
        assert_eq!(
            h.encode().unwrap_err().to_string(),
            "Pop3LastLogin = -1.500000000 is before 1970, which cyrus.index cannot store"
        );
    }
}

#[test]
fn largest_stored_times_read_and_write_back() {
    // t32 and t64 are unsigned: their largest values are times after 2106 and 2554, which
    // fit a Timestamp and are written back unchanged.
    let mut bytes = file(17, 1);
    bytes[160 + 4..160 + 8].fill(0xff); // internaldate of record 1
    let crc = crc32fast::hash(&bytes[160..160 + 108]);
    bytes[160 + 108..160 + 112].copy_from_slice(&crc.to_be_bytes());
    let (h, recs) = parse_all(&bytes).unwrap();
    assert_eq!(recs[0].internaldate, Timestamp::from_secs(0xffff_ffff));
    let mut out = Vec::new();
    write_index(&mut out, &h, &recs).unwrap();
    assert_eq!(out, bytes);

    let mut bytes = file(20, 1);
    bytes[192 + 8..192 + 16].fill(0xff);
    let crc = crc32fast::hash(&bytes[192..192 + 140]);
    bytes[192 + 140..192 + 144].copy_from_slice(&crc.to_be_bytes());
    let (h, recs) = parse_all(&bytes).unwrap();
    assert_eq!(
        recs[0].internaldate,
        Timestamp::new(18_446_744_073, 709_551_615).unwrap()
    );
    let mut out = Vec::new();
    write_index(&mut out, &h, &recs).unwrap();
    assert_eq!(out, bytes);
    // One nanosecond more does not fit 64 bits.
    let mut r = recs[0].clone();
    r.internaldate.nanos += 1;
    assert!(matches!(
        h.encode_record(&r),
        Err(EncodeError::DoesNotFit { .. })
    ));
}

#[test]
fn flags_decode() {
    let mut r = record(1);
    r.system_flags = SystemFlags(SystemFlags::SEEN | SystemFlags::ANSWERED | 0x100);
    r.internal_flags = InternalFlags(InternalFlags::EXPUNGED | InternalFlags::UNLINKED);
    r.user_flags.set(0);
    r.user_flags.set(33);
    r.user_flags.set(127);
    r.user_flags.set(128); // out of range: ignored
    let names = [Some("$Work"), None, None];
    let mut more: Vec<Option<&str>> = names.to_vec();
    more.resize(128, None);
    more[33] = Some("Junk");
    assert_eq!(
        r.flag_names(&more),
        ["\\Answered", "\\Seen", "0x0100", "$Work", "Junk"]
    );
    assert!(r.is_expunged() && r.is_unlinked() && !r.is_archived() && !r.needs_cleanup());
    assert_eq!(r.internal_flags.names(), ["unlinked", "expunged"]);
    assert_eq!(r.user_flags.bits().collect::<Vec<_>>(), [0, 33, 127]);
}

/// Reads the big-endian integer of `len` bytes at `at`.
fn int(b: &[u8], at: usize, len: usize) -> u64 {
    b[at..at + len]
        .iter()
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// A record whose every field holds a distinct value, written in `version`.
fn distinct_record(version: u32) -> (IndexHeader, Vec<u8>) {
    let t = |s| Timestamp::from_secs(s);
    let r = IndexRecord {
        uid: 1,
        internaldate: t(2),
        sentdate: t(3),
        size: 4,
        header_size: 5,
        gmtime: t(6),
        cache_offset: 7 | (0x8 << 32),
        last_updated: t(9),
        system_flags: SystemFlags(10),
        internal_flags: InternalFlags(InternalFlags::EXPUNGED),
        user_flags: UserFlags([11, 12, 13, 14]),
        cache_version: 15,
        savedate: Some(t(16)),
        guid: Some(Guid([17; 20])),
        modseq: Some(18),
        cid: Some(19),
        createdmodseq: Some(20),
        basecid: Some(21),
        cache_crc: Some(22),
    };
    let h = header(version, 1);
    let bytes = h.encode_record(&for_version_rec(&r, version)).unwrap();
    (h, bytes)
}

/// Record offsets from the `OFFSET_*` constants of mailbox.h in Cyrus 3.0.0 (v13), 3.2.0 (16),
/// 3.6.1 (17), 3.10.0 (19) and the development branch (20): (offset, bytes, value written).
#[test]
fn record_offsets_agree_with_cyrus() {
    #[rustfmt::skip]
    let v13: &[(usize, usize, u64)] = &[
        (0, 4, 1), (4, 4, 2), (8, 4, 3), (12, 4, 4), (16, 4, 5), (20, 4, 6), (24, 4, 7),
        (28, 4, 9), (32, 4, 0x8000_000a), (36, 4, 11), (48, 4, 14), (52, 4, 0), (56, 4, 0x8_000f),
        (60, 1, 17), (79, 1, 17), (80, 8, 18), (88, 8, 19), (96, 4, 22),
    ];
    #[rustfmt::skip]
    let v16: &[(usize, usize, u64)] = &[
        (32, 4, 0x8000_000a), (52, 4, 16), (56, 4, 0x8_000f), (80, 8, 18), (88, 8, 19),
        (96, 8, 20), (104, 4, 22),
    ];
    #[rustfmt::skip]
    let v20: &[(usize, usize, u64)] = &[
        (0, 4, 1), (4, 4, 7), (8, 8, 2_000_000_000), (16, 8, 3_000_000_000), (24, 8, 4),
        (32, 4, 5), (36, 4, 0x8000_000a), (40, 4, 11), (52, 4, 14), (56, 4, 0x8_000f),
        (60, 1, 17), (80, 8, 18), (88, 8, 19), (96, 8, 20), (104, 8, 6_000_000_000),
        (112, 8, 9_000_000_000), (120, 8, 16_000_000_000), (128, 8, 21), (136, 4, 22),
    ];
    for (version, checks, crc_at) in [
        (13, v13, 100),
        (16, v16, 108),
        (17, v16, 108),
        (19, v16, 108),
        (20, v20, 140),
    ] {
        let (_, b) = distinct_record(version);
        for &(at, len, want) in checks {
            assert_eq!(int(&b, at, len), want, "version {version} offset {at}");
        }
        assert_eq!(int(&b, crc_at, 4), u64::from(crc32fast::hash(&b[..crc_at])));
    }
}

/// Header offsets from the same `OFFSET_*` constants: every field gets a distinct value.
#[test]
fn header_offsets_agree_with_cyrus() {
    let t = |s| Some(Timestamp::from_secs(s));
    let full = IndexHeader {
        generation_no: 1,
        format: 2,
        minor_version: 0,
        start_offset: 0,
        record_size: 0,
        num_records: 0,
        last_appenddate: Timestamp::from_secs(3),
        last_uid: 4,
        quota_mailbox_used: 5,
        pop3_last_login: Timestamp::from_secs(6),
        uidvalidity: 7,
        deleted: 8,
        answered: 9,
        flagged: 10,
        options: 11,
        leaked_cache_records: 12,
        highestmodseq: Some(13),
        deletedmodseq: Some(14),
        exists: Some(15),
        first_expunged: t(16),
        last_repack_time: t(17),
        header_file_crc: Some(18),
        sync_crc_basic: Some(19),
        recentuid: Some(20),
        recenttime: t(21),
        pop3_show_after: t(22),
        quota_annot_used: Some(23),
        sync_crc_annot: Some(24),
        unseen: Some(25),
        createdmodseq: Some(26),
        changes_epoch: t(27),
        quota_deleted_used: Some(28),
        quota_expunged_used: Some(29),
    };
    // 3.6.1 (v17): LAST_APPENDDATE 24, LAST_UID 28, QUOTA_MAILBOX_USED 32, POP3_LAST_LOGIN 40,
    // UIDVALIDITY 44, DELETED 48, ANSWERED 52, FLAGGED 56, MAILBOX_OPTIONS 60, LEAKED_CACHE 64,
    // HIGHESTMODSEQ 68, DELETEDMODSEQ 76, EXISTS 84, FIRST_EXPUNGED 88, LAST_REPACK_TIME 92,
    // HEADER_FILE_CRC 96, SYNCCRCS_BASIC 100, RECENTUID 104, RECENTTIME 108,
    // POP3_SHOW_AFTER 112, QUOTA_ANNOT_USED 116, SYNCCRCS_ANNOT 120, UNSEEN 124,
    // MAILBOX_CREATEDMODSEQ 128, CHANGES_EPOCH 136, HEADER_CRC 156.
    #[rustfmt::skip]
    let v17: &[(usize, usize, u64)] = &[
        (0, 4, 1), (4, 4, 2), (8, 4, 17), (12, 4, 160), (16, 4, 112), (24, 4, 3), (28, 4, 4),
        (32, 8, 5), (40, 4, 6), (44, 4, 7), (48, 4, 8), (52, 4, 9), (56, 4, 10), (60, 4, 11),
        (64, 4, 12), (68, 8, 13), (76, 8, 14), (84, 4, 15), (88, 4, 16), (92, 4, 17), (96, 4, 18),
        (100, 4, 19), (104, 4, 20), (108, 4, 21), (112, 4, 22), (116, 4, 23), (120, 4, 24),
        (124, 4, 25), (128, 8, 26), (136, 4, 27), (140, 16, 0),
    ];
    // 3.10.0 (v19): EXISTS 60, MAILBOX_OPTIONS 64, LEAKED_CACHE 68, HIGHESTMODSEQ 72,
    // DELETEDMODSEQ 80, QUOTA_DELETED_USED 136, QUOTA_EXPUNGED_USED 144, CHANGES_EPOCH 152.
    #[rustfmt::skip]
    let v19: &[(usize, usize, u64)] = &[
        (28, 4, 4), (44, 4, 7), (60, 4, 15), (64, 4, 11), (68, 4, 12), (72, 8, 13), (80, 8, 14),
        (88, 4, 16), (92, 4, 17), (128, 8, 26), (136, 8, 28), (144, 8, 29), (152, 4, 27),
    ];
    // Development branch (v20), times in nanoseconds.
    let ns = 1_000_000_000;
    #[rustfmt::skip]
    let v20: &[(usize, usize, u64)] = &[
        (24, 8, 3 * ns), (32, 8, 5), (40, 8, 6 * ns), (48, 4, 8), (52, 4, 9), (56, 4, 10),
        (60, 4, 15), (64, 4, 11), (68, 4, 12), (72, 8, 13), (80, 8, 14), (88, 4, 4), (92, 4, 7),
        (96, 4, 18), (100, 4, 19), (104, 8, 21 * ns), (112, 8, 22 * ns), (120, 4, 24),
        (124, 4, 25), (128, 8, 26), (136, 8, 28), (144, 8, 29), (152, 8, 23), (160, 8, 27 * ns),
        (168, 8, 16 * ns), (176, 8, 17 * ns), (184, 4, 20),
    ];
    for (version, checks) in [(17, v17), (19, v19), (20, v20)] {
        let l = IndexLayout::of(version).unwrap();
        let mut h = for_version(&full, version);
        h.minor_version = version;
        h.start_offset = l.header_size as u32;
        h.record_size = l.record_size as u32;
        let b = h.encode().unwrap();
        for &(at, len, want) in checks {
            assert_eq!(int(&b, at, len), want, "version {version} offset {at}");
        }
        assert_eq!(parse_header(&b).unwrap(), h);
    }
}

// ---------------------------------------------------------------------------------------------
// Property: parse(write(x)) == x for every supported version.

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..1 << 34, 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn any_header() -> impl Strategy<Value = IndexHeader> {
    (
        (any::<[u32; 10]>(), any::<u64>(), timestamp(), timestamp()),
        (any::<[u64; 6]>(), any::<[u32; 6]>()),
        proptest::collection::vec(timestamp(), 6),
    )
        .prop_map(|((n, q, t0, t1), (w, m), ts)| IndexHeader {
            generation_no: n[0],
            format: n[1],
            minor_version: 0,
            start_offset: 0,
            record_size: 0,
            num_records: 0,
            last_appenddate: t0,
            last_uid: n[2],
            quota_mailbox_used: q,
            pop3_last_login: t1,
            uidvalidity: n[3],
            deleted: n[4],
            answered: n[5],
            flagged: n[6],
            options: n[7],
            leaked_cache_records: n[8],
            highestmodseq: Some(w[0]),
            deletedmodseq: Some(w[1]),
            exists: Some(n[9]),
            first_expunged: Some(ts[0]),
            last_repack_time: Some(ts[1]),
            header_file_crc: Some(m[0]),
            sync_crc_basic: Some(m[1]),
            recentuid: Some(m[2]),
            recenttime: Some(ts[2]),
            pop3_show_after: Some(ts[3]),
            quota_annot_used: Some(w[2]),
            sync_crc_annot: Some(m[3]),
            unseen: Some(m[4]),
            createdmodseq: Some(w[3]),
            changes_epoch: Some(ts[4]),
            quota_deleted_used: Some(w[4]),
            quota_expunged_used: Some(w[5]),
        })
}

fn any_record() -> impl Strategy<Value = IndexRecord> {
    (
        (
            any::<[u32; 4]>(),
            any::<u64>(),
            0u64..1 << 48,
            any::<u16>(),
            any::<u16>(),
        ),
        (
            any::<[u32; 4]>(),
            any::<[u8; 20]>(),
            any::<[u64; 4]>(),
            any::<u32>(),
        ),
        proptest::collection::vec(timestamp(), 5),
    )
        .prop_map(
            |((n, size, cache_offset, sys, cv), (uf, g, w, crc), ts)| IndexRecord {
                uid: n[0],
                internaldate: ts[0],
                sentdate: ts[1],
                size,
                header_size: n[1],
                gmtime: ts[2],
                cache_offset,
                last_updated: ts[3],
                system_flags: SystemFlags(sys),
                internal_flags: InternalFlags(n[2] & 0xffff_0000),
                user_flags: UserFlags(uf),
                cache_version: cv,
                savedate: Some(ts[4]),
                guid: Some(Guid(g)),
                modseq: Some(w[0]),
                cid: Some(w[1]),
                createdmodseq: Some(w[2]),
                basecid: Some(w[3]),
                cache_crc: Some(crc),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn write_then_read_is_identity(
        version in proptest::sample::select(SUPPORTED_VERSIONS.to_vec()),
        h in any_header(),
        recs in proptest::collection::vec(any_record(), 0..6),
        pad in (0u32..3, 0u32..3),
    ) {
        let l = IndexLayout::of(version).unwrap();
        let mut h = for_version(&h, version);
        h.minor_version = version;
        h.start_offset = l.header_size as u32 + 8 * pad.0;
        h.record_size = l.record_size as u32 + 8 * pad.1;
        h.num_records = recs.len() as u32;
        let recs: Vec<_> = recs.iter().map(|r| for_version_rec(r, version)).collect();
        let mut bytes = Vec::new();
        write_index(&mut bytes, &h, &recs).unwrap();
        prop_assert_eq!(bytes.len(), h.start_offset as usize + recs.len() * h.record_size as usize);
        let (h2, recs2) = parse_all(&bytes).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(recs2, recs);
    }

    #[test]
    fn any_flipped_byte_under_a_crc_is_caught(
        version in proptest::sample::select(vec![12u32, 13, 14, 15, 16, 17, 18, 19, 20]),
        h in any_header(),
        r in any_record(),
        pick in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let l = IndexLayout::of(version).unwrap();
        let mut h = for_version(&h, version);
        h.minor_version = version;
        h.start_offset = l.header_size as u32;
        h.record_size = l.record_size as u32;
        h.num_records = 1;
        let mut bytes = Vec::new();
        write_index(&mut bytes, &h, [&for_version_rec(&r, version)]).unwrap();
        let at = pick.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let caught = Index::parse(&bytes).map(|i| i.collect_records().is_err());
        prop_assert!(!matches!(caught, Ok(false)), "flip at {} not caught", at);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(idx) = Index::parse(&bytes) {
            for r in idx.records() {
                let _ = r;
            }
        }
    }
}
